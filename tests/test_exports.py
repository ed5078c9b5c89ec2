"""The public API surface is deliberate: pin it."""

from __future__ import annotations

import edgeagent
from edgeagent import exceptions, wire


def test_top_level_exports() -> None:
    assert set(edgeagent.__all__) == {"__version__", *exceptions.__all__}
    for name in edgeagent.__all__:
        assert hasattr(edgeagent, name)


def test_wire_exports_resolve() -> None:
    for name in wire.__all__:
        assert hasattr(wire, name), name
    assert {"encode", "decode", "Envelope", "NodeId", "Tensor", "Limits", "DecodeError"} <= set(wire.__all__)


def test_every_error_is_an_edgeagent_error() -> None:
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.EdgeAgentError)
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
