"""The ``edgeagent`` command.

Exit status: 0 success, 1 failure, 2 bad usage or a bad configuration (a flag, a config-file key,
an environment variable). Errors go to stderr as one line that says what to do; a usage error adds
one short usage line (``usage: edgeagent send FILE --state DIR ... (edgeagent send --help for more)``).

Settings: flag, then environment (``EDGEAGENT_STATE``, ``EDGEAGENT_LOG_LEVEL``, ``EDGEAGENT_LOG_FORMAT``),
then the config file's ``[node]`` table (``--config FILE``, else ``EDGEAGENT_CONFIG``), then the default;
``edgeagent config show`` prints each with where it came from.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .exceptions import ConfigError, EdgeAgentError

if TYPE_CHECKING:  # pragma: no cover
    from .config import Resolved, Setting
    from .wire import NodeId

__all__ = ["default_state_dir", "main"]

log = logging.getLogger("edgeagent.cli")

#: send --stripes: the planner takes any k >= 1 but cuts it to the receivers that can relay; beyond
#: twice the most it picks itself (8), every receiver only gets more parent links for nothing
MAX_STRIPES = 16

#: the short usage line of each command (a usage error prints it, not the whole help)
SYNOPSIS = {
    "edgeagent": "edgeagent COMMAND [options] (commands: keygen id run domain ping status peers routes send "
    "netinfo demo config)",
    "keygen": "edgeagent keygen [--state DIR] [--json]",
    "id": "edgeagent id [--state DIR] [--json]",
    "run": "edgeagent run [--listen URL] [--domain URL] [--peer URL ...] [--state DIR] [--config FILE] "
    "[--mdns off|loopback|auto] ...",
    "domain": "edgeagent domain --listen URL [--state DIR] [--config FILE] [--allow NODEID ...|--open] ...",
    "ping": "edgeagent ping URL [--count N] [--expect NODEID] [--json] ...",
    "status": "edgeagent status --state DIR [--json]",
    "peers": "edgeagent peers --state DIR [--json]",
    "routes": "edgeagent routes --state DIR [--json]",
    "send": "edgeagent send FILE --state DIR [--to all|NODEID ...] [--wait] [--stripes K] [--json] ...",
    "netinfo": "edgeagent netinfo [--interface IFACE] [--network KIND] [--metered|--unmetered] [--json] ...",
    "demo": "edgeagent demo [--agents N] [--json]",
    "config": "edgeagent config show [--config FILE] [run/domain flags ...] [--json]",
    "config show": "edgeagent config show [--config FILE] [run/domain flags ...] [--json]",
}

#: [node] key -> the argparse attribute of its flag
_NODE_FLAGS = {
    "listen": "listen",
    "domain": "domain",
    "expect": "expect",
    "peers": "peer",
    "allow": "allow",
    "open": "open",
    "state": "state",
    "data": "data",
    "job": "job",
    "cost": "cost",
    "mdns": "mdns",
    "mdns_listen_only": "mdns_listen_only",
    "network": "network",
    "metered": "metered",
    "insecure": "insecure",
    "relay": "relay",
    "log_level": "log_level",
    "log_format": "log_format",
}
#: commands whose flags are node settings (elsewhere --expect and --insecure mean something else)
_NODE_COMMANDS = ("run", "domain", "config")


class UsageError(ConfigError):
    """A bad flag value found after parsing: exit 2 with the command's short usage line."""


class SettingsError(ConfigError):
    """A bad config file, variable or combination of settings: exit 2, one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the message and one short usage line (not the whole usage text),
    and a bad value reads ``--allow: 'xyz' is not a NodeId (...)``."""

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")
        self.exit(2, f"{self.prog}: {message}\n{_usage_line(self.prog)}\n")


def _usage_line(prog: str) -> str:
    command = prog.removeprefix("edgeagent").strip() or "edgeagent"
    return f"usage: {SYNOPSIS.get(command, prog + ' ...')} ({prog} --help for more)"


def default_state_dir() -> Path:
    """The platform's user state directory for edgeagent (overridden by ``--state`` or ``EDGEAGENT_STATE``)."""
    from .config import default_state_dir as state_dir

    return state_dir()


# -- flag values --------------------------------------------------------------------------------


def _url_arg(text: str) -> str:
    from .config import Invalid, check_url

    try:
        return check_url(text)
    except Invalid as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not {exc.allowed}") from None


def _node_id_arg(text: str) -> NodeId:
    from .config import Invalid, check_node_id

    try:
        return check_node_id(text)
    except Invalid as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not {exc.allowed}") from None


def _receiver_arg(text: str) -> str:
    if text == "all":
        return "all"
    try:
        return str(_node_id_arg(text))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a NodeId (expected a base58 PeerId like 12D3KooW...) or all"
        ) from None


def _int_arg(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number: use {low} to {high}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {low} to {high}")
        return value

    return parse


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


# -- settings -----------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Resolved:
    """The command's effective settings (flags over environment over config file over defaults)."""
    from .config import Setting, resolve

    flags: dict[str, Setting] = {}
    node_command = args.command in _NODE_COMMANDS
    for key, attr in _NODE_FLAGS.items():
        value = getattr(args, attr, None)
        if value is None or (not node_command and key in ("expect", "insecure")):
            continue
        flag = "--" + attr.replace("_", "-")
        if key == "metered" and value is False:
            flag = "--unmetered"
        if isinstance(value, list):
            value = tuple(dict.fromkeys(value))
        elif key in ("state", "data", "job", "cost"):
            value = Path(str(value)).expanduser()
        flags[key] = Setting(value, "flag", flag)
    verbose = int(getattr(args, "verbose", 0) or 0) + int(getattr(args, "verbose_sub", 0) or 0)
    if "log_level" not in flags and verbose:
        flags["log_level"] = Setting("info" if verbose == 1 else "debug", "flag", "-" + "v" * min(verbose, 2))
    if args.command == "domain":
        flags["role"] = Setting("domain", "flag", "edgeagent domain")
    elif getattr(args, "role", None):
        flags["role"] = Setting(args.role, "flag", "--role")
    try:
        return resolve(flags, config_file=getattr(args, "config", None))
    except ConfigError as exc:
        raise SettingsError(str(exc)) from None


def _state(res: Resolved, *, create: bool = False) -> Path:
    """The state directory; with ``create``, made (0700) and checked, with advice naming where it came from."""
    setting = res.node["state"]
    path = Path(setting.value)
    if not create:
        return path
    from .statedir import prepare

    try:
        prepare(path)
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write to state directory {path}; choose another with --state DIR")
    except ConfigError as exc:
        text = str(exc)
        if setting.source in ("default", "env"):  # say where the directory came from, and both ways to change it
            for advice in ("choose another with --state DIR", "choose a directory with --state DIR"):
                if text.endswith(advice):
                    what = "the default" if setting.source == "default" else "from EDGEAGENT_STATE"
                    text = text.replace(str(path), f"{path} ({what})", 1).removesuffix(advice)
                    text += "choose another with --state DIR or EDGEAGENT_STATE=DIR"
        raise ConfigError(text) from None
    return path


# -- commands -----------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace, res: Resolved) -> int:
    from .identity import Identity

    state = _state(res, create=True)
    ident, created = Identity.load_or_create(state)
    path = state / "identity.key"
    if args.json:
        print(json.dumps({"node_id": str(ident.node_id), "created": created, "key_file": str(path)}))
    else:
        print(ident.node_id)
        print(f"{'created' if created else 'kept existing'} {path}", file=sys.stderr)
    return 0


def cmd_id(args: argparse.Namespace, res: Resolved) -> int:
    from .identity import Identity

    ident = Identity.load(_state(res) / "identity.key")
    if args.json:
        print(json.dumps({"node_id": str(ident.node_id)}))
    else:
        print(ident.node_id)
    return 0


def _node_inputs(res: Resolved, *, need_job: bool = True) -> tuple[Any, Any]:
    """(the cost file's NetCostConfig, the parsed job or None); raises SettingsError for a bad one."""
    from .netcost import load_netcost

    try:
        net_cfg = load_netcost(res["cost"])
        data = res["data"]
        if data is not None and not Path(data).is_file():
            raise ConfigError(f"{res.node['data'].origin}: {data} is not a readable file (.npz with x and y)")
        job = None
        if res["job"] is not None and need_job:
            try:
                from .fl import load_job
            except ImportError:
                raise EdgeAgentError("--job needs numpy: pip install 'edgeagent[fl]'") from None
            job = load_job(res["job"])
    except ConfigError as exc:
        raise SettingsError(str(exc)) from None
    return net_cfg, job


def cmd_run(args: argparse.Namespace, res: Resolved) -> int:
    from ._loop import run
    from .nodeconfig import NodeConfig

    net_cfg, job = _node_inputs(res)
    try:
        config = NodeConfig.from_settings(res, net_config=net_cfg, job=job)
    except ConfigError as exc:
        raise SettingsError(str(exc)) from None
    return run(_run_node(res, config))


async def _run_node(res: Resolved, config: Any) -> int:
    import asyncio
    import signal

    from . import sdnotify
    from .identity import Identity
    from .node import Node

    state = _state(res, create=True)  # before the key is read from it
    ident, _ = Identity.load_or_create(state)
    node = Node(ident, state, config)
    await node.start()
    print(
        json.dumps(
            {"event": "started", "node_id": str(ident.node_id), "role": config.role, "listen": node.listen_urls}
        ),
        flush=True,
    )
    # under systemd (Type=notify): ready now, and a watchdog pinged from this event loop
    sdnotify.ready(f"{config.role} {ident.node_id} listening on {', '.join(node.listen_urls) or '-'}")
    watchdog = asyncio.create_task(sdnotify.watchdog_loop(), name="sd-watchdog")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    sdnotify.stopping("stopping")
    try:
        await node.stop()
    finally:
        watchdog.cancel()
    return 0


def cmd_ping(args: argparse.Namespace, res: Resolved) -> int:
    import asyncio

    return asyncio.run(_ping(args, res))


async def _ping(args: argparse.Namespace, res: Resolved) -> int:
    import asyncio
    import statistics
    import time

    from .identity import Identity
    from .links.base import LinkOptions
    from .links.websocket import dial

    key = _state(res) / "identity.key"
    ident = Identity.load(key) if key.exists() else Identity.generate()
    t0 = time.perf_counter()
    link = await dial(args.url, ident, LinkOptions(insecure=bool(args.insecure)), expected_peer=args.expect)
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


def cmd_status(args: argparse.Namespace, res: Resolved) -> int:
    import asyncio

    from .control import control_request

    reply = asyncio.run(control_request(_state(res), "status"))
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
    for p in st.get("payloads") or ():
        done = "complete" if p.get("complete") else f"{p.get('have_bytes', 0)}/{p.get('size', 0)} bytes"
        sent = f", sent {p['bytes_sent']} bytes" if "bytes_sent" in p else ""
        print(f"  payload {p['id']} ({p.get('role', 'stored')}): {done}{sent}")
    return 0


def cmd_peers(args: argparse.Namespace, res: Resolved) -> int:
    import asyncio

    from .control import control_request

    reply = asyncio.run(control_request(_state(res), "peers"))
    if args.json:
        print(json.dumps(reply["peers"], indent=2))
    else:
        for p in reply["peers"]:
            print(f"{p['node_id']} {p['role']} {p['network_kind']} {' '.join(p['addresses'])}")
    return 0


def cmd_routes(args: argparse.Namespace, res: Resolved) -> int:
    import asyncio

    from .control import control_request

    rt = asyncio.run(control_request(_state(res), "routes"))["routes"]
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


def cmd_send(args: argparse.Namespace, res: Resolved) -> int:
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

    request: dict[str, Any] = {"path": str(path), "to": args.to or ["all"], "wait": args.wait, "timeout": args.timeout}
    if args.stripes is not None:
        request["stripes"] = args.stripes
    if args.chunk_kib is not None:
        if not 1 <= args.chunk_kib <= 8192:  # exit 1, as before (tests/test_payload_service.py relies on it)
            raise ConfigError(f"--chunk-kib {args.chunk_kib} is out of range: use 1 to 8192 (KiB)")
        request["chunk_size"] = args.chunk_kib * 1024
    if args.star:
        request["star"] = True
    state = _state(res)
    reply = asyncio.run(control_request(state, "send", timeout=60.0, args=request, on_line=on_line))
    if bar:
        sys.stderr.write("\n")
    out = reply["result"]
    if args.json:
        print(json.dumps(out, indent=2))
    elif not args.wait:
        print(
            f"payload {out['payload_id']} started: {out['size']} bytes to {out['receivers']} receiver(s) "
            f"in {out['stripes']} stripe(s)"
        )
        print(
            f"follow it with `edgeagent status --state {state}` (its payloads), "
            "or send with --wait to wait until every receiver holds it",
            file=sys.stderr,
        )
    else:
        print(
            f"payload {out['payload_id']} ({out['size']} bytes, {out['stripes']} stripe(s)): "
            f"{out['completed']}/{out['receivers']} receivers complete in {out['seconds']} s; "
            f"source sent {out['source_bytes_sent']} bytes "
            f"({out['source_bytes_sent'] / max(out['size'], 1):.2f}x)"
        )
    if args.wait and out["completed"] < out["receivers"]:
        print(f"edgeagent send: {out['receivers'] - out['completed']} receiver(s) did not complete", file=sys.stderr)
        return 1
    return 0


def _interfaces() -> list[str] | None:
    """This machine's network interfaces, or None when they cannot be listed."""
    import socket

    try:
        return sorted(name for _, name in socket.if_nameindex())
    except OSError:
        pass
    try:
        return sorted(os.listdir("/sys/class/net"))
    except OSError:
        return None


def cmd_netinfo(args: argparse.Namespace, res: Resolved) -> int:
    from .netcost import Override, format_netinfo, netinfo_report

    if args.interface is not None:
        names = _interfaces()
        if names is not None and args.interface not in names:
            raise UsageError(
                f"--interface: {args.interface!r} does not exist here; the interfaces are: {', '.join(names) or 'none'}"
            )
    net_cfg, _ = _node_inputs(res, need_job=False)
    override = Override(kind=res["network"], metered=res["metered"], interface=args.interface)
    report = netinfo_report(config=net_cfg, override=override)
    print(json.dumps(report, indent=2) if args.json else format_netinfo(report))
    return 0


def cmd_demo(args: argparse.Namespace, res: Resolved) -> int:
    import asyncio

    from .demo import run_demo

    if res.node["log_level"].source == "default":  # the demo provokes failures on purpose: their warnings
        logging.getLogger("edgeagent.links").setLevel(logging.ERROR)
    return asyncio.run(run_demo(agents=args.agents, json_out=args.json))


def cmd_config_show(args: argparse.Namespace, res: Resolved) -> int:
    from .config import table_settings

    try:
        _node_inputs(res)  # the cost and job files parse, the data file is there
    except SettingsError:
        raise
    except EdgeAgentError:
        pass  # no numpy: the job file is read when the domain starts
    tables = table_settings(res.config)
    if args.json:
        doc: dict[str, Any] = {"config_file": res.config_file.to_json()}
        doc["node"] = {k: s.to_json() for k, s in res.node.items()}
        doc["static_peers"] = res.peers
        doc.update({t: {k: s.to_json() for k, s in keys.items()} for t, keys in tables.items()})
        print(json.dumps(doc, indent=2))
        return 0
    cf = res.config_file
    print(f"config file: {cf.value or 'none'}{f' (from {cf.origin})' if cf.value else ''}")
    rows = [("node", k, s) for k, s in res.node.items()]
    rows += [(t, k, s) for t, keys in tables.items() for k, s in keys.items()]
    width = max(len(t) + len(k) + 1 for t, k, _ in rows)
    for table, key, s in rows:
        value = json.dumps(_plain(s.value))
        where = s.source + (f" ({s.origin})" if s.origin else "")
        print(f"{table + '.' + key:<{width}} = {value:<40} {where}")
    return 0


def _plain(value: Any) -> Any:
    from .config import Setting

    return Setting(value, "").to_json()["value"]


# -- the parser ---------------------------------------------------------------------------------


def _common(sp: argparse.ArgumentParser, *, sub: bool = True) -> None:
    """Options every command takes (before or after its name)."""
    sp.add_argument(
        "-v", "--verbose", dest="verbose_sub" if sub else "verbose", action="count", default=0,
        help="more log output: -v info, -vv debug (--log-level wins)",
    )  # fmt: skip
    sp.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default=argparse.SUPPRESS,
        help="log records at this level and above (default warning; EDGEAGENT_LOG_LEVEL, [node] log_level)",
    )  # fmt: skip
    sp.add_argument(
        "--log-format", choices=["text", "json"], default=argparse.SUPPRESS,
        help="text lines, or JSON lines with ts, level, logger, msg and extra fields ([node] log_format)",
    )  # fmt: skip


def _state_opts(sp: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    sp.add_argument(
        "--state", metavar="DIR", help="state directory (default: EDGEAGENT_STATE, [node] state, the platform's)"
    )
    sp.add_argument("--config", metavar="FILE", help="config file for [node] state etc. (default: EDGEAGENT_CONFIG)")
    if json_flag:
        sp.add_argument("--json", action="store_true", help="print JSON")


def _network_opts(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--network", choices=["wifi", "ethernet", "cellular", "loopback", "unknown"],
        help="this node's network kind (overrides detection; [node] network)",
    )  # fmt: skip
    sp.add_argument("--cost", metavar="FILE", help="costs per GB and run conditions (see configs/cost.toml)")
    m = sp.add_mutually_exclusive_group()
    m.add_argument("--metered", dest="metered", action="store_true", default=None, help="this node's bytes are metered")
    m.add_argument("--unmetered", dest="metered", action="store_false", help="this node's bytes are not metered")


def _node_opts(sp: argparse.ArgumentParser) -> None:
    """The run/domain flags (each is also a [node] key of the config file; a flag wins)."""
    sp.add_argument("--state", metavar="DIR", help="state directory (default: EDGEAGENT_STATE, the platform's)")
    sp.add_argument("--config", metavar="FILE", help="TOML config (see configs/edgeagent.example.toml)")
    sp.add_argument(
        "--listen", metavar="URL", action="append", type=_url_arg,
        help="accept links here, e.g. ws://0.0.0.0:7400 (no port: 7400)",
    )  # fmt: skip
    sp.add_argument(
        "--allow", metavar="NODEID", action="append", type=_node_id_arg, help="authorise this peer (repeatable)"
    )
    sp.add_argument("--open", action="store_true", default=None, help="authorise every authenticated peer")
    _network_opts(sp)
    sp.add_argument(
        "--insecure", action="store_true", default=None, help="plaintext records after the handshake (benchmarks only)"
    )
    sp.add_argument(
        "--mdns", choices=["off", "loopback", "auto"],
        help="LAN discovery: off (the default), loopback (127.0.0.1 only) or auto (non-cellular interfaces)",
    )  # fmt: skip
    sp.add_argument(
        "--mdns-listen-only", action="store_true", default=None, help="discover peers without advertising this node"
    )


def _run_opts(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--domain", metavar="URL", type=_url_arg, help="this node's domain (no port: 7400)")
    sp.add_argument(
        "--expect", metavar="NODEID", type=_node_id_arg,
        help="the domain's NodeId: refuse any other node answering at --domain (default: the NodeId it had "
        "on first link, pinned in DIR/domain.pin)",
    )  # fmt: skip
    sp.add_argument(
        "--peer", metavar="URL", action="append", type=_url_arg, help="a static peer to keep a link to (repeatable)"
    )
    sp.add_argument(
        "--relay", action="store_true", default=None,
        help="forward messages for authorised peers while unmetered ([node] relay)",
    )  # fmt: skip
    sp.add_argument("--data", metavar="FILE", help="local training data for federated jobs (.npz with x and y)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgeagent", description="Peer-to-peer agent for phones, Pis and edge boxes.")
    p.add_argument("--version", action="version", version=f"edgeagent {__version__}")
    _common(p, sub=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, func: Any, text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=text, description=text)
        _common(sp)
        sp.set_defaults(func=func, usage_prog=sp.prog)
        return sp

    _state_opts(command("keygen", cmd_keygen, "make this node's key (if missing) and print its NodeId"))
    _state_opts(command("id", cmd_id, "print this node's NodeId"))
    sp = command("domain", cmd_run, "run a domain node (authorises devices, forwards between them)")
    _node_opts(sp)
    sp.add_argument("--job", metavar="FILE", help="run this federated-learning job (see configs/job.example.toml)")
    sp = command("run", cmd_run, "run a node (a device unless [node] role says domain)")
    _node_opts(sp)
    _run_opts(sp)
    sp = command("ping", cmd_ping, "link to a node (real handshake) and measure round-trip time")
    sp.add_argument("url", type=_url_arg, help="ws:// or wss:// URL of the node (no port: 7400)")
    sp.add_argument("--count", type=_int_arg(1, 100_000), default=4, help="pings to send (default 4)")
    sp.add_argument("--interval", type=float, default=0.2, help="seconds between pings (default 0.2)")
    sp.add_argument("--timeout", type=_seconds_arg, default=5.0, help="seconds to wait for each Pong (default 5)")
    sp.add_argument("--expect", metavar="NODEID", type=_node_id_arg, help="fail unless this node answers")
    sp.add_argument("--insecure", action="store_true", default=None, help="ask for a plaintext link")
    _state_opts(sp)
    for name, func, text in (
        ("status", cmd_status, "what a running node is doing"),
        ("peers", cmd_peers, "the peers a running node knows"),
        ("routes", cmd_routes, "a running node's route table, measured figures and current choices"),
    ):
        _state_opts(command(name, func, text))
    sp = command("send", cmd_send, "send a file to peers down a payload tree (the running node is the source)")
    sp.add_argument("file", help="the file to send")
    sp.add_argument(
        "--to", metavar="NODEID", action="append", type=_receiver_arg,
        help='receivers: "all" (the default) or NodeIds (repeatable)',
    )  # fmt: skip
    sp.add_argument("--wait", action="store_true", help="wait until every receiver holds the whole file")
    sp.add_argument("--timeout", type=_seconds_arg, help="with --wait: give up after this many seconds")
    sp.add_argument(
        "--stripes", type=_int_arg(1, MAX_STRIPES), metavar="K",
        help=f"number of stripes (trees), 1 to {MAX_STRIPES}, at most the receivers that relay; default: the planner's",
    )  # fmt: skip
    sp.add_argument(
        "--chunk-kib", type=int, metavar="KIB",
        help="chunk size in KiB (1-8192; default 256): smaller chunks fill a deep tree sooner, cost more CPU",
    )  # fmt: skip
    sp.add_argument("--star", action="store_true", help="no tree: one copy to each receiver from here (a baseline)")
    _state_opts(sp)
    sp = command("netinfo", cmd_netinfo, "network kind, metered flag and cost per GB, and which probe decided")
    sp.add_argument("--interface", metavar="IFACE", help="classify this interface instead of the default route's")
    _network_opts(sp)
    sp.add_argument("--config", metavar="FILE", help="config file for [node] network, metered, cost")
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp = command("demo", cmd_demo, "run the embedded local demo (a domain and agents on loopback)")
    sp.add_argument("--agents", type=_int_arg(1, 16), default=3, help="number of agents (1-16, default 3)")
    sp.add_argument("--json", action="store_true", help="print a JSON summary")
    sp = command("config", cmd_config_show, "the effective configuration")
    actions = sp.add_subparsers(dest="action", metavar="ACTION", required=True)
    sp = actions.add_parser("show", help="print every setting and where it came from (default/file/env/flag)")
    sp.set_defaults(usage_prog=sp.prog)
    _common(sp)
    _node_opts(sp)
    _run_opts(sp)
    sp.add_argument("--job", metavar="FILE", help="as domain --job")
    sp.add_argument("--role", choices=["device", "domain"], help="show what run (device) or domain would use")
    sp.add_argument("--json", action="store_true", help="print JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        print(f"edgeagent: say which command to run\n{_usage_line('edgeagent')}", file=sys.stderr)
        return 2
    where = str(args.usage_prog)
    if extra:  # named with the command they were given to, not as "edgeagent: ..."
        parser.exit(2, f"{where}: unrecognized arguments: {' '.join(extra)}\n{_usage_line(where)}\n")
    if args.command in _NODE_COMMANDS and args.open and args.allow:
        parser.exit(2, f"{where}: --open and --allow exclude each other\n{_usage_line(where)}\n")
    try:
        res = _settings(args)
    except ConfigError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 2
    from .logsetup import setup_logging

    setup_logging(res["log_level"], res["log_format"])
    if args.command in ("run", "domain", "demo"):
        from ._malloc import tune_malloc

        tune_malloc()
    try:
        return int(args.func(args, res))
    except UsageError as exc:
        print(f"{where}: {exc}\n{_usage_line(where)}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 2
    except EdgeAgentError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug or an unexpected OS error: one line; the traceback with --log-level debug
        log.debug("unexpected error", exc_info=True)
        print(f"{where}: {type(exc).__name__}: {exc} (run with --log-level debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
