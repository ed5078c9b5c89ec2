"""The public API surface is deliberate: pin it."""

from __future__ import annotations

import pytest

import edgeagent
from edgeagent import exceptions, wire

LAZY = {
    "Node": "edgeagent.node",
    "NodeConfig": "edgeagent.node",
    "Identity": "edgeagent.identity",
    "DeviceClient": "edgeagent.client",
    "DomainClient": "edgeagent.client",
}


def test_top_level_exports() -> None:
    assert sorted(edgeagent.__all__) == sorted(["__version__", *LAZY, *exceptions.__all__])
    assert len(edgeagent.__all__) == len(set(edgeagent.__all__))
    for name in edgeagent.__all__:
        assert hasattr(edgeagent, name), name
    assert set(edgeagent.__all__) <= set(dir(edgeagent))


def test_lazy_names_resolve_to_their_definitions() -> None:
    import importlib

    for name, module in LAZY.items():
        assert getattr(edgeagent, name) is getattr(importlib.import_module(module), name), name
    from edgeagent import DeviceClient, DomainClient, Identity, Node, NodeConfig

    assert (Node.__name__, NodeConfig.__name__, Identity.__name__) == ("Node", "NodeConfig", "Identity")
    assert (DeviceClient.__name__, DomainClient.__name__) == ("DeviceClient", "DomainClient")


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        edgeagent.Nope  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(edgeagent, "node_config")
    with pytest.raises(ImportError):
        exec("from edgeagent import Nope", {})


def test_import_edgeagent_is_cheap() -> None:
    import subprocess
    import sys

    heavy = ["edgeagent.node", "edgeagent.client", "websockets", "numpy", "aiortc"]
    code = f"import sys, edgeagent; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # and the first access imports what it names
    code = "import sys, edgeagent; edgeagent.Node; sys.exit('edgeagent.node' not in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_wire_exports_resolve() -> None:
    for name in wire.__all__:
        assert hasattr(wire, name), name
    assert {"encode", "decode", "Envelope", "NodeId", "Tensor", "Limits", "DecodeError"} <= set(wire.__all__)


def test_every_error_is_an_edgeagent_error() -> None:
    for name in exceptions.__all__:
        obj = getattr(exceptions, name)
        if name == "remote_error":
            assert callable(obj)
            continue
        assert isinstance(obj, type) and issubclass(obj, exceptions.EdgeAgentError), name
    assert issubclass(exceptions.DecodeError, exceptions.RemoteProtocolError)
    assert issubclass(exceptions.EncodeError, exceptions.LocalProtocolError)


def test_links_exports_resolve_without_aiortc() -> None:
    import subprocess
    import sys

    from edgeagent import links

    for name in links.__all__:
        assert hasattr(links, name), name
    code = "import sys, edgeagent.links, edgeagent.node; sys.exit('aiortc' in sys.modules or 'av' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
