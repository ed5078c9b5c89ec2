"""Fixed expectations per transport and network kind, used until a hop is measured.

These are the "static link priorities" of the route table: a fresh Wi-Fi link
is assumed slower than Ethernet and faster than cellular before any probe has
run. Measured figures replace them hop by hop. Defaults follow DESIGN s.8 and
common figures for home Wi-Fi and 4G uplinks; ``[routing.priors]`` in the
config file overrides any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["DEFAULT_BANDWIDTH_BPS", "DEFAULT_RTT_MS", "TRANSPORT_CAP_BPS", "Priors"]

#: expected round trip per network kind, milliseconds
DEFAULT_RTT_MS: Final[Mapping[str, float]] = {
    "loopback": 0.2,
    "ethernet": 1.0,
    "wifi": 6.0,
    "cellular": 60.0,
    "unknown": 20.0,
}
#: expected throughput per network kind, bytes per second
DEFAULT_BANDWIDTH_BPS: Final[Mapping[str, float]] = {
    "loopback": 500e6,
    "ethernet": 50e6,
    "wifi": 6.25e6,  # 50 Mbit/s
    "cellular": 1.25e6,  # 10 Mbit/s uplink
    "unknown": 2.5e6,
}
#: ceilings a transport puts on throughput whatever the network (aiortc moves 4-8 MiB/s here)
TRANSPORT_CAP_BPS: Final[Mapping[str, float]] = {"webrtc": 6e6}


@dataclass(frozen=True)
class Priors:
    """Prior RTT and bandwidth per network kind, transport ceilings, and the cost of a relay stop."""

    rtt: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RTT_MS))
    bandwidth: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BANDWIDTH_BPS))
    transport_cap: Mapping[str, float] = field(default_factory=lambda: dict(TRANSPORT_CAP_BPS))
    relay_ms: float = 0.5  # added to the RTT for each relay a route passes (decode, forward, encode)

    def rtt_ms(self, transport: str, network_kind: str) -> float:
        return self.rtt.get(network_kind, self.rtt.get("unknown", 20.0))

    def bandwidth_bps(self, transport: str, network_kind: str) -> float:
        bw = self.bandwidth.get(network_kind, self.bandwidth.get("unknown", 2.5e6))
        cap = self.transport_cap.get(transport)
        return bw if cap is None else min(bw, cap)

    @classmethod
    def from_config(cls, table: Mapping[str, object]) -> Priors:
        """Build from a ``[routing.priors]`` table: ``rtt_ms.KIND``, ``bandwidth_mbit.KIND``, ``relay_ms``."""
        rtt = dict(DEFAULT_RTT_MS)
        bandwidth = dict(DEFAULT_BANDWIDTH_BPS)
        relay_ms = 0.5
        for key, value in table.items():
            if key == "relay_ms":
                relay_ms = _number(key, value)
            elif key == "rtt_ms" and isinstance(value, Mapping):
                for kind, v in value.items():
                    rtt[_kind(kind)] = _number(f"rtt_ms.{kind}", v)
            elif key == "bandwidth_mbit" and isinstance(value, Mapping):
                for kind, v in value.items():
                    bandwidth[_kind(kind)] = _number(f"bandwidth_mbit.{kind}", v) * 1e6 / 8
            else:
                raise ValueError(f"[routing.priors]: unknown key {key!r} (known: rtt_ms, bandwidth_mbit, relay_ms)")
        return cls(rtt=rtt, bandwidth=bandwidth, relay_ms=relay_ms)


def _kind(kind: str) -> str:
    if kind not in DEFAULT_RTT_MS:
        raise ValueError(f"[routing.priors]: unknown network kind {kind!r} (known: {', '.join(DEFAULT_RTT_MS)})")
    return kind


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise ValueError(f"[routing.priors]: {key} must be a non-negative number, got {value!r}")
    return float(value)
