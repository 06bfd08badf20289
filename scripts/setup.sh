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
#   5. Only when this kernel cannot route multicast (or MAUTH_LAB_KERNEL=guest):
#      what `python -m lab.vm` needs to run the lab under Debian's own kernel
#      in QEMU: qemu-system-x86, busybox-static, linux-image-amd64 (installed
#      with linux-headers-amd64 so both are one version and bcc in the guest
#      finds /lib/modules/<release>/build), and virtme-ng from PyPI in a venv
#      of its own at .venv-vm/, apart from the project's dependencies.
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

# True when /boot holds a kernel that routes multicast, with its modules and headers.
guest_kernel_ready() {
    local img rel
    for img in /boot/vmlinuz-*; do
        [ -e "$img" ] || continue
        rel="${img#/boot/vmlinuz-}"
        [ -e "/lib/modules/$rel/modules.dep" ] && [ -e "/lib/modules/$rel/build/Makefile" ] \
            && grep -qs '^CONFIG_IP_MROUTE=y' "/boot/config-$rel" \
            && grep -qs '^CONFIG_IPV6_MROUTE=y' "/boot/config-$rel" && return 0
    done
    return 1
}

if [ "$need_guest" = 1 ]; then
    VM_PACKAGES=(qemu-system-x86 busybox-static linux-image-amd64 linux-headers-amd64)
    missing=()
    for p in "${VM_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ] || ! guest_kernel_ready; then
        log "kernel $(uname -r) cannot route multicast: installing Debian's kernel and QEMU for lab.vm"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        # Image and headers in one command, so apt gives both the same version.
        apt-get install -y -q --no-install-recommends "${VM_PACKAGES[@]}" >/dev/null
        guest_kernel_ready || die "no kernel in /boot with multicast routing, modules and headers after installing linux-image-amd64"
    fi
    if ! "$VM_VENV/bin/vng" --version 2>/dev/null | grep -qF "$VIRTME_NG_VERSION"; then
        log "installing virtme-ng $VIRTME_NG_VERSION into $VM_VENV"
        rm -rf "$VM_VENV"
        /usr/bin/python3 -m venv "$VM_VENV"
        "$VM_VENV/bin/pip" install -q "virtme-ng==$VIRTME_NG_VERSION"
    fi
fi
log "ready"
