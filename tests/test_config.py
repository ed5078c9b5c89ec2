"""Configuration files: defaults, the documented example, and clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgeagent.config import DiscoveryConfig, LinkConfig, RoutingConfig, load_config
from edgeagent.exceptions import ConfigError
from edgeagent.routing import Priors
from edgeagent.wire import Limits

ROOT = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    assert load_config(None).limits == Limits()


def test_example_config_is_valid_and_says_the_defaults() -> None:
    cfg = load_config(ROOT / "configs" / "edgeagent.example.toml")
    assert cfg.limits == Limits()
    assert cfg.link == LinkConfig()
    assert cfg.discovery == DiscoveryConfig()
    # [routing]: the documented priors are the built-in defaults
    assert Priors.from_config(cfg.routing.priors) == Priors()
    assert dataclasses.replace(cfg.routing, priors={}) == RoutingConfig()


def test_routing_peer_marks(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(
        '[routing]\nrelay = true\n[routing.peers."ws://10.0.0.2:7400"]\nnetwork = "cellular"\nmetered = true\n'
        "cost_per_gb = 2\n"
    )
    cfg = load_config(p).routing
    assert cfg.relay is True
    assert cfg.peers == {"ws://10.0.0.2:7400": {"network_kind": "cellular", "metered": True, "cost_per_gb": 2.0}}


def test_values_are_applied(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[wire]\nmax_frame_bytes = 1024\nmax_depth = 8\n")
    assert load_config(p).limits == Limits(max_frame=1024, max_depth=8)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[wire]\nmax_frame = 1\n", "unknown key wire.max_frame"),
        ("[wires]\n", "unknown table"),
        ("[wire]\nmax_depth = -1\n", "positive integer"),
        ("[wire]\nmax_depth = 'x'\n", "positive integer"),
        ("[wire\n", "not valid TOML"),
        ("[link]\nkeepalive = 0\n", "positive number"),
        ("[link]\ncipher = 'rot13'\n", "cipher"),
        ("[link]\ncodecs = ['json']\n", "codecs"),
        ("[link]\nkeepalive = 10\ndead_after = 5\n", "must exceed"),
        ("[link]\nspeed = 1\n", "unknown key link.speed"),
        ("[discovery]\npeers = ['http://x']\n", "ws:// or wss://"),
        ("[discovery]\nmdns = 'on'\n", "discovery.mdns"),
        ("[routing]\nrelay = 'yes'\n", "routing.relay"),
        ("[routing]\nprobe_bytes = 10\n", "probe_bytes"),
        ("[routing]\nhops = 1\n", "unknown key routing.hops"),
        ("[routing.priors]\nspeed = 1\n", "unknown key 'speed'"),
        ("[routing.priors.rtt_ms]\nsatellite = 600\n", "unknown network kind"),
        ("[routing.priors.rtt_ms]\nwifi = -1\n", "non-negative"),
        ('[routing.peers."ws://x"]\nnetwork = "5g"\n', "is not valid"),
    ],
)
def test_bad_configs(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_link_values_are_applied(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[link]\nkeepalive = 1\ndead_after = 3.5\ncodecs = ['protobuf']\n")
    cfg = load_config(p).link
    assert (cfg.keepalive, cfg.dead_after, cfg.codecs) == (1.0, 3.5, ("protobuf",))


def test_discovery_values_are_applied(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[discovery]\npeers = ['ws://10.0.0.2:7400']\nmdns = 'auto'\n")
    assert load_config(p).discovery == DiscoveryConfig(("ws://10.0.0.2:7400",), "auto", False)
