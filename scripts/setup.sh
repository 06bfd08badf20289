#!/usr/bin/env bash
# mauth: make a Debian 12 machine ready to build, run and test mauth.
#
# Idempotent: every step checks first and does nothing when its work is done,
# so a second run on a ready machine takes seconds. Needs root (it installs
# Debian packages, links kernel headers and mounts bpffs).
#
#   1. Debian packages: bcc (python3-bpfcc, compiled against Debian's own
#      python3), python3-venv, kernel headers, smcroute, iproute2, tools.
#   2. Kernel headers for bcc at /lib/modules/$(uname -r)/build. When the
#      running kernel has no header package (the usual case on these
#      machines), link Debian's linux-headers-amd64 there: the XDP program
#      uses only UAPI definitions, so a version mismatch is harmless.
#   3. bpffs mounted at /sys/fs/bpf.
#   4. A virtual environment at .venv/ made by Debian's /usr/bin/python3 with
#      --system-site-packages (so it sees bcc), with mauth installed editable.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.mauth-setup-stamp"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, mounts bpffs, loads XDP programs)"

DEB_PACKAGES=(
    python3-bpfcc python3-venv python3-dev libbpf1 bpftool
    linux-headers-amd64
    smcroute iproute2 iptables nftables kmod procps psmisc
    tcpdump netsniff-ng tmux systemd systemd-container sqlite3
    libnetfilter-queue-dev gcc
    xdp-tools ethtool
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- kernel headers for bcc -------------------------------------------------
KREL="$(uname -r)"
KDIR="/lib/modules/$KREL"
if [ ! -e "$KDIR/build/Makefile" ] || [ ! -e "$KDIR/source/include/uapi/linux/bpf.h" ]; then
    if [ -d "/usr/src/linux-headers-$KREL" ]; then
        target="/usr/src/linux-headers-$KREL"
        common="$target"
    else
        target="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)"
        common="$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)"
        [ -n "$target" ] && [ -n "$common" ] || die "no kernel headers found under /usr/src"
        log "no headers for kernel $KREL: linking $target (UAPI only is used)"
    fi
    mkdir -p "$KDIR"
    ln -sfn "$target" "$KDIR/build"
    ln -sfn "$common" "$KDIR/source"
fi

# --- bpffs ------------------------------------------------------------------
if ! mountpoint -q /sys/fs/bpf; then
    log "mounting bpffs at /sys/fs/bpf"
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf
fi

# --- virtual environment ----------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import bcc' 2>/dev/null; then
    log "creating virtual environment at $VENV"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
# Reinstall only when the dependency list changed since the last run.
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    log "installing mauth and its Python dependencies into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e "$ROOT[test]"
    touch "$STAMP"
fi

"$VENV/bin/python" - <<'EOF' || die "the virtual environment cannot import bcc"
import bcc  # noqa: F401
EOF
log "ready"
