"""Run a command under a kernel that routes multicast: Debian's own, booted in QEMU.

    .venv/bin/python -m lab.vm [OPTIONS] -- COMMAND [ARG...]

Strategy: the lab needs a kernel built with CONFIG_IP_MROUTE and
CONFIG_IPV6_MROUTE (smcrouted drives the kernel's multicast forwarding). When
the host kernel lacks them, Debian's stock kernel (package linux-image-amd64,
the kernel real Debian 12 routers run) is booted under QEMU with virtme-ng,
which exports the host's root filesystem to the guest over 9p: the checkout,
the .venv, the filter's compiled object, libbpf and smcroute are seen at the
same paths with no image to build or keep in sync. 9p rather than virtiofs because virtiofsd is not in
Debian 12 and 9p is built into QEMU; rather than a hand-made initramfs because virtme-ng already
loads the 9p modules, mounts /proc, /sys, /dev, /run and brings the guest up in
about 15 s of emulated time.

The guest's root is the host's, read-only, with two exceptions shared
read-write: the current directory (a command may write its results there and
find them on the host afterwards, as it would without a guest) and a fresh
host temporary directory mounted at /run/mauth-vm that carries the command,
its cwd and environment in, and the guest's "up" mark and exit status out.
/tmp, /etc, /var and the other system directories are virtme-ng's overlays:
the host's files are seen there, the guest's writes stay in its memory (the
lab's Unix sockets live in /tmp, and a socket cannot live on 9p), so a guest
cannot change the host's system. In the guest `python -m lab.vm --guest
DIR` mounts bpffs, runs the command as root in the same cwd and records the
status. Output streams live through virtme-ng's virtio serial ports (a
terminal: through the guest's console, so a full-screen dashboard works).

Acceleration: KVM where it can really run a guest, TCG (software emulation)
otherwise. A /dev/kvm that opens is not enough: on a VM whose CPU exposes no
vmx/svm flag the KVM guest never starts (seen: it hangs after "Probing EDD"),
so KVM is tried only with one of those flags, and a KVM guest that has not
written its "up" mark within --kvm-boot-timeout is killed and booted again with
TCG. A hang or panic ends at --timeout: QEMU's process group is killed and the
shared directory removed, so nothing is left on the host.

`--where` prints where the lab would run (host or guest) and `--if-needed`
runs COMMAND directly on a host whose kernel routes multicast; both follow
MAUTH_LAB_KERNEL=host|guest when it is set.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

GUEST_DIR = "/run/mauth-vm"  # where the shared directory appears in the guest
ENV_IN_VM = "MAUTH_VM"  # set in the guest: "<kernel release> <accel>"
ENV_LAB_KERNEL = "MAUTH_LAB_KERNEL"
KVM_CREATE_VM = 0xAE01
# Host-only variables that make no sense in the guest.
_ENV_DROP = {"DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY", "SSH_AUTH_SOCK", "SSH_AGENT_PID", "DBUS_SESSION_BUS_ADDRESS",
             "XDG_RUNTIME_DIR", "TMPDIR", "OLDPWD", "_", "SHLVL", "PWD"}


class VMError(RuntimeError):
    """The guest cannot be started; the message says why and what to do."""


@dataclass(frozen=True)
class GuestKernel:
    release: str
    image: Path


def say(msg: str) -> None:
    print(f"lab.vm: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- choices


def lab_kernel() -> str:
    """'host' or 'guest': where the lab runs, by MAUTH_LAB_KERNEL or by asking this kernel."""
    if os.environ.get(ENV_IN_VM):
        return "host"  # already the guest: its kernel is the lab's
    forced = os.environ.get(ENV_LAB_KERNEL, "").strip().lower()
    if forced in ("host", "guest"):
        return forced
    if forced not in ("", "auto"):
        raise VMError(f"{ENV_LAB_KERNEL}={forced!r} is not one of host, guest, auto")
    from musersd.kernel import multicast_routing

    return "host" if multicast_routing().problem() is None else "guest"


def _kernel_config(release: str) -> str:
    for path in (Path(f"/boot/config-{release}"), Path(f"/lib/modules/{release}/build/.config")):
        try:
            return path.read_text(errors="replace")
        except OSError:
            continue
    return ""


def find_guest_kernel(release: str | None = None) -> GuestKernel:
    """The newest kernel in /boot that routes multicast and has its modules and headers here."""
    found = []
    for image in Path("/boot").glob("vmlinuz-*"):
        rel = image.name[len("vmlinuz-"):]
        if release and rel != release:
            continue
        cfg = _kernel_config(rel)
        if not (re.search(r"^CONFIG_IP_MROUTE=y", cfg, re.M) and re.search(r"^CONFIG_IPV6_MROUTE=y", cfg, re.M)):
            continue
        modules = Path(f"/lib/modules/{rel}")
        if not (modules / "modules.dep").exists() or not (modules / "build" / "Makefile").exists():
            continue
        found.append(rel)
    if not found:
        want = f"kernel {release}" if release else "a kernel"
        raise VMError(f"no {want} with multicast routing, modules and headers in /boot and /lib/modules: "
                      f"`make setup` installs them (apt-get install linux-image-amd64 linux-headers-amd64)")

    def version_key(rel: str):
        return [int(p) if p.isdigit() else p for p in re.split(r"[.-]", rel)]

    rel = max(found, key=version_key)
    return GuestKernel(release=rel, image=Path(f"/boot/vmlinuz-{rel}"))


def kvm_usable() -> tuple[bool, str]:
    """Whether a KVM guest can be tried here, and why (not)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"/dev/kvm cannot be opened ({exc.strerror})"
    try:
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm)
    except OSError as exc:
        return False, f"KVM_CREATE_VM fails ({exc.strerror})"
    finally:
        os.close(fd)
    flags = ""
    try:
        flags = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split()
    except (OSError, AttributeError):
        pass
    if "vmx" not in flags and "svm" not in flags:
        return False, ("/dev/kvm opens but this CPU exposes no vmx/svm flag, and a KVM guest on such a host "
                       "never starts")
    return True, "/dev/kvm works and the CPU has hardware virtualization"


# ----------------------------------------------------------------- host side


REPO = Path(__file__).resolve().parent.parent  # lab is not installed: the guest finds it here, from any cwd
VM_VENV = REPO / ".venv-vm"  # where `make setup` installs virtme-ng


def _vng() -> str:
    for vng in (VM_VENV / "bin" / "vng", Path(sys.executable).parent / "vng"):
        if vng.exists():
            return str(vng)
    found = shutil.which("vng")
    if not found:
        raise VMError("virtme-ng is not installed: `make setup` installs it when this kernel cannot route multicast")
    return found


def _guest_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env.pop(ENV_LAB_KERNEL, None)
    return env


def _copier(src, dst) -> threading.Thread:
    """Copy a pipe to one of our streams as bytes arrive, so the guest's output streams live."""
    def copy() -> None:
        fd = dst.fileno()
        dst.flush()
        while chunk := os.read(src.fileno(), 65536):
            os.write(fd, chunk)
        src.close()

    t = threading.Thread(target=copy, daemon=True)
    t.start()
    return t


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def _shareable(cwd: str) -> bool:
    """Whether the current directory can be shared read-write: not the root, /tmp or a system directory."""
    system = {"/", "/tmp", "/etc", "/usr", "/var", "/lib", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys", "/run",
              "/opt", "/srv", "/home", "/root"}
    path = os.path.realpath(cwd)
    return path not in system and not path.startswith(("/proc/", "/sys/", "/dev/", "/run/"))


def boot(argv: list[str], *, kernel: GuestKernel, accel: str, cpus: int, memory: str, timeout: float,
         boot_timeout: float | None, tty: bool) -> int | None:
    """Boot `kernel`, run `argv` in it; return its exit status, or None when KVM did not come up in time."""
    share = Path(tempfile.mkdtemp(prefix="mauth-vm-"))
    try:
        spec = {"argv": argv, "cwd": os.getcwd(), "env": _guest_env(), "in_vm": f"{kernel.release} {accel}",
                "tty": tty}
        if tty:
            size = shutil.get_terminal_size()
            spec["rows"], spec["cols"] = size.lines, size.columns
        (share / "spec.json").write_text(json.dumps(spec))
        stage = (f"env PYTHONPATH={shlex.quote(str(REPO))} {shlex.quote(sys.executable)} -m lab.vm "
                 f"--guest {GUEST_DIR}")
        vng = _vng()
        cmd = [vng, "--run", str(kernel.image), "--force-9p", "--cpus", str(cpus), "--memory", memory,
               "--rwdir", f"{GUEST_DIR}={share}", "--cwd", os.getcwd(), "--name", "mauth-vm"]
        if _shareable(os.getcwd()):
            cmd += ["--rwdir", f"{os.getcwd()}={os.getcwd()}"]
        if accel == "tcg":
            cmd.append("--disable-kvm")
        if tty:
            # A terminal: the command runs as the guest console's shell, on a real tty.
            (share / "shell").write_text(f"#!/bin/sh\nexec {stage}\n")
            (share / "shell").chmod(0o755)
            cmd += ["--append", f"virtme_shell={GUEST_DIR}/shell"]
        else:
            cmd += ["--exec", stage]
        # vng runs virtme-ng's other commands (virtme-run) from PATH: its own bin first.
        env = dict(os.environ, PATH=f"{Path(vng).parent}:{Path(sys.executable).parent}:"
                                    f"{os.environ.get('PATH', '/usr/bin:/bin')}")
        # Without a terminal the output goes through pipes copied here: QEMU reopens
        # /proc/self/fd/1 and 2, which on a regular file would write over it from offset 0.
        pipe = None if tty else subprocess.PIPE
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdin=None if tty else subprocess.DEVNULL,
                                stdout=pipe, stderr=pipe)
        copiers = [] if tty else [_copier(proc.stdout, sys.stdout), _copier(proc.stderr, sys.stderr)]
        start = time.monotonic()
        try:
            while True:
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                elapsed = time.monotonic() - start
                if boot_timeout is not None and elapsed > boot_timeout and not (share / "up").exists():
                    say(f"the KVM guest did not come up within {boot_timeout:.0f} s: killed")
                    _kill_group(proc)
                    return None
                if timeout and elapsed > timeout:
                    say(f"the guest did not finish within {timeout:.0f} s (a hang or a panic): killed")
                    _kill_group(proc)
                    return 124
        except KeyboardInterrupt:
            _kill_group(proc)
            raise
        finally:
            for t in copiers:
                t.join(timeout=5)
        rc_file = share / "rc"
        if rc_file.exists():
            return int(rc_file.read_text().strip())
        if not (share / "up").exists():
            say(f"the guest kernel did not start the command (QEMU exited {proc.returncode})")
        else:
            say(f"the guest stopped before the command finished (a panic?): QEMU exited {proc.returncode}")
        return 125
    finally:
        shutil.rmtree(share, ignore_errors=True)


def run_in_guest(argv: list[str], *, accel: str = "auto", cpus: int = 2, memory: str = "4G", timeout: float = 3600,
                 kvm_boot_timeout: float = 60, release: str | None = None) -> int:
    if os.geteuid() != 0:
        raise VMError("the guest needs root (its command runs as root, as the lab does): run it with sudo")
    kernel = find_guest_kernel(release)
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    reason = "forced with --accel"
    if accel == "auto":
        ok, reason = kvm_usable()
        accel = "kvm" if ok else "tcg"
    how = {"kvm": "KVM (hardware virtualization)", "tcg": "TCG (software emulation, several times slower)"}[accel]
    say(f"booting Debian kernel {kernel.release} under QEMU with {how}: {reason}; {cpus} vCPUs, {memory} memory; "
        f"host files over 9p ({'the current directory read-write, ' if _shareable(os.getcwd()) else ''}"
        f"the rest read-only); command: {shlex.join(argv)}")
    start = time.monotonic()
    rc = boot(argv, kernel=kernel, accel=accel, cpus=cpus, memory=memory, timeout=timeout,
              boot_timeout=kvm_boot_timeout if accel == "kvm" else None, tty=tty)
    if rc is None:
        say("booting again with TCG")
        accel = "tcg"
        rc = boot(argv, kernel=kernel, accel=accel, cpus=cpus, memory=memory, timeout=timeout, boot_timeout=None,
                  tty=tty)
    say(f"guest ({kernel.release}, {accel}) finished in {time.monotonic() - start:.0f} s with exit status {rc}")
    return rc


# ----------------------------------------------------------------- guest side


def _mount(fstype: str, target: str, options: str = "") -> None:
    if subprocess.run(["mountpoint", "-q", target]).returncode == 0 and fstype != "tmpfs":
        return
    os.makedirs(target, exist_ok=True)
    cmd = ["mount", "-t", fstype, fstype, target] + (["-o", options] if options else [])
    subprocess.run(cmd, check=True)


def guest_main(share: str) -> int:
    """In the guest: prepare what the lab expects of a router, run the command, record its status."""
    share_dir = Path(share)
    spec = json.loads((share_dir / "spec.json").read_text())
    (share_dir / "up").write_text(os.uname().release + "\n")
    rc = 125
    try:
        # bpffs, where musersd pins by default (/tmp stays virtme-ng's overlay: the host's files seen,
        # the guest's writes in its memory).
        _mount("bpf", "/sys/fs/bpf")
        env = dict(spec["env"])
        env[ENV_IN_VM] = spec["in_vm"]
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        if spec.get("tty"):
            subprocess.run(["stty", "rows", str(spec["rows"]), "cols", str(spec["cols"])], check=False)
        try:
            rc = subprocess.run(spec["argv"], cwd=spec["cwd"], env=env).returncode
        except FileNotFoundError as exc:
            print(f"lab.vm: {exc.filename}: no such command in the guest", file=sys.stderr)
            rc = 127
        except KeyboardInterrupt:
            rc = 130
        if rc < 0:
            rc = 128 - rc
    finally:
        (share_dir / "rc").write_text(f"{rc}\n")
        sys.stdout.flush()
        sys.stderr.flush()
        if spec.get("tty"):
            # The console shell's exit does not power the guest off by itself.
            os.sync()
            Path("/proc/sysrq-trigger").write_text("o")
    return rc


# ----------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lab.vm", description=(
        "Run COMMAND as root, in the current directory, under Debian's stock kernel booted in QEMU "
        "(the host's files seen at the same paths); exit with COMMAND's status."))
    p.add_argument("--where", action="store_true", help="print where the lab runs (host or guest) and exit")
    p.add_argument("--if-needed", action="store_true",
                   help="run COMMAND on the host when its kernel routes multicast (or MAUTH_LAB_KERNEL=host)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=os.environ.get("MAUTH_VM_ACCEL", "auto"),
                   help="QEMU accelerator (default auto: KVM where it really runs a guest, else TCG)")
    p.add_argument("--cpus", type=int, default=int(os.environ.get("MAUTH_VM_CPUS", "2")),
                   help="guest vCPUs (default 2)")
    p.add_argument("--memory", default=os.environ.get("MAUTH_VM_MEMORY", "4G"), help="guest memory (default 4G)")
    p.add_argument("--timeout", type=float, default=float(os.environ.get("MAUTH_VM_TIMEOUT", "3600")),
                   help="seconds before a guest that has not finished is killed (0: never; default 3600)")
    p.add_argument("--kvm-boot-timeout", type=float, default=60,
                   help="seconds a KVM guest has to come up before it is killed and TCG is used (default 60)")
    p.add_argument("--kernel", default=os.environ.get("MAUTH_VM_KERNEL"),
                   help="guest kernel release (default: the newest in /boot that routes multicast)")
    p.add_argument("--guest", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = p.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.where and not args.guest and not args.command:
        p.error("no command given: python -m lab.vm -- COMMAND [ARG...]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.guest:
        return guest_main(args.guest)
    try:
        if args.where:
            print(lab_kernel())
            return 0
        if args.if_needed and lab_kernel() == "host":
            if not os.environ.get(ENV_IN_VM):
                say(f"host kernel {os.uname().release} runs the lab")
            return subprocess.run(args.command).returncode
        return run_in_guest(args.command, accel=args.accel, cpus=args.cpus, memory=args.memory,
                            timeout=args.timeout, kvm_boot_timeout=args.kvm_boot_timeout, release=args.kernel)
    except VMError as exc:
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
