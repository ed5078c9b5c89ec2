"""The worker message set (after PySyft): objects, operations, search, plans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..schema import BOOL, STR, U64, VALUE, Message, Opt, Rep, StrMap, Struct, StructKind, fld, message, struct

__all__ = [
    "ForceObjectDeleteMessage",
    "GetShapeMessage",
    "IsNoneMessage",
    "ObjectMessage",
    "ObjectRequestMessage",
    "Operation",
    "Plan",
    "PlanCommandMessage",
    "RenewLeaseMessage",
    "SearchMessage",
]


@message(32)
@dataclass(frozen=True, slots=True)
class Operation(Message):
    """Run an allow-listed tensor command on the worker and store its results.

    Arguments may be plain values, tensors, or ObjectRefs naming stored objects.
    """

    cmd_name: str = fld(1, STR, 'the command, e.g. "add", "matmul" (must be on the allow-list)')
    cmd_owner: str | None = fld(2, Opt(STR), "id of the object the command is a method of, if any")
    cmd_args: tuple[Any, ...] = fld(3, Rep(VALUE), "positional arguments")
    cmd_kwargs: dict[str, Any] = fld(4, StrMap(VALUE), "keyword arguments")
    return_ids: tuple[str, ...] = fld(5, Rep(STR), "ids under which the results are stored")


@message(33)
@dataclass(frozen=True, slots=True)
class ObjectMessage(Message):
    """Push an object to the worker, which stores it under ``obj_id``."""

    obj_id: str = fld(1, STR, "id to store the object under")
    obj: Any = fld(2, VALUE, "the object (tensor, bytes, or any value)", default=None)
    tags: tuple[str, ...] = fld(3, Rep(STR), "tags for search")
    description: str = fld(4, STR, "free text for search", default="")
    lease_ms: int = fld(5, U64, "lifetime unless renewed; 0 = the worker's default", default=0)


@message(34)
@dataclass(frozen=True, slots=True)
class ObjectRequestMessage(Message):
    """Pull an object. It is moved (deleted at the worker) unless ``keep`` is true."""

    obj_id: str = fld(1, STR, "id of the object")
    keep: bool = fld(2, BOOL, "leave the worker's copy in place", default=False)


@message(35)
@dataclass(frozen=True, slots=True)
class IsNoneMessage(Message):
    """Ask whether the worker does *not* hold ``obj_id``; the Response value is a bool."""

    obj_id: str = fld(1, STR, "id of the object")


@message(36)
@dataclass(frozen=True, slots=True)
class GetShapeMessage(Message):
    """Ask for the shape of a stored tensor; the Response value is a list of ints."""

    obj_id: str = fld(1, STR, "id of the tensor")


@message(37)
@dataclass(frozen=True, slots=True)
class ForceObjectDeleteMessage(Message):
    """Delete objects now (batched, idempotent: unknown ids are not an error)."""

    obj_ids: tuple[str, ...] = fld(1, Rep(STR), "ids to delete")


@message(38)
@dataclass(frozen=True, slots=True)
class SearchMessage(Message):
    """Find objects matching *all* terms; a term matches an id, a tag or the description."""

    terms: tuple[str, ...] = fld(1, Rep(STR), "search terms, ANDed")


@struct
@dataclass(frozen=True, slots=True)
class Plan(Struct):
    """A named sequence of Operations over placeholders.

    Placeholders are ObjectRefs whose ids are listed in ``inputs``; running the
    plan binds them to the run's arguments. Plans are data, never code.
    """

    name: str = fld(1, STR, "plan name")
    operations: tuple[Operation, ...] = fld(2, Rep(StructKind(Operation)), "the steps, in order")
    inputs: tuple[str, ...] = fld(3, Rep(STR), "placeholder ids bound to the run's arguments")
    outputs: tuple[str, ...] = fld(4, Rep(STR), "ids whose values the run returns")


@message(40)
@dataclass(frozen=True, slots=True)
class RenewLeaseMessage(Message):
    """Extend the leases of objects the sender holds pointers to (unknown ids are ignored).

    Objects live until their lease expires unless renewed: no reference counting,
    so a lost delete or a crashed client never pins memory for good.
    """

    obj_ids: tuple[str, ...] = fld(1, Rep(STR), "ids to renew")
    lease_ms: int = fld(2, U64, "new lease from now; 0 = the worker's default", default=0)


@message(39)
@dataclass(frozen=True, slots=True)
class PlanCommandMessage(Message):
    """Register, fetch, run or list plans."""

    command: str = fld(1, STR, '"register", "fetch", "run" or "list"')
    plan_name: str = fld(2, STR, "the plan the command is about (empty for list)", default="")
    plan: Plan | None = fld(3, Opt(StructKind(Plan)), "the plan, for register")
    args: tuple[Any, ...] = fld(4, Rep(VALUE), "arguments, for run")
    return_ids: tuple[str, ...] = fld(5, Rep(STR), "ids under which a run stores its outputs")
