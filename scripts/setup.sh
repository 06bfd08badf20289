#!/usr/bin/env bash
# mauth: make a Debian 12 machine ready to build, run and test mauth.
#
# Idempotent: every step checks first and does nothing when its work is done,
# so a second run on a ready machine takes seconds. Needs root (it installs
# Debian packages and mounts bpffs).
#
#   1. Debian packages: clang and libbpf-dev (to compile the XDP filter once,
#      here), libbpf1 (to load it), python3-venv, smcroute, iproute2, tools;
#      libpq5 (mauthserver's PostgreSQL back end, through psycopg) and
#      postgresql (the loopback tests start a private server of their own).
#   2. The filter's object, musersd/mauth_xdp.bpf.o (scripts/build_bpf.sh).
#      Nothing is compiled at run time and no kernel headers are needed.
#   3. bpffs mounted at /sys/fs/bpf.
#   4. A virtual environment at .venv/ (an ordinary one: every dependency
#      comes from PyPI), with mauth installed editable.
#   5. pimd, Debian's PIM-SM router (the lab's join-driven routing daemon),
#      fetched with `apt-get download` and unpacked into .cache/pimd/, never
#      installed: Debian's pimd and smcroute packages conflict, and the lab
#      needs both (the binary needs only libc; lab/daemons.py runs it).
#   6. Only when this kernel cannot route multicast (or MAUTH_LAB_KERNEL=guest):
#      what `python -m lab.vm` needs to run the lab under Debian's own kernel
#      in QEMU: qemu-system-x86, busybox-static, linux-image-amd64, and
#      virtme-ng from PyPI in a venv of its own at .venv-vm/, apart from the
#      project's dependencies.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.mauth-setup-stamp"
VM_VENV="$ROOT/.venv-vm"
VIRTME_NG_VERSION="1.42"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, mounts bpffs, loads XDP programs)"

DEB_PACKAGES=(
    clang llvm libbpf-dev libbpf1 bpftool python3-venv python3-dev
    smcroute iproute2 iptables nftables kmod procps psmisc
    tcpdump netsniff-ng tmux systemd systemd-container sqlite3
    libnetfilter-queue-dev gcc
    xdp-tools ethtool
    postgresql libpq5
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

# --- the filter, compiled once ---------------------------------------------
bash "$ROOT/scripts/build_bpf.sh"

# --- bpffs ------------------------------------------------------------------
if ! mountpoint -q /sys/fs/bpf; then
    log "mounting bpffs at /sys/fs/bpf"
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf
fi

# --- virtual environment ----------------------------------------------------
# An ordinary venv. One made by an older setup saw the system's packages
# (for bcc): make it again without them.
if [ ! -x "$VENV/bin/python" ] || grep -qs '^include-system-site-packages = true' "$VENV/pyvenv.cfg"; then
    log "creating virtual environment at $VENV"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
fi
# Reinstall only when the dependency list changed since the last run.
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    log "installing mauth and its Python dependencies into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e "$ROOT[test]"
    touch "$STAMP"
fi

"$VENV/bin/python" - <<'EOF' || die "the virtual environment cannot open the filter's object with libbpf"
from musersd import bpfobj, maps
bpfobj.BPFObject(maps.OBJECT).close()
EOF

# --- pimd, unpacked beside smcroute ------------------------------------------
PIMD_DIR="$ROOT/.cache/pimd"
if [ ! -x "$PIMD_DIR/usr/sbin/pimd" ]; then
    log "unpacking Debian's pimd into $PIMD_DIR (not installed: it conflicts with smcroute)"
    deb_dir="$(mktemp -d)"
    chmod 0755 "$deb_dir"
    if ! (cd "$deb_dir" && apt-get download -q pimd >/dev/null 2>&1); then
        apt-get update -q >/dev/null
        (cd "$deb_dir" && apt-get download -q pimd >/dev/null 2>&1) || { rm -rf "$deb_dir"; die "apt-get download pimd failed"; }
    fi
    rm -rf "$PIMD_DIR"
    mkdir -p "$PIMD_DIR"
    dpkg-deb -x "$deb_dir"/pimd_*.deb "$PIMD_DIR"
    rm -rf "$deb_dir"
    "$PIMD_DIR/usr/sbin/pimd" -v >/dev/null || die "the unpacked pimd does not run: $PIMD_DIR/usr/sbin/pimd"
fi

# --- a guest kernel for the lab, when this one cannot route multicast -------
need_guest=0
case "${MAUTH_LAB_KERNEL:-}" in
    guest) need_guest=1 ;;
    host) ;;
    ""|auto)
        "$VENV/bin/python" -c 'import sys; from musersd.kernel import multicast_routing as m; sys.exit(m().problem() is not None)' \
            || need_guest=1 ;;
    *) die "MAUTH_LAB_KERNEL=$MAUTH_LAB_KERNEL is not one of host, guest, auto" ;;
esac

# True when /boot holds a kernel that routes multicast, with its modules.
guest_kernel_ready() {
    local img rel
    for img in /boot/vmlinuz-*; do
        [ -e "$img" ] || continue
        rel="${img#/boot/vmlinuz-}"
        [ -e "/lib/modules/$rel/modules.dep" ] \
            && grep -qs '^CONFIG_IP_MROUTE=y' "/boot/config-$rel" \
            && grep -qs '^CONFIG_IPV6_MROUTE=y' "/boot/config-$rel" && return 0
    done
    return 1
}

if [ "$need_guest" = 1 ]; then
    VM_PACKAGES=(qemu-system-x86 busybox-static linux-image-amd64)
    missing=()
    for p in "${VM_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ] || ! guest_kernel_ready; then
        log "kernel $(uname -r) cannot route multicast: installing Debian's kernel and QEMU for lab.vm"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${VM_PACKAGES[@]}" >/dev/null
        guest_kernel_ready || die "no kernel in /boot with multicast routing and modules after installing linux-image-amd64"
    fi
    if ! "$VM_VENV/bin/vng" --version 2>/dev/null | grep -qF "$VIRTME_NG_VERSION"; then
        log "installing virtme-ng $VIRTME_NG_VERSION into $VM_VENV"
        rm -rf "$VM_VENV"
        /usr/bin/python3 -m venv "$VM_VENV"
        "$VM_VENV/bin/pip" install -q "virtme-ng==$VIRTME_NG_VERSION"
    fi
fi
log "ready"
