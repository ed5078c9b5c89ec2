"""Configuration files (TOML). Every key is documented in ``configs/edgeagent.example.toml``.

Unknown tables or keys are an error (a typo must not be silently ignored).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ConfigError
from .wire.limits import Limits

__all__ = ["Config", "load_config"]

_WIRE_KEYS = {
    "max_frame_bytes": "max_frame",
    "max_depth": "max_depth",
    "max_collection": "max_collection",
    "max_tensor_bytes": "max_tensor_bytes",
}


@dataclass(frozen=True)
class Config:
    """The parsed configuration. Later sections (links, discovery, cost...) extend it."""

    limits: Limits = field(default_factory=Limits)
    source: Path | None = None


def _wire(table: Any, path: Path) -> Limits:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [wire] must be a table")
    kwargs: dict[str, int] = {}
    for key, value in table.items():
        if key not in _WIRE_KEYS:
            raise ConfigError(f"{path}: unknown key wire.{key} (known: {', '.join(sorted(_WIRE_KEYS))})")
        if type(value) is not int or value < 1:
            raise ConfigError(f"{path}: wire.{key} must be a positive integer, got {value!r}")
        kwargs[_WIRE_KEYS[key]] = value
    return Limits(**kwargs)


def load_config(path: Path | None) -> Config:
    """Read a TOML config file; ``None`` gives the defaults."""
    if path is None:
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    known = {"wire"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: unknown table or key {key!r} (known: {', '.join(sorted(known))})")
    limits = _wire(data["wire"], path) if "wire" in data else Limits()
    return Config(limits=limits, source=path)
