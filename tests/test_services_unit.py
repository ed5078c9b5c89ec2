"""Services unit-tested on a FakeHost (no Node, no sockets), and the one policy gate on its own."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from edgeagent.dispatch import Dispatch
from edgeagent.host import Policy, Sender, Service, on
from edgeagent.identity import Identity
from edgeagent.payload import make_manifest, payload_id
from edgeagent.payload.manifest import admission
from edgeagent.payload.service import PayloadService
from edgeagent.pubsub import PubSub
from edgeagent.services.fl import NoTraining
from edgeagent.services.registry import RegistryService
from edgeagent.wire import (
    Chunk,
    ChunkRequest,
    Deliver,
    Envelope,
    Error,
    ErrorCode,
    Have,
    IndexRange,
    JobAdvert,
    Message,
    PeerList,
    PeerRecord,
    Ping,
    PubEntry,
    Publish,
    Response,
    TreeAssign,
)
from tests.conftest import FakeHost, FakeLink, peer_table

# -- the policy gate --------------------------------------------------------------------------


class _Probe(Service):
    name = "probe"

    def __init__(self, policies: dict[type[Message], Policy]) -> None:
        self.policies = policies
        self.seen: list[Message] = []

    async def _on(self, m: object) -> None:
        self.seen.append(m.body)  # type: ignore[attr-defined]

    def handlers(self) -> dict[type[Message], object]:  # type: ignore[override]
        return {kind: on(policy, self._on) for kind, policy in self.policies.items()}


def _ids(n: int) -> list[Identity]:
    return [Identity.generate() for _ in range(n)]


async def test_the_gate_applies_each_declared_policy(tmp_path: Path) -> None:
    me, domain, friend, stranger, member = (i.node_id for i in _ids(5))
    peers = peer_table(allow={friend}, domains={domain})
    admitted = {member}
    probe = _Probe(
        {
            Ping: Policy(Sender.ANYONE),
            JobAdvert: Policy(Sender.DOMAIN),
            Publish: Policy(Sender.AUTHORISED),
            Response: Policy(Sender.AUTHORISED, relayable=True),
            Have: Policy(Sender.MEMBER, admits=lambda peer, body: peer in admitted),
            Chunk: Policy(Sender.MEMBER, bulk=True, admits=lambda peer, body: peer in admitted),
        }
    )
    d = Dispatch(peers)
    d.add(probe)
    host = FakeHost(tmp_path)

    async def send(body: Message, source: object, via: object | None = None) -> list[Envelope]:
        link = FakeLink(via or source)  # type: ignore[arg-type]
        await d.deliver(link, Envelope(body, source, destination=me), host)  # type: ignore[arg-type]
        return link.sent  # type: ignore[return-value]

    def refused(sent: list[Envelope]) -> str:
        assert len(sent) == 1 and isinstance(sent[0].body, Error), sent
        assert sent[0].body.code == ErrorCode.UNAUTHORIZED
        return sent[0].body.reason

    ad = JobAdvert("j", "logreg")
    assert await send(Ping(1), stranger) == []  # anyone
    assert "only the domain" in refused(await send(ad, friend))
    assert await send(ad, domain) == []
    assert "first-hand only" in refused(await send(ad, domain, via=friend))  # a relay cannot speak as the domain
    assert "not authorised" in refused(await send(Publish("t", 1, (1,)), stranger))
    assert await send(Publish("t", 1, (1,)), friend) == []
    assert "first-hand only" in refused(await send(Publish("t", 1, (1,)), friend, via=domain))
    # relayable: authorised sources, or anyone the domain relays (it vouches); never a stranger via a stranger
    assert await send(Response(None), friend, via=stranger) == []
    assert await send(Response(None), stranger, via=domain) == []
    assert "not authorised" in refused(await send(Response(None), stranger, via=friend))
    # members: admitted for their messages only; bulk refusals are silent (no Error per chunk)
    assert await send(Have(b"p" * 32, b""), member) == []
    assert "not authorised" in refused(await send(Have(b"p" * 32, b""), stranger))
    assert await send(Chunk(b"p" * 32, 0, b"x"), stranger) == []
    assert "not authorised" in refused(await send(Publish("t", 1, (1,)), member))
    assert [type(b).__name__ for b in probe.seen] == ["Ping", "JobAdvert", "Publish", "Response", "Response", "Have"]
    assert d.refused == {"JobAdvert": 2, "Publish": 3, "Response": 1, "Have": 1, "Chunk": 1}
    # the link's own gate reads the same table: only MEMBER policies admit a peer not authorised
    assert d.admits(member, Have(b"p" * 32, b"")) and not d.admits(stranger, Have(b"p" * 32, b""))
    assert not d.admits(member, Publish("t", 1, (1,)))


async def test_unserved_types_are_answered_unsupported_and_spies_see_what_is_admitted(tmp_path: Path) -> None:
    me, friend = (i.node_id for i in _ids(2))
    d = Dispatch(peer_table(allow={friend}))
    probe = _Probe({Publish: Policy(Sender.AUTHORISED)})
    d.add(probe)
    seen: list[Message] = []

    async def spy(m: object) -> bool:
        seen.append(m.body)  # type: ignore[attr-defined]
        return False  # swallow it

    remove = d.intercept(Publish, spy)
    link = FakeLink(friend)
    await d.deliver(link, Envelope(Ping(3), friend, destination=me), FakeHost(tmp_path))  # type: ignore[arg-type]
    assert isinstance(link.sent[0].body, Error) and link.sent[0].body.code == ErrorCode.UNSUPPORTED
    await d.deliver(link, Envelope(Publish("t", 1, (1,)), friend, destination=me), FakeHost(tmp_path))  # type: ignore[arg-type]
    assert len(seen) == 1 and probe.seen == []  # the spy swallowed it
    remove()
    await d.deliver(link, Envelope(Publish("t", 1, (1,)), friend, destination=me), FakeHost(tmp_path))  # type: ignore[arg-type]
    assert len(probe.seen) == 1


# -- services on a FakeHost ----------------------------------------------------------------------


async def test_payload_membership_admits_only_that_payloads_messages(tmp_path: Path) -> None:
    """A TreeAssign names a parent and children: they are admitted for that payload's chunks and requests
    (not other payloads', not other services'); a Have that shows its source's admission of the sender
    here is kept for a payload not assigned yet (bounded); one without is refused."""
    host = FakeHost(tmp_path / "h")
    domain = Identity.generate()
    host.peers.domains.add(domain.node_id)
    svc = PayloadService(host, tmp_path / "payloads")
    parent, child, stranger = (i.node_id for i in _ids(3))
    man = make_manifest(os.urandom(4096), domain, chunk_size=1024, created_ms=1)
    pid = payload_id(man)
    other = payload_id(make_manifest(os.urandom(4096), domain, chunk_size=1024, created_ms=2))
    me = host.node_id
    assert not svc.admits(stranger, Have(pid, b""))  # no credential: refused
    forged = admission(Identity.generate(), pid, stranger, me)  # signed by a node that may not start payloads here
    assert not svc.admits(stranger, Have(pid, b"", domain.node_id, forged))
    assert not svc.admits(stranger, Have(pid, b"", stranger, forged))
    early = Identity.generate().node_id
    cred = admission(domain, pid, early, me)  # the domain admits ``early`` at this node
    assert not svc.admits(stranger, Have(pid, b"", domain.node_id, cred))  # not the admitted peer's
    assert not svc.admits(early, Have(other, b"", domain.node_id, cred))  # nor for another payload
    assert svc.admits(early, Have(pid, b"", domain.node_id, cred))  # before any assignment: kept for when it comes
    await host.deliver(svc, Have(pid, b"\x01", domain.node_id, cred), early)
    assert not svc.admits(parent, Chunk(pid, 0, b"x"))  # no session yet
    with pytest.raises(PermissionError):
        await host.deliver(svc, TreeAssign(pid, 0, 1, parent, (child,), None, man), stranger)
    await host.deliver(svc, TreeAssign(pid, 0, 1, parent, (child,), None, man), domain.node_id)
    assert svc.admits(parent, Chunk(pid, 0, b"x")) and svc.admits(child, ChunkRequest(pid, (IndexRange(0, 1),)))
    assert svc.admits(early, ChunkRequest(pid, (IndexRange(0, 1),)))  # the credential holds for the payload
    assert svc._early.get(pid) is None  # its early Have was taken when the assignment came
    assert not svc.admits(stranger, Chunk(pid, 0, b"x"))
    assert not svc.admits(parent, Chunk(other, 0, b"x"))  # membership is per payload
    assert not svc.admits(parent, Publish("t", 1, (1,)))  # and for payload messages only
    assert not host.peers.authorised(parent)  # nothing else is widened
    for n in range(300):  # early Haves are bounded per payload
        kid = Identity.generate().node_id
        with contextlib.suppress(PermissionError):  # past the bound, the credential is not taken
            await host.deliver(
                svc, Have(other, bytes([n % 256]), domain.node_id, admission(domain, other, kid, me)), kid
            )
    assert len(svc._early[other]) <= 256 and len(svc._credentials[other]) <= 256
    await svc.aclose()


async def test_pubsub_takes_deliveries_only_from_its_home(fake_host: FakeHost) -> None:
    host = fake_host
    home, friend = (i.node_id for i in _ids(2))
    host.peers.domains.add(home)
    host.peers.allow.add(friend)
    ps = PubSub(host, None)
    got = []
    async with ps.subscribe("t") as sub:
        entry = PubEntry(friend, 1, "hello")
        with pytest.raises(PermissionError):
            await host.deliver(ps, Deliver("t", (entry,)), friend)  # an authorised peer is not the home
        await host.deliver(ps, Deliver("t", (entry,)), home)
        got.append(await sub.get())
    assert [m.value for m in got] == ["hello"]
    await ps.aclose()


async def test_registry_keeps_verified_records_and_answers_a_domains_registration(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, role="domain")
    reg = RegistryService(host, upload_bps=lambda: 0.0)
    dev, other = _ids(2)
    host.peers.allow.add(dev.node_id)
    from edgeagent.identity import sign_struct

    rec = sign_struct(PeerRecord(dev.node_id, 5, role="device"), dev)
    link = FakeLink(dev.node_id)
    link.transport = type("T", (), {"remote_address": "10.1.2.3:5000"})()  # type: ignore[attr-defined]
    out = await host.deliver(reg, rec, dev.node_id, link=link)
    assert isinstance(out[0].body, PeerList) and out[0].body.peers == ()
    assert reg.records[dev.node_id].lan_group == "10.1.2.0/24"
    forged = sign_struct(PeerRecord(dev.node_id, 6, role="domain"), other)  # signed by someone else
    out = await host.deliver(reg, forged, dev.node_id, link=link)
    assert isinstance(out[0].body, Error) and out[0].body.code == ErrorCode.UNAUTHORIZED
    assert reg.records[dev.node_id].seq == 5


async def test_a_device_without_data_says_why_it_does_not_join(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    domain = Identity.generate().node_id
    host.peers.domains.add(domain)
    svc = NoTraining("no local training data (start the device with --data FILE)")
    await host.deliver(svc, JobAdvert("digits", "logreg"), domain)
    with pytest.raises(PermissionError):
        await host.deliver(svc, JobAdvert("evil", "logreg"), Identity.generate().node_id)
    (job,) = svc.status_fields()["fl"]["jobs"]
    assert job["job"] == "digits" and not job["joined"] and "--data" in job["not_eligible"]
    assert host.sent == []  # it never asked to join
