"""`make install`, the systemd units it installs, and the generated manual pages.

Strategy: one real `make install DESTDIR=<tmp>` (a virtual environment built
from this tree, the units, the example configuration, fresh secrets) is the
subject of every test here. The units are then checked the way systemd will
read them: `systemd-analyze verify` on copies whose /usr/local and /etc/mauth
point into the staging tree, so every ExecStart binary and man page it looks
up is the installed one; every flag on an ExecStart line, after systemd's own
variable expansion with the shipped example settings, is parsed by the
daemon's real click command and listed by its `--help`. A second install over
the first must keep the operator's configuration and secrets. That the units
really run under systemd with their sandbox is tests/integration/test_capabilities.py;
the committed units' hardening and the pages' freshness, tests/unit/test_systemd_units.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))


from mauthclient.cli import main as mauthctl_main  # noqa: E402
from mauthcore.protocol.keys import load_keys  # noqa: E402
from mauthcore.secretfile import load_token  # noqa: E402
from mauthserver.cli import main as mauthserver_main  # noqa: E402
from musersd.cli import main as musersd_main  # noqa: E402
from tests.unit.test_systemd_units import directives  # noqa: E402

PREFIX = "/usr/local"


UNITDIR = f"{PREFIX}/lib/systemd/system"


VENV = f"{PREFIX}/lib/mauth/venv"


UNITS = ("musersd.service", "mauthserver.service")


DAEMONS = {"musersd": musersd_main, "mauthserver": mauthserver_main}


def make_install(destdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(REPO), "install", f"DESTDIR={destdir}"],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("destdir")
    r = make_install(dest)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def unit_text(staged: Path, unit: str) -> str:
    return (staged / UNITDIR.lstrip("/") / unit).read_text()


def env_file(path: Path) -> dict[str, str]:
    """A systemd EnvironmentFile: VAR=value lines, quotes removed, comments and blanks ignored."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        words = shlex.split(value, comments=False) if value else []
        env[key.strip()] = " ".join(words) if len(words) != 1 else words[0]
    return env


def expand(command: str, env: dict[str, str]) -> list[str]:
    """systemd's ExecStart= expansion: ${VAR} stays one word, a lone $VAR splits into words."""
    argv = []
    for word in shlex.split(command):
        lone = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if lone:
            argv += env.get(lone.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def exec_start(staged: Path, unit: str, env: dict[str, str]) -> list[str]:
    [command] = [v for k, v in directives(unit_text(staged, unit)) if k == "ExecStart"]
    return expand(command, env)


def test_install_tree(staged):
    root = staged
    for p in ("musersd", "mauthserver", "mauthctl"):
        link = root / PREFIX.lstrip("/") / "bin" / p
        assert link.is_symlink() and os.readlink(link) == f"../lib/mauth/venv/bin/{p}"
        script = link.resolve()
        assert script == (root / VENV.lstrip("/") / "bin" / p) and os.access(script, os.X_OK)
        # Relocated: the scripts name the final venv, not the staging tree.
        assert script.read_text().splitlines()[0] == f"#!{VENV}/bin/python"
        assert (root / PREFIX.lstrip("/") / "share/man/man1" / f"{p}.1").read_text() == \
            (REPO / "docs/man" / f"{p}.1").read_text()
    for bin_file in (root / VENV.lstrip("/") / "bin").iterdir():
        if bin_file.is_file() and not bin_file.is_symlink():
            assert str(staged) not in bin_file.read_text(errors="replace"), bin_file
    cfg = (root / VENV.lstrip("/") / "pyvenv.cfg").read_text()
    # An ordinary venv: nothing of mauth's comes from the system's Python any more (libbpf is loaded by ctypes).
    assert "include-system-site-packages = false" in cfg and str(staged) not in cfg
    for unit in UNITS:
        assert (root / UNITDIR.lstrip("/") / unit).read_text() == (REPO / "systemd" / unit).read_text()
    for doc in ("operations.md", "protocol.md", "README.md"):
        assert (root / PREFIX.lstrip("/") / "share/doc/mauth" / doc).is_file()
    # The compiled XDP program travels with the package (musersd loads it at start).
    site = next((root / VENV.lstrip("/") / "lib").glob("python3*/site-packages"))
    assert (site / "musersd" / "mauth_xdp.bpf.o").is_file() and (site / "musersd" / "cli.py").is_file()
    # Only the programs' packages and the core are installed as top-level names: not the lab,
    # the benchmarks, the tests or the C sources.
    [dist_info] = site.glob("mauth-*.dist-info")
    top_level = {line.split("/")[0] for line in (dist_info / "RECORD").read_text().splitlines()
                 if not line.startswith(("mauth-", "../", "__pycache__"))}
    assert top_level == {"mauthcore", "musersd", "mauthserver", "mauthclient", "sap"}, top_level


def test_configuration_and_secrets(staged):
    conf = staged / "etc/mauth"
    assert sorted(p.name for p in conf.iterdir()) == [
        "api.token", "mauth.conf", "mauthctl.toml", "mauthserver.env", "musersd.env", "router.key"]
    for name in ("router.key", "api.token"):
        assert stat.S_IMODE((conf / name).stat().st_mode) == 0o600
    for name in ("musersd.env", "mauthserver.env", "mauth.conf"):
        assert (conf / name).read_text() == (REPO / "etc" / name).read_text()
    assert len(load_keys(conf / "router.key")) == 1  # the daemons' own parsers accept them
    assert len(load_token(conf / "api.token")) >= 16
    assert 'token_file = "/etc/mauth/api.token"' in (conf / "mauthctl.toml").read_text()


def test_second_install_keeps_configuration_and_secrets(staged):
    conf = staged / "etc/mauth"
    env = conf / "musersd.env"
    env.write_text(env.read_text() + 'MUSERSD_OPTS="--mode monitor"\n')
    before = {p.name: p.read_bytes() for p in conf.iterdir()}
    r = make_install(staged)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {p.name: p.read_bytes() for p in conf.iterdir()} == before
    assert "kept /etc/mauth/musersd.env (exists)" in r.stdout
    assert "kept /etc/mauth/router.key (exists)" in r.stdout
    env.write_text((REPO / "etc/musersd.env").read_text())


def test_uninstall_removes_programs_and_keeps_configuration(tmp_path):
    # A tree of the installed shape (without building a second venv): uninstall
    # removes what install put there and nothing of the operator's.
    root = tmp_path
    (root / "usr/local/lib/mauth/venv/bin").mkdir(parents=True)
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/musersd").symlink_to("../lib/mauth/venv/bin/musersd")
    (root / "usr/local/bin/other").symlink_to("/usr/bin/true")
    (root / "usr/local/lib/systemd/system").mkdir(parents=True)
    (root / "usr/local/lib/systemd/system/musersd.service").write_text("[Service]\n")
    (root / "etc/mauth").mkdir(parents=True)
    (root / "etc/mauth/router.key").write_text("1 00\n")
    r = subprocess.run(["make", "-C", str(REPO), "uninstall", f"DESTDIR={root}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (root / "usr/local/bin/musersd").is_symlink()
    assert (root / "usr/local/bin/other").is_symlink()
    assert not (root / "usr/local/lib/mauth").exists()
    assert not (root / "usr/local/lib/systemd/system/musersd.service").exists()
    assert (root / "etc/mauth/router.key").exists()


def test_install_refuses_a_relative_destdir():
    r = subprocess.run(["bash", str(REPO / "scripts/install.sh"), "install"], capture_output=True, text=True,
                       env={**os.environ, "DESTDIR": "relative/dir"})
    assert r.returncode == 1 and r.stderr.strip() == "install: DESTDIR must be an absolute path, not 'relative/dir'"


def test_systemd_analyze_verify(staged, tmp_path):
    """systemd's own checks: directives, ExecStart binaries executable, man pages found."""
    copies = []
    for unit in UNITS:
        text = unit_text(staged, unit).replace(f"{PREFIX}/", f"{staged}{PREFIX}/").replace(
            "/etc/mauth/", f"{staged}/etc/mauth/")
        (tmp_path / unit).write_text(text)
        copies.append(str(tmp_path / unit))
    env = {**os.environ, "MANPATH": f"{staged}{PREFIX}/share/man", "SYSTEMD_LOG_LEVEL": "notice"}
    r = subprocess.run(["systemd-analyze", "verify", *copies], capture_output=True, text=True, env=env)
    # verify exits 0 on warnings such as an unknown directive: any output is a finding.
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


FRR_ORDERING = """\
[Unit]
Description=FRRouting's ordering, as its unit ships it
Wants=network.target
After=network-pre.target systemd-sysctl.service
Before=network.target

[Service]
ExecStart=/bin/sleep infinity
"""


def frr_override() -> list[str]:
    """The [Unit] lines docs/operations.md tells FRR users to put in place of the network ordering."""
    text = (REPO / "docs/operations.md").read_text()
    section = text[text.index("* **FRR**"):]
    block = section.split("```ini\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def verify_in(directory: Path, *units: str) -> str:
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{directory}:", "SYSTEMD_LOG_LEVEL": "notice"}
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True,
                       env=env, cwd=directory)
    return r.stdout + r.stderr


def test_frr_ordering_needs_the_documented_override(staged, tmp_path):
    shipped = unit_text(staged, "musersd.service").replace(f"{PREFIX}/", f"{staged}{PREFIX}/")
    before = "Before=smcroute.service pimd.service\n"
    assert before in shipped
    naive, fixed = tmp_path / "naive", tmp_path / "fixed"
    for d in (naive, fixed):
        d.mkdir()
        (d / "frr.service").write_text(FRR_ORDERING)
    # Simply ordering musersd before FRR: a cycle systemd breaks by dropping a job.
    naive_unit = shipped.replace(before, "Before=smcroute.service pimd.service frr.service\n")
    (naive / "musersd.service").write_text(naive_unit)
    assert "Found ordering cycle" in verify_in(naive, "musersd.service", "frr.service")
    # The override of docs/operations.md: no cycle, nothing to report.
    lines = [line for line in shipped.splitlines(keepends=True)
             if line not in ("Wants=network-online.target\n", "After=network-online.target\n", before)]
    at = lines.index("[Unit]\n") + 1
    lines[at:at] = [line + "\n" for line in frr_override()]
    (fixed / "musersd.service").write_text("".join(lines))
    assert any(line.startswith("Before=") and "frr.service" in line for line in frr_override())
    assert verify_in(fixed, "musersd.service", "frr.service") == ""


@pytest.mark.parametrize("unit,daemon", [("musersd.service", "musersd"), ("mauthserver.service", "mauthserver")])
def test_exec_start_flags_are_the_daemons_own(staged, unit, daemon):
    env_path = staged / "etc/mauth" / f"{daemon}.env"
    text = unit_text(staged, unit)
    assert ("EnvironmentFile", f"/etc/mauth/{daemon}.env") in directives(text)
    settings = env_file(env_path)
    # The shipped example settings, and a filled-in router/mediator.
    filled = dict(settings)
    if daemon == "musersd":
        filled.update(MUSERSD_IFACES="--iface eth1 --iface eth2", MUSERSD_LISTEN="192.0.2.1:7575",
                      MUSERSD_OPTS="--mode monitor --legacy-allow 192.0.2.5/32")
    else:
        filled.update(MAUTHSERVER_OPTS="--router r1=192.0.2.1:7575 --router r2=192.0.2.65:7575 --sap-iface eth0")
    helptext = subprocess.run([str(staged / VENV.lstrip("/") / "bin/python"), "-m", f"{daemon}.cli", "--help"],
                              capture_output=True, text=True, check=True).stdout
    for values in (settings, filled):
        argv = exec_start(staged, unit, values)
        assert argv[0] == f"{PREFIX}/bin/{daemon}"
        for flag in (a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")):
            assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", helptext), f"{flag} is not in {daemon} --help"
        # The real command line parser accepts the whole line (names, values, choices).
        ctx = DAEMONS[daemon].make_context(daemon, argv[1:])
        assert ctx.params  # parsed, not run
    # The files the command line names exist in the installed tree, or are made by the unit.
    for arg in exec_start(staged, unit, filled):
        if arg.startswith("/etc/mauth/"):
            assert (staged / arg.lstrip("/")).is_file(), arg


def test_exec_start_rejects_what_the_daemon_rejects(staged):
    # The check above is not vacuous: a misspelt flag in the settings fails the same parse.
    argv = exec_start(staged, "musersd.service",
                      {"MUSERSD_IFACES": "--iface eth1", "MUSERSD_LISTEN": "127.0.0.1:7575", "MUSERSD_OPTS": "--mod x"})
    with pytest.raises(click.UsageError):
        musersd_main.make_context("musersd", argv[1:])


def test_helper_commands_and_paths_exist(staged):
    for unit in UNITS:
        for key, value in directives(unit_text(staged, unit)):
            if not key.startswith("Exec"):
                continue
            argv = shlex.split(value)
            program = argv[0].lstrip("+-@!:")
            if program.startswith(PREFIX):
                assert os.access(staged / program.lstrip("/"), os.X_OK), program
            else:
                assert os.access(program, os.X_OK), program
            if program == "/bin/sh":  # the privileged secrets copy: every tool and file it names
                script = argv[2]
                for tool in ("install", "chown", "kill"):
                    if re.search(rf"(^|&& ){tool} ", script):
                        assert shutil.which(tool), tool
                for path in re.findall(r"/etc/mauth/[\w.]+", script):
                    assert (staged / path.lstrip("/")).is_file(), path
    assert ("ReadWritePaths", "/sys/fs/bpf") in directives(unit_text(staged, "musersd.service"))
    # musersd's pin directory must be on the one writable path.
    assert "--pin-dir /sys/fs/bpf/mauth" in " ".join(exec_start(staged, "musersd.service", {}))


def test_manual_pages_are_clean_roff_and_complete():
    for name in ("musersd", "mauthserver", "mauthctl"):
        page = REPO / "docs/man" / f"{name}.1"
        r = subprocess.run(["groff", "-ww", "-z", "-man", str(page)], capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        text = page.read_text()
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "FILES", "SEE ALSO"):
            assert f".SH {section}\n" in text
    mauthctl_page = (REPO / "docs/man/mauthctl.1").read_text()
    for command in (n for n, c in mauthctl_main.commands.items() if not c.hidden):
        assert f".SS {command.replace('-', chr(92) + '-')}\n" in mauthctl_page, command
    assert "\\-\\-detach\\-on\\-exit" in (REPO / "docs/man/musersd.1").read_text()


def test_the_postgresql_drop_in_runs_a_command_line_mauthserver_accepts(staged, tmp_path):
    """systemd/mauthserver-postgresql.conf (docs/operations.md): its ExecStart= replaces the unit's, and
    the line it makes with a filled-in environment parses as mauthserver's own command line; systemd
    accepts the unit with the drop-in."""
    text = (REPO / "systemd/mauthserver-postgresql.conf").read_text()
    starts = [v for k, v in directives(text) if k == "ExecStart"]
    assert starts[0] == "" and len(starts) == 2  # the unit's ExecStart= is reset, then replaced
    env = {"MAUTHSERVER_DB": "postgresql://mauth@db.example.net/mauth", "MAUTHSERVER_API": "0.0.0.0:7580",
           "MAUTHSERVER_OPTS": "--advertise http://ctl-a.example.net:7580 --instance ctl-a"
                               " --router r1=192.0.2.1:7575"}
    argv = expand(starts[1], env)
    assert argv[0] == f"{PREFIX}/bin/mauthserver"
    params = DAEMONS["mauthserver"].make_context("mauthserver", argv[1:]).params
    assert params["db"] == env["MAUTHSERVER_DB"] and params["db_password_file"] == "/run/mauthserver/db.password"
    assert params["advertise"] == "http://ctl-a.example.net:7580" and params["instance"] == "ctl-a"
    units = tmp_path / "units"
    (units / "mauthserver.service.d").mkdir(parents=True)
    shipped = unit_text(staged, "mauthserver.service").replace(f"{PREFIX}/", f"{staged}{PREFIX}/")
    (units / "mauthserver.service").write_text(shipped)
    (units / "mauthserver.service.d/postgresql.conf").write_text(text.replace(f"{PREFIX}/", f"{staged}{PREFIX}/"))
    out = verify_in(units, "mauthserver.service")
    assert "postgresql.conf" not in out, out
