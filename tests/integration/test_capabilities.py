"""The privileges in systemd/*.service, proved on the real daemons.

Strategy, two levels:

* Capabilities alone. musersd runs in the lab's router namespace under
  `setpriv` with exactly the capability set of systemd/musersd.service (read
  from the unit file, so the unit and this test cannot drift apart) and no new
  privileges; it must load, attach, serve, and a rule added with mauthctl must
  let its sender through while another sender stays blocked. Then each of those
  capabilities is dropped in turn, and musersd must fail to start with the
  error that capability prevents, both on new pins and on the pins and
  attached program of a previous musersd (which must stay as they were): the
  set is minimal, not merely sufficient.

* The units themselves. `make install DESTDIR=...` stages the programs and
  units; systemd-nspawn boots a real systemd on this machine's /usr (the
  staged /usr/local bound over it), inside the lab's router namespace. systemd
  starts both units with all of their sandboxing (seccomp filters, read-only
  file system, dynamic user, watchdog), and the test drives them as an
  operator would: a SAP announcement reaches mauthserver, a rule added
  through mauthserver's API reaches musersd and is enforced on real forwarded
  multicast (smcrouted routes it), reloads re-read the secrets, and after
  musersd is killed the filter keeps enforcing until systemd has restarted it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from lab.daemons import BIN, mauthctl, write_key_file
from lab.netns import inside, private_bpffs
from musersd import maps
from musersd.dataplane import xdp_status
from tests.integration.conftest import AUTH, AUTH2, GROUP, GROUP2, ROGUE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROUTER_IN = "192.0.2.1"  # the router's address on the senders' link
N = 30
SDP = REPO / "tests/data/sdp/asm_vlc.sdp"

# Linux capability numbers (linux/capability.h), for reading /proc/PID/status.
CAP_BITS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}

# What goes wrong when one capability of the unit's set is missing: the errno
# in musersd's one-line error ("could not load the XDP program: [Errno N] the
# kernel refused mauth_xdp.bpf.o: ..."), and what libbpf's debug output
# (--log-level debug) shows of the kernel's reason.
WITHOUT = {
    # bpf() creates no map, loads no BTF and no program without CAP_BPF: libbpf's
    # first probe fails, before any map is created.
    "CAP_BPF": (errno.EPERM, "Operation not permitted", None),
    # XDP is a networking program type: the kernel loads it only for CAP_NET_ADMIN
    # (which netlink also wants to attach it). The maps are created first.
    "CAP_NET_ADMIN": (errno.EPERM, "BPF program load failed: Operation not permitted", "created successfully"),
    # Without CAP_PERFMON the verifier forbids pointer arithmetic that could leak
    # a kernel address; the program computes the packet's length as data_end - data.
    "CAP_PERFMON": (errno.EACCES, "pointer -= pointer prohibited", "created successfully"),
}


def unit_directive(unit: str, key: str) -> str:
    [value] = [line.split("=", 1)[1].strip() for line in (REPO / "systemd" / unit).read_text().splitlines()
               if line.startswith(f"{key}=")]
    return value


def unit_caps() -> list[str]:
    return unit_directive("musersd.service", "CapabilityBoundingSet").split()


def cap_mask(caps) -> int:
    return sum(1 << CAP_BITS[c] for c in caps)


def proc_status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def setpriv(caps) -> list[str]:
    """Root with exactly `caps` (no others in any set) and no_new_privs, as the unit runs musersd."""
    spec = ",".join(["-all"] + [f"+{c[4:].lower()}" for c in caps])
    return ["setpriv", f"--inh-caps={spec}", f"--bounding-set={spec}", "--no-new-privs", "--"]


def delivered(lab, flows, ttl=4) -> dict:
    return lab.deliver(flows, N, ttl=ttl)


def wait_for(what: str, check, timeout: float = 60.0, every: float = 0.2, detail=None):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f": {detail()}" if detail else ""))
        time.sleep(every)  # the polling rhythm, not a guess at how long something takes


# ------------------------------------------------------------------ capabilities alone


def start_musersd(lab, pin_dir, key, caps, name, *extra: str):
    argv = setpriv(caps) + [str(BIN / "musersd"), "--pin-dir", str(pin_dir), "--key-file", str(key),
                            "--listen", f"{ROUTER_IN}:7575", *sum((["--iface", i] for i in lab.internal_ifaces), []),
                            *extra]
    return lab.spawn(lab.router.ns, argv, name)


def wait_serving(lab, proc, name: str) -> None:
    wait_for(f"{name} to serve", lambda: "serving on" in lab.log(name) or proc.poll() is not None)
    assert proc.poll() is None, lab.log(name)


def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def xdp_programs(lab) -> list[tuple[str | None, int]]:
    with inside(lab.router.ns):
        return [xdp_status(i) for i in lab.internal_ifaces]


def pins(pin_dir: Path) -> list[str]:
    layout = pin_dir / f"v{maps.LAYOUT}"
    return sorted(p.name for p in layout.iterdir()) if layout.is_dir() else []


def test_unit_capability_set_loads_attaches_serves_enforces_and_adopts(lab, pin_dir):
    caps = unit_caps()
    assert set(caps) == {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"}
    key = write_key_file(lab.workdir / "router.key")
    proc = start_musersd(lab, pin_dir, key, caps, "musersd")
    try:
        wait_serving(lab, proc, "musersd")
        assert "created pinned maps" in lab.log("musersd")
        # `ip netns exec` and setpriv exec, so the Popen pid is musersd itself.
        status = proc_status(Path(f"/proc/{proc.pid}/status").read_text())
        assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == cap_mask(caps)
        assert status["NoNewPrivs"] == "1" and status["Uid"].split()[0] == "0"

        r = mauthctl(lab, lab.senders["s1"].ns, "--router", f"{ROUTER_IN}:7575", "--key-file", str(key),
                     "add-sender", AUTH, GROUP, "--max-ttl", "8")
        assert r.returncode == 0, r.stderr
        assert delivered(lab, [(AUTH, GROUP), (ROGUE, GROUP)]) == {(AUTH, GROUP): N, (ROGUE, GROUP): 0}
    finally:
        stop(proc)
    assert "filter left attached" in lab.log("musersd")
    first = xdp_programs(lab)
    assert all(prog for _, prog in first)

    # A second musersd with the same privileges adopts the pinned maps (by
    # their pin paths) with their rule, and its program replaces the first
    # one's in one step on every interface: no moment without a filter.
    proc = start_musersd(lab, pin_dir, key, caps, "musersd2")
    try:
        wait_serving(lab, proc, "musersd2")
        log = lab.log("musersd2")
        assert f"adopted pinned maps under {pin_dir}/v{maps.LAYOUT} (1 rules" in log, log
        for iface, (_, prog) in zip(lab.internal_ifaces, first):
            assert f"iface={iface} replaced XDP program id {prog} " in log, log
        assert all(prog and prog not in {p for _, p in first} for _, prog in xdp_programs(lab))
        assert delivered(lab, [(AUTH, GROUP), (ROGUE, GROUP)]) == {(AUTH, GROUP): N, (ROGUE, GROUP): 0}
    finally:
        stop(proc)


def assert_refused(lab, name: str, missing: str) -> None:
    code, reason, before = WITHOUT[missing]
    log = lab.log(name)
    assert "serving on" not in log
    # One line says why, and names the errno the kernel gave.
    [error] = [line for line in log.splitlines() if line.startswith("musersd: ")]
    assert error.startswith(f"musersd: could not load the XDP program: [Errno {code}] the kernel refused "
                            "mauth_xdp.bpf.o: "), error
    assert reason in log, log
    if before is None:
        assert "created successfully" not in log, log
    else:
        assert before in log, log


@pytest.mark.parametrize("missing", sorted(WITHOUT))
def test_each_capability_of_the_unit_is_needed(lab, pin_dir, missing):
    caps = unit_caps()
    without = [c for c in caps if c != missing]
    key = write_key_file(lab.workdir / "router.key")

    # A first start: nothing is attached, and the maps libbpf created are unpinned again.
    proc = start_musersd(lab, pin_dir, key, without, "fresh", "--log-level", "debug")
    assert proc.wait(timeout=120) == 2, lab.log("fresh")
    assert_refused(lab, "fresh", missing)
    assert xdp_programs(lab) == [(None, 0)] * len(lab.internal_ifaces)
    assert pins(pin_dir) == []

    # A restart over a previous musersd's pins and program: the restart fails
    # the same way and the previous program keeps filtering with its maps.
    proc = start_musersd(lab, pin_dir, key, caps, "full")
    wait_serving(lab, proc, "full")
    stop(proc)
    before, pinned = xdp_programs(lab), pins(pin_dir)
    assert all(prog for _, prog in before) and len(pinned) == len(maps.MAPS)
    proc = start_musersd(lab, pin_dir, key, without, "restart", "--log-level", "debug")
    assert proc.wait(timeout=120) == 2, lab.log("restart")
    assert_refused(lab, "restart", missing)
    assert xdp_programs(lab) == before
    assert pins(pin_dir) == pinned


# ------------------------------------------------------------------ the units under systemd

TEST_TARGET = """\
[Unit]
Description=mauth units under test
Wants={units}
"""

# A short watchdog for the test's duration: the daemons' pings must keep both alive.
WATCHDOG_DROPIN = "[Service]\nWatchdogSec=3s\n"


class Container:
    """A systemd booted with systemd-nspawn on this machine's /usr, in a lab namespace."""

    def __init__(self, lab, dest: Path, bpffs: Path, workdir: Path,
                 units: tuple[str, ...] = ("musersd.service", "mauthserver.service")):
        self.name = f"mauth-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        etc = workdir / "container-etc"
        etc.mkdir()
        (etc / "mauth-test.target").write_text(TEST_TARGET.format(units=" ".join(units)))
        (etc / "watchdog.conf").write_text(WATCHDOG_DROPIN)
        binds = [f"--bind={bpffs}:/sys/fs/bpf", f"--bind={dest}/usr/local:/usr/local",
                 f"--bind={dest}/etc/mauth:/etc/mauth",
                 f"--bind-ro={etc}/mauth-test.target:/etc/systemd/system/mauth-test.target"]
        for unit in ("musersd", "mauthserver"):
            binds.append(f"--bind-ro={etc}/watchdog.conf:/etc/systemd/system/{unit}.service.d/watchdog.conf")
        self.argv = [
            "systemd-nspawn", "--quiet", "--keep-unit", "--register=no", "--machine", self.name,
            "--directory=/", "--volatile=yes", "--overlay=/etc::/etc", "--console=passive",
            f"--network-namespace-path=/run/netns/{lab.router.ns}",
            # The container's ceiling; systemd narrows it per unit.
            f"--capability={','.join(unit_caps())}", "--system-call-filter=bpf",
            *binds, "--boot", "--", "--unit=mauth-test.target",
        ]
        self.log = workdir / "nspawn.log"
        self.proc: subprocess.Popen | None = None
        self.init_pid = 0

    def start(self) -> Container:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.init_pid = wait_for("the container's systemd", self._find_init, timeout=60)
        return self

    def _find_init(self) -> int:
        if self.proc.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited with {self.proc.returncode}: {self.log.read_text()}")
        # nspawn is the subreaper of the container's init (its child, or a grandchild while it starts).
        for child in _children(self.proc.pid):
            for pid in (child, *_children(child)):
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return pid
                except OSError:
                    continue
        return 0

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["nsenter", "-t", str(self.init_pid), "-a", *cmd], capture_output=True, text=True,
                           timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def show(self, unit: str, prop: str) -> str:
        """A unit property; "" while the container's systemd does not answer yet."""
        return self.run("systemctl", "show", "-p", prop, "--value", unit, check=False).stdout.strip()

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit, check=False).stdout

    def main_status(self, unit: str) -> dict[str, str]:
        pid = self.show(unit, "MainPID")
        return proc_status(self.run("cat", f"/proc/{pid}/status").stdout)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        subprocess.run(["rm", "-rf", f"/run/systemd/nspawn/propagate/{self.name}"], check=False)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # ppid
            out.append(int(stat.parent.name))
    return out


def doc_commands() -> tuple[str, str]:
    """The backup and the restore commands of docs/operations.md, with a backup file under /var/tmp."""
    text = (REPO / "docs/operations.md").read_text()
    section = text[text.index("## Backup and restore"):]
    backup, restore = (block.split("\n", 1)[1] for block in section.split("```sh")[1:3])
    backup, restore = backup.split("```", 1)[0], restore.split("```", 1)[0]
    backup = "\n".join(line for line in backup.splitlines() if not line.startswith("#"))
    backup = backup.replace("/root/", "/var/tmp/")
    restore = restore.replace("/root/mauthserver-2026-11-20.db", "/var/tmp/mauthserver-$(date +%F).db")
    assert "systemctl stop mauthserver" in restore and "systemctl start mauthserver" in restore
    return backup, restore


@pytest.fixture
def staged(tmp_path) -> Path:
    dest = tmp_path / "dest"
    r = subprocess.run(["make", "-C", str(REPO), "install", f"DESTDIR={dest}"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def test_units_under_systemd(lab, staged):
    conf = staged / "etc/mauth"
    ifaces = " ".join(f"--iface {i}" for i in lab.internal_ifaces)
    (conf / "musersd.env").write_text(f'MUSERSD_IFACES="{ifaces}"\nMUSERSD_LISTEN={ROUTER_IN}:7575\nMUSERSD_OPTS=""\n')
    (conf / "mauthserver.env").write_text(
        f'MAUTHSERVER_API=127.0.0.1:7580\nMAUTHSERVER_OPTS="--router r1={ROUTER_IN}:7575"\n')
    key, token = conf / "router.key", conf / "api.token"
    rt = lab.router.ns

    def server(*args):
        return mauthctl(lab, rt, "--server", "http://127.0.0.1:7580", "--token-file", str(token), *args)

    def router_rules():
        r = mauthctl(lab, rt, "--router", f"{ROUTER_IN}:7575", "--key-file", str(key), "--json", "list")
        return [(x["source"], x["group"], x["max_ttl"]) for x in json.loads(r.stdout)] if r.returncode == 0 else None

    with private_bpffs() as bpffs:
        ctr = Container(lab, staged, bpffs, lab.workdir)
        try:
            ctr.start()

            def both_active():
                states = [ctr.show(u, "ActiveState") for u in ("musersd", "mauthserver")]
                if "failed" in states:
                    raise AssertionError(f"{states}: {ctr.journal('musersd')}{ctr.journal('mauthserver')}")
                return states == ["active", "active"]

            try:
                wait_for("both units to be active", both_active, timeout=120)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {ctr.journal('musersd')}{ctr.journal('mauthserver')}") from None

            # The privileges systemd gave them are the ones the units promise.
            m = ctr.main_status("musersd")
            assert m["Uid"].split()[0] == "0"
            assert int(m["CapEff"], 16) == int(m["CapBnd"], 16) == cap_mask(unit_caps())
            s = ctr.main_status("mauthserver")
            assert s["Uid"].split()[0] != "0"
            assert int(s["CapEff"], 16) == int(s["CapBnd"], 16) == 0
            for st in (m, s):
                assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"  # seccomp filter mode
            assert (bpffs / "mauth").is_dir()  # pinned on the one writable path

            # A session announced on the senders' link reaches mauthserver through the filter.
            r = mauthctl(lab, lab.senders["s1"].ns, "announce", str(SDP), "--source", AUTH, "--count", "1")
            assert r.returncode == 0, r.stderr
            wait_for("the SAP session", lambda: json.loads(server("--json", "sessions").stdout or "[]"))

            # A rule added through mauthserver's API reaches musersd and is enforced.
            assert delivered(lab, [(AUTH, GROUP)]) == {(AUTH, GROUP): 0}
            r = server("add-sender", AUTH, GROUP, "--max-ttl", "8")
            assert r.returncode == 0, r.stderr
            wait_for("the rule on the router", lambda: router_rules() == [(AUTH, GROUP, 8)])
            assert delivered(lab, [(AUTH, GROUP), (ROGUE, GROUP)]) == {(AUTH, GROUP): N, (ROGUE, GROUP): 0}

            # Reloads re-read the secrets (mauthserver's through its privileged copy step).
            ctr.run("systemctl", "reload", "musersd", "mauthserver")
            assert "reload: key file /etc/mauth/router.key loaded" in ctr.journal("musersd")
            assert "reload: token file /run/mauthserver/api.token loaded" in ctr.journal("mauthserver")

            # musersd killed: the pinned filter keeps enforcing, systemd restarts it, it adopts the maps.
            ctr.run("systemctl", "kill", "--signal=SIGKILL", "musersd")
            assert delivered(lab, [(AUTH, GROUP), (ROGUE, GROUP)]) == {(AUTH, GROUP): N, (ROGUE, GROUP): 0}
            wait_for("musersd to be restarted",
                     lambda: ctr.show("musersd", "NRestarts") == "1" and ctr.show("musersd", "ActiveState") == "active",
                     timeout=120, detail=lambda: ctr.run("systemctl", "status", "musersd", check=False).stdout)
            assert "adopted pinned maps" in ctr.journal("musersd")
            assert router_rules() == [(AUTH, GROUP, 8)]
            assert delivered(lab, [(AUTH, GROUP), (ROGUE, GROUP)]) == {(AUTH, GROUP): N, (ROGUE, GROUP): 0}

            # Backup and restore, with the commands of docs/operations.md: rules added after
            # the backup leave the router when the restored mediator starts.
            backup, restore = doc_commands()
            run_sh = lambda script: ctr.run("sh", "-ec", script)  # noqa: E731
            out = run_sh(backup).stdout
            assert out.strip().splitlines()[-1] == "ok", out
            r = server("add-sender", AUTH2, GROUP2, "--max-ttl", "4")
            assert r.returncode == 0, r.stderr
            wait_for("the second rule", lambda: router_rules() == [(AUTH, GROUP, 8), (AUTH2, GROUP2, 4)])
            run_sh(restore)
            assert ctr.show("mauthserver", "ActiveState") == "active"
            wait_for("the router to converge to the backup", lambda: router_rules() == [(AUTH, GROUP, 8)],
                     detail=lambda: ctr.journal("mauthserver")[-2000:])

            # All along, a 3 s watchdog never fired: both daemons ping systemd.
            assert ctr.show("mauthserver", "NRestarts") == "0"  # stopped and started by the restore, never restarted
            for unit in ("musersd", "mauthserver"):
                assert ctr.show(unit, "WatchdogUSec") == "3s"
                assert not re.search(r"[Ww]atchdog timeout", ctr.journal(unit)), ctr.journal(unit)
        finally:
            ctr.stop()


def test_nfqueue_backend_under_the_same_unit(lab, staged):
    """musersd --backend nfqueue, for routers without XDP, runs under the shipped unit unchanged."""
    conf = staged / "etc/mauth"
    ifaces = " ".join(f"--iface {i}" for i in lab.internal_ifaces)
    (conf / "musersd.env").write_text(
        f'MUSERSD_IFACES="{ifaces}"\nMUSERSD_LISTEN={ROUTER_IN}:7575\nMUSERSD_OPTS="--backend nfqueue"\n')
    key = conf / "router.key"

    def ctl(*args):
        return mauthctl(lab, lab.senders["s1"].ns, "--router", f"{ROUTER_IN}:7575", "--key-file", str(key), *args)

    def mangle_rules() -> str:
        return subprocess.run(["ip", "netns", "exec", lab.router.ns, "iptables", "-t", "mangle", "-S", "PREROUTING"],
                              capture_output=True, text=True, check=True).stdout

    with private_bpffs() as bpffs:
        ctr = Container(lab, staged, bpffs, lab.workdir, units=("musersd.service",))
        try:
            ctr.start()
            wait_for("musersd to be active", lambda: ctr.show("musersd", "ActiveState") in ("active", "failed"),
                     timeout=120)
            assert ctr.show("musersd", "ActiveState") == "active", ctr.journal("musersd")
            assert "interfaces in0 (nfqueue)" in ctr.journal("musersd")
            assert "NFQUEUE" in mangle_rules()  # installed from inside the sandbox
            assert ctl("add-sender", AUTH, GROUP, "--max-ttl", "8").returncode == 0
            assert delivered(lab, [(AUTH, GROUP), (ROGUE, GROUP)]) == {(AUTH, GROUP): N, (ROGUE, GROUP): 0}
            # Its rules live in the unit's own state directory, not in mauthserver's.
            assert ctr.run("test", "-s", "/var/lib/musersd/nfqueue.sqlite", check=False).returncode == 0
            ctr.run("systemctl", "stop", "musersd")
            assert "NFQUEUE" not in mangle_rules(), ctr.journal("musersd")  # a clean stop removes them
        finally:
            ctr.stop()
