"""The allow-listed tensor operations: results equal numpy's, malformed requests are refused before computing."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from edgeagent.exceptions import OperationError
from edgeagent.wire import DTYPES, Tensor
from edgeagent.worker import OPS, run_op

MB = 1 << 20
REQUIRED = {"add", "sub", "mul", "div", "matmul", "sum", "mean", "reshape", "transpose", "astype"}


def t(array: Any, dtype: str | None = None) -> Tensor:
    return Tensor.from_numpy(np.asarray(array, dtype=dtype))


def run(name: str, *args: Any, max_result_bytes: int = MB, **kwargs: Any) -> np.ndarray[Any, Any]:
    return run_op(name, list(args), kwargs, max_result_bytes=max_result_bytes).to_numpy()


def np_arg(a: Any) -> Any:
    return a.to_numpy() if isinstance(a, Tensor) else a


def assert_same(got: np.ndarray[Any, Any], expected: Any) -> None:
    expected = np.asarray(expected)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-6)


A23 = np.arange(6, dtype="float32").reshape(2, 3) + 1
B3 = np.array([2.0, -1.0, 0.5], dtype="float32")
I23 = np.arange(6, dtype="int32").reshape(2, 3)


def test_the_required_commands_are_allowed() -> None:
    assert set(OPS) >= REQUIRED | {"max", "min"}


# -- elementwise with broadcasting and scalars ------------------------------------------------------

BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide}
BINARY_ARGS = [
    (t(A23), t(A23)),
    (t(A23), t(B3)),  # (2,3) with (3,)
    (t(A23[:, :1]), t(B3)),  # (2,1) with (3,)
    (t(B3), t(A23)),
    (t(A23), 2.5),  # tensor and a float scalar
    (3, t(A23)),  # int scalar and a tensor
    (t(I23), t(I23 + 1)),  # ints (div gives float64)
    (t(I23), 2),
    (4, 2),  # scalars only
    (t(np.ones((2, 1, 4), "float64")), t(np.arange(12, dtype="float64").reshape(3, 4))),  # (2,1,4) with (3,4)
]


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("args", BINARY_ARGS, ids=lambda a: "-".join(str(getattr(x, "shape", x)) for x in a))
def test_binary_ops_match_numpy(name: str, args: tuple[Any, Any]) -> None:
    with np.errstate(all="ignore"):
        expected = BINARY[name](*map(np_arg, args))
    assert_same(run(name, *args), expected)


@pytest.mark.parametrize(("name", "fn"), [("maximum", np.maximum), ("minimum", np.minimum)])
def test_maximum_minimum(name: str, fn: Any) -> None:
    assert_same(run(name, t(A23), t(B3)), fn(A23, B3))


@pytest.mark.parametrize(
    ("name", "fn"),
    [("neg", np.negative), ("abs", np.abs), ("sqrt", np.sqrt), ("square", np.square), ("exp", np.exp),
     ("log", np.log), ("tanh", np.tanh)],
)  # fmt: skip
def test_unary_ops(name: str, fn: Any) -> None:
    assert_same(run(name, t(A23)), fn(A23))


def test_division_by_zero_gives_inf_not_an_error() -> None:
    got = run("div", t([1.0, -1.0, 0.0]), 0.0)
    assert got[0] == np.inf and got[1] == -np.inf and np.isnan(got[2])


@pytest.mark.parametrize(("a", "b"), [((2, 3), (4,)), ((2, 3), (3, 2)), ((2, 1, 3), (4, 2))])
def test_shapes_that_do_not_broadcast_are_refused(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    with pytest.raises(OperationError, match="broadcast"):
        run("add", t(np.zeros(a)), t(np.zeros(b)))


# -- matmul -----------------------------------------------------------------------------------------

MATMUL = [
    ((2, 3), (3, 4)),
    ((3,), (3,)),  # 1-D . 1-D -> scalar
    ((3,), (3, 2)),  # 1-D @ 2-D
    ((2, 3), (3,)),  # 2-D @ 1-D
    ((5, 2, 3), (5, 3, 4)),  # batched
    ((5, 2, 3), (3, 4)),  # batch on one side
    ((2, 1, 2, 3), (4, 3, 2)),  # broadcast batch dims -> (2, 4, 2, 2)
    ((4,), (2, 4, 5)),  # 1-D with a batch
    ((2, 3, 4), (4,)),
]


@pytest.mark.parametrize(("sa", "sb"), MATMUL, ids=str)
def test_matmul_matches_numpy(sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal(sa)
    b = rng.standard_normal(sb)
    assert_same(run("matmul", t(a), t(b)), np.matmul(a, b))


@pytest.mark.parametrize(
    ("sa", "sb", "match"),
    [((2, 3), (2, 3), "align"), ((3,), (4,), "align"), ((), (3,), "1-D"), ((2, 2, 3), (3, 3, 2), "broadcast")],
)
def test_matmul_bad_shapes(sa: tuple[int, ...], sb: tuple[int, ...], match: str) -> None:
    with pytest.raises(OperationError, match=match):
        run("matmul", t(np.ones(sa)), t(np.ones(sb)))


def test_matmul_with_a_scalar_is_refused() -> None:
    with pytest.raises(OperationError):
        run("matmul", t(np.ones((2, 2))), 2.0)


# -- reductions -------------------------------------------------------------------------------------

X234 = np.arange(24, dtype="float64").reshape(2, 3, 4) - 7


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize(
    "kw",
    [{}, {"axis": 0}, {"axis": 2}, {"axis": -1}, {"keepdims": True}, {"axis": 1, "keepdims": True},
     {"axis": -2, "keepdims": False}, {"axis": None}],
    ids=str,
)  # fmt: skip
def test_reductions_match_numpy(name: str, kw: dict[str, Any]) -> None:
    assert_same(run(name, t(X234), **kw), getattr(np, name)(X234, **kw))


def test_sum_of_ints_and_mean_of_ints() -> None:
    assert_same(run("sum", t(I23), axis=1), np.sum(I23, axis=1))
    assert_same(run("mean", t(I23)), np.mean(I23))


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
def test_reductions_over_several_axes(name: str) -> None:
    assert_same(run(name, t(X234), axis=[0, 2]), getattr(np, name)(X234, axis=(0, 2)))


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"axis": 3}, "out of range"), ({"axis": -4}, "out of range"), ({"axis": 1.0}, "int"), ({"axis": True}, "int"),
     ({"axis": "0"}, "int"), ({"axis": [0, 0]}, "repeated"), ({"axis": [0, -3]}, "repeated"),
     ({"keepdims": 1}, "bool")],
    ids=str,
)  # fmt: skip
def test_reduction_bad_arguments(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(OperationError, match=match):
        run("sum", t(X234), **kw)


def test_reduction_of_a_scalar_tensor_with_an_axis_is_refused() -> None:
    with pytest.raises(OperationError, match="out of range"):
        run("sum", t(3.0), axis=0)


def test_max_of_an_empty_tensor_is_an_operation_error() -> None:
    with pytest.raises(OperationError, match="max failed"):
        run("max", t(np.zeros((0,), "float32")))


# -- reshape, transpose, astype ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [[24], [-1], [4, -1], [-1, 2, 3], [2, 3, 4], [1, 24, 1], [2, -1, 1, 3]], ids=str)
def test_reshape_matches_numpy(shape: list[int]) -> None:
    assert_same(run("reshape", t(X234), shape=shape), np.reshape(X234, shape))


def test_reshape_scalar_and_empty() -> None:
    assert_same(run("reshape", t(5.0), shape=[1, 1]), np.reshape(np.float64(5.0), (1, 1)))
    assert_same(run("reshape", t(np.zeros((0, 3))), shape=[3, 0]), np.zeros((3, 0)))


@pytest.mark.parametrize(
    "kw",
    [{"shape": [5, 5]}, {"shape": [-1, -1]}, {"shape": [-2, 12]}, {"shape": [7, -1]}, {"shape": [0, -1]},
     {"shape": (24,)}, {"shape": 24}, {"shape": [24.0]}, {"shape": [1] * 33}, {}],
    ids=str,
)  # fmt: skip
def test_reshape_bad_shapes(kw: dict[str, Any]) -> None:
    with pytest.raises(OperationError):
        run("reshape", t(X234), **kw)


@pytest.mark.parametrize("axes", [None, [0, 1, 2], [2, 0, 1], [1, 0, 2], [-1, 0, 1]], ids=str)
def test_transpose_matches_numpy(axes: list[int] | None) -> None:
    kw: dict[str, Any] = {} if axes is None else {"axes": axes}
    assert_same(run("transpose", t(X234), **kw), np.transpose(X234, axes))


@pytest.mark.parametrize(
    ("axes", "match"), [([0, 1], "every dimension"), ([0, 0, 1], "repeated"), ([0, 1, 3], "out of range")]
)
def test_transpose_bad_axes(axes: list[int], match: str) -> None:
    with pytest.raises(OperationError, match=match):
        run("transpose", t(X234), axes=axes)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_astype_to_every_wire_dtype(dtype: str) -> None:
    src = np.array([[0.0, 1.5, 2.0], [3.0, 4.25, 100.0]], dtype="float32")
    assert_same(run("astype", t(src), dtype=dtype), src.astype(dtype))


@pytest.mark.parametrize("dtype", ["bool", "complex64", "object", "float128", "", None, 3])
def test_astype_without_a_wire_form_is_refused(dtype: Any) -> None:
    with pytest.raises(OperationError, match="astype needs dtype"):
        run("astype", t(A23), dtype=dtype)


@pytest.mark.parametrize("dtype", [["float32"], {"a": 1}])
def test_astype_with_an_unhashable_dtype_is_an_operation_error(dtype: Any) -> None:
    with pytest.raises(OperationError):
        run("astype", t(A23), dtype=dtype)


def test_a_result_dtype_without_wire_form_is_refused() -> None:
    with pytest.raises(OperationError, match="no wire form"):
        run("add", True, True)  # numpy gives a bool, which has no wire form


# -- malformed requests -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["eval", "exec", "__import__", "load", "fromfile", "save", "frombuffer", "", "ADD"])
def test_unknown_operations_are_refused(name: str) -> None:
    with pytest.raises(OperationError, match="not allowed"):
        run(name, t(A23))


@pytest.mark.parametrize(("name", "n"), [("add", 1), ("add", 3), ("sum", 2), ("sum", 0), ("matmul", 1), ("neg", 2)])
def test_wrong_arity(name: str, n: int) -> None:
    with pytest.raises(OperationError, match="operand"):
        run(name, *[t(A23)] * n)


@pytest.mark.parametrize(
    ("name", "kw"),
    [("add", {"axis": 0}), ("sum", {"out": 1}), ("sum", {"dtype": "float32"}),
     ("reshape", {"shape": [6], "order": "F"}), ("matmul", {"axes": [0]}), ("neg", {"where": True})],
    ids=str,
)  # fmt: skip
def test_unexpected_kwargs(name: str, kw: dict[str, Any]) -> None:
    args = [t(A23)] * OPS[name].arity
    with pytest.raises(OperationError, match="does not take"):
        run(name, *args, **kw)


@pytest.mark.parametrize("bad", ["text", b"bytes", None, [1, 2], {"a": 1}])
def test_operands_must_be_tensors_or_numbers(bad: Any) -> None:
    with pytest.raises(OperationError, match="tensors or numbers"):
        run("add", t(A23), bad)


def test_numeric_failures_are_operation_errors() -> None:
    with pytest.raises(OperationError, match="add failed"):
        run("add", t(np.arange(3, dtype="int8")), 1000)  # out of bounds for int8
    with pytest.raises(OperationError):
        run("add", 10**30, 1)


# -- result size is checked before computing ---------------------------------------------------------


def test_oversized_matmul_is_refused_before_computing() -> None:
    a = t(np.ones((20000, 1)))  # (20000,1) @ (1,20000) float64 would be 3.2 GB
    start = time.perf_counter()
    with pytest.raises(OperationError, match="larger than this worker allows"):
        run("matmul", a, t(np.ones((1, 20000))), max_result_bytes=MB)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("name", "args", "kw", "nbytes"),
    [("add", (t(A23), t(A23)), {}, 6 * 8),  # elements x max(itemsize, 8)
     ("matmul", (t(np.ones((3, 4))), t(np.ones((4, 5)))), {}, 15 * 8),
     ("astype", (t(np.ones(10, "float64")),), {"dtype": "uint8"}, 10 * 8),
     ("sum", (t(X234),), {"axis": 0}, 12 * 8),
     ("reshape", (t(X234),), {"shape": [-1]}, 24 * 8)],
)  # fmt: skip
def test_result_size_limit_boundary(name: str, args: tuple[Any, ...], kw: dict[str, Any], nbytes: int) -> None:
    run(name, *args, max_result_bytes=nbytes, **kw)
    with pytest.raises(OperationError, match="larger than this worker allows"):
        run(name, *args, max_result_bytes=nbytes - 1, **kw)


def test_broadcast_blowup_is_refused_before_computing() -> None:
    start = time.perf_counter()
    with pytest.raises(OperationError, match="larger"):
        run("mul", t(np.ones((30000, 1), "float32")), t(np.ones((1, 30000), "float32")), max_result_bytes=MB)
    assert time.perf_counter() - start < 0.5


def test_results_are_wire_tensors() -> None:
    out = run_op("add", [2, 3], {}, max_result_bytes=MB)
    assert isinstance(out, Tensor) and out.shape == () and out.to_numpy() == 5
