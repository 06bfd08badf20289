#!/usr/bin/env bash
# Install mauth on this machine (or into a staging tree): `make install`, `make uninstall`.
#
#   scripts/install.sh install   [DESTDIR=...] [PREFIX=/usr/local] ...
#   scripts/install.sh uninstall [DESTDIR=...] [PREFIX=/usr/local] ...
#
# Settings come from the environment (the Makefile passes its variables):
#   PREFIX   /usr/local             programs, manual pages, documentation, units
#   DESTDIR  (empty)                staging root prepended to every path (packaging, tests)
#   UNITDIR  $PREFIX/lib/systemd/system   where the systemd units go (a directory systemd searches)
#   CONFDIR  /etc/mauth             configuration and secrets (the daemons' defaults point here)
#   PYTHON   /usr/bin/python3       the Python of the venv (any 3.11 or newer)
#   KEYGEN   yes                    create the router key and the API token when absent
#
# Layout and why:
#   $PREFIX/lib/mauth/venv          an ordinary virtual environment holding mauth's wheel (with the
#                                   compiled XDP filter) and its dependencies from PyPI, without
#                                   touching the system's Python (Debian refuses pip there, PEP 668)
#   $PREFIX/bin/{musersd,mauthserver,mauthctl}  relative links into the venv
#   $UNITDIR/{musersd,mauthserver}.service      with /usr/local replaced by $PREFIX
#   $CONFDIR/*.env, mauth.conf, mauthctl.toml   examples, never overwriting an existing file
#   $CONFDIR/router.key, api.token              mode 0600, created only when absent
#   $PREFIX/share/man/man1, $PREFIX/share/doc/mauth
#
# With DESTDIR the venv is built inside the staging tree and its scripts are
# then rewritten to name their final location, as packaging tools do.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ACTION="${1:-install}"
PREFIX="${PREFIX:-/usr/local}"
PREFIX="${PREFIX%/}"
DESTDIR="${DESTDIR:-}"
DESTDIR="${DESTDIR%/}"
UNITDIR="${UNITDIR:-$PREFIX/lib/systemd/system}"
CONFDIR="${CONFDIR:-/etc/mauth}"
PYTHON="${PYTHON:-/usr/bin/python3}"
KEYGEN="${KEYGEN:-yes}"

VENV="$PREFIX/lib/mauth/venv"
BINDIR="$PREFIX/bin"
MANDIR="$PREFIX/share/man/man1"
DOCDIR="$PREFIX/share/doc/mauth"
PROGRAMS=(musersd mauthserver mauthctl)
UNITS=(musersd.service mauthserver.service)

log() { echo "install: $*"; }
die() { echo "install: $*" >&2; exit 1; }

case "$PREFIX" in /*) ;; *) die "PREFIX must be an absolute path, not '$PREFIX'" ;; esac
case "$UNITDIR" in /*) ;; *) die "UNITDIR must be an absolute path, not '$UNITDIR'" ;; esac
case "$CONFDIR" in /*) ;; *) die "CONFDIR must be an absolute path, not '$CONFDIR'" ;; esac
if [ -n "$DESTDIR" ]; then
    case "$DESTDIR" in /*) ;; *) die "DESTDIR must be an absolute path, not '$DESTDIR'" ;; esac
fi

# ------------------------------------------------------------------ install

install_venv() {
    [ -x "$PYTHON" ] || die "$PYTHON not found (Debian's python3; run 'make setup' or apt-get install python3-venv)"
    local venv="$DESTDIR$VENV" wheel
    if [ ! -x "$venv/bin/python" ]; then
        log "creating the virtual environment $VENV"
        "$PYTHON" -m venv "$venv" || die "cannot create a venv with $PYTHON (apt-get install python3-venv)"
    fi
    # Build from a clean copy: an in-tree build leaves build/ behind, and a
    # stale build/ would put deleted modules back into the wheel.
    STAGE="$(mktemp -d)"
    trap 'rm -rf "$STAGE"' EXIT
    tar -C "$REPO" --exclude=__pycache__ --exclude='*.bpf.o' -cf - pyproject.toml setup.py MANIFEST.in README.md \
        scripts/build_bpf.sh mauthcore musersd mauthserver mauthclient sap ebpf \
        | { mkdir -p "$STAGE/src" && tar -C "$STAGE/src" -xf -; }
    log "building mauth"
    "$venv/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$STAGE/wheel" \
        "$STAGE/src" >/dev/null
    wheel="$(echo "$STAGE"/wheel/mauth-*.whl)"
    log "installing mauth and its dependencies into $VENV"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel"
    # The same version again (a reinstall from changed sources) is replaced too.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$wheel"
    if [ -n "$DESTDIR" ]; then
        relocate_venv "$venv"
    fi
    "$venv/bin/python" -c 'from musersd import bpfobj, maps; bpfobj.BPFObject(maps.OBJECT).close()' \
        || log "warning: the XDP filter cannot be opened; musersd needs libbpf.so.1 (Debian's libbpf1)"
}

relocate_venv() {
    # Scripts and activation files name the staging path; make them name the final one.
    local venv="$1" f
    for f in "$venv"/bin/* "$venv/pyvenv.cfg"; do
        [ -f "$f" ] && [ ! -L "$f" ] || continue
        if grep -Iq "$DESTDIR$VENV" "$f" 2>/dev/null; then
            sed -i "s|$DESTDIR$VENV|$VENV|g" "$f"
        fi
    done
    # Byte code records its source path for tracebacks: recompile without the staging root.
    "$venv/bin/python" -m compileall -q -f -s "$DESTDIR" "$venv/lib" >/dev/null || true
}

install_programs() {
    install -d -m 0755 "$DESTDIR$BINDIR"
    local p rel
    rel="$(realpath -m --relative-to="$BINDIR" "$VENV/bin")"
    for p in "${PROGRAMS[@]}"; do
        ln -sfn "$rel/$p" "$DESTDIR$BINDIR/$p"
    done
    log "linked ${PROGRAMS[*]} into $BINDIR"
}

install_units() {
    install -d -m 0755 "$DESTDIR$UNITDIR"
    local u
    for u in "${UNITS[@]}"; do
        sed -e "s|/usr/local/bin/|$BINDIR/|g" -e "s|/usr/local/share/doc/mauth/|$DOCDIR/|g" \
            -e "s|/etc/mauth/|$CONFDIR/|g" "$REPO/systemd/$u" > "$DESTDIR$UNITDIR/$u.tmp"
        chmod 0644 "$DESTDIR$UNITDIR/$u.tmp"
        mv -f "$DESTDIR$UNITDIR/$u.tmp" "$DESTDIR$UNITDIR/$u"
    done
    log "installed ${UNITS[*]} into $UNITDIR"
}

install_config() {
    # Configuration belongs to the operator: an existing file is never replaced.
    install -d -m 0755 "$DESTDIR$CONFDIR"
    local f
    for f in musersd.env mauthserver.env mauth.conf; do
        if [ -e "$DESTDIR$CONFDIR/$f" ]; then
            log "kept $CONFDIR/$f (exists)"
        else
            install -m 0644 "$REPO/etc/$f" "$DESTDIR$CONFDIR/$f"
            log "wrote $CONFDIR/$f"
        fi
    done
    if [ -e "$DESTDIR$CONFDIR/mauthctl.toml" ]; then
        log "kept $CONFDIR/mauthctl.toml (exists)"
    else
        "$DESTDIR$VENV/bin/python" -m mauthclient.cli config --example \
            | sed "s|/etc/mauth/|$CONFDIR/|g" > "$DESTDIR$CONFDIR/mauthctl.toml"
        chmod 0644 "$DESTDIR$CONFDIR/mauthctl.toml"
        log "wrote $CONFDIR/mauthctl.toml"
    fi
}

install_secrets() {
    [ "$KEYGEN" = yes ] || { log "KEYGEN=$KEYGEN: no router key or API token created"; return; }
    local ctl=("$DESTDIR$VENV/bin/python" -m mauthclient.cli keygen)
    if [ -e "$DESTDIR$CONFDIR/router.key" ]; then
        log "kept $CONFDIR/router.key (exists)"
    else
        (umask 077; "${ctl[@]}" key "$DESTDIR$CONFDIR/router.key" >/dev/null)
        log "created $CONFDIR/router.key (mode 0600): give the same file to every router and to mauthserver"
    fi
    if [ -e "$DESTDIR$CONFDIR/api.token" ]; then
        log "kept $CONFDIR/api.token (exists)"
    else
        (umask 077; "${ctl[@]}" token "$DESTDIR$CONFDIR/api.token" >/dev/null)
        log "created $CONFDIR/api.token (mode 0600)"
    fi
}

install_docs() {
    install -d -m 0755 "$DESTDIR$MANDIR" "$DESTDIR$DOCDIR"
    local p
    for p in "${PROGRAMS[@]}"; do
        install -m 0644 "$REPO/docs/man/$p.1" "$DESTDIR$MANDIR/$p.1"
    done
    install -m 0644 "$REPO/docs/operations.md" "$REPO/docs/protocol.md" "$REPO/README.md" "$DESTDIR$DOCDIR/"
    log "installed manual pages into $MANDIR and documentation into $DOCDIR"
}

systemd_running() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

do_install() {
    install_venv
    install_programs
    install_units
    install_config
    install_secrets
    install_docs
    if systemd_running; then
        systemctl daemon-reload
    fi
    if [ -z "$DESTDIR" ]; then
        cat <<EOF
install: done. Next, on a router: set the internal interfaces in $CONFDIR/musersd.env, then
    systemctl enable --now musersd
and on the mediator: list the routers in $CONFDIR/mauthserver.env, then
    systemctl enable --now mauthserver
(docs: $DOCDIR/operations.md, man musersd)
EOF
    fi
}

# ---------------------------------------------------------------- uninstall

do_uninstall() {
    local p u
    if systemd_running; then
        for u in "${UNITS[@]}"; do
            if systemctl is-active --quiet "$u"; then
                log "warning: $u is running; stop it first (systemctl disable --now $u)"
            fi
        done
    fi
    for p in "${PROGRAMS[@]}"; do
        # Only our links: a file of the same name from elsewhere stays.
        if [ -L "$DESTDIR$BINDIR/$p" ] && [[ "$(readlink "$DESTDIR$BINDIR/$p")" == */lib/mauth/venv/bin/$p ]]; then
            rm -f "$DESTDIR$BINDIR/$p"
        fi
        rm -f "$DESTDIR$MANDIR/$p.1"
    done
    for u in "${UNITS[@]}"; do
        rm -f "$DESTDIR$UNITDIR/$u"
    done
    rm -rf "$DESTDIR$PREFIX/lib/mauth" "$DESTDIR$DOCDIR"
    if systemd_running; then
        systemctl daemon-reload
    fi
    log "removed the programs, units, manual pages and documentation"
    log "kept $CONFDIR (configuration and secrets) and /var/lib/mauth (mauthserver's database)"
    log "a filter left attached stays until: ip link set dev IF xdp off; rm -r /sys/fs/bpf/mauth"
}

case "$ACTION" in
    install) do_install ;;
    uninstall) do_uninstall ;;
    *) die "unknown action '$ACTION' (install or uninstall)" ;;
esac
