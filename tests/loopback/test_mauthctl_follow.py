"""Rules follow their sessions, end to end: `mauthctl authorize [--no-follow]` over the HTTP API, a new
version of the announcement, and what the routers end up holding."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.support.loopback_fleet import TOKEN, LoopbackFleet
from tests.support.mauthctl import no_user_config, run, secret  # noqa: F401  (no_user_config: autouse)
from tests.support.waiting import wait_until


def feed(version: int, *groups: str) -> bytes:
    """A source-specific session whose sender 192.0.2.10 sends to each of `groups` (TTL 16)."""
    lines = ["v=0", f"o=- 90 {version} IN IP4 192.0.2.56", "s=Followed feed", "t=0 0"]
    for group in groups:
        lines += ["m=video 5004 RTP/AVP 33", f"c=IN IP4 {group}/16",
                  f"a=source-filter: incl IN IP4 {group} 192.0.2.10"]
    return ("\r\n".join(lines) + "\r\n").encode()


def wait(cond, what="the routers to hold the rules"):
    wait_until(cond, 10, what)


def test_authorize_follows_the_session_unless_no_follow(tmp_path):
    with LoopbackFleet(tmp_path) as fleet:
        opts = ["--server", fleet.url, "--token-file", secret(tmp_path / "api.token", TOKEN)]
        fleet.announce(feed(1, "232.1.1.1"))
        (session,) = json.loads(run(*opts, "sessions", "--json").stdout)
        assert session["authorization"] is None

        out = json.loads(run(*opts, "authorize", session["id"], "--no-follow", "--json").stdout)
        assert out["authorization"]["follow"] is False
        assert "as-made" in run(*opts, "sessions").stdout.splitlines()[1]
        wait(lambda: fleet.held() == {("192.0.2.10", "232.1.1.1"): 16})
        fleet.announce(feed(2, "232.1.1.1", "232.2.2.2"))
        assert [(r["group"], r["follow"]) for r in json.loads(run(*opts, "list", "--json").stdout)] == [
            ("232.1.1.1", False)]

        r = run(*opts, "authorize", session["id"][:6])  # again, following from now on
        assert r.exit_code == 0 and "they follow the session's announcements" in r.stdout
        assert "follows" in run(*opts, "sessions").stdout.splitlines()[1]
        wait(lambda: fleet.held() == {("192.0.2.10", "232.1.1.1"): 16, ("192.0.2.10", "232.2.2.2"): 16})
        fleet.announce(feed(3, "232.2.2.2", "232.3.3.3"))
        wait(lambda: fleet.held() == {("192.0.2.10", "232.2.2.2"): 16, ("192.0.2.10", "232.3.3.3"): 16})
        audit = json.loads(run(*opts, "audit", "--limit", "1", "--json").stdout)
        assert audit[0]["action"] == "session-followed"
        assert audit[0]["detail"]["added"] == ["192.0.2.10 232.3.3.3 16"]
        assert audit[0]["detail"]["removed"] == ["192.0.2.10 232.1.1.1 16"]

        # The API checks the field like any other.
        req = urllib.request.Request(f"{fleet.url}/api/v1/sessions/{session['id']}/authorize", method="POST",
                                     data=json.dumps({"follow": "no"}).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 400 and json.loads(exc.read())["error"] == "field 'follow' has the wrong type"
        else:
            raise AssertionError("a follow that is not a boolean must be refused")
