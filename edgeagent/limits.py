"""Resource limits: what one peer, and all peers together, may make this node hold.

One ``ResourceLimits`` per node (config table ``[limits]``, the same key names), scoped as
libp2p's resource manager scopes them: *system* (everything this node holds), *per peer*
(what one NodeId may hold) and per protocol (each service's own caps). Defaults suit a phone
or a Pi; ``ResourceLimits.scaled(memory)`` raises the memory-bound ones on a larger machine.

A refusal goes through ``Limiter.refuse``: it is counted per limit (``status --json`` under
``limits.refused``), logged once per peer and limit per minute (not per message), and
returned as the ``Error`` (code and reason) to send back. Pure: ``now`` is passed in.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from .exceptions import ConfigError
from .wire import Error, ErrorCode, NodeId

__all__ = ["DEFAULT_RESOURCE_LIMITS", "Limiter", "ResourceLimits", "capped", "machine_memory"]

log = logging.getLogger("edgeagent.limits")
MiB: Final = 1 << 20
_LOG_EVERY: Final = 60.0  # seconds between two log lines for one (peer, limit)
_LOG_KEYS: Final = 1024  # (peer, limit) pairs whose last log time is remembered


@dataclass(frozen=True)
class ResourceLimits:
    """Every cap a peer's traffic meets. Keys of the ``[limits]`` config table.

    System scope: ``links_total`` (links open at once), ``payload_sessions_total``,
    ``registry_records`` (peer records a node keeps), ``mdns_peers`` (adverts kept),
    ``mdns_dials`` (dials to advertised peers in flight); inbound streams are capped at 16 in all.
    Per peer: ``links_per_peer`` (each link's messages are handled one at a time, in order, so
    this also bounds what one peer has being handled), ``streams_per_peer``,
    ``topics_per_publisher`` (topics a peer's Publish or Subscribe made a home hold),
    ``payload_sessions_per_source``, ``worker_slots_per_peer`` (concurrent worker requests).
    Sizes: ``preauth_frame_bytes`` (largest frame from a peer that is not authorised),
    ``record_bytes`` (largest peer record), ``list_items`` (longest list a peer controls:
    stripes, hops, contributors, addresses).
    Time: ``stream_idle`` (seconds an inbound stream may stay silent; a dropped stream is counted
    as ``stream_idle``), ``retention`` (seconds a pub-sub message is kept for late subscribers).
    """

    links_total: int = 256
    links_per_peer: int = 4
    preauth_frame_bytes: int = 64 * 1024
    streams_per_peer: int = 4
    stream_idle: float = 120.0
    topics_per_publisher: int = 64
    retention: float = 600.0
    payload_sessions_per_source: int = 8
    payload_sessions_total: int = 32
    registry_records: int = 4096
    record_bytes: int = 4096
    mdns_peers: int = 256
    mdns_dials: int = 4
    worker_slots_per_peer: int = 8
    list_items: int = 1024

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"[limits] {f.name} must be a positive number (got {value!r})")

    @classmethod
    def scaled(cls, memory_bytes: int) -> ResourceLimits:
        """Defaults for a machine with ``memory_bytes`` of RAM: the memory-bound system caps grow
        with memory above 1 GiB (a phone keeps the defaults); per-peer caps stay as they are."""
        factor = max(1, min(16, memory_bytes // (1 << 30)))
        base = cls()
        return dataclasses.replace(
            base,
            links_total=base.links_total * factor,
            payload_sessions_total=base.payload_sessions_total * factor,
            registry_records=base.registry_records * factor,
        )

    @classmethod
    def from_table(cls, table: dict[str, Any], base: ResourceLimits | None = None) -> ResourceLimits:
        """``base`` with the ``[limits]`` keys in ``table`` applied; an unknown key is an error."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - set(names))
        if unknown:
            raise ConfigError(f"unknown [limits] key(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        return dataclasses.replace(base or cls(), **table)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULT_RESOURCE_LIMITS: Final = ResourceLimits()


def machine_memory() -> int:
    """Physical memory in bytes (0 when the system will not say)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class Limiter:
    """Counts and reports refusals; one per node, shared by every service."""

    def __init__(self, limits: ResourceLimits = DEFAULT_RESOURCE_LIMITS) -> None:
        self.limits = limits
        self.refused: Counter[str] = Counter()
        self._logged: OrderedDict[tuple[str, str], float] = OrderedDict()

    def refuse(self, limit: str, peer: NodeId | None, reason: str, now: float, *, code: int = ErrorCode.QUOTA) -> Error:
        """Count a refusal by ``limit`` (a ``ResourceLimits`` field name or another cap's name),
        log it unless this peer hit this limit in the last minute, and return the Error to send."""
        self.refused[limit] += 1
        key = (str(peer) if peer is not None else "", limit)
        last = self._logged.get(key)
        if last is None or now - last >= _LOG_EVERY:
            self._logged[key] = now
            self._logged.move_to_end(key)
            while len(self._logged) > _LOG_KEYS:
                self._logged.popitem(last=False)
            who = peer.short() if peer is not None else "-"
            log.warning("limit %s refused %s: %s (repeats counted, not logged, for 60 s)", limit, who, reason)
        return Error(int(code), f"limit {limit}: {reason}")

    def to_json(self) -> dict[str, Any]:
        """``status --json`` "limits": the caps in force and what each has refused."""
        return {"refused": dict(self.refused), **self.limits.to_json()}


def capped(items: Any, limit: int, what: str) -> str:
    """Why a list a peer sent is too long ("" when it is within ``limit``)."""
    n = len(items)
    return f"{n} {what} is more than the {limit} allowed" if n > limit else ""
