"""Pure federated averaging: weighted deltas summed up the tree, applied at the domain.

A device that trained on ``n`` examples sends ``n * (new - global)`` and ``n``;
a relay adds its children's sums to its own; the domain divides the total by
the total weight and adds it to the global model (FedAvg). Sums never count a
device twice: an aggregate whose contributors overlap those already taken is
refused whole. Nothing that is not a well-formed update of the model is summed
(:func:`update_problem`: the model's float32 shapes, finite values, a bounded
step per sample), so a sum and the FedAvg model stay finite whatever a peer sends.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from ..exceptions import EdgeAgentError
from ..wire import NodeId, Tensor, Update

__all__ = [
    "MAX_MEAN_STEP",
    "MAX_SAMPLES_PER_DEVICE",
    "RoundSum",
    "apply_fedavg",
    "from_tensors",
    "load_model",
    "model_bytes",
    "to_tensors",
    "update_problem",
    "weighted_delta",
]

Array = npt.NDArray[np.float32]
Shapes = Sequence[tuple[int, ...]]

#: The largest weighted-mean change of one parameter in one round (``|weighted_delta| <= num_samples x this``).
#: Honest training moves parameters by far less; with it every sum of accepted updates fits float32.
MAX_MEAN_STEP: Final = 1e6
#: The most training examples one device may claim (``num_samples <= contributors x this``).
MAX_SAMPLES_PER_DEVICE: Final = 1 << 40
_F32_MAX: Final = float(np.finfo(np.float32).max)


def update_problem(upd: Update, shapes: Shapes | None) -> str | None:
    """Why ``upd`` cannot be summed into a model of ``shapes`` (None when it can).

    Pure, and about the update's form only (who may send it is the caller's question): a
    contributor named once, float32 arrays of exactly the model's shapes (``shapes`` None: not
    known yet, only dtype and values are checked), finite values, at most ``MAX_MEAN_STEP`` per
    sample and ``MAX_SAMPLES_PER_DEVICE`` samples per contributor, finite metrics. An update with
    no contributors (a device that left, a relay whose subtree all dropped) carries no arrays.
    """
    who = upd.contributors
    if len(set(who)) != len(who):
        return "it names a contributor twice"
    bad = next((k for k, v in upd.metrics.items() if not math.isfinite(v)), None)
    if bad is not None:
        return f"metric {bad!r} is not finite"
    if not who:
        if upd.weighted_delta or upd.num_samples:
            return "an update without contributors carries arrays or samples"
        return None
    if upd.num_samples > len(who) * MAX_SAMPLES_PER_DEVICE:
        return f"{upd.num_samples} samples from {len(who)} contributor(s) is more than any device has"
    if shapes is not None and len(upd.weighted_delta) != len(shapes):
        return f"it has {len(upd.weighted_delta)} arrays, the model {len(shapes)}"
    for i, t in enumerate(upd.weighted_delta):
        if t.dtype != "float32":
            return f"array {i} is {t.dtype}, the model is float32"
        if shapes is not None and tuple(t.shape) != tuple(shapes[i]):
            return f"array {i} has shape {tuple(t.shape)}, the model {tuple(shapes[i])}"
    bound = float(upd.num_samples) * MAX_MEAN_STEP
    for i, t in enumerate(upd.weighted_delta):
        a = t.to_numpy()
        if not np.isfinite(a).all():
            return f"array {i} holds NaN or infinite values"
        if a.size and float(np.max(np.abs(a))) > bound:
            return f"array {i} moves a parameter by more than {MAX_MEAN_STEP:g} per sample"
    return None


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
        """Add one (possibly aggregated) update; False (nothing added) when it overlaps or does not fit.

        ``shapes``, when set before the first add (the model's), is what every update must match;
        otherwise the first update with contributors sets it.
        """
        if upd.job_id != self.job_id or upd.round != self.round:
            self.refused += 1
            return False
        who = set(upd.contributors)
        if who & self.contributors:
            self.refused += 1  # a re-routed update already counted: never twice
            return False
        if update_problem(upd, self.shapes) is not None:
            self.refused += 1
            return False
        self.dropped |= set(upd.dropped)
        if not who:
            return True  # nothing to sum (a node that left reports itself dropped)
        arrays = from_tensors(upd.weighted_delta)
        if self.total is None:
            self.shapes = [a.shape for a in arrays]
            self.total = [a.astype(np.float64) for a in arrays]
        else:
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
    """The new global model: global + (sum of weighted deltas) / (sum of weights).

    Never NaN or infinite: a result that would not be finite in float32 (which summed, checked
    updates cannot produce) leaves the model as it was.
    """
    if total.total is None or not total.num_samples:
        return [p.copy() for p in global_params]
    if [tuple(p.shape) for p in global_params] != [tuple(s) for s in total.shapes or ()]:
        raise EdgeAgentError("the aggregated update does not match the global model's shapes")
    out = [p.astype(np.float64) + t / total.num_samples for p, t in zip(global_params, total.total, strict=True)]
    if not all(bool(np.all(np.abs(o) <= _F32_MAX)) for o in out):  # NaN compares False too
        return [p.copy() for p in global_params]
    return [o.astype(np.float32) for o in out]


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
