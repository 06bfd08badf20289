"""SAP announcing over a real socket: the interface of a link-local source is its zone
(the rest of the announcer, with a fake sleep, is tests/unit/test_announcer.py).
"""

from __future__ import annotations

import socket

import pytest

from sap import announcer as ann


def test_the_interface_of_a_link_local_source_is_its_zone():
    assert ann.interface_holding("fe80::1%lo") == socket.if_nametoindex("lo")
    assert ann.interface_holding("::1") == socket.if_nametoindex("lo")
    with pytest.raises(OSError, match="no interface holds the address 2001:db8:ffff::1"):
        ann.interface_holding("2001:db8:ffff::1")
