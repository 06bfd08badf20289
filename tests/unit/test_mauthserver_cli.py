"""Command lines: mauthserver's strict options and secrets files, mauthctl's server mode; exit codes."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from mauthclient.cli import main as mauthctl
from mauthserver.cli import main as mauthserver
from mauthserver.config import ConfigError, load_token, parse_hostport, parse_router, parse_routers


def secret(path, text: str, mode: int = 0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_router_and_address_parsing():
    assert parse_router("r1=192.0.2.1:7000") == parse_router(" r1 = 192.0.2.1:7000".replace(" ", ""))
    r = parse_router("edge-1=[2001:db8::1]:7575")
    assert (r.name, r.host, r.port) == ("edge-1", "2001:db8::1", 7575)
    assert parse_router("r2=router2.example").port == 7575
    assert parse_hostport("::1", "--x", 9) == ("::1", 9)
    for bad, match in [("r1", "NAME=HOST:PORT"), ("bad name=1.2.3.4:1", "must be"), ("r1=1.2.3.4:99999", "port"),
                       ("r1=[::1:1", "unclosed")]:
        with pytest.raises(ConfigError, match=match):
            parse_router(bad)
    with pytest.raises(ConfigError, match="twice"):
        parse_routers(["a=1.2.3.4", "a=1.2.3.5"])


def test_token_file_checks(tmp_path):
    good = secret(tmp_path / "t", "abcdefghijklmnopqrstuvwxyz\n")
    assert load_token(str(good)) == "abcdefghijklmnopqrstuvwxyz"
    with pytest.raises(ConfigError, match="does not exist"):
        load_token(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="chmod 600"):
        load_token(str(secret(tmp_path / "open", "abcdefghijklmnopqrstuvwxyz", 0o644)))
    with pytest.raises(ConfigError, match="at least 16"):
        load_token(str(secret(tmp_path / "short", "short")))
    with pytest.raises(ConfigError, match="empty"):
        load_token(str(secret(tmp_path / "empty", "\n\n")))


def _one_sentence_exit_2(result) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mauth"), result.stderr


def test_mauthserver_refuses_bad_setups_with_exit_2(tmp_path):
    runner = CliRunner()
    token = secret(tmp_path / "tok", "abcdefghijklmnopqrstuvwxyz")
    key = secret(tmp_path / "key", "1 " + "ab" * 32 + "\n")
    base = ["--db", str(tmp_path / "m.db"), "--no-sap", "--api", "127.0.0.1:1", "--listen", "off"]
    cases = [
        [*base, "--token-file", str(tmp_path / "missing")],
        [*base, "--token-file", str(secret(tmp_path / "open", "abcdefghijklmnopqrstuvwxyz", 0o640))],
        [*base, "--token-file", str(token), "--router", "r1=192.0.2.1"],  # routers need the key file
        [*base, "--token-file", str(token), "--router", "nonsense"],
        [*base, "--token-file", str(token), "--key-file", str(tmp_path / "nokey")],
        [*base, "--token-file", str(token), "--sap-group", "192.0.2.1"],
    ]
    for args in cases:
        _one_sentence_exit_2(runner.invoke(mauthserver, args))
    (tmp_path / "bad.db").write_bytes(b"not a database at all" * 50)
    bad_db = ["--db", str(tmp_path / "bad.db"), "--token-file", str(token), "--key-file", str(key), "--no-sap"]
    result = runner.invoke(mauthserver, bad_db)
    _one_sentence_exit_2(result)
    assert "not a SQLite database" in result.stderr
    assert (tmp_path / "bad.db").read_bytes() == b"not a database at all" * 50


def test_mauthctl_announce_checks_its_file(tmp_path):
    runner = CliRunner()
    r = runner.invoke(mauthctl, ["announce", str(tmp_path / "missing.sdp")])
    assert r.exit_code == 2 and "cannot read" in r.stderr
    (tmp_path / "bad.sdp").write_text("v=0\ns=nothing else\n")
    r = runner.invoke(mauthctl, ["announce", str(tmp_path / "bad.sdp"), "--count", "1"])
    assert r.exit_code == 2 and "invalid" in r.stderr


def test_mauthserver_max_sessions_option(tmp_path, monkeypatch):
    from mauthserver import daemon as daemon_mod

    runner = CliRunner()
    token = secret(tmp_path / "tok", "abcdefghijklmnopqrstuvwxyz")
    base = ["--db", str(tmp_path / "m.db"), "--no-sap", "--api", "127.0.0.1:1", "--listen", "off",
            "--token-file", str(token)]
    for bad, why in [("0", "not in the range 1<=x<=1000000"), ("-3", "not in the range"),
                     ("many", "not a valid integer"), ("1000001", "not in the range")]:
        r = runner.invoke(mauthserver, [*base, "--max-sessions", bad])
        assert r.exit_code == 2 and "Invalid value for '--max-sessions'" in r.stderr and why in r.stderr, r.stderr
    assert not (tmp_path / "m.db").exists()  # refused before anything was opened

    seen = []

    async def run(self):
        seen.append(self.opts.max_sessions)
        return 0

    monkeypatch.setattr(daemon_mod.Daemon, "run", run)
    assert runner.invoke(mauthserver, [*base, "--max-sessions", "50000"]).exit_code == 0
    assert runner.invoke(mauthserver, base).exit_code == 0
    assert seen == [50000, 2000]
