"""mauthserver --max-sessions in the lab: a full directory evicts the least recently heard session.

Real SAP multicast from a lab host reaches mauthserver in the router
namespace. With room for three sessions, five announcements leave the last
three; the two evicted are counted, the operator is warned once, and the
rule authorized from an evicted session stays (eviction bounds memory, it
does not end the session). Restarted with room for two, mauthserver
restores the two most recently heard from its database and keeps the rule.
"""

from __future__ import annotations

import pytest

from lab.topology import Lab
from sap.sap import announcement, encode
from tests.integration.mauthserver_lab import MauthserverProc, MusersdProc, make_secrets
from tests.integration.test_mauthserver_sap import send_sap

pytestmark = pytest.mark.integration

SENDER = "192.0.2.10"


def sdp(i: int) -> bytes:
    return (f"v=0\r\no=- {7000 + i} 1 IN IP4 192.0.2.{100 + i}\r\ns=Session {i}\r\nc=IN IP4 239.1.1.{i}/16\r\n"
            f"t=0 0\r\na=source-filter: incl IN IP4 * {SENDER}\r\nm=video 5004 RTP/AVP 33\r\n").encode()


def names(server: MauthserverProc) -> set[str]:
    return {s["name"] for s in server.call("sessions")}


def test_a_full_directory_evicts_the_least_recently_heard_and_keeps_its_rules(pin_dir):
    with Lab(senders={"s1": [SENDER]}) as lab:
        key, token = make_secrets(lab.workdir)
        musersd = MusersdProc(lab, pin_dir, key).start()
        server = MauthserverProc(lab, key, token, routers={"r1": "127.0.0.1:7575"},
                                 extra=["--max-sessions", "3"]).start()
        assert "(at most 3)" in server.log(True)
        r1 = lab.receivers["r1"]
        announcer = r1.addrs[0]

        send_sap(r1.ns, announcer, encode(announcement(announcer, sdp(1))))
        (first,) = server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 1)
        got = server.call("authorize", first["id"], expire_with_session=True)
        assert [(r["source"], r["group"]) for r in got["rules"]] == [(SENDER, "239.1.1.1")]
        for i in range(2, 6):
            send_sap(r1.ns, announcer, encode(announcement(announcer, sdp(i))))
            server.wait_for(lambda: names(server), lambda n, i=i: f"Session {i}" in n)

        assert names(server) == {"Session 3", "Session 4", "Session 5"}
        stats = server.call("stats")
        assert (stats["sessions"], stats["sessions_max"], stats["directory"]["evicted"]) == (3, 3, 2)
        log = server.log(True)
        assert log.count("the session directory is full") == 1  # one warning, not one per eviction
        assert log.count("(evicted)") == 2  # each eviction is logged
        # The evicted session's rule stays, on the router too: it expires with the session, which has not ended.
        rules = server.converged()
        assert [(r["source"], r["group"], r["session"]) for r in rules] == [(SENDER, "239.1.1.1", first["id"])]
        assert musersd.rules() == {(SENDER, "239.1.1.1"): 16}

        # Restarted with room for two: the two most recently heard come back from the database.
        assert server.stop() == 0
        server.extra = ["--max-sessions", "2"]
        server.start()
        assert names(server) == {"Session 4", "Session 5"}
        assert "1 stored sessions did not fit in the session directory (at most 2 sessions)" in server.log(True)
        assert [(r["source"], r["group"]) for r in server.converged()] == [(SENDER, "239.1.1.1")]
        assert server.stop() == 0
