#!/usr/bin/env bash
# Install edgeagent on Termux (Android) as a termux-services service started at boot.
#
#   bash packaging/termux/install.sh [options] [SOURCE]
#
# SOURCE: a path to an edgeagent checkout, sdist or wheel, or a pip requirement such as
# "edgeagent" or "edgeagent==0.1.0" (default: the checkout this script sits in, if any, else
# "edgeagent" from PyPI). Run it again to upgrade: the key, the config and the service's
# arguments are kept.
#
# Options:
#   --fl              also install python-numpy (federated-learning training on this phone)
#   --domain URL      this device's domain (written to the service's arguments)
#   --expect NODEID   the domain's NodeId (refuse any other node answering at --domain)
#   --listen URL      accept links here too, e.g. ws://0.0.0.0:7400 (repeatable)
#   --no-boot         do not install the Termux:Boot script
#   --no-start        install the service but do not enable and start it
#
# What it does: pkg install python python-pip python-cryptography python-psutil termux-api
# termux-services (and python-numpy with --fl); a venv with --system-site-packages (so those
# packages, pip among them, are used, not rebuilt) at $EDGEAGENT_VENV (~/.local/share/edgeagent/venv); pip
# install SOURCE there with cbor2 5.x (pure Python; 6.x needs Rust on Android); the config in
# ~/.config/edgeagent/ (edgeagent.toml, from the package's example, and edgeagent.env, the
# service's arguments); the node's key (edgeagent keygen); the service directory
# $PREFIX/var/service/edgeagent (logs in $PREFIX/var/log/sv/edgeagent); the Termux:Boot script
# ~/.termux/boot/start-edgeagent; then sv-enable edgeagent.
# Read packaging/termux/README.md about battery optimisation and the phantom process killer.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TERMUX_PREFIX_DEFAULT=/data/data/com.termux/files/usr
TERMUX_HOME_DEFAULT=/data/data/com.termux/files/home

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

FL=0 BOOT=1 START=1 SOURCE="" DOMAIN="" EXPECT=""
LISTEN=()
while [ $# -gt 0 ]; do
    case "$1" in
        --fl) FL=1 ;;
        --domain) [ $# -ge 2 ] || die "--domain needs a URL"; DOMAIN=$2; shift ;;
        --expect) [ $# -ge 2 ] || die "--expect needs a NodeId"; EXPECT=$2; shift ;;
        --listen) [ $# -ge 2 ] || die "--listen needs a URL"; LISTEN+=("$2"); shift ;;
        --no-boot) BOOT=0 ;;
        --no-start) START=0 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$SOURCE" ] || die "one SOURCE only (got $SOURCE and $1)"; SOURCE=$1 ;;
    esac
    shift
done

# --- where things go
if [ -z "${PREFIX:-}" ] || [ ! -d "$PREFIX" ] || ! command -v pkg >/dev/null 2>&1; then
    die "this is for Termux (no \$PREFIX or pkg here); on a Raspberry Pi use packaging/raspberrypi/install.sh"
fi
: "${HOME:?HOME is not set}"
VENV=${EDGEAGENT_VENV:-$HOME/.local/share/edgeagent/venv}
CONF_DIR=${EDGEAGENT_CONFIG_DIR:-$HOME/.config/edgeagent}
STATE=${EDGEAGENT_STATE:-$HOME/.local/state/edgeagent}
SVDIR_=${SVDIR:-$PREFIX/var/service}
LOG_DIR=$PREFIX/var/log/sv/edgeagent
BOOT_DIR=$HOME/.termux/boot

if [ -z "$SOURCE" ]; then
    if [ -f "$HERE/../../pyproject.toml" ] && grep -q '^name = "edgeagent"' "$HERE/../../pyproject.toml"; then
        SOURCE=$(cd "$HERE/../.." && pwd)
    else
        SOURCE=edgeagent
    fi
elif [ -e "$SOURCE" ]; then  # a path: absolute, so pip never reads it as a project name
    SOURCE=$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")
fi

# --- Termux packages: Python and the compiled dependencies come prebuilt from Termux
PKGS=(python python-pip python-cryptography python-psutil termux-api termux-services)
[ "$FL" -eq 1 ] && PKGS+=(python-numpy)
echo "== pkg install ${PKGS[*]}"
pkg install -y "${PKGS[@]}"

python -c 'import sys; sys.exit(sys.platform != "android")' \
    || die "Termux's python does not report sys.platform 'android' (Python < 3.13): run 'pkg upgrade' first"

# --- the venv, and edgeagent in it
# --without-pip: pip comes from python-pip through the system site-packages (and installs into the
# venv), so the venv needs no ensurepip wheels
if [ ! -x "$VENV/bin/python" ]; then
    echo "== python -m venv --system-site-packages $VENV"
    mkdir -p "$(dirname "$VENV")"
    python -m venv --system-site-packages --without-pip "$VENV"
fi
# the line pyproject.toml selects on Android: cbor2 5.x installs without a Rust toolchain
printf '%s\n' 'cbor2>=5.6,<6' >"$VENV/edgeagent-constraints.txt"
echo "== pip install $SOURCE"
"$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade \
    --constraint "$VENV/edgeagent-constraints.txt" "$SOURCE"

# --- configuration (kept when it exists)
mkdir -p "$CONF_DIR"
chmod 700 "$CONF_DIR"
if [ ! -e "$CONF_DIR/edgeagent.toml" ]; then
    "$VENV/bin/python" -c 'import importlib.resources as r, sys
sys.stdout.write(r.files("edgeagent").joinpath("configs/edgeagent.example.toml").read_text())' \
        >"$CONF_DIR/edgeagent.toml.new"
    mv "$CONF_DIR/edgeagent.toml.new" "$CONF_DIR/edgeagent.toml"
    echo "== wrote $CONF_DIR/edgeagent.toml (every key, with its default)"
fi
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
if [ -n "$DOMAIN$EXPECT" ] || [ ${#LISTEN[@]} -gt 0 ] || [ ! -e "$CONF_DIR/edgeagent.env" ]; then
    ARGS=""
    [ -z "$DOMAIN" ] || ARGS="$ARGS --domain $DOMAIN"
    [ -z "$EXPECT" ] || ARGS="$ARGS --expect $EXPECT"
    for url in ${LISTEN[@]+"${LISTEN[@]}"}; do ARGS="$ARGS --listen $url"; done
    [ ! -e "$CONF_DIR/edgeagent.env" ] || cp "$CONF_DIR/edgeagent.env" "$CONF_DIR/edgeagent.env.bak"
    {
        echo "# Arguments of 'edgeagent run' for the termux-services service (after --state and --config)."
        echo "# Edit, then: sv restart edgeagent. Example: EDGEAGENT_ARGS='--domain wss://example.org:7400'"
        echo "EDGEAGENT_ARGS=$(quote "${ARGS# }")"
    } >"$CONF_DIR/edgeagent.env"
    echo "== wrote $CONF_DIR/edgeagent.env: EDGEAGENT_ARGS=${ARGS# }"
fi

# --- the node's key
NODE_ID=$("$VENV/bin/edgeagent" keygen --state "$STATE")

# --- the termux-services service (paths in the templates are Termux's defaults: rewritten here)
subst() {
    local esc_prefix esc_home esc_venv esc_conf esc_state
    esc_prefix=$(printf '%s' "$PREFIX" | sed 's/[&|\\]/\\&/g')
    esc_home=$(printf '%s' "$HOME" | sed 's/[&|\\]/\\&/g')
    esc_venv=$(printf '%s' "$VENV" | sed 's/[&|\\]/\\&/g')
    esc_conf=$(printf '%s' "$CONF_DIR" | sed 's/[&|\\]/\\&/g')
    esc_state=$(printf '%s' "$STATE" | sed 's/[&|\\]/\\&/g')
    sed -e "s|^VENV=.*|VENV=$esc_venv|" -e "s|^CONF_DIR=.*|CONF_DIR=$esc_conf|" -e "s|^STATE=.*|STATE=$esc_state|" \
        -e "s|$TERMUX_PREFIX_DEFAULT|$esc_prefix|g" -e "s|$TERMUX_HOME_DEFAULT|$esc_home|g" "$1" >"$2"
    chmod 700 "$2"
}
SV=$SVDIR_/edgeagent
NEW_SERVICE=0
[ -d "$SV" ] || NEW_SERVICE=1
mkdir -p "$SV/log" "$LOG_DIR"
[ "$NEW_SERVICE" -eq 0 ] || touch "$SV/down"  # runsvdir must not start it half-written
subst "$HERE/sv/edgeagent/run" "$SV/run.new" && mv "$SV/run.new" "$SV/run"
subst "$HERE/sv/edgeagent/log/run" "$SV/log/run.new" && mv "$SV/log/run.new" "$SV/log/run"
echo "== service $SV (logs: $LOG_DIR/current)"

if [ "$BOOT" -eq 1 ]; then
    mkdir -p "$BOOT_DIR"
    subst "$HERE/boot/start-edgeagent" "$BOOT_DIR/start-edgeagent"
    echo "== Termux:Boot script $BOOT_DIR/start-edgeagent (install the Termux:Boot app and open it once)"
fi

if [ "$START" -eq 1 ]; then
    # what $PREFIX/etc/profile.d/start-services.sh sets up in a shell opened after termux-services
    export SVDIR=$SVDIR_ LOGDIR=$PREFIX/var/log
    started=0
    if sv-enable edgeagent; then  # removes the down file, then sv up
        started=1
    else  # no runsvdir yet (termux-services was just installed): start it, give it a few scans
        (service-daemon start >/dev/null 2>&1 &)
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12; do
            sleep 1
            if sv up edgeagent 2>/dev/null; then started=1; break; fi
        done
    fi
    if [ "$started" -eq 1 ]; then
        [ "$NEW_SERVICE" -eq 1 ] || sv restart edgeagent || true  # an upgrade: run the new code
        echo "== started: sv status edgeagent; tail -f $LOG_DIR/current"
    else
        echo "install.sh: edgeagent is enabled but termux-services is not running yet: close Termux" >&2
        echo "            completely and reopen it (or reboot, with Termux:Boot); then: sv status edgeagent" >&2
    fi
else
    echo "== not started (--no-start): run sv-enable edgeagent when ready"
fi

echo "node id: $NODE_ID"
echo "Allow it on the domain (--allow $NODE_ID), and switch off battery optimisation for Termux:"
echo "see $HERE/README.md (battery, the phantom process killer)."
