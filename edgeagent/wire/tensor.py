"""Framework-neutral tensors: a dtype name, a shape and raw little-endian bytes.

On CBOR a tensor is an RFC 8746 row-major multi-dimensional array: tag 40 over
``[shape, typed-array]`` where the typed array is one of the little-endian
typed-array tags below, so any CBOR reader can decode it. On protobuf it is the
``Tensor`` message. numpy is optional: ``from_numpy``/``to_numpy`` import it
lazily.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..exceptions import EncodeError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["DTYPES", "Tensor"]

#: dtype name -> (item size in bytes, RFC 8746 little-endian typed-array tag)
DTYPES: Final[dict[str, tuple[int, int]]] = {
    "uint8": (1, 64),
    "uint16": (2, 69),
    "uint32": (4, 70),
    "uint64": (8, 71),
    "int8": (1, 72),
    "int16": (2, 77),
    "int32": (4, 78),
    "int64": (8, 79),
    "float16": (2, 84),
    "float32": (4, 85),
    "float64": (8, 86),
}
#: RFC 8746 typed-array tag -> dtype name (little-endian and single-byte tags only)
TAG_TO_DTYPE: Final[dict[int, str]] = {tag: name for name, (_, tag) in DTYPES.items()}
MAX_DIMS: Final = 32


@dataclass(frozen=True, slots=True)
class Tensor:
    """A dense tensor. ``data`` holds ``prod(shape) * itemsize`` little-endian bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def __post_init__(self) -> None:
        problem = tensor_problem(self.dtype, self.shape, len(self.data))
        if problem:
            raise EncodeError(problem)

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype][0]

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @classmethod
    def from_numpy(cls, array: np.ndarray[Any, Any]) -> Tensor:
        import numpy as np

        arr = np.asarray(array)
        if not arr.flags.c_contiguous:  # (ascontiguousarray would turn a 0-d array into 1-d)
            arr = np.ascontiguousarray(arr)
        name = arr.dtype.name
        if name not in DTYPES:
            raise EncodeError(f"dtype {name} has no wire form; use one of {sorted(DTYPES)}")
        if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        return cls(name, tuple(int(d) for d in arr.shape), arr.tobytes())

    def to_numpy(self) -> np.ndarray[Any, Any]:
        """A read-only numpy view of ``data`` (no copy)."""
        import numpy as np

        dt = np.dtype(self.dtype).newbyteorder("<")
        return np.frombuffer(self.data, dtype=dt).reshape(self.shape)

    def __repr__(self) -> str:
        return f"Tensor({self.dtype}, shape={self.shape}, {len(self.data)} bytes)"


def tensor_problem(dtype: object, shape: object, nbytes: int) -> str | None:
    """Why (dtype, shape, nbytes) is not a valid tensor, or None when it is."""
    if not isinstance(dtype, str) or dtype not in DTYPES:
        return f"unknown tensor dtype {dtype!r}"
    if not isinstance(shape, tuple) or len(shape) > MAX_DIMS:
        return f"tensor shape must be a tuple of at most {MAX_DIMS} dimensions"
    for d in shape:
        if type(d) is not int or d < 0 or d > 2**62:
            return f"bad tensor dimension {d!r}"
    expected = math.prod(shape) * DTYPES[dtype][0]
    if expected != nbytes:
        return f"tensor {dtype}{list(shape)} needs {expected} bytes, got {nbytes}"
    return None
