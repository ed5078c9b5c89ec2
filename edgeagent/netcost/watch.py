"""Change detection over successive :class:`NetInfo` snapshots (pure: the caller re-probes on its own clock).

A change of interface, kind, metered flag or cost is what matters to peers:
the node re-advertises, and a node that turns metered stops relaying and
hands its children on. Evidence wording alone is no change. ``confirm``
requires a new state to be seen that many times in a row before it is
reported, so one probe that times out once does not flap the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .detect import NetInfo

__all__ = ["WATCHED_FIELDS", "NetChange", "NetWatcher"]

WATCHED_FIELDS: Final = ("interface", "kind", "metered", "cost_per_gb")


def _key(info: NetInfo) -> tuple[object, ...]:
    return tuple(getattr(info, f) for f in WATCHED_FIELDS)


@dataclass(frozen=True)
class NetChange:
    """``previous`` (None for the first snapshot) became ``current``; ``changed`` names the fields."""

    previous: NetInfo | None
    current: NetInfo
    changed: tuple[str, ...]

    @property
    def initial(self) -> bool:
        return self.previous is None

    @property
    def became_metered(self) -> bool:
        """Was unmetered, is metered now: stop relaying, hand children on."""
        return self.previous is not None and not self.previous.metered and self.current.metered

    @property
    def became_unmetered(self) -> bool:
        return self.previous is not None and self.previous.metered and not self.current.metered


class NetWatcher:
    """Feed it each new snapshot with :meth:`update`; it answers with a :class:`NetChange` or None."""

    def __init__(self, confirm: int = 1) -> None:
        if confirm < 1:
            raise ValueError("confirm must be at least 1")
        self.confirm = confirm
        self.current: NetInfo | None = None
        self._candidate: tuple[object, ...] | None = None
        self._seen = 0

    def update(self, info: NetInfo) -> NetChange | None:
        """The change ``info`` makes (the first snapshot is always one), or None."""
        prev = self.current
        if prev is None:
            self.current = info
            return NetChange(None, info, WATCHED_FIELDS)
        key = _key(info)
        if key == _key(prev):
            self.current = info  # fresher evidence, same state
            self._candidate, self._seen = None, 0
            return None
        if key == self._candidate:
            self._seen += 1
        else:
            self._candidate, self._seen = key, 1
        if self._seen < self.confirm:
            return None
        self.current = info
        self._candidate, self._seen = None, 0
        changed = tuple(f for f in WATCHED_FIELDS if getattr(prev, f) != getattr(info, f))
        return NetChange(prev, info, changed)
