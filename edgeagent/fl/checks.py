"""Checks of federated-learning updates where they are summed (pure, but for ``refuse``).

A round assigns each participant a subtree (itself and the devices below it in the round's
tree). An ``Update`` may name as contributors, or report as dropped, only devices inside the
subtree assigned to its sender, and must match the model's float32 shapes with finite values
(``aggregate.update_problem``). The domain checks every update against the subtrees it
assigned; a device checks its children against the subtrees its ``RoundStart`` lists
(hyper-parameter ``_subtrees``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from ..exceptions import EdgeAgentError
from ..host import Inbound
from ..wire import (
    Error,
    ErrorCode,
    NodeId,
    RoundStart,
    Update,
)
from .aggregate import update_problem

__all__ = [
    "N_CLASSES",
    "N_FEATURES",
    "SUBTREES",
    "Refusal",
    "child_subtrees",
    "contributors_refusal",
    "data_problem",
    "form_refusal",
    "plan_hyperparams",
    "refuse",
    "subtrees",
]

SUBTREES: Final = "_subtrees"  # RoundStart hyper-parameter: per expected child, the devices below it (NodeId text)
#: JobAdvert hyper-parameters: the model's input features and classes, so a device checks its data at once
N_FEATURES: Final = "_n_features"
N_CLASSES: Final = "_n_classes"


def plan_hyperparams(hyper: dict[str, object]) -> dict[str, object]:
    """The hyper-parameters a plan sees: without the protocol's own keys (those starting with ``_``)."""
    return {k: v for k, v in hyper.items() if not k.startswith("_")}


def data_problem(x_shape: tuple[int, ...], labels: object, hyper: dict[str, object]) -> str | None:
    """Why local data (``x`` of ``x_shape``, integer ``labels``) does not fit an advertised job, or None."""
    features, classes = hyper.get(N_FEATURES), hyper.get(N_CLASSES)
    if isinstance(features, int) and len(x_shape) == 2 and x_shape[1] != features:
        return f"the local data has {x_shape[1]} features per sample; the job's model takes {features}"
    if isinstance(classes, int):
        import numpy as np

        y = np.asarray(labels)
        if y.size and (int(y.min()) < 0 or int(y.max()) >= classes):
            return f"the local labels run {int(y.min())}..{int(y.max())}; the job has classes 0..{classes - 1}"
    return None


#: A refusal: (limit counted under ``limits.refused``, the Error code, why).
Refusal = tuple[str, ErrorCode, str]


def subtrees(parent: Mapping[NodeId, NodeId], members: Iterable[NodeId]) -> dict[NodeId, frozenset[NodeId]]:
    """Each member with every member below it (itself included), following ``parent`` up through members.

    Pure. The subtree a round assigns to a node: the devices whose updates may reach it to be summed.
    """
    below: dict[NodeId, set[NodeId]] = {n: {n} for n in members}
    for n in below:
        seen = {n}
        up = parent.get(n)
        while up is not None and up in below and up not in seen:
            below[up].add(n)
            seen.add(up)
            up = parent.get(up)
    return {n: frozenset(b) for n, b in below.items()}


def contributors_refusal(upd: Update, allowed: Iterable[frozenset[NodeId]], max_items: int) -> Refusal | None:
    """Why ``upd`` names devices its sender may not speak for (None when it may).

    ``allowed``: the subtrees assigned to the sender (one per round attempt it may answer); every
    contributor and every device reported dropped must lie inside one of them. Lists longer than
    ``max_items`` and than the largest of them are refused before anything is built from them.
    """
    options = list(allowed)
    cap = max([max_items, *(len(a) for a in options)])
    for what, items in (("contributors", upd.contributors), ("dropped devices", upd.dropped)):
        if len(items) > cap:
            return "list_items", ErrorCode.QUOTA, f"{len(items)} {what} is more than the {cap} allowed"
    if len(upd.metrics) > max_items:
        return "list_items", ErrorCode.QUOTA, f"{len(upd.metrics)} metrics is more than the {max_items} allowed"
    claimed = set(upd.contributors) | set(upd.dropped)
    if any(claimed <= a for a in options):
        return None
    nearest = min(options, key=lambda a: len(claimed - a), default=frozenset())
    foreign = sorted(claimed - nearest)
    named = ", ".join(f.short() for f in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    return "fl_contributors", ErrorCode.UNAUTHORIZED, f"it speaks for devices outside its assigned subtree: {named}"


def form_refusal(upd: Update, shapes: Sequence[tuple[int, ...]] | None) -> Refusal | None:
    """``aggregate.update_problem`` as a refusal."""
    why = update_problem(upd, shapes)
    return None if why is None else ("fl_update", ErrorCode.BAD_REQUEST, why)


def child_subtrees(rs: RoundStart) -> dict[NodeId, frozenset[NodeId]] | None:
    """Each expected child's assigned subtree (itself included), from the RoundStart; None if it does not say."""
    if not rs.expected:
        return {}
    lists = rs.hyperparams.get(SUBTREES)
    if not isinstance(lists, list) or len(lists) != len(rs.expected):
        return None
    out: dict[NodeId, frozenset[NodeId]] = {}
    try:
        for child, below in zip(rs.expected, lists, strict=True):
            if not isinstance(below, list) or not all(isinstance(x, str) for x in below):
                return None
            out[child] = frozenset([child, *(NodeId.parse(x) for x in below)])
    except (ValueError, EdgeAgentError):
        return None
    return out


async def refuse(m: Inbound[Update], refusal: Refusal) -> Error:
    """Count and log ``refusal`` by the update's sender (the one clock read) and answer it with the Error."""
    limit, code, why = refusal
    err = m.host.limiter.refuse(limit, m.source, f"update for job {m.body.job_id} round {m.body.round}: {why}",
                                time.monotonic(), code=code)  # fmt: skip
    await m.refuse(code, err.reason)
    return err
