"""Clients and Node request/response over loopback WebSockets, with in-process Nodes.

The network of most tests: a domain listening on ws://127.0.0.1:0, two devices ``a`` and ``b``
and a scientist ``sci`` dialling it. Devices are reached through the domain, which forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeagent.client import Client, DeviceClient, DomainClient, ObjectPointer
from edgeagent.exceptions import NoRoute, ProtocolError, RemoteError, RequestTimeout
from edgeagent.identity import Identity
from edgeagent.node import Node, NodeConfig
from edgeagent.wire import (
    ErrorCode,
    IsNoneMessage,
    Message,
    NodeId,
    ObjectRef,
    Operation,
    Ping,
    Plan,
    Response,
    SearchMessage,
    Tensor,
)
from tests.conftest import until

NAMES = ("a", "b", "sci")


def t(array: Any, dtype: str = "float32") -> Tensor:
    return Tensor.from_numpy(np.asarray(array, dtype=dtype))


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    await until(cond, timeout, "the condition", interval=0.01)


@dataclass
class Net:
    domain: Node
    nodes: dict[str, Node]

    def __getattr__(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise AttributeError(name) from None

    def id(self, name: str) -> NodeId:
        return self.domain.identity.node_id if name == "domain" else self.nodes[name].identity.node_id


@contextlib.asynccontextmanager
async def network(
    tmp_path: Path,
    *,
    domain_allow: Iterable[str] | None = None,
    configs: dict[str, dict[str, Any]] | None = None,
    names: tuple[str, ...] = NAMES,
) -> AsyncIterator[Net]:
    """A domain (open when ``domain_allow`` is None, else allowing those names) and nodes dialling it."""
    idents = {name: Identity.generate() for name in names}
    allow = None if domain_allow is None else {idents[n].node_id for n in domain_allow}
    domain = Node(
        Identity.generate(), tmp_path / "dom", NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], allow=allow)
    )
    await domain.start()
    nodes: dict[str, Node] = {}
    try:
        url = domain.listen_urls[0]
        for name in names:
            kw = (configs or {}).get(name, {})
            nodes[name] = Node(idents[name], tmp_path / name, NodeConfig(domain=url, **kw))
            await nodes[name].start()
        dom_id = domain.identity.node_id
        await wait_for(
            lambda: (
                len(domain.links) == len(names) and all(dom_id in n.links and n.peers.domains for n in nodes.values())
            )
        )
        if domain_allow is None:  # registration (a request of its own) is done before the test looks at _pending
            await wait_for(lambda: all(n.registered.is_set() for n in nodes.values()))
        yield Net(domain, nodes)
    finally:
        for node in nodes.values():
            await node.stop()
        await domain.stop()


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    async with network(tmp_path) as n:
        yield n


def device(net: Net, name: str, **kw: Any) -> DeviceClient:
    return DeviceClient(net.sci, net.id(name), **kw)


# -- every Client method, on a device reached through the domain ----------------------------------------


async def test_every_client_method_on_a_device_through_the_domain(net: Net) -> None:
    dev = device(net, "a")
    store = net.a.worker.store
    x = np.arange(6, dtype="float32").reshape(2, 3)

    p = await dev.send(t(x), tags=("w", "layer1"), description="weights of layer1")
    assert isinstance(p, ObjectPointer) and p.client is dev and p.ref() == ObjectRef(p.id)
    assert p.id in repr(p)
    obj = store.get(p.id, now=time.monotonic())
    assert obj.owner == net.id("sci") and obj.tags == {"w", "layer1"} and obj.value == t(x)
    named = await dev.send(b"raw bytes", obj_id="named", lease=30.0)
    assert named.id == "named" and named.lease == 30.0
    assert 29.0 < store.get("named", now=time.monotonic()).expires_at - time.monotonic() <= 30.0

    assert await dev.search("w") == [p.id]
    assert await dev.search("layer1", "w") == [p.id]
    assert await dev.search("nothing", "w") == []
    assert sorted(await dev.search()) == sorted([p.id, "named"])
    assert await dev.is_none(p.id) is False
    assert await dev.is_none("nope") is True
    assert await dev.shape(p.id) == (2, 3)
    assert await p.shape() == (2, 3)

    y = await dev.run("add", p, 1.0)
    assert await y.get(keep=True) == t(x + 1)
    s = await dev.run("sum", y, axis=0, return_id="colsum")
    assert s.id == "colsum"
    assert (await dev.get("colsum", keep=True)).to_numpy().tolist() == (x + 1).sum(0).tolist()
    m = await dev.run("sub", 1.0, owner=p.id, return_id="minus")  # the command as a method of p: p - 1
    assert await m.get(keep=True) == t(x - 1)
    r = await dev.run("reshape", dev.pointer("minus"), shape=(3, 2))  # tuples travel as lists
    assert await r.shape() == (3, 2)

    assert await dev.renew(p.id, "nope", lease=60.0) == [p.id]
    assert await p.renew() is True
    assert await dev.pointer("nope").renew() is False

    assert await y.get() == t(x + 1)  # moved off the device
    assert y.id not in store
    assert await dev.delete("colsum", "minus", "nope") == 2
    assert await dev.delete("colsum") == 0  # idempotent
    await named.delete()
    assert "named" not in store

    plan = Plan(
        "double", (Operation("add", None, (ObjectRef("in"), ObjectRef("in")), {}, ("out",)),), ("in",), ("out",)
    )
    assert await dev.register_plan(plan) == "double"
    assert await dev.list_plans() == ["double"]
    assert await dev.fetch_plan("double") == plan
    (out,) = await dev.run_plan("double", p)
    assert out.id == "double:out"
    assert await out.get() == t(2 * x)
    (out2,) = await dev.run_plan("double", t([1.0]), return_ids=("mine",))
    assert out2.id == "mine" and await out2.get() == t([2.0])

    assert net.domain.routing.forwarded > 0  # every request and reply went through the domain


async def test_domain_client(net: Net) -> None:
    dc = DomainClient(net.sci)
    assert dc.target == net.id("domain") and dc.kind == "domain"
    assert DomainClient(net.sci, net.id("domain")).target == dc.target
    p = await dc.send(b"hello", tags=("greeting",))
    assert p.id in net.domain.worker.store
    assert await dc.search("greeting") == [p.id]
    assert await p.get() == b"hello"
    assert await dc.is_none(p.id) is True
    assert net.domain.routing.forwarded == 0  # the domain answered these itself


async def test_a_domain_client_needs_a_domain(tmp_path: Path) -> None:
    lonely = Node(Identity.generate(), tmp_path / "lonely", NodeConfig())
    with pytest.raises(NoRoute):
        DomainClient(lonely)
    with pytest.raises(NoRoute):
        await lonely.request(Identity.generate().node_id, SearchMessage(()))


async def test_client_call_insists_on_a_response() -> None:
    class FakeNode:
        async def request(self, peer: NodeId, body: Message, *, timeout: float) -> Message:
            return Ping(1)

    client = Client(FakeNode(), Identity.generate().node_id)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="expected a Response"):
        await client.search()


# -- errors ------------------------------------------------------------------------------------------


async def test_remote_error_carries_code_and_reason(net: Net) -> None:
    dev = device(net, "a")
    x = await dev.send(t([1.0, 2.0]))
    before = (sorted(net.a.worker.store._objects), net.a.worker.store.used_bytes)
    with pytest.raises(RemoteError) as err:
        await dev.run("eval", x)
    assert err.value.code == ErrorCode.BAD_REQUEST and "not allowed" in err.value.reason
    with pytest.raises(RemoteError) as err:
        await dev.get("missing")
    assert err.value.code == ErrorCode.NOT_FOUND and "missing" in err.value.reason
    with pytest.raises(RemoteError) as err:
        await dev.run("add", x, t([1.0, 2.0, 3.0]))
    assert err.value.code == ErrorCode.BAD_REQUEST and "broadcast" in err.value.reason
    net.a.worker.store.quota_bytes = 1000
    with pytest.raises(RemoteError) as err:
        await dev.send(b"x" * 1000)
    assert err.value.code == ErrorCode.QUOTA and "quota" in err.value.reason
    assert (sorted(net.a.worker.store._objects), net.a.worker.store.used_bytes) == before
    # b cannot pull what sci stored on a, even though both are authorised at the domain
    with pytest.raises(RemoteError) as err:
        await DeviceClient(net.b, net.id("a")).get(x.id)
    assert err.value.code == ErrorCode.UNAUTHORIZED
    assert await x.get() == t([1.0, 2.0])


# -- several clients, one connection -------------------------------------------------------------------


async def test_two_device_clients_share_the_one_domain_link(net: Net) -> None:
    a, b = device(net, "a"), device(net, "b")
    forwarded = net.domain.routing.forwarded

    async def work(client: DeviceClient, value: float) -> list[Any]:
        p = await client.send(t([value]), tags=("mine",))
        q = await client.run("mul", p, 10.0)
        return [await client.search("mine"), await q.get(), p.id]

    (a_search, a_out, a_id), (b_search, b_out, b_id) = await asyncio.gather(work(a, 1.0), work(b, 2.0))
    assert a_search == [a_id] and b_search == [b_id]
    assert a_out == t([10.0]) and b_out == t([20.0])
    assert a_id in net.a.worker.store and a_id not in net.b.worker.store
    assert b_id in net.b.worker.store and b_id not in net.a.worker.store
    # the scientist has exactly one link, to the domain, and both clients used it
    assert list(net.sci.links) == [net.id("domain")] and len(net.sci.links[net.id("domain")]) == 1
    assert net.domain.routing.forwarded - forwarded == 2 * 2 * 4  # 4 requests per client, request + reply each
    # a third client of another kind rides the same link
    dc = DomainClient(net.sci)
    many = await asyncio.gather(*(c.is_none("nothing") for c in (a, b, dc) for _ in range(5)))
    assert all(many)
    assert len(net.sci.links) == 1 and not net.sci._pending


async def test_a_request_forwarded_through_the_domain_gets_its_reply(net: Net) -> None:
    forwarded = net.domain.routing.forwarded
    reply = await net.sci.request(net.id("b"), IsNoneMessage("x"), timeout=5.0)
    assert reply == Response(True)
    assert net.domain.routing.forwarded == forwarded + 2  # the request, then the reply
    assert not net.sci._pending
    # and the other way round: a device asking another device
    reply = await net.a.request(net.id("b"), SearchMessage(()), timeout=5.0)
    assert reply == Response([])


async def test_a_direct_link_is_used_when_there_is_one(tmp_path: Path) -> None:
    sci_ident = Identity.generate()
    configs = {"a": {"listen": ["ws://127.0.0.1:0"], "allow": {sci_ident.node_id}}}
    async with network(tmp_path, configs=configs, names=("a",)) as net:
        sci = Node(sci_ident, tmp_path / "sci", NodeConfig(domain=net.domain.listen_urls[0], peers=net.a.listen_urls))
        await sci.start()
        try:
            await wait_for(lambda: net.id("a") in sci.links and bool(sci.peers.domain_ids))
            forwarded = net.domain.routing.forwarded
            dev = DeviceClient(sci, net.id("a"))
            p = await dev.send(b"direct")
            assert await p.get() == b"direct"
            assert net.domain.routing.forwarded == forwarded
        finally:
            await sci.stop()


# -- timeouts and cancellation --------------------------------------------------------------------------


async def _ignore(m: Any) -> bool:
    """A spy that swallows the message: its handler never runs, so it is never answered."""
    return False


async def test_request_timeout(net: Net) -> None:
    net.a.intercept(IsNoneMessage, _ignore)
    start = time.monotonic()
    with pytest.raises(RequestTimeout, match="IsNoneMessage"):
        await net.sci.request(net.id("a"), IsNoneMessage("x"), timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 2.0
    assert not net.sci._pending
    with pytest.raises(RequestTimeout):
        await device(net, "a", timeout=0.2).is_none("x")
    assert not net.sci._pending
    assert await device(net, "a").search() == []  # other requests are still answered


async def test_cancelling_a_request_forgets_it(net: Net) -> None:
    net.a.intercept(IsNoneMessage, _ignore)
    task = asyncio.create_task(net.sci.request(net.id("a"), IsNoneMessage("x"), timeout=30.0))
    await wait_for(lambda: bool(net.sci._pending))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(net.sci._pending) == 0
    assert await device(net, "a").search() == []


async def test_a_late_reply_is_dropped(net: Net) -> None:
    replied = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def slow(m: Any) -> bool:
        async def later() -> None:
            await asyncio.sleep(0.3)
            await m.link.send(m.env.reply(Response("late"), net.a.identity.node_id))
            replied.set()

        tasks.add(asyncio.create_task(later()))
        return False

    net.a.intercept(IsNoneMessage, slow)
    with pytest.raises(RequestTimeout):
        await net.sci.request(net.id("a"), IsNoneMessage("x"), timeout=0.1)
    await asyncio.wait_for(replied.wait(), 2.0)
    await asyncio.sleep(0.05)
    assert len(net.sci._pending) == 0
    assert await device(net, "a").search() == []  # the late reply did not confuse the next request


# -- leases held by pointers ---------------------------------------------------------------------------


async def test_a_held_pointer_keeps_its_object_alive(tmp_path: Path) -> None:
    async with network(tmp_path, configs={"a": {"default_lease": 0.5}}, names=("a", "sci")) as net:
        dev = device(net, "a")
        held = await dev.send(b"held", lease=0.5)
        loose = await dev.send(b"loose", lease=0.5)
        result = await dev.run("add", 1, 2)  # stored with the worker's default lease (0.5 s)
        async with held.held() as same:
            assert same is held
            await asyncio.sleep(1.5)
            assert await dev.is_none(held.id) is False
            assert await dev.is_none(loose.id) is True
            assert await dev.is_none(result.id) is True
        await asyncio.sleep(0.8)
        assert await dev.is_none(held.id) is True
        assert held.id not in net.a.worker.store


async def test_held_with_an_explicit_period(tmp_path: Path) -> None:
    async with network(tmp_path, configs={"a": {"default_lease": 0.4}}, names=("a", "sci")) as net:
        dev = device(net, "a", default_lease=0.4)
        p = await dev.send(b"v")  # no lease of its own: the worker's default, and the client's default period
        async with p.held(every=0.1):
            await asyncio.sleep(1.0)
            assert await dev.is_none(p.id) is False


# -- authorisation at the domain -------------------------------------------------------------------------


async def test_unauthorised_peers_are_refused_by_a_closed_domain(tmp_path: Path) -> None:
    async with network(tmp_path, domain_allow=()) as net:
        with pytest.raises(RemoteError) as err:
            await device(net, "a").send(b"v")
        assert err.value.code == ErrorCode.UNAUTHORIZED
        with pytest.raises(RemoteError) as err:
            await DomainClient(net.sci).search()
        assert err.value.code == ErrorCode.UNAUTHORIZED
        with pytest.raises(RemoteError) as err:
            await DeviceClient(net.a, net.id("b")).is_none("x")  # a device is refused as well
        assert err.value.code == ErrorCode.UNAUTHORIZED
        assert len(net.a.worker.store) == len(net.b.worker.store) == len(net.domain.worker.store) == 0
        assert net.domain.routing.forwarded == 0 and not net.sci._pending


async def test_a_closed_domain_serves_and_forwards_for_the_peers_it_allows(tmp_path: Path) -> None:
    async with network(tmp_path, domain_allow=("sci", "a")) as net:
        assert await DomainClient(net.sci).search() == []
        p = await device(net, "a").send(b"v")
        assert await p.get() == b"v"
        with pytest.raises(RemoteError) as err:  # b is not allowed
            await DomainClient(net.b).search()
        assert err.value.code == ErrorCode.UNAUTHORIZED


async def test_a_request_to_a_device_the_domain_has_not_authorised_is_answered(tmp_path: Path) -> None:
    async with network(tmp_path, domain_allow=("sci",)) as net:
        try:
            await device(net, "a", timeout=0.5).send(b"v", obj_id="x")
        except RemoteError:
            assert "x" not in net.a.worker.store  # refused before the device acted: acceptable
        else:
            assert "x" in net.a.worker.store


async def test_a_malformed_operation_does_not_stop_the_node_serving(net: Net) -> None:
    dc = DomainClient(net.sci, timeout=0.5)
    x = await dc.send(t([1.0]))
    with pytest.raises(RemoteError) as err:
        await dc.run("astype", x, dtype=["float32"])
    assert err.value.code == ErrorCode.BAD_REQUEST
    assert await dc.is_none(x.id) is False
