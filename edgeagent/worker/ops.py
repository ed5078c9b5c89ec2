"""The allow-list of tensor operations a worker runs for its peers.

Only the commands below exist; each declares the keyword arguments it takes,
and its result shape is worked out *before* computing so a request cannot make
the worker allocate more than ``max_result_bytes``. Nothing is looked up by
name on numpy, nothing is evaluated: a command name that is not in the table
is an error. numpy is imported when the first operation runs (the ``fl``
extra); a relay-only node never loads it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import OperationError
from ..wire import DTYPES, Tensor

__all__ = ["OPS", "run_op"]


@dataclass(frozen=True)
class Op:
    arity: int  # positional tensor-or-scalar arguments
    kwargs: frozenset[str]
    shape: Callable[[Sequence[tuple[int, ...]], Mapping[str, Any]], tuple[int, ...]]
    fn: Callable[..., Any]  # fn(np, *args, **kwargs)


def _broadcast(shapes: Sequence[tuple[int, ...]], kw: Mapping[str, Any]) -> tuple[int, ...]:
    out: list[int] = []
    for dims in zip(*(((1,) * (max(map(len, shapes)) - len(s)) + s) for s in shapes), strict=True):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise OperationError(f"shapes {list(shapes)} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _matmul(shapes: Sequence[tuple[int, ...]], kw: Mapping[str, Any]) -> tuple[int, ...]:
    a, b = shapes
    if not a or not b:
        raise OperationError("matmul needs at least 1-D operands")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise OperationError(f"matmul shapes {a} and {b} do not align")
    batch = _broadcast([a2[:-2], b2[:-2]], kw) if (a2[:-2] or b2[:-2]) else ()
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _axes(value: Any, ndim: int) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if not all(type(i) is int for i in items):
        raise OperationError("axis must be an int or a list of ints")
    norm = []
    for i in items:
        if not -ndim <= i < ndim:
            raise OperationError(f"axis {i} out of range for {ndim} dimensions")
        norm.append(i % ndim)
    if len(set(norm)) != len(norm):
        raise OperationError("repeated axis")
    return tuple(norm)


def _reduce(shapes: Sequence[tuple[int, ...]], kw: Mapping[str, Any]) -> tuple[int, ...]:
    (s,) = shapes
    if "keepdims" in kw and type(kw["keepdims"]) is not bool:
        raise OperationError("keepdims must be a bool")
    if kw.get("axis") is None:
        return tuple(1 for _ in s) if kw.get("keepdims") else ()
    axes = _axes(kw["axis"], len(s))
    if kw.get("keepdims"):
        return tuple(1 if i in axes else d for i, d in enumerate(s))
    return tuple(d for i, d in enumerate(s) if i not in axes)


def _same(shapes: Sequence[tuple[int, ...]], kw: Mapping[str, Any]) -> tuple[int, ...]:
    return shapes[0]


def _reshape(shapes: Sequence[tuple[int, ...]], kw: Mapping[str, Any]) -> tuple[int, ...]:
    (s,) = shapes
    new = kw.get("shape")
    if not isinstance(new, list) or not all(type(d) is int for d in new) or len(new) > 32:
        raise OperationError("reshape needs shape=[ints]")
    size = math.prod(s)
    if new.count(-1) > 1 or any(d < -1 for d in new):
        raise OperationError(f"bad shape {new}")
    known = math.prod(d for d in new if d != -1)
    if -1 in new:
        if known == 0 or size % known:
            raise OperationError(f"cannot reshape {s} to {new}")
        new = [size // known if d == -1 else d for d in new]
    elif known != size:
        raise OperationError(f"cannot reshape {s} to {new}")
    return tuple(new)


def _transpose(shapes: Sequence[tuple[int, ...]], kw: Mapping[str, Any]) -> tuple[int, ...]:
    (s,) = shapes
    axes = kw.get("axes")
    if axes is None:
        return tuple(reversed(s))
    order = _axes(axes, len(s))
    if len(order) != len(s):
        raise OperationError("axes must list every dimension once")
    return tuple(s[i] for i in order)


def _astype(shapes: Sequence[tuple[int, ...]], kw: Mapping[str, Any]) -> tuple[int, ...]:
    dtype = kw.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise OperationError(f"astype needs dtype= one of {sorted(DTYPES)}")
    return shapes[0]


def _unary(name: str) -> Op:
    return Op(1, frozenset(), _same, lambda np, x: getattr(np, name)(x))


OPS: dict[str, Op] = {
    "add": Op(2, frozenset(), _broadcast, lambda np, a, b: np.add(a, b)),
    "sub": Op(2, frozenset(), _broadcast, lambda np, a, b: np.subtract(a, b)),
    "mul": Op(2, frozenset(), _broadcast, lambda np, a, b: np.multiply(a, b)),
    "div": Op(2, frozenset(), _broadcast, lambda np, a, b: np.true_divide(a, b)),
    "maximum": Op(2, frozenset(), _broadcast, lambda np, a, b: np.maximum(a, b)),
    "minimum": Op(2, frozenset(), _broadcast, lambda np, a, b: np.minimum(a, b)),
    "matmul": Op(2, frozenset(), _matmul, lambda np, a, b: np.matmul(a, b)),
    "sum": Op(1, frozenset({"axis", "keepdims"}), _reduce, lambda np, x, **kw: np.sum(x, **kw)),
    "mean": Op(1, frozenset({"axis", "keepdims"}), _reduce, lambda np, x, **kw: np.mean(x, **kw)),
    "max": Op(1, frozenset({"axis", "keepdims"}), _reduce, lambda np, x, **kw: np.max(x, **kw)),
    "min": Op(1, frozenset({"axis", "keepdims"}), _reduce, lambda np, x, **kw: np.min(x, **kw)),
    "reshape": Op(1, frozenset({"shape"}), _reshape, lambda np, x, shape: np.reshape(x, shape)),
    "transpose": Op(1, frozenset({"axes"}), _transpose, lambda np, x, axes=None: np.transpose(x, axes)),
    "astype": Op(1, frozenset({"dtype"}), _astype, lambda np, x, dtype: np.asarray(x).astype(dtype)),
    "neg": _unary("negative"),
    "abs": _unary("abs"),
    "sqrt": _unary("sqrt"),
    "square": _unary("square"),
    "exp": _unary("exp"),
    "log": _unary("log"),
    "tanh": _unary("tanh"),
}


def _shape_of(arg: Any) -> tuple[int, ...]:
    if isinstance(arg, Tensor):
        return arg.shape
    if type(arg) in (int, float, bool):
        return ()
    raise OperationError(f"operands must be tensors or numbers, got {type(arg).__name__}")


_NUMPY: Any = None


def _numpy() -> Any:
    global _NUMPY
    if _NUMPY is None:
        try:
            import numpy
        except ImportError:
            raise OperationError("this worker cannot run tensor operations: install edgeagent[fl] (numpy)") from None
        _NUMPY = numpy
    return _NUMPY


def run_op(name: str, args: Sequence[Any], kwargs: Mapping[str, Any], *, max_result_bytes: int) -> Tensor:
    """Run allow-listed command ``name`` on resolved arguments (tensors and numbers)."""
    op = OPS.get(name)
    if op is None:
        raise OperationError(f"operation {name!r} is not allowed (allowed: {', '.join(sorted(OPS))})")
    if len(args) != op.arity:
        raise OperationError(f"{name} takes {op.arity} operand(s), got {len(args)}")
    extra = set(kwargs) - op.kwargs
    if extra:
        raise OperationError(f"{name} does not take {sorted(extra)}")
    shapes = [_shape_of(a) for a in args]
    out_shape = op.shape(shapes, kwargs)
    itemsize = max((DTYPES[a.dtype][0] for a in args if isinstance(a, Tensor)), default=8)
    if name == "astype":
        itemsize = DTYPES[kwargs["dtype"]][0]
    if math.prod(out_shape) * max(itemsize, 8) > max_result_bytes:
        raise OperationError(f"{name} would make a {out_shape} result, larger than this worker allows")
    np = _numpy()
    operands = [a.to_numpy() if isinstance(a, Tensor) else a for a in args]
    # lists arrive for axis/axes (CBOR has no tuples); numpy wants tuples there
    call_kwargs = {k: tuple(v) if isinstance(v, list) and k in ("axis", "axes") else v for k, v in kwargs.items()}
    try:
        with np.errstate(all="ignore"):
            if any(getattr(o, "size", 1) == 0 for o in operands):  # empty reductions warn
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    result = np.asarray(op.fn(np, *operands, **call_kwargs))
            else:
                result = np.asarray(op.fn(np, *operands, **call_kwargs))
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise OperationError(f"{name} failed: {exc}") from None
    if result.dtype.name not in DTYPES:
        raise OperationError(f"{name} produced dtype {result.dtype.name}, which has no wire form")
    return Tensor.from_numpy(result)
