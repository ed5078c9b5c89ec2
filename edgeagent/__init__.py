"""edgeagent: a lightweight peer-to-peer agent for phones, Raspberry Pis and edge boxes.

``import edgeagent`` is cheap: the exceptions load with it, while ``Node``,
``NodeConfig``, ``Identity``, ``DeviceClient`` and ``DomainClient`` load on first
use (PEP 562), so the node, websockets, numpy and aiortc stay unimported until
something needs them.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from .exceptions import *  # noqa: F403
from .exceptions import __all__ as _exc_all

if TYPE_CHECKING:  # pragma: no cover
    from .client import DeviceClient, DomainClient
    from .identity import Identity
    from .node import Node, NodeConfig

__version__ = "0.1.0"

# public name -> the submodule that defines it, imported on first access
_LAZY: dict[str, str] = {
    "DeviceClient": "edgeagent.client",
    "DomainClient": "edgeagent.client",
    "Identity": "edgeagent.identity",
    "Node": "edgeagent.node",
    "NodeConfig": "edgeagent.node",
}

__all__ = ["__version__", "DeviceClient", "DomainClient", "Identity", "Node", "NodeConfig", *_exc_all]

logging.getLogger(__name__).addHandler(logging.NullHandler())


if not TYPE_CHECKING:  # hidden from type checkers, which then flag a misspelt edgeagent.Name

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
