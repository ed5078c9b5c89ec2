"""The most trusted probe: what the user said (config ``[override]`` or ``--network`` / ``--metered``)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Kind, ProbeResult

__all__ = ["ConfigProbe", "Override"]


@dataclass(frozen=True)
class Override:
    """Explicit settings that beat detection. Each part is optional.

    ``kind``: the network kind to assume; ``metered``: whether bytes cost money;
    ``interface``: the interface to classify instead of the default route's.
    """

    kind: Kind | None = None
    metered: bool | None = None
    interface: str | None = None

    def merged(self, other: Override | None) -> Override:
        """This override with every part ``other`` sets replaced (command line over config file)."""
        if other is None:
            return self
        return Override(
            kind=other.kind if other.kind is not None else self.kind,
            metered=other.metered if other.metered is not None else self.metered,
            interface=other.interface if other.interface is not None else self.interface,
        )

    @property
    def empty(self) -> bool:
        return self.kind is None and self.metered is None and self.interface is None


class ConfigProbe:
    """Answers from an :class:`Override`; abstains when it names no kind."""

    name = "config"

    def __init__(self, override: Override | None = None) -> None:
        self.override = override or Override()

    def probe(self, iface: str | None) -> ProbeResult:
        o = self.override
        parts = []
        if o.kind is not None:
            parts.append(f"kind={o.kind}")
        if o.metered is not None:
            parts.append(f"metered={'yes' if o.metered else 'no'}")
        if not parts:
            return ProbeResult(None, None, "no kind or metered override" if o.interface else "no override")
        return ProbeResult(o.kind, o.metered, "override " + " ".join(parts))
