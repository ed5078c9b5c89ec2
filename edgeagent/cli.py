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

from . import __version__
from .exceptions import EdgeAgentError

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

    ident, created = Identity.load_or_create(_state(args))
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


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from .demo import run_demo

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
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo" and not 1 <= args.agents <= 16:
        parser.error("--agents must be between 1 and 16")
    try:
        return int(args.func(args))
    except EdgeAgentError as exc:
        print(f"edgeagent {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
