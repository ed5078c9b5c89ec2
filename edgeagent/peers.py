"""The node's link table and its ``PeerView``: who is linked (and over which links), who is
authorised (by configuration or as the node's domain), the peer records the registry keeps, and
the byte counts of links since closed (egress accounting)."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from .wire import NodeId, PeerRecord

if TYPE_CHECKING:
    from .limits import ResourceLimits

if TYPE_CHECKING:
    from .links.link import Link

__all__ = ["PeerTable"]

_DIALABLE_KEPT = 4096  # peers whose dial-back result is kept


class PeerTable:
    """``allow`` None: open (every authenticated peer is authorised); else the allow-list.

    ``records`` is the registry's dict (shared, not copied); ``domains`` grows when a domain's link
    comes up (the node's ``--domain`` URL, verified by the handshake).
    """

    def __init__(self, allow: set[NodeId] | None, records: Mapping[NodeId, PeerRecord] | None = None) -> None:
        self.allow = allow
        self.domains: set[NodeId] = set()
        self.records_by_id: Mapping[NodeId, PeerRecord] = records if records is not None else {}
        self.by_peer: dict[NodeId, list[Link]] = {}
        self.closed_bytes_sent = 0
        self.closed_sent_by_type: Counter[str] = Counter()
        self._dialable: OrderedDict[NodeId, bool] = OrderedDict()  # what this node's dial-backs found

    # -- PeerView ------------------------------------------------------------------------------

    @property
    def domain_ids(self) -> frozenset[NodeId]:
        return frozenset(self.domains)

    def authorised(self, node: NodeId) -> bool:
        return self.allow is None or node in self.allow or node in self.domains

    def is_domain(self, node: NodeId) -> bool:
        return node in self.domains

    def record(self, node: NodeId) -> PeerRecord | None:
        return self.records_by_id.get(node)

    def dialable(self, node: NodeId) -> bool | None:
        return self._dialable.get(node)

    def found_dialable(self, node: NodeId, ok: bool) -> None:
        self._dialable[node] = ok
        self._dialable.move_to_end(node)
        while len(self._dialable) > _DIALABLE_KEPT:
            self._dialable.popitem(last=False)

    def records(self) -> Mapping[NodeId, PeerRecord]:
        return self.records_by_id

    def links(self, node: NodeId) -> list[Link]:
        return self.by_peer.get(node, [])

    def linked(self) -> Iterator[tuple[NodeId, list[Link]]]:
        return ((p, ls) for p, ls in list(self.by_peer.items()) if ls)

    # -- the table -----------------------------------------------------------------------------

    def add(self, link: Link) -> None:
        self.by_peer.setdefault(link.peer, []).append(link)

    def admit_link(self, link: Link, limits: ResourceLimits) -> tuple[Link, str, str] | None:
        """Whether a new link fits the limits: None, or (the link to close, the limit, why): the new
        link, or, when every slot is taken and the new link's peer is authorised, a stranger's."""
        mine = [x for x in self.by_peer.get(link.peer, []) if not x.closed]
        if len(mine) >= limits.links_per_peer:
            return link, "links_per_peer", f"{link.peer.short()} already has {len(mine)} links here, the most allowed"
        every = [x for x in self.every_link() if not x.closed]
        if len(every) < limits.links_total:
            return None
        strangers = [x for x in every if not x.authorised]
        if link.authorised and strangers:  # the longest-linked stranger (links are kept in the order they came)
            return strangers[0], "links_total", "closed to make room for an authorised peer"
        return link, "links_total", f"this node has {len(every)} links, the most allowed"

    def remove(self, link: Link) -> bool:
        """Forget a closed link; True when it was the peer's last one."""
        peers = self.by_peer.get(link.peer, [])
        if link in peers:
            peers.remove(link)
        if not peers:
            self.by_peer.pop(link.peer, None)
        self.closed_bytes_sent += link.stats.bytes_sent
        self.closed_sent_by_type.update(link.stats.sent_by_type)
        return not peers

    def every_link(self) -> list[Link]:
        return [link for links in self.by_peer.values() for link in links]

    def wire_bytes_sent(self) -> int:
        """Bytes every link has sent, closed ones included."""
        return sum(link.stats.bytes_sent for link in self.every_link()) + self.closed_bytes_sent

    def sent_by_type(self) -> Counter[str]:
        """Frame bytes sent per message type over every link, closed ones included."""
        total = Counter(self.closed_sent_by_type)
        for link in self.every_link():
            total.update(link.stats.sent_by_type)
        return total
