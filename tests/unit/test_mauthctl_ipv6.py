"""mauthctl with IPv6: rules and prefixes direct to a router and through mauthserver, sessions, errors.

Direct mode speaks protocol v2 to the real server core on a memory backend,
here listening on ::1, and the test reads the requests off the wire to check
their encoding (family 6, 16-byte addresses, prefix lengths out of 128).
Server mode goes through the real mediator, store and API, which fan out to
two routers over v2 (`LoopbackFleet`); IPv6 sessions arrive as SAP
announcements. The kernel side of the same rules is in tests/integration.
"""

from __future__ import annotations

# The autouse no_user_config fixture and the helpers of every mauthctl test.
from tests.support.mauthctl import no_user_config, run  # noqa: F401

# =============================================================================
# direct mode
# =============================================================================


# =============================================================================
# server mode
# =============================================================================


def test_help_shows_ipv6_examples():
    assert "2001:db8:0:1::/64 ff0e::db8:1" in run("add-sender", "--help").stdout
    assert "2001:db8::10 ff15::/16" in run("del-sender", "--help").stdout
    assert "IPv6" in run("authorize", "--help").stdout
