"""The worker: answers the PySyft-style message set from its object store (pure).

``Worker.handle(body, requester, now)`` returns the Response or Error to send
back; it never raises for a bad request, and a refused or failed request
leaves the store exactly as it was. The asyncio driver (``services/worker.py``)
calls it for authorised peers and sends the answer.

Memory a request makes the worker hold is bounded by the store's quota: one
operation's result is at most ``max_result_bytes`` (checked from the shapes,
before it is computed) and is stored only if it fits the quota; a plan's
intermediates (every value its steps compute, held until it ends) count as
much as its outputs: once they hold more than the quota has left the plan is
refused, so it never holds more than that plus one step's result.
``check_streamed`` decides a ``StreamedObject`` (rights, id, shape, quota) from
the stream's size alone, before its file is read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import EdgeAgentError, ObjectNotFound, ObjectStoreError, OperationError, QuotaExceeded
from ..wire import (
    DTYPES,
    Error,
    ErrorCode,
    ForceObjectDeleteMessage,
    GetShapeMessage,
    IsNoneMessage,
    Message,
    NodeId,
    ObjectMessage,
    ObjectRef,
    ObjectRequestMessage,
    Operation,
    Plan,
    PlanCommandMessage,
    RenewLeaseMessage,
    Response,
    SearchMessage,
    StreamedObject,
    Tensor,
)
from ..wire.cbor import encode_struct
from .ops import OPS, run_op
from .permissions import Permissions, Right
from .store import ObjectStore, meta_size, value_size

__all__ = ["WORKER_MESSAGES", "Worker"]

log = logging.getLogger(__name__)

WORKER_MESSAGES: tuple[type[Message], ...] = (
    Operation,
    ObjectMessage,
    ObjectRequestMessage,
    IsNoneMessage,
    GetShapeMessage,
    ForceObjectDeleteMessage,
    SearchMessage,
    PlanCommandMessage,
    RenewLeaseMessage,
)

_MAX_ID = 256
_MAX_PLAN_STEPS = 256
_TENSOR_COST = value_size(Tensor("uint8", (0,), b""))  # what a tensor costs beyond its data
_BYTES_COST = value_size(b"")


def _check_id(obj_id: str) -> None:
    if not obj_id or len(obj_id) > _MAX_ID:
        raise OperationError(f"object ids are 1..{_MAX_ID} characters")


@dataclass
class Worker:
    store: ObjectStore = field(default_factory=ObjectStore)
    permissions: Permissions = field(default_factory=Permissions)
    max_result_bytes: int = 64 << 20
    max_plans: int = 256
    plans: dict[str, tuple[Plan, NodeId]] = field(default_factory=dict)
    _relayed_by: NodeId | None = None

    def handle(
        self, body: Message, requester: NodeId, now: float, relayed_by: NodeId | None = None
    ) -> Response | Error:
        """Answer one request. ``relayed_by``: the domain that forwarded it, which vouches for
        ``requester`` (the domain is the bottleneck that decides who reaches its devices)."""
        if relayed_by is not None and not self.permissions.is_domain(relayed_by):
            return Error(ErrorCode.UNAUTHORIZED, f"{relayed_by} is not a domain and may not relay requests")
        self._relayed_by = relayed_by
        self.store.sweep(now)  # an expired object neither answers nor blocks anyone
        handler: Callable[[Any, NodeId, float], Response] | None = getattr(self, f"_on_{type(body).__name__}", None)
        if handler is None or not isinstance(body, WORKER_MESSAGES):
            return Error(ErrorCode.UNSUPPORTED, f"{type(body).__name__} is not a worker request")
        return self._answer(lambda: handler(body, requester, now), type(body).__name__)

    def check_streamed(
        self, req: StreamedObject, nbytes: int, requester: NodeId, now: float, relayed_by: NodeId | None = None
    ) -> Error | None:
        """Whether a ``StreamedObject`` of a stream of ``nbytes`` may be stored (None) or why not, decided
        before its file is read: the relay, the push right, the id, the tensor's shape, the quota."""
        if relayed_by is not None and not self.permissions.is_domain(relayed_by):
            return Error(ErrorCode.UNAUTHORIZED, f"{relayed_by} is not a domain and may not relay requests")
        self._relayed_by = relayed_by
        self.store.sweep(now)

        def check() -> Response:
            self._need(requester, Right.PUSH)
            self._may_write(req.obj_id, requester)
            if req.dtype:
                item = DTYPES.get(req.dtype)
                if item is None:
                    raise OperationError(f"not a tensor: unknown dtype {req.dtype!r}")
                if math.prod(req.shape) * item[0] != nbytes:
                    raise OperationError(f"not a tensor: shape {list(req.shape)} of {req.dtype} is not {nbytes} bytes")
            size = nbytes + (_TENSOR_COST if req.dtype else _BYTES_COST)
            self.store.check_fits(req.obj_id, size + meta_size(req.obj_id, req.tags, req.description))
            return Response(req.obj_id)

        reply = self._answer(check, "StreamedObject")
        return reply if isinstance(reply, Error) else None

    def _answer(self, run: Callable[[], Response], kind: str) -> Response | Error:
        try:
            return run()
        except PermissionError as exc:
            return Error(ErrorCode.UNAUTHORIZED, str(exc))
        except ObjectNotFound as exc:
            return Error(ErrorCode.NOT_FOUND, str(exc))
        except QuotaExceeded as exc:
            return Error(ErrorCode.QUOTA, str(exc))
        except (OperationError, ObjectStoreError) as exc:
            return Error(ErrorCode.BAD_REQUEST, str(exc))
        except EdgeAgentError as exc:
            return Error(ErrorCode.BAD_REQUEST, str(exc))
        except Exception as exc:  # a bug must not take the node down: answer and log
            log.exception("worker failed on %s", kind)
            return Error(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")

    def cost(self, body: Message, now: float) -> int:
        """Bytes of stored data a request would compute over (0 for requests that compute nothing).

        The driver runs costly requests off its event loop and cheap ones inline.
        """
        if isinstance(body, Operation):
            refs = [a for a in (*body.cmd_args, *body.cmd_kwargs.values()) if isinstance(a, ObjectRef)]
            ids = [r.id for r in refs] + ([body.cmd_owner] if body.cmd_owner else [])
            return sum(o.size for o in map(self.store.peek, ids) if o is not None)
        if isinstance(body, PlanCommandMessage) and body.command == "run":
            return 1 << 62  # plans may run many steps: always off the loop
        return 0

    def _need(self, requester: NodeId, right: Right) -> None:
        vouched = self._relayed_by is not None and self.permissions.allows(self._relayed_by, right)
        if not vouched and not self.permissions.allows(requester, right):
            raise PermissionError(f"{requester} lacks the {(right.name or str(right)).lower()} right on this worker")

    # -- objects ------------------------------------------------------------------------------

    def _may_write(self, obj_id: str, requester: NodeId) -> None:
        """Raise unless ``requester`` may create or replace ``obj_id``."""
        _check_id(obj_id)
        existing = self.store.peek(obj_id)
        foreign = existing is not None and existing.owner not in (None, requester)
        if foreign and not self.permissions.is_domain(requester):
            raise PermissionError(f"object {obj_id!r} belongs to another peer")

    def _on_ObjectMessage(self, m: ObjectMessage, requester: NodeId, now: float) -> Response:  # noqa: N802
        self._need(requester, Right.PUSH)
        self._may_write(m.obj_id, requester)
        lease = m.lease_ms / 1000 if m.lease_ms else None
        self.store.put(m.obj_id, m.obj, now=now, tags=m.tags, description=m.description, owner=requester, lease=lease)
        return Response(m.obj_id)

    def _pullable(self, obj_id: str, requester: NodeId, now: float) -> Any:
        obj = self.store.get(obj_id, now=now)
        if obj.owner not in (None, requester) and not self.permissions.is_domain(requester):
            raise PermissionError(f"object {obj_id!r} belongs to another peer")
        return obj

    def _on_ObjectRequestMessage(self, m: ObjectRequestMessage, requester: NodeId, now: float) -> Response:  # noqa: N802
        self._need(requester, Right.PULL)
        obj = self._pullable(m.obj_id, requester, now)
        if not m.keep:
            self.store.delete([m.obj_id])
        return Response(obj.value)

    def _on_IsNoneMessage(self, m: IsNoneMessage, requester: NodeId, now: float) -> Response:  # noqa: N802
        self._need(requester, Right.SEARCH)
        try:
            self.store.get(m.obj_id, now=now)
        except ObjectNotFound:
            return Response(True)
        return Response(False)

    def _on_GetShapeMessage(self, m: GetShapeMessage, requester: NodeId, now: float) -> Response:  # noqa: N802
        self._need(requester, Right.SEARCH)
        value = self.store.get(m.obj_id, now=now).value
        if not isinstance(value, Tensor):
            raise OperationError(f"object {m.obj_id!r} is not a tensor")
        return Response(list(value.shape))

    def _on_ForceObjectDeleteMessage(self, m: ForceObjectDeleteMessage, requester: NodeId, now: float) -> Response:  # noqa: N802
        self._need(requester, Right.PUSH)
        mine = [i for i in m.obj_ids if i in self.store and self._owned_by(i, requester)]
        return Response(self.store.delete(mine))

    def _on_SearchMessage(self, m: SearchMessage, requester: NodeId, now: float) -> Response:  # noqa: N802
        self._need(requester, Right.SEARCH)
        return Response(self.store.search(m.terms, now=now))

    def _on_RenewLeaseMessage(self, m: RenewLeaseMessage, requester: NodeId, now: float) -> Response:  # noqa: N802
        self._need(requester, Right.PUSH)
        lease = m.lease_ms / 1000 if m.lease_ms else None
        mine = [i for i in m.obj_ids if i in self.store and self._owned_by(i, requester)]
        return Response(self.store.renew(mine, now=now, lease=lease))

    def _owned_by(self, obj_id: str, requester: NodeId) -> bool:
        obj = self.store.peek(obj_id)
        return obj is not None and (obj.owner in (None, requester) or self.permissions.is_domain(requester))

    # -- operations and plans --------------------------------------------------------------------

    def _resolve(self, value: Any, requester: NodeId, now: float, scope: dict[str, Any]) -> Any:
        if isinstance(value, ObjectRef):
            if value.id in scope:
                return scope[value.id]
            return self._pullable(value.id, requester, now).value
        return value

    def _compute(self, op: Operation, requester: NodeId, now: float, scope: dict[str, Any]) -> Tensor:
        args = [self._resolve(a, requester, now, scope) for a in op.cmd_args]
        if op.cmd_owner is not None:
            args.insert(0, self._resolve(ObjectRef(op.cmd_owner), requester, now, scope))
        kwargs = {k: self._resolve(v, requester, now, scope) for k, v in op.cmd_kwargs.items()}
        return run_op(op.cmd_name, args, kwargs, max_result_bytes=self.max_result_bytes)

    def _on_Operation(self, m: Operation, requester: NodeId, now: float) -> Response:  # noqa: N802
        self._need(requester, Right.OPERATE)
        if len(m.return_ids) != 1:
            raise OperationError("an operation stores exactly one result: give one return id")
        self._may_write(m.return_ids[0], requester)
        result = self._compute(m, requester, now, {})
        self.store.put(m.return_ids[0], result, now=now, owner=requester)
        return Response(m.return_ids[0])

    def _on_PlanCommandMessage(self, m: PlanCommandMessage, requester: NodeId, now: float) -> Response:  # noqa: N802
        self._need(requester, Right.PLAN)
        if m.command not in ("register", "fetch", "run", "list"):
            raise OperationError(f"unknown plan command {m.command!r} (register, fetch, run, list)")
        if m.command == "list":
            return Response(sorted(self.plans))
        if m.command == "register":
            plan = m.plan
            if plan is None or not plan.name:
                raise OperationError("register needs a plan with a name")
            if m.plan_name and m.plan_name != plan.name:
                raise OperationError("plan_name and plan.name differ")
            if not plan.operations or len(plan.operations) > _MAX_PLAN_STEPS:
                raise OperationError(f"a plan has 1..{_MAX_PLAN_STEPS} operations")
            for step in plan.operations:
                if step.cmd_name not in OPS:
                    raise OperationError(f"plan step {step.cmd_name!r} is not an allowed operation")
                if len(step.return_ids) != 1:
                    raise OperationError("each plan step names exactly one result")
            if plan.name not in self.plans and len(self.plans) >= self.max_plans:
                raise OperationError("too many plans on this worker")
            old = self.plans.get(plan.name)
            if old is not None and old[1] != requester and not self.permissions.is_domain(requester):
                raise PermissionError(f"plan {plan.name!r} belongs to another peer")
            self.plans[plan.name] = (plan, requester)
            return Response(plan.name)
        entry = self.plans.get(m.plan_name)
        if entry is None:
            raise ObjectNotFound(f"no plan {m.plan_name!r}")
        plan = entry[0]
        if m.command == "fetch":
            return Response(encode_struct(plan))
        if m.command == "run":
            return Response(self._run_plan(plan, m, requester, now))
        raise OperationError(f"unknown plan command {m.command!r} (register, fetch, run, list)")

    def _run_plan(self, plan: Plan, m: PlanCommandMessage, requester: NodeId, now: float) -> list[str]:
        if len(m.args) != len(plan.inputs):
            raise OperationError(f"plan {plan.name!r} takes {len(plan.inputs)} argument(s), got {len(m.args)}")
        if m.return_ids and len(m.return_ids) != len(plan.outputs):
            raise OperationError(f"plan {plan.name!r} has {len(plan.outputs)} output(s)")
        scope: dict[str, Any] = {
            name: self._resolve(arg, requester, now, {}) for name, arg in zip(plan.inputs, m.args, strict=True)
        }
        ids = list(m.return_ids) or [f"{plan.name}:{o}" for o in plan.outputs]
        # every value the steps compute is held until the plan ends (its intermediates as much as its
        # outputs): together they must fit what the quota has left, each step checked before it runs
        room = self.store.room(ids)
        held = 0
        for n, step in enumerate(plan.operations, 1):
            result = self._compute(step, requester, now, scope)
            held += value_size(result)
            if held > room:  # so at most one step's result (max_result_bytes) beyond the quota is ever held
                raise QuotaExceeded(
                    f"plan {plan.name!r}: its first {n} step(s) hold {held} bytes of results, more than the "
                    f"{room} bytes the store's quota has left"
                )
            scope[step.return_ids[0]] = result
        missing = [o for o in plan.outputs if o not in scope]
        if missing:
            raise OperationError(f"plan {plan.name!r} never computes {missing}")
        # store all outputs or none: check ownership and the quota for the whole batch first
        for i in ids:
            self._may_write(i, requester)
        slots = self.store.max_objects - len(self.store) + sum(1 for i in set(ids) if i in self.store)
        staged = ObjectStore(room, max_objects=max(slots, 0))
        for i, o in zip(ids, plan.outputs, strict=True):
            staged.put(i, scope[o], now=now)
        for i, o in zip(ids, plan.outputs, strict=True):
            self.store.put(i, scope[o], now=now, owner=requester)
        return ids
