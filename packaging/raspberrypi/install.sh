#!/usr/bin/env bash
# Install edgeagent as a hardened systemd service on a Raspberry Pi (Raspberry Pi OS / Debian
# Bookworm or later) or, with --role domain, on a cloud host.
#
#   sudo bash packaging/raspberrypi/install.sh [options] [SOURCE]
#
# SOURCE: a path to an edgeagent checkout, sdist or wheel, or a pip requirement such as
# "edgeagent" or "edgeagent==0.1.0" (default: the checkout this script sits in, if any, else
# "edgeagent" from PyPI; on Raspberry Pi OS pip takes wheels from piwheels). Run it again to
# upgrade: the key, the config and the service's arguments are kept.
#
# Options:
#   --role device|domain  device: edgeagent.service (the default); domain: edgeagent-domain.service
#   --fl                  also install numpy (federated-learning training)
#   --domain URL          device: its domain (written to EDGEAGENT_ARGS)
#   --expect NODEID       device: the domain's NodeId (refuse any other node answering at --domain)
#   --listen URL          accept links here (repeatable; a domain's default: ws://0.0.0.0:7400)
#   --no-start            install and enable the unit, but do not (re)start it now
#   --dry-run             print what would be done, change nothing (no root needed)
#   --root DIR            write the files under DIR instead of / (tests, staging); the commands
#                         (useradd, chown, runuser) still act on this machine; systemctl --root=DIR
#                         enable, no daemon-reload, no start
#
# What it does: apt-get install python3-venv if Python's venv module is missing; a system user
# and group "edgeagent" (no login, no home); a venv at /opt/edgeagent/venv owned by root (pip
# never touches the system Python: PEP 668-safe); /etc/edgeagent/{edgeagent,domain}.toml from
# the package's example and .env with EDGEAGENT_ARGS (root:edgeagent 0640); the node's key in
# /var/lib/edgeagent[-domain] (edgeagent keygen, as the user); the unit in /etc/systemd/system;
# then systemctl enable and restart.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python3}
USER_NAME=edgeagent
PREFIX_DIR=/opt/edgeagent
VENV=$PREFIX_DIR/venv
CONF_DIR=/etc/edgeagent
UNIT_DIR=/etc/systemd/system

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

ROLE=device FL=0 START=1 DRY=0 ROOT="" SOURCE="" DOMAIN="" EXPECT=""
LISTEN=()
while [ $# -gt 0 ]; do
    case "$1" in
        --role) [ $# -ge 2 ] || die "--role needs device or domain"; ROLE=$2; shift ;;
        --fl) FL=1 ;;
        --domain) [ $# -ge 2 ] || die "--domain needs a URL"; DOMAIN=$2; shift ;;
        --expect) [ $# -ge 2 ] || die "--expect needs a NodeId"; EXPECT=$2; shift ;;
        --listen) [ $# -ge 2 ] || die "--listen needs a URL"; LISTEN+=("$2"); shift ;;
        --no-start) START=0 ;;
        --dry-run) DRY=1 ;;
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$(cd "$2" && pwd) || die "no directory $2"; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$SOURCE" ] || die "one SOURCE only (got $SOURCE and $1)"; SOURCE=$1 ;;
    esac
    shift
done
case "$ROLE" in
    device) UNIT=edgeagent.service STATE=/var/lib/edgeagent CONF=edgeagent ;;
    domain) UNIT=edgeagent-domain.service STATE=/var/lib/edgeagent-domain CONF=domain
            [ -z "$DOMAIN$EXPECT" ] || die "--domain and --expect are for --role device" ;;
    *) die "--role $ROLE: use device or domain" ;;
esac
[ "$DRY" -eq 1 ] || [ "$(id -u)" -eq 0 ] || die "run it as root: sudo bash $0 ... (or --dry-run to see what it does)"

if [ -z "$SOURCE" ]; then
    if [ -f "$HERE/../../pyproject.toml" ] && grep -q '^name = "edgeagent"' "$HERE/../../pyproject.toml"; then
        SOURCE=$(cd "$HERE/../.." && pwd)
    else
        SOURCE=edgeagent
    fi
elif [ -e "$SOURCE" ]; then  # a path: absolute, so pip never reads it as a project name
    SOURCE=$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")
fi

# --- helpers: every change goes through one of these, so --dry-run shows it and does nothing
run() {
    if [ "$DRY" -eq 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
# write_file DEST MODE: standard input to DEST, atomically
write_file() {
    local dest=$1 mode=$2
    if [ "$DRY" -eq 1 ]; then echo "+ write $dest (mode $mode)"; cat >/dev/null; return; fi
    cat >"$dest.new"
    chmod "$mode" "$dest.new"
    mv "$dest.new" "$dest"
    echo "== wrote $dest"
}
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

# --- Python with venv (Debian splits venv into python3-venv)
has_venv() { "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
if ! has_venv; then
    command -v apt-get >/dev/null 2>&1 || die "$PYTHON 3.11+ with its venv module is needed"
    run apt-get install -y python3 python3-venv
    [ "$DRY" -eq 1 ] || has_venv || die "$PYTHON is older than 3.11 or has no venv: install Python 3.11+"
fi

# --- the system user (the unit runs as it; the state directory is its only writable place)
if getent passwd "$USER_NAME" >/dev/null 2>&1; then
    echo "== user $USER_NAME exists"
else
    run useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "edgeagent node" "$USER_NAME"
fi

# --- the venv, owned by root: the service cannot rewrite its own code
if [ -x "$ROOT$VENV/bin/python" ]; then
    echo "== venv $ROOT$VENV exists"
else
    run mkdir -p "$ROOT$PREFIX_DIR"
    run "$PYTHON" -m venv "$ROOT$VENV"
fi
REQS=("$SOURCE")
[ "$FL" -eq 0 ] || REQS+=('numpy>=1.24')
run "$ROOT$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade "${REQS[@]}"

# --- configuration: root:edgeagent, 0640 (a TLS key may sit beside it); kept when present
run mkdir -p "$ROOT$CONF_DIR"
run chmod 0750 "$ROOT$CONF_DIR"
run chown "root:$USER_NAME" "$ROOT$CONF_DIR"
if [ "$DRY" -eq 0 ] && [ ! -e "$ROOT$CONF_DIR/$CONF.toml" ]; then
    "$ROOT$VENV/bin/python" -c 'import importlib.resources as r, sys
sys.stdout.write(r.files("edgeagent").joinpath("configs/edgeagent.example.toml").read_text())' \
        | write_file "$ROOT$CONF_DIR/$CONF.toml" 0640
    run chown "root:$USER_NAME" "$ROOT$CONF_DIR/$CONF.toml"
elif [ "$DRY" -eq 1 ]; then
    echo "+ write $ROOT$CONF_DIR/$CONF.toml (the package's configs/edgeagent.example.toml) unless it exists"
fi
ENV_FILE=$ROOT$CONF_DIR/$CONF.env
if [ -n "$DOMAIN$EXPECT" ] || [ ${#LISTEN[@]} -gt 0 ] || [ ! -e "$ENV_FILE" ]; then
    ARGS=""
    [ -z "$DOMAIN" ] || ARGS="$ARGS --domain $DOMAIN"
    [ -z "$EXPECT" ] || ARGS="$ARGS --expect $EXPECT"
    for url in ${LISTEN[@]+"${LISTEN[@]}"}; do ARGS="$ARGS --listen $url"; done
    [ "$ROLE" = device ] || [ ${#LISTEN[@]} -gt 0 ] || ARGS=" --listen ws://0.0.0.0:7400"
    [ ! -e "$ENV_FILE" ] || run cp "$ENV_FILE" "$ENV_FILE.bak"
    {
        echo "# Arguments of 'edgeagent ${ROLE/device/run}' for $UNIT (after --state and --config)."
        echo "# Edit, then: systemctl restart $UNIT"
        echo "EDGEAGENT_ARGS=$(quote "${ARGS# }")"
    } | write_file "$ENV_FILE" 0640
    [ "$DRY" -eq 0 ] || echo "  EDGEAGENT_ARGS=${ARGS# }"
    run chown "root:$USER_NAME" "$ENV_FILE"
fi

# --- the state directory (systemd's StateDirectory= would make it at start; made now for keygen)
run mkdir -p "$ROOT$STATE"
run chmod 0700 "$ROOT$STATE"
run chown "$USER_NAME:$USER_NAME" "$ROOT$STATE"
NODE_ID=""
if [ "$DRY" -eq 0 ]; then
    NODE_ID=$(cd / && runuser -u "$USER_NAME" -- "$ROOT$VENV/bin/edgeagent" keygen --state "$ROOT$STATE")
else
    run runuser -u "$USER_NAME" -- "$ROOT$VENV/bin/edgeagent" keygen --state "$ROOT$STATE"
fi

# --- the unit
run mkdir -p "$ROOT$UNIT_DIR"
write_file "$ROOT$UNIT_DIR/$UNIT" 0644 <"$HERE/$UNIT"
if [ -n "$ROOT" ]; then
    run systemctl --root="$ROOT" enable "$UNIT"
else
    run systemctl daemon-reload
    run systemctl enable "$UNIT"
    if [ "$START" -eq 1 ]; then
        run systemctl restart "$UNIT"  # starts it, or runs the new code after an upgrade
    fi
fi

echo "node id: ${NODE_ID:-(none: dry run)}"
echo "status: systemctl status $UNIT; journalctl -u $UNIT -f"
echo "        sudo -u $USER_NAME $VENV/bin/edgeagent status --state $STATE"
