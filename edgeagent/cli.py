"""The ``edgeagent`` command.

Exit status: 0 success, 1 failure, 2 bad usage. Errors go to stderr as one line
that says what to do.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .exceptions import ConfigError, EdgeAgentError

if TYPE_CHECKING:  # pragma: no cover
    from .links.base import LinkOptions
    from .wire import NodeId

__all__ = ["default_state_dir", "main"]

log = logging.getLogger("edgeagent.cli")


def default_state_dir() -> Path:
    """The platform's user state directory for edgeagent (overridden by ``--state``)."""
    from platformdirs import user_state_dir

    return Path(user_state_dir("edgeagent"))


def _state(args: argparse.Namespace) -> Path:
    return Path(args.state).expanduser() if args.state else default_state_dir()


def cmd_keygen(args: argparse.Namespace) -> int:
    from .identity import Identity
    from .statedir import prepare as prepare_state_dir

    ident, created = Identity.load_or_create(prepare_state_dir(_state(args)))
    path = _state(args) / "identity.key"
    if args.json:
        print(json.dumps({"node_id": str(ident.node_id), "created": created, "key_file": str(path)}))
    else:
        print(ident.node_id)
        print(f"{'created' if created else 'kept existing'} {path}", file=sys.stderr)
    return 0


def cmd_id(args: argparse.Namespace) -> int:
    from .identity import Identity

    ident = Identity.load(_state(args) / "identity.key")
    if args.json:
        print(json.dumps({"node_id": str(ident.node_id)}))
    else:
        print(ident.node_id)
    return 0


def _node_id_arg(text: str) -> NodeId:
    from .exceptions import DecodeError
    from .wire import NodeId

    try:
        return NodeId.parse(text)
    except DecodeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _link_options(args: argparse.Namespace) -> LinkOptions:
    from .config import load_config
    from .links.base import LinkOptions

    cfg = load_config(Path(args.config) if args.config else None)
    metered = False if args.metered is None else args.metered
    lc = cfg.link
    return LinkOptions(
        limits=cfg.limits,
        insecure=args.insecure,
        network_kind=args.network or "unknown",
        metered=metered,
        keepalive=lc.keepalive,
        dead_after=lc.dead_after,
        handshake_timeout=lc.handshake_timeout,
        recv_queue=lc.recv_queue,
        window=lc.window,
        cipher=lc.cipher,
        codecs=tuple("cbor" if c == "cbor" else "protobuf" for c in lc.codecs),
    )


def cmd_run(args: argparse.Namespace) -> int:
    from ._loop import run

    return run(_run_node(args, role="domain" if args.command == "domain" else "device"))


async def _run_node(args: argparse.Namespace, role: str) -> int:
    import asyncio
    import signal

    from .config import load_config
    from .identity import Identity
    from .links.websocket import client_tls, server_tls
    from .node import Node, NodeConfig
    from .routing import Priors
    from .statedir import prepare as prepare_state_dir

    state = prepare_state_dir(_state(args))  # before the key is read from it
    ident, _ = Identity.load_or_create(state)
    allow = None if args.open else set(args.allow or ())
    from .netcost import Override, detect, load_netcost

    cfg = load_config(Path(args.config) if args.config else None)
    tls = cfg.tls
    net_cfg = load_netcost(Path(args.cost)) if args.cost else load_netcost(None)
    override = Override(kind=args.network, metered=args.metered)

    def net_probe() -> Any:
        return detect(net_cfg, override=override)

    listen = list(args.listen or ())
    if any(u.startswith("wss://") for u in listen) and not tls.cert_file:
        raise ConfigError("a wss:// listen URL needs [tls] cert_file and key_file in --config")
    config = NodeConfig(
        role=role,
        listen=listen,
        peers=[*cfg.discovery.peers, *(getattr(args, "peer", None) or ())],
        domain=getattr(args, "domain", None),
        domain_id=getattr(args, "expect", None),
        allow=allow,
        link=_link_options(args),
        server_tls=server_tls(tls.cert_file, tls.key_file) if tls.cert_file and tls.key_file else None,
        mdns=args.mdns or cfg.discovery.mdns,
        mdns_listen_only=args.mdns_listen_only or cfg.discovery.mdns_listen_only,
        net_probe=net_probe,
        probe_interval=net_cfg.probe.interval,
        run_conditions=net_cfg.run,
        client_tls=client_tls(tls.ca_file) if tls.ca_file else None,
        forward=True if getattr(args, "relay", False) else cfg.routing.relay,
        peer_links=dict(cfg.routing.peers),
        priors=Priors.from_config(cfg.routing.priors),
        link_probe_interval=cfg.routing.probe_interval,
        probe_bytes=cfg.routing.probe_bytes,
        hop_report_interval=cfg.routing.hop_report_interval,
        payload_upload_bps=cfg.payload.upload_mbit * 1e6 / 8 if cfg.payload.upload_mbit else None,
        payload_quota=cfg.payload.quota_mb << 20 if cfg.payload.quota_mb else None,
        resources=cfg.resources,
        fl_job=_job(args),
        fl_data=Path(args.data) if getattr(args, "data", None) else None,
    )
    node = Node(ident, state, config)
    await node.start()
    print(
        json.dumps({"event": "started", "node_id": str(ident.node_id), "role": role, "listen": node.listen_urls}),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await node.stop()
    return 0


def _job(args: argparse.Namespace) -> Any:
    if not getattr(args, "job", None):
        return None
    try:
        from .fl import load_job
    except ImportError:
        raise ConfigError("--job needs numpy: pip install 'edgeagent[fl]'") from None
    return load_job(Path(args.job))


def cmd_ping(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_ping(args))


async def _ping(args: argparse.Namespace) -> int:
    import asyncio
    import statistics
    import time

    from .identity import Identity
    from .links.base import LinkOptions
    from .links.websocket import dial

    key = _state(args) / "identity.key"
    ident = Identity.load(key) if key.exists() else Identity.generate()
    t0 = time.perf_counter()
    link = await dial(args.url, ident, LinkOptions(insecure=args.insecure), expected_peer=args.expect)
    handshake_ms = (time.perf_counter() - t0) * 1000
    rtts = []
    try:
        if not args.json:
            print(
                f"linked to {link.peer} over {link.transport_kind} ({link.codec}, {link.cipher}) "
                f"in {handshake_ms:.1f} ms"
            )
        for i in range(args.count):
            ms = await link.ping(timeout=args.timeout)
            rtts.append(ms)
            if not args.json:
                print(f"pong from {link.peer.short()}: seq={i} rtt={ms:.3f} ms")
            if i + 1 < args.count:
                await asyncio.sleep(args.interval)
    finally:
        await link.close()
    result = {
        "url": args.url,
        "peer": str(link.peer),
        "transport": link.transport_kind,
        "codec": link.codec,
        "cipher": link.cipher,
        "handshake_ms": round(handshake_ms, 3),
        "rtt_ms": [round(r, 3) for r in rtts],
        "rtt_ms_median": round(statistics.median(rtts), 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{len(rtts)} pings: median {result['rtt_ms_median']} ms, min {min(rtts):.3f}, max {max(rtts):.3f}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import asyncio

    from .control import control_request

    reply = asyncio.run(control_request(_state(args), "status"))
    st = reply["status"]
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"node {st['node_id']} ({st['role']}), up {st['uptime_s']} s, listening on {', '.join(st['listen']) or '-'}")
    print(f"bytes sent {st['bytes_sent_total']}, received {st['bytes_received_total']}")
    for ln in st["links"]:
        rtt = "-" if ln["rtt_ms"] is None else f"{ln['rtt_ms']:.2f} ms"
        print(
            f"  {ln['peer']} {ln['transport']} {ln['codec']} rtt {rtt} sent {ln['bytes_sent']} "
            f"recv {ln['bytes_received']}{'' if ln['authorised'] else ' (unauthorised)'}"
        )
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    import asyncio

    from .control import control_request

    reply = asyncio.run(control_request(_state(args), "peers"))
    if args.json:
        print(json.dumps(reply["peers"], indent=2))
    else:
        for p in reply["peers"]:
            print(f"{p['node_id']} {p['role']} {p['network_kind']} {' '.join(p['addresses'])}")
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    import asyncio

    from .control import control_request

    rt = asyncio.run(control_request(_state(args), "routes"))["routes"]
    if args.json:
        print(json.dumps(rt, indent=2))
        return 0
    print(f"node {rt['node_id']}: {len(rt['hops'])} hops known, relays: {len(rt['relays'])}")
    print(f"{'from':>8} {'to':>8} {'transport':<9} {'network':<14} {'rtt ms':>8} {'MB/s':>8} {'health':>6}  source")
    for h in rt["hops"]:
        rtt = h["rtt_ms"] if h["rtt_ms"] is not None else h["expected_rtt_ms"]
        measured = "" if h["rtt_ms"] is not None else "*"
        bw = (h["bandwidth_bps"] or h["expected_bandwidth_bps"]) / 1e6
        net = h["network_kind"] + ("/metered" if h["metered"] else "")
        src = "link " + h["link"] if h["link"] else "learned from " + (h["learned_from"] or "?")[-8:]
        print(
            f"{h['from'][-8:]:>8} {h['to'][-8:]:>8} {h['transport']:<9} {net:<14} {rtt:>7.2f}{measured:1} "
            f"{bw:>8.1f} {h['health']:>6.2f}  {src}{' DEAD' if h['dead'] else ''}"
        )
    print("(* = prior, not yet measured)")
    for c in rt["choices"]:
        print(f"to {c['destination'][-8:]} [{c['purpose']}]: {c['reason']}")
    counters = rt["counters"]
    print(" ".join(f"{k}={v}" for k, v in counters.items() if k != "sent"), counters["sent"])
    return 0


def _receiver_arg(text: str) -> str:
    return "all" if text == "all" else str(_node_id_arg(text))


def cmd_send(args: argparse.Namespace) -> int:
    import asyncio

    from .control import control_request

    path = Path(args.file).resolve()
    if not path.is_file():
        raise ConfigError(f"{args.file} is not a readable file")
    bar = sys.stderr.isatty() and not args.json

    def on_line(line: dict[str, Any]) -> None:
        p = line["progress"]
        if bar:
            total = max(p["total_bytes"], 1)
            frac = p["have_bytes"] / total
            filled = int(frac * 30)
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (30 - filled)}] {frac:6.1%} {p['completed']}/{p['receivers']} receivers"
                f"{', ' + str(p['failed']) + ' failed' if p['failed'] else ''}"
            )
            sys.stderr.flush()

    request = {"path": str(path), "to": args.to or ["all"], "wait": args.wait, "timeout": args.timeout}
    if args.stripes:
        request["stripes"] = args.stripes
    if args.chunk_kib is not None:
        if not 1 <= args.chunk_kib <= 8192:
            raise ConfigError(f"--chunk-kib {args.chunk_kib}: use 1 to 8192 (KiB)")
        request["chunk_size"] = args.chunk_kib * 1024
    if args.star:
        request["star"] = True
    reply = asyncio.run(control_request(_state(args), "send", timeout=60.0, args=request, on_line=on_line))
    if bar:
        sys.stderr.write("\n")
    res = reply["result"]
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(
            f"payload {res['payload_id']} ({res['size']} bytes, {res['stripes']} stripe(s)): "
            f"{res['completed']}/{res['receivers']} receivers complete in {res['seconds']} s; "
            f"source sent {res['source_bytes_sent']} bytes ({res['source_bytes_sent'] / max(res['size'], 1):.2f}x)"
        )
    if args.wait and res["completed"] < res["receivers"]:
        print(f"edgeagent send: {res['receivers'] - res['completed']} receiver(s) did not complete", file=sys.stderr)
        return 1
    return 0


def cmd_netinfo(args: argparse.Namespace) -> int:
    from .netcost import Override, format_netinfo, netinfo_report

    override = Override(kind=args.network, metered=args.metered, interface=args.interface)
    report = netinfo_report(Path(args.cost) if args.cost else None, override=override)
    print(json.dumps(report, indent=2) if args.json else format_netinfo(report))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from .demo import run_demo

    if args.verbose == 0:  # the demo provokes failures on purpose; their warnings are its output
        logging.getLogger("edgeagent.links").setLevel(logging.ERROR)
    return asyncio.run(run_demo(agents=args.agents, json_out=args.json))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeagent", description="Peer-to-peer agent for phones, Pis and edge boxes.")
    p.add_argument("--version", action="version", version=f"edgeagent {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def state_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--state", metavar="DIR", help="state directory (default: the platform's user state dir)")
        sp.add_argument("--json", action="store_true", help="print JSON")

    sp = sub.add_parser("keygen", help="make this node's key (if missing) and print its NodeId")
    state_opt(sp)
    sp.set_defaults(func=cmd_keygen)
    sp = sub.add_parser("id", help="print this node's NodeId")
    state_opt(sp)
    sp.set_defaults(func=cmd_id)

    def node_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--state", metavar="DIR", help="state directory (default: the platform's user state dir)")
        sp.add_argument("--config", metavar="FILE", help="TOML config (see configs/edgeagent.example.toml)")
        sp.add_argument("--listen", metavar="URL", action="append", help="accept links here, e.g. ws://0.0.0.0:7400")
        sp.add_argument(
            "--allow", metavar="NODEID", action="append", type=_node_id_arg, help="authorise this peer (repeatable)"
        )
        sp.add_argument("--open", action="store_true", help="authorise every authenticated peer")
        sp.add_argument(
            "--network",
            choices=["wifi", "ethernet", "cellular", "loopback", "unknown"],
            help="this node's network kind (overrides detection)",
        )
        sp.add_argument("--cost", metavar="FILE", help="costs per GB and run conditions (see configs/cost.toml)")
        m = sp.add_mutually_exclusive_group()
        m.add_argument(
            "--metered", dest="metered", action="store_true", default=None, help="this node's bytes are metered"
        )
        m.add_argument("--unmetered", dest="metered", action="store_false", help="this node's bytes are not metered")
        sp.add_argument(
            "--insecure", action="store_true", help="plaintext records after the handshake (benchmarks only)"
        )
        sp.add_argument(
            "--mdns",
            choices=["off", "loopback", "auto"],
            help="LAN discovery: off (the default), loopback (127.0.0.1 only) or auto (non-cellular interfaces);"
            " overrides [discovery] mdns",
        )
        sp.add_argument("--mdns-listen-only", action="store_true", help="discover peers without advertising this node")

    sp = sub.add_parser("domain", help="run a domain node (authorises devices, forwards between them)")
    node_opts(sp)
    sp.add_argument("--job", metavar="FILE", help="run this federated-learning job (see configs/job.example.toml)")
    sp.set_defaults(func=cmd_run)
    sp = sub.add_parser("run", help="run a device node")
    node_opts(sp)
    sp.add_argument("--domain", metavar="URL", help="this node's domain")
    sp.add_argument(
        "--expect",
        metavar="NODEID",
        type=_node_id_arg,
        help="the domain's NodeId: refuse any other node answering at --domain (default: the NodeId it had "
        "on first link, pinned in DIR/domain.pin)",
    )
    sp.add_argument("--peer", metavar="URL", action="append", help="a static peer to keep a link to (repeatable)")
    sp.add_argument(
        "--relay", action="store_true", help="forward messages for authorised peers while unmetered ([routing] relay)"
    )
    sp.add_argument("--data", metavar="FILE", help="local training data for federated jobs (.npz with x and y)")
    sp.set_defaults(func=cmd_run)
    sp = sub.add_parser("ping", help="link to a node (real handshake) and measure round-trip time")
    sp.add_argument("url", help="ws:// or wss:// URL of the node")
    sp.add_argument("--count", type=int, default=4, help="pings to send (default 4)")
    sp.add_argument("--interval", type=float, default=0.2, help="seconds between pings (default 0.2)")
    sp.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each Pong (default 5)")
    sp.add_argument("--expect", metavar="NODEID", type=_node_id_arg, help="fail unless this node answers")
    sp.add_argument("--insecure", action="store_true", help="ask for a plaintext link (the node must allow it)")
    state_opt(sp)
    sp.set_defaults(func=cmd_ping)
    for name, func, text in (
        ("status", cmd_status, "what a running node is doing"),
        ("peers", cmd_peers, "the peers a running node knows"),
        ("routes", cmd_routes, "a running node's route table, measured figures and current choices"),
    ):
        sp = sub.add_parser(name, help=text)
        state_opt(sp)
        sp.set_defaults(func=func)
    sp = sub.add_parser("send", help="send a file to peers down a payload tree (the running node is the source)")
    sp.add_argument("file", help="the file to send")
    sp.add_argument(
        "--to",
        metavar="NODEID",
        action="append",
        type=_receiver_arg,
        help='receivers: "all" (the default) or NodeIds (repeatable)',
    )
    sp.add_argument("--wait", action="store_true", help="wait until every receiver holds the whole file")
    sp.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    sp.add_argument("--stripes", type=int, help="number of stripes (trees); default: chosen by the planner")
    sp.add_argument(
        "--chunk-kib",
        type=int,
        metavar="KIB",
        help="chunk size in KiB (1-8192; default 256): smaller chunks fill a deep tree sooner, cost more CPU",
    )
    sp.add_argument("--star", action="store_true", help="no tree: one copy to each receiver from here (a baseline)")
    state_opt(sp)
    sp.set_defaults(func=cmd_send)
    sp = sub.add_parser("netinfo", help="network kind, metered flag and cost per GB, and which probe decided")
    sp.add_argument("--cost", metavar="FILE", help="cost and run-condition settings (see configs/cost.toml)")
    sp.add_argument("--interface", metavar="IFACE", help="classify this interface instead of the default route's")
    sp.add_argument(
        "--network", choices=["wifi", "ethernet", "cellular", "loopback", "unknown"], help="assume this network kind"
    )
    m = sp.add_mutually_exclusive_group()
    m.add_argument("--metered", dest="metered", action="store_true", default=None, help="assume metered")
    m.add_argument("--unmetered", dest="metered", action="store_false", help="assume unmetered")
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.set_defaults(func=cmd_netinfo)
    sp = sub.add_parser("demo", help="run the embedded local demo (a domain and agents on loopback)")
    sp.add_argument("--agents", type=int, default=3, help="number of agents (1-16, default 3)")
    sp.add_argument("--json", action="store_true", help="print a JSON summary")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command in ("run", "domain", "demo"):
        from ._malloc import tune_malloc

        tune_malloc()
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo" and not 1 <= args.agents <= 16:
        parser.error("--agents must be between 1 and 16")
    if args.command == "ping" and not 1 <= args.count <= 100_000:
        parser.error("--count must be between 1 and 100000")
    if args.command in ("run", "domain") and args.open and args.allow:
        parser.error("--open and --allow exclude each other")
    try:
        return int(args.func(args))
    except EdgeAgentError as exc:
        print(f"edgeagent {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
