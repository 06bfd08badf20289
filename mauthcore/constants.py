"""Numbers the programs share: well-known ports and groups."""

from __future__ import annotations

ROUTER_PORT = 7575
"""UDP port musersd listens on for the router protocol (docs/protocol.md) unless told otherwise."""

SAP_PORT = 9875
"""UDP port of the Session Announcement Protocol (RFC 2974)."""

SAP_GROUPS = ("224.2.127.254", "239.255.255.255", "239.195.255.255", "ff05::2:7ffe", "ff08::2:7ffe", "ff0e::2:7ffe")
"""SAP's routable groups (RFC 2974 section 3): IPv4 global scope (224.2.127.254) and the last address
of the administratively scoped ranges 239.255/16 and 239.192/14 (as RFC 2365 places them); IPv6
site-, organization- and global-scope ff0X::2:7ffe."""

SAP_GROUP_LINK_LOCAL = "ff02::2:7ffe"
"""SAP's IPv6 link-local group: heard by a listener on the link, never routed."""

API_PORT = 7580
"""TCP port of mauthserver's HTTP API unless told otherwise."""

MEDIATOR_PORT = 7576
"""UDP port on which mauthserver serves the router protocol to mauthctl unless told otherwise."""
