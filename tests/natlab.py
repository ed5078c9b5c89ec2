"""A NAT lab in network namespaces: a "public" network with the domain on it, and homes behind NAT routers.

Layout (``NatLab(per_home=[1, 1, 4], carrier=[3])``; every name starts ``{prefix}-{tag}-``, ``tag``
random per lab, so a lab deletes only what it made)::

    pub  (bridge br0: the public network, "the internet")
     |- dom      eth0 10.210.0.1              the domain (its public address: DOMAIN_ADDRESS)
     |- r1       wan  10.210.1.1 ── lan0 192.168.1.1/24 ── h1d1 eth0 192.168.1.11
     |- r2       wan  10.210.2.1 ── lan0 192.168.2.1/24 ── h2d1 eth0 192.168.2.11
     '- r3       wan  10.210.3.1 ── lan0 192.168.3.1/24 ── h3d1..h3d4 192.168.3.11..14

Public addresses (``public=``): "per-home" (the default) puts the public network in 10.210.0.0/16 and
gives home h 10.210.h.1: every home its own /24, as homes on the internet have (the domain files a
peer under the /24 of the address it sees, ``services.registry.lan_group``: here one group per home).
"shared" puts everything in 10.210.0.0/24 (home h at 10.210.0.(h+1)): the domain then sees every home
in one /24, as if all were behind one carrier's NAT pool.

Each home's router namespace (``r<h>``) has ``wan`` on the public bridge and a LAN bridge ``lan0`` with
one veth per device (1..6 devices, namespaces ``h<h>d<k>``, default route via 192.168.h.1). Its rules::

    sysctl net.ipv4.ip_forward=1
    iptables -t nat -A POSTROUTING -o wan -j MASQUERADE [--random-fully]   # carrier-NAT home: symmetric
    iptables -P FORWARD DROP
    iptables -A FORWARD -i lan0 -o lan0 -j ACCEPT                         # (bridged traffic, br_netfilter)
    iptables -A FORWARD -i lan0 -o wan -j ACCEPT                          # out: any
    iptables -A FORWARD -i wan -o lan0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT  # in: replies only

So devices dial out to the public network (the domain sees the router's public address); nobody
outside dials in (no route to 192.168.0.0/16 on the public side, and a route added anyway meets the
FORWARD drop; nothing forwards ports from ``wan``); devices of one home reach each other on ``lan0``
directly; devices of different homes cannot reach each other's private addresses (routers have no
route between home LANs: network unreachable). A plain home keeps a connection's source port where
it can (the same mapping for every destination, cone-like); ``--random-fully`` picks a random port
for every new connection (a different mapping per destination: symmetric, as carrier-grade NAT).

Shaping: :meth:`NatLab.shape` puts a tc tbf on an interface's egress (a device's ``eth0``: its
upload; the domain's ``eth0``: the source's upload; a router's ``wan``: the home's shared uplink).
:meth:`NatLab.kill_router` / :meth:`NatLab.restore_router` take a home's ``wan`` down and up (its
devices lose the public network; their links stall rather than reset, as when a home router dies).

:class:`NatLabUnavailable` (a :class:`tests.netns.NetnsUnavailable`) is raised when namespaces or
iptables (with NAT in a namespace) cannot be used; :func:`natlab_or_skip` turns it into a skip that
prints why. Every namespace is recorded the moment it exists and deleted in :meth:`NatLab.close`
(also when building fails half-way); veths are made inside the namespaces, never in this one, so
deleting the namespaces removes everything. Nothing here contacts anything outside the lab.

``python -m tests.natlab [--homes 3] [--per-home 2] [--carrier-homes 1]`` builds a lab, runs
:meth:`NatLab.self_check`, prints the result and tears the lab down (needs root).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from tests.netns import Netns, NetnsUnavailable

PUBLIC: Final = "10.210"  # the public network: 10.210.0.0/16 ("per-home") or 10.210.0.0/24 ("shared")
DOMAIN_ADDRESS: Final = "10.210.0.1"
PORT: Final = 7400
MAX_PER_HOME: Final = 6
MAX_HOMES: Final = 200
CMD_TIMEOUT: Final = 10.0
SBIN_IPTABLES: Final = ("/usr/sbin/iptables", "/sbin/iptables")  # not on a non-root PATH
REPLIES: Final = ("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED")
_T = TypeVar("_T")


class NatLabUnavailable(NetnsUnavailable):
    """The lab cannot be built here (no root or ``ip netns``, no iptables, no NAT in a namespace)."""


def _run(argv: Sequence[str], timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _must(argv: Sequence[str]) -> None:
    step = _run(argv)
    if step.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {step.stderr.strip()}")


@dataclass
class Device:
    """A device namespace behind a home router: ``ns.address`` is its private address."""

    ns: Netns
    home: Home
    index: int  # 1-based within the home

    @property
    def name(self) -> str:
        return f"h{self.home.index}d{self.index}"

    @property
    def address(self) -> str:
        return self.ns.address

    def argv(self, argv: Sequence[str]) -> list[str]:
        return self.ns.argv(argv)


@dataclass
class Home:
    """A home: its router (``router.address`` is the home's public address) and its devices."""

    index: int  # 1-based
    router: Netns
    carrier: bool  # MASQUERADE --random-fully (symmetric mapping)
    lan: str  # "192.168.h"
    devices: list[Device] = field(default_factory=list)
    up: bool = True

    @property
    def public_address(self) -> str:
        return self.router.address

    @property
    def gateway(self) -> str:
        return f"{self.lan}.1"


class NatLab:
    """The public network, the domain's namespace and the homes (see the module docstring).

    ``per_home[h-1]`` devices in home h; ``carrier``: 1-based indices of carrier-NAT homes. Use as a
    context manager (built on entry, torn down on exit) or call :meth:`build` and :meth:`close`.
    """

    def __init__(
        self,
        per_home: Sequence[int],
        carrier: Iterable[int] = (),
        *,
        public: str = "per-home",
        prefix: str = "ea-nat",
    ) -> None:
        if not 1 <= len(per_home) <= MAX_HOMES:
            raise ValueError(f"1..{MAX_HOMES} homes, got {len(per_home)}")
        if any(not 1 <= k <= MAX_PER_HOME for k in per_home):
            raise ValueError(f"1..{MAX_PER_HOME} devices per home, got {list(per_home)}")
        if public not in ("per-home", "shared"):
            raise ValueError(f"public must be 'per-home' or 'shared', not {public!r}")
        self.per_home = list(per_home)
        self.carrier = set(carrier)
        if not self.carrier <= set(range(1, len(per_home) + 1)):
            raise ValueError(f"carrier homes {sorted(self.carrier)} not in 1..{len(per_home)}")
        self.public = public
        self.tag = secrets.token_hex(3)
        self.prefix = f"{prefix}-{self.tag}"
        self.made: list[Netns] = []  # every namespace made, in order (deleted in close)
        self.switch = Netns(f"{self.prefix}-pub", "")
        self.domain = Netns(f"{self.prefix}-dom", DOMAIN_ADDRESS)
        self.homes: list[Home] = []
        self._lock = threading.Lock()
        self.iptables = ""

    # -- building

    def __enter__(self) -> NatLab:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def plen(self) -> int:
        return 16 if self.public == "per-home" else 24

    def public_address(self, home: int) -> str:
        return f"{PUBLIC}.{home}.1" if self.public == "per-home" else f"{PUBLIC}.0.{home + 1}"

    @property
    def devices(self) -> list[Device]:
        return [d for h in self.homes for d in h.devices]

    def _netns(self, ns: Netns) -> None:
        try:
            made = _run(["ip", "netns", "add", ns.name])
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NatLabUnavailable(f"cannot run `ip netns add`: {exc}") from None
        if made.returncode != 0:
            raise NatLabUnavailable(f"`ip netns add {ns.name}` failed: {made.stderr.strip()}")
        with self._lock:
            self.made.append(ns)
        _must(["ip", "-n", ns.name, "link", "set", "lo", "up"])

    def _veth(self, a: Netns, a_if: str, b: Netns, b_if: str) -> None:
        """A veth pair made inside the namespaces (never in this one): ``a_if`` in ``a``, ``b_if`` in ``b``."""
        _must(["ip", "-n", a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name])

    def build(self) -> None:
        """Make every namespace, link and rule (raises :class:`NatLabUnavailable` where it cannot)."""
        if shutil.which("ip") is None or shutil.which("tc") is None:
            raise NatLabUnavailable("`ip` or `tc` (iproute2) not found")
        self.iptables = shutil.which("iptables") or next((p for p in SBIN_IPTABLES if os.access(p, os.X_OK)), "")
        if not self.iptables:
            raise NatLabUnavailable("iptables not installed (apt-get install iptables)")
        sw = self.switch.name
        self._netns(self.switch)
        _must(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        _must(["ip", "-n", sw, "link", "set", "br0", "up"])
        self._netns(self.domain)
        self._veth(self.domain, "eth0", self.switch, "dom")
        self._plug(sw, "dom")
        self._address(self.domain.name, "eth0", f"{DOMAIN_ADDRESS}/{self.plen}")
        for h, count in enumerate(self.per_home, start=1):
            router = Netns(f"{self.prefix}-r{h}", self.public_address(h))
            home = Home(h, router, h in self.carrier, f"192.168.{h}")
            self.homes.append(home)
            self._netns(router)
            r = router.name
            self._veth(router, "wan", self.switch, f"r{h}")
            self._plug(sw, f"r{h}")
            self._address(r, "wan", f"{router.address}/{self.plen}")
            _must(["ip", "-n", r, "link", "add", "lan0", "type", "bridge"])
            self._address(r, "lan0", f"{home.gateway}/24")
            self._nat(home)
            for k in range(1, count + 1):
                dev = Device(Netns(f"{self.prefix}-h{h}d{k}", f"{home.lan}.{10 + k}"), home, k)
                home.devices.append(dev)
                self._netns(dev.ns)
                self._veth(dev.ns, "eth0", router, f"d{k}")
                _must(["ip", "-n", r, "link", "set", f"d{k}", "master", "lan0"])
                _must(["ip", "-n", r, "link", "set", f"d{k}", "up"])
                self._address(dev.ns.name, "eth0", f"{dev.address}/24")
                _must(["ip", "-n", dev.ns.name, "route", "add", "default", "via", home.gateway])

    def _plug(self, ns: str, ifname: str) -> None:
        _must(["ip", "-n", ns, "link", "set", ifname, "master", "br0"])
        _must(["ip", "-n", ns, "link", "set", ifname, "up"])

    def _address(self, ns: str, ifname: str, cidr: str) -> None:
        _must(["ip", "-n", ns, "addr", "add", cidr, "dev", ifname])
        _must(["ip", "-n", ns, "link", "set", ifname, "up"])

    def _nat(self, home: Home) -> None:
        r = home.router.name
        _must(["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        masq = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        if home.carrier:
            masq.append("--random-fully")
        rules = [
            masq,
            ["-P", "FORWARD", "DROP"],
            ["-A", "FORWARD", "-i", "lan0", "-o", "lan0", "-j", "ACCEPT"],
            ["-A", "FORWARD", "-i", "lan0", "-o", "wan", "-j", "ACCEPT"],
            ["-A", "FORWARD", "-i", "wan", "-o", "lan0", *REPLIES, "-j", "ACCEPT"],
        ]
        for rule in rules:
            step = _run(["ip", "netns", "exec", r, self.iptables, "-w", "5", *rule])
            if step.returncode != 0:
                raise NatLabUnavailable(f"`iptables {' '.join(rule)}` in a namespace failed: {step.stderr.strip()}")

    # -- tearing down

    def close(self) -> None:
        """Delete every namespace this lab made (their veths, bridges and rules go with them)."""
        with self._lock:
            made = list(reversed(self.made))
            self.made.clear()
        for ns in made:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                ns.delete()

    def leftovers(self) -> list[str]:
        """Namespaces with this lab's prefix that still exist (none after :meth:`close`)."""
        try:
            listed = _run(["ip", "netns", "list"]).stdout.split("\n")
        except (OSError, subprocess.TimeoutExpired):
            return []
        names = [ln.split()[0] for ln in listed if ln.strip()]
        return [n for n in names if n.startswith(self.prefix + "-")]

    # -- operating

    def kill_router(self, home: int) -> None:
        """Home ``home``'s router loses the public network (``wan`` down): its devices are cut off."""
        h = self.homes[home - 1]
        _must(["ip", "-n", h.router.name, "link", "set", "wan", "down"])
        h.up = False

    def restore_router(self, home: int) -> None:
        """``wan`` up again (its address and connected route come back with it; conntrack state is kept)."""
        h = self.homes[home - 1]
        _must(["ip", "-n", h.router.name, "link", "set", "wan", "up"])
        h.up = True

    def shape(
        self, ns: Netns, mbit: float | None, ifname: str = "eth0", queue_ms: float = 100.0, burst_kb: float = 64.0
    ) -> None:
        """tc tbf on ``ifname``'s egress in ``ns`` at ``mbit`` Mbit/s (None: remove any shaping).

        A device's or the domain's ``eth0`` egress is its upload; a router's ``wan`` egress the home's
        shared uplink. ``queue_ms``: tbf latency (tail-drop queue); ``burst_kb``: its bucket (64 KiB: a
        whole GSO packet, as bench/bcast.py).
        """
        if mbit is None:
            _run(["tc", "-n", ns.name, "qdisc", "del", "dev", ifname, "root"])
            return
        argv = ["tc", "-n", ns.name, "qdisc", "replace", "dev", ifname, "root", "tbf", "rate", f"{mbit:g}mbit"]
        _must([*argv, "burst", str(int(burst_kb * 1024)), "latency", f"{queue_ms:g}ms"])

    def shape_devices(self, mbit: float | None, **kw: Any) -> None:
        for dev in self.devices:
            self.shape(dev.ns, mbit, **kw)

    def tx_bytes(self, ns: Netns, ifname: str = "eth0") -> int:
        """Bytes that left ``ifname`` in ``ns`` (its kernel counter)."""
        got = _run(["ip", "-n", ns.name, "-j", "-s", "link", "show", "dev", ifname])
        try:
            return int(json.loads(got.stdout)[0]["stats64"]["tx"]["bytes"])
        except (ValueError, IndexError, KeyError):
            return 0

    def set_tcp_cc(self, cc: str) -> None:
        """TCP congestion control in the domain's and every device's namespace (bench/bcast.py: reno)."""
        for ns in (self.domain, *(d.ns for d in self.devices)):
            _must(["ip", "netns", "exec", ns.name, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={cc}"])

    # -- probing (in this process: helper threads enter the namespaces)

    def probe(self, src: Netns, dst: Netns, address: str, port: int = PORT, timeout: float = 2.0) -> str | None:
        """TCP from ``src`` to ``address:port``, where a listener in ``dst`` waits on 0.0.0.0:port.

        None when the connection is made (and accepted), else why not ("timed out", "[Errno 101] ...").
        """
        listener = in_netns(dst, lambda: _listen(port))
        try:
            return in_netns(src, lambda: _connect(address, port, timeout), timeout=timeout + 5)
        finally:
            listener.close()

    def seen_as(self, src: Netns, port: int = PORT, count: int = 2, timeout: float = 2.0) -> list[tuple[str, int]]:
        """The (address, port) the domain sees for UDP datagrams from ``src`` (one local port) to
        ``count`` domain ports: the same source port each time from a plain home (port kept), a
        different one per destination from a carrier-NAT home (symmetric mapping)."""
        ports = [port + i for i in range(count)]
        socks = [in_netns(self.domain, lambda p=p: _udp_bound(p)) for p in ports]
        try:

            def send() -> None:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("0.0.0.0", 0))
                    for p in ports:
                        s.sendto(b"natlab", (DOMAIN_ADDRESS, p))

            in_netns(src, send)
            seen = []
            for s in socks:
                s.settimeout(timeout)
                try:
                    _, addr = s.recvfrom(64)
                except TimeoutError:
                    addr = ("", 0)
                seen.append((str(addr[0]), int(addr[1])))
            return seen
        finally:
            for s in socks:
                s.close()

    def self_check(self) -> dict[str, Any]:
        """The lab's promises, probed; ``{"ok": bool, "checks": [{"what", "ok", "detail"}]}``."""
        checks: list[dict[str, Any]] = []

        def check(what: str, ok: bool, detail: Any) -> None:
            checks.append({"what": what, "ok": ok, "detail": detail})

        h1 = self.homes[0]
        d1 = h1.devices[0]
        got = self.probe(d1.ns, self.domain, DOMAIN_ADDRESS)
        check(f"{d1.name} dials the domain {DOMAIN_ADDRESS}", got is None, got)
        seen = self.seen_as(d1.ns)
        check(f"the domain sees {d1.name} as its home's public address", seen[0][0] == h1.public_address, seen)
        got = self.probe(self.domain, d1.ns, d1.address, timeout=1.0)
        check(f"the domain cannot dial {d1.name}'s private {d1.address}", got is not None, got)
        with self.route(self.domain, f"{h1.lan}.0/24", h1.public_address):
            got = self.probe(self.domain, d1.ns, d1.address, timeout=1.0)
        check(f"... nor with a route to {h1.lan}.0/24 via {h1.public_address} (FORWARD drop)", got is not None, got)
        got = self.probe(self.domain, d1.ns, h1.public_address, timeout=1.0)
        check(f"the domain cannot dial home 1's public {h1.public_address} (no port forwarding)", got is not None, got)
        if len(self.homes) > 1:
            d2 = self.homes[1].devices[0]
            got = self.probe(d1.ns, d2.ns, d2.address, timeout=1.0)
            check(f"{d1.name} cannot reach {d2.name}'s private {d2.address}", got is not None, got)
        for home in self.homes:
            if len(home.devices) > 1:
                a, b = home.devices[:2]
                got = self.probe(a.ns, b.ns, b.address)
                check(f"{a.name} dials {b.name} {b.address} in its home", got is None, got)
                break
        for home in self.homes:
            seen = self.seen_as(home.devices[0].ns)
            same = len({p for _, p in seen}) == 1
            check(
                f"home {home.index} ({'carrier-NAT' if home.carrier else 'plain'}) maps "
                f"{'per destination' if home.carrier else 'one port for all'}",
                all(a == home.public_address for a, _ in seen) and same != home.carrier,
                seen,
            )
        return {"ok": all(c["ok"] for c in checks), "checks": checks}

    @contextlib.contextmanager
    def route(self, ns: Netns, prefix: str, via: str) -> Iterator[None]:
        """A route in ``ns`` for the duration (to test the routers' firewall, not only routing)."""
        _must(["ip", "-n", ns.name, "route", "add", prefix, "via", via])
        try:
            yield
        finally:
            _run(["ip", "-n", ns.name, "route", "del", prefix, "via", via])

    def layout(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "public": self.public,
            "domain": DOMAIN_ADDRESS,
            "homes": [
                {
                    "home": h.index,
                    "public_address": h.public_address,
                    "nat": "MASQUERADE --random-fully" if h.carrier else "MASQUERADE",
                    "devices": {d.name: d.address for d in h.devices},
                }
                for h in self.homes
            ],
        }


def in_netns(ns: Netns, fn: Callable[[], _T], timeout: float = 15.0) -> _T:
    """``fn()`` run in a helper thread that has entered ``ns`` (sockets it makes stay in ``ns``)."""
    out: list[_T] = []
    err: list[BaseException] = []

    def body() -> None:
        try:
            with ns.entered():
                out.append(fn())
        except BaseException as exc:  # handed to the caller
            err.append(exc)

    th = threading.Thread(target=body, name=f"netns-{ns.name}", daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise TimeoutError(f"{ns.name}: still running after {timeout}s")
    if err:
        raise err[0]
    return out[0]


def _listen(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(8)
    return s


def _udp_bound(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    return s


def _connect(address: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return None
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return f"[Errno {exc.errno}] {errno.errorcode.get(exc.errno or 0, '?')}: {exc.strerror}"


# ============================================================================================
# edgeagent on the lab: command lines and what today's logs say
# ============================================================================================

#: the domain's re-plans (payload/source.py ``_apply_replan``: "payload ID: re-planned around NODE (WHY)")
REPLAN_RE: Final = re.compile(r"payload ([0-9a-f]{12}): re-planned around (\S+) \((.*)\)$")
#: why a receiver could not fetch (payload/receiver.py: a parent or a helper it could not link to)
REASON_RE: Final = re.compile(r"payload ([0-9a-f]{12}): ((?:parent|helper) \S+ unreachable: .*)$")
DONE_RE: Final = re.compile(r"payload ([0-9a-f]{12}) complete")
ASSIGN_FAIL_RE: Final = re.compile(r"payload ([0-9a-f]{12}): cannot assign (\S+): (.*)$")


def domain_argv(state: str, allow: Iterable[str], *, verbose: bool = True) -> list[str]:
    """``edgeagent domain`` on the domain's public address, allowing exactly ``allow``."""
    argv = [sys.executable, "-m", "edgeagent.cli", *(["-v"] if verbose else []), "domain", "--state", state]
    argv += ["--listen", f"ws://{DOMAIN_ADDRESS}:{PORT}", "--mdns", "off"]
    return [*argv, *(x for nid in allow for x in ("--allow", nid))]


def agent_argv(state: str, *, verbose: bool = True, extra: Sequence[str] = ()) -> list[str]:
    """``edgeagent run`` as a device behind NAT runs it today: dials the domain, listens on every address."""
    argv = [sys.executable, "-m", "edgeagent.cli", *(["-v"] if verbose else []), "run", "--state", state]
    argv += ["--domain", f"ws://{DOMAIN_ADDRESS}:{PORT}", "--listen", f"ws://0.0.0.0:{PORT}", "--mdns", "off"]
    return [*argv, "--network", "wifi", "--unmetered", *extra]


def _lines(text: str, pattern: re.Pattern[str], pid12: str | None) -> list[re.Match[str]]:
    found = []
    for line in text.splitlines():
        m = pattern.search(line)
        if m and (pid12 is None or m.group(1) == pid12):
            found.append(m)
    return found


def replans(domain_log: str, pid12: str | None = None) -> list[dict[str, str]]:
    """The domain's re-plans of payload ``pid12`` (all payloads: None), in order: node and why."""
    return [{"around": m.group(2), "why": m.group(3)} for m in _lines(domain_log, REPLAN_RE, pid12)]


def assign_failures(domain_log: str, pid12: str | None = None) -> list[dict[str, str]]:
    return [{"node": m.group(2), "error": m.group(3)} for m in _lines(domain_log, ASSIGN_FAIL_RE, pid12)]


def reasons(device_log: str, pid12: str | None = None) -> list[str]:
    """What a device logged about parents or helpers it could not link to (oldest first)."""
    return [m.group(2) for m in _lines(device_log, REASON_RE, pid12)]


def completed(device_log: str, pid12: str | None = None) -> bool:
    return bool(_lines(device_log, DONE_RE, pid12))


def tracebacks(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("Traceback"))


def netns_pids(ns: Netns) -> list[int]:
    """PIDs still running in ``ns`` (``ip netns pids``): none once every process there was ended."""
    got = _run(["ip", "netns", "pids", ns.name])
    return [int(x) for x in got.stdout.split() if x.isdigit()]


@contextlib.contextmanager
def natlab_or_skip(per_home: Sequence[int], carrier: Iterable[int] = (), **kw: Any) -> Iterator[NatLab]:
    """A built lab for the duration, torn down afterwards; skips the test (saying why) where it cannot be built."""
    import pytest

    lab = NatLab(per_home, carrier, **kw)
    try:
        lab.build()
    except NetnsUnavailable as exc:
        lab.close()
        print(f"\nSKIP (NAT lab): {exc}", file=sys.stderr)
        pytest.skip(f"the NAT lab cannot be built here: {exc}")
    except BaseException:
        lab.close()
        raise
    try:
        yield lab
    finally:
        lab.close()


def main() -> int:
    ap = argparse.ArgumentParser(description="Build a NAT lab, probe it, print the result, tear it down.")
    ap.add_argument("--homes", type=int, default=3)
    ap.add_argument("--per-home", type=int, default=2)
    ap.add_argument("--carrier-homes", type=int, default=1, help="the last K homes are carrier-NAT")
    ap.add_argument("--public", choices=("per-home", "shared"), default="per-home")
    args = ap.parse_args()
    carrier = range(args.homes - args.carrier_homes + 1, args.homes + 1)
    t0 = time.monotonic()
    try:
        with NatLab([args.per_home] * args.homes, carrier, public=args.public) as lab:
            built = time.monotonic() - t0
            out = {"layout": lab.layout(), "built_s": round(built, 2), **lab.self_check()}
        out["left_over"] = lab.leftovers()
    except NetnsUnavailable as exc:
        print(f"NAT lab unavailable: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=1))
    return 0 if out["ok"] and not out["left_over"] else 1


if __name__ == "__main__":
    sys.exit(main())
