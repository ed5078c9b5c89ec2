"""Decoding limits: every frame is checked against these before anything is allocated."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "Limits"]

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps applied while decoding a frame.

    ``max_frame``        bytes in one frame (a larger frame is refused unread);
    ``max_depth``        nesting of arrays/maps/messages (values, route trees);
    ``max_collection``   elements in one array, map or repeated field;
    ``max_tensor_bytes`` raw bytes of one tensor.

    Config keys (``[wire]`` table): ``max_frame_bytes``, ``max_depth``,
    ``max_collection``, ``max_tensor_bytes``.
    """

    max_frame: int = 16 * MiB
    max_depth: int = 32
    max_collection: int = 65_536
    max_tensor_bytes: int = 16 * MiB

    def __post_init__(self) -> None:
        for name in ("max_frame", "max_depth", "max_collection", "max_tensor_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")


DEFAULT_LIMITS = Limits()
