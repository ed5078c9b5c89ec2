"""Federated learning: adverts, joining, rounds, updates aggregated up the tree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..nodeid import NodeId
from ..schema import (
    BOOL,
    BYTES,
    F64,
    NODEID,
    STR,
    TENSOR,
    U32,
    U64,
    VALUE,
    Message,
    Opt,
    Rep,
    StrMap,
    Struct,
    StructKind,
    fld,
    message,
    struct,
)
from ..tensor import Tensor
from .payload import Manifest

__all__ = ["Eligibility", "JobAdvert", "JoinReply", "JoinRequest", "RoundResult", "RoundStart", "Update"]


@struct
@dataclass(frozen=True, slots=True)
class Eligibility(Struct):
    """Conditions a device checks for itself before joining."""

    unmetered: bool = fld(1, BOOL, "only on unmetered networks", default=True)
    charging: bool = fld(2, BOOL, "only while charging (or above min_battery)", default=False)
    min_battery: int = fld(3, U32, "percent; 0 = no battery condition", default=0)
    needs_data: bool = fld(4, BOOL, "only devices with local training data", default=True)


@message(80)
@dataclass(frozen=True, slots=True)
class JobAdvert(Message):
    """A domain offers a federated-learning job."""

    job_id: str = fld(1, STR, "job identifier")
    plan: str = fld(2, STR, "training plan name (built in or from an installed package)")
    model: Manifest | None = fld(3, Opt(StructKind(Manifest)), "manifest of the initial model payload")
    hyperparams: dict[str, Any] = fld(4, StrMap(VALUE), "plan hyper-parameters")
    rounds: int = fld(5, U32, "number of rounds", default=1)
    min_participants: int = fld(6, U32, "a round needs at least this many updates", default=1)
    eligibility: Eligibility = fld(7, StructKind(Eligibility), "who may join", default=Eligibility())
    round_deadline_ms: int = fld(8, U64, "time allowed per round", default=60_000)


@message(81)
@dataclass(frozen=True, slots=True)
class JoinRequest(Message):
    """A device asks to join a job."""

    job_id: str = fld(1, STR, "the job")
    num_samples: int = fld(2, U64, "local training examples", default=0)
    capabilities: tuple[str, ...] = fld(3, Rep(STR), "plans and features the device has")
    declined: str = fld(
        4, STR, "set when the device does not take part: why (its data does not fit the job, ...)", default=""
    )


@message(82)
@dataclass(frozen=True, slots=True)
class JoinReply(Message):
    """The domain's answer to a JoinRequest."""

    job_id: str = fld(1, STR, "the job")
    accepted: bool = fld(2, BOOL, "true when admitted", default=False)
    reason: str = fld(3, STR, "why not, when refused", default="")


@message(83)
@dataclass(frozen=True, slots=True)
class RoundStart(Message):
    """A round begins: fetch the model payload, train, send the update to ``parent``."""

    job_id: str = fld(1, STR, "the job")
    round: int = fld(2, U32, "round number, from 0")
    model_id: bytes = fld(3, BYTES, "payload id of the global model for this round", default=b"")
    deadline_ms: int = fld(4, U64, "ms since the Unix epoch when updates stop being accepted", default=0)
    parent: NodeId | None = fld(5, Opt(NODEID), "where this node sends its (aggregated) update")
    expected: tuple[NodeId, ...] = fld(6, Rep(NODEID), "children whose updates this node aggregates")
    hyperparams: dict[str, Any] = fld(7, StrMap(VALUE), "per-round hyper-parameters")


@message(84)
@dataclass(frozen=True, slots=True)
class Update(Message):
    """A weighted model update, possibly already the sum of a subtree's updates."""

    job_id: str = fld(1, STR, "the job")
    round: int = fld(2, U32, "the round")
    weighted_delta: tuple[Tensor, ...] = fld(3, Rep(TENSOR), "sum over contributors of num_samples x delta")
    num_samples: int = fld(4, U64, "total weight (training examples) in the sum", default=0)
    contributors: tuple[NodeId, ...] = fld(5, Rep(NODEID), "devices whose updates are in the sum")
    dropped: tuple[NodeId, ...] = fld(6, Rep(NODEID), "expected devices that missed the deadline")
    metrics: dict[str, float] = fld(7, StrMap(F64), "sample-weighted sums of reported metrics")
    rerouted: bool = fld(
        8,
        BOOL,
        "sent around a dead parent: the domain adds it last, only if no aggregate already holds it",
        default=False,
    )


@message(85)
@dataclass(frozen=True, slots=True)
class RoundResult(Message):
    """The domain closes a round."""

    job_id: str = fld(1, STR, "the job")
    round: int = fld(2, U32, "the round")
    participants: int = fld(3, U32, "updates aggregated", default=0)
    dropped: int = fld(4, U32, "stragglers dropped", default=0)
    metrics: dict[str, float] = fld(5, StrMap(F64), "aggregated metrics (e.g. accuracy)")
    next_model_id: bytes = fld(6, BYTES, "payload id of the new global model", default=b"")
    done: bool = fld(7, BOOL, "true after the last round", default=False)
    checkpoint: str = fld(8, STR, "where the domain stored this round's checkpoint", default="")
