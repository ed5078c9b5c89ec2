"""Pure federated averaging: weighted deltas summed up the tree, applied at the domain.

A device that trained on ``n`` examples sends ``n * (new - global)`` and ``n``;
a relay adds its children's sums to its own; the domain divides the total by
the total weight and adds it to the global model (FedAvg). Sums never count a
device twice: an aggregate whose contributors overlap those already taken is
refused whole.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..exceptions import EdgeAgentError
from ..wire import NodeId, Tensor, Update

__all__ = [
    "RoundSum",
    "apply_fedavg",
    "from_tensors",
    "load_model",
    "model_bytes",
    "to_tensors",
    "weighted_delta",
]

Array = npt.NDArray[np.float32]


def to_tensors(arrays: Sequence[Array]) -> tuple[Tensor, ...]:
    return tuple(Tensor.from_numpy(np.array(a, dtype=np.float32, order="C", copy=True)) for a in arrays)


def from_tensors(tensors: Iterable[Tensor]) -> list[Array]:
    return [np.array(t.to_numpy(), dtype=np.float32) for t in tensors]


def weighted_delta(new: Sequence[Array], old: Sequence[Array], n: int) -> list[Array]:
    """``n * (new - old)`` per parameter array."""
    if len(new) != len(old):
        raise EdgeAgentError("the trained model has a different number of arrays than the global one")
    out = []
    for a, b in zip(new, old, strict=True):
        if a.shape != b.shape:
            raise EdgeAgentError(f"parameter shape {a.shape} differs from the global {b.shape}")
        out.append(((a - b) * np.float32(n)).astype(np.float32))
    return out


@dataclass
class RoundSum:
    """The running sum of one round's updates at one node (a relay or the domain)."""

    job_id: str
    round: int
    shapes: list[tuple[int, ...]] | None = None
    total: list[npt.NDArray[np.float64]] | None = None
    num_samples: int = 0
    contributors: set[NodeId] = field(default_factory=set)
    dropped: set[NodeId] = field(default_factory=set)
    metrics: dict[str, float] = field(default_factory=dict)
    refused: int = 0

    def add(self, upd: Update) -> bool:
        """Add one (possibly aggregated) update; False (nothing added) when it overlaps or does not fit."""
        if upd.job_id != self.job_id or upd.round != self.round:
            self.refused += 1
            return False
        who = set(upd.contributors)
        if who & self.contributors:
            self.refused += 1  # a re-routed update already counted: never twice
            return False
        self.dropped |= set(upd.dropped)
        if not who:
            return True  # nothing to sum (a node that left reports itself dropped)
        arrays = from_tensors(upd.weighted_delta)
        shapes = [a.shape for a in arrays]
        if self.shapes is None:
            self.shapes = shapes
            self.total = [a.astype(np.float64) for a in arrays]
        elif shapes != self.shapes:
            self.refused += 1
            return False
        else:
            assert self.total is not None
            for t, a in zip(self.total, arrays, strict=True):
                np.add(t, a, out=t)
        self.num_samples += upd.num_samples
        self.contributors |= who
        self.dropped -= self.contributors
        for k, v in upd.metrics.items():
            self.metrics[k] = self.metrics.get(k, 0.0) + v
        return True

    def to_update(self) -> Update:
        """The sum as one Update to send further up."""
        tensors = () if self.total is None else to_tensors([t.astype(np.float32) for t in self.total])
        return Update(
            self.job_id,
            self.round,
            tensors,
            self.num_samples,
            tuple(sorted(self.contributors)),
            tuple(sorted(self.dropped - self.contributors)),
            dict(self.metrics),
        )

    def mean_metrics(self) -> dict[str, float]:
        if not self.num_samples:
            return {}
        return {k: v / self.num_samples for k, v in self.metrics.items()}


def apply_fedavg(global_params: Sequence[Array], total: RoundSum) -> list[Array]:
    """The new global model: global + (sum of weighted deltas) / (sum of weights)."""
    if total.total is None or not total.num_samples:
        return [p.copy() for p in global_params]
    if [p.shape for p in global_params] != total.shapes:
        raise EdgeAgentError("the aggregated update does not match the global model's shapes")
    return [
        (p.astype(np.float64) + t / total.num_samples).astype(np.float32)
        for p, t in zip(global_params, total.total, strict=True)
    ]


def model_bytes(params: Sequence[Array], meta: Mapping[str, object] | None = None) -> bytes:
    """The model as an ``.npz`` file (arrays ``p0``, ``p1``, ...; no pickles)."""
    buf = io.BytesIO()
    arrays = {f"p{i}": np.asarray(p, dtype=np.float32) for i, p in enumerate(params)}
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def load_model(data: bytes) -> list[Array]:
    """Parameters from :func:`model_bytes` output; raises EdgeAgentError on anything else."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            keys = sorted(z.files, key=lambda k: int(k[1:]) if k[1:].isdigit() else -1)
            if not keys or any(not (k.startswith("p") and k[1:].isdigit()) for k in keys):
                raise EdgeAgentError("a model file holds arrays p0, p1, ...")
            return [np.array(z[k], dtype=np.float32) for k in keys]
    except EdgeAgentError:
        raise
    except (ValueError, OSError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise EdgeAgentError(f"not a model file: {exc}") from None
