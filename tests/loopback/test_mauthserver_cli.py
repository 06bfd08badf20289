"""mauthctl's server mode on the command line: usage errors and an unreachable server (127.0.0.1).
"""

from __future__ import annotations

from click.testing import CliRunner

from mauthclient.cli import main as mauthctl
from tests.unit.test_mauthserver_cli import secret


def test_mauthctl_server_mode_usage_and_unreachable(tmp_path):
    runner = CliRunner()
    token = secret(tmp_path / "tok", "abcdefghijklmnopqrstuvwxyz")
    r = runner.invoke(mauthctl, ["sessions"])
    assert r.exit_code == 2 and "--server" in r.stderr
    r = runner.invoke(mauthctl, ["--router", "127.0.0.1:1", "--server", "http://127.0.0.1:1", "list"])
    assert r.exit_code == 2 and "not both" in r.stderr
    open_token = secret(tmp_path / "open", "abcdefghijklmnopqrstuvwxyz", 0o644)
    r = runner.invoke(mauthctl, ["--server", "http://127.0.0.1:1", "--token-file", str(open_token), "list"])
    assert r.exit_code == 2 and "chmod 600" in r.stderr
    r = runner.invoke(mauthctl, ["--server", "http://127.0.0.1:1", "--token-file", str(token), "list"])
    assert r.exit_code == 3 and "cannot reach mauthserver" in r.stderr
    r = runner.invoke(mauthctl, ["--server", "http://127.0.0.1:1", "--token-file", str(token), "denied"])
    assert r.exit_code == 3 and "cannot reach mauthserver" in r.stderr  # denied works through the server too
    r = runner.invoke(mauthctl, ["--server", "http://127.0.0.1:1", "--token-file", str(token),
                                 "add-sender", "192.0.2.1", "10.0.0.1", "--max-ttl", "3"])
    assert r.exit_code == 2 and "not a multicast" in r.stderr
