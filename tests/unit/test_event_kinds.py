"""The event kinds, defined once (mauthcore/events.py): wire strings, families, parsing."""

from __future__ import annotations

import json

from mauthcore.events import REMOVALS, EventKind, Family
from mauthserver.events import EventBus

WIRE = {
    "session.added": Family.SESSION, "session.changed": Family.SESSION, "session.removed": Family.SESSION,
    "rule.added": Family.RULE, "rule.changed": Family.RULE, "rule.removed": Family.RULE,
    "router.changed": Family.ROUTER, "mode.changed": Family.MODE,
    "denied": Family.DENIED, "denied.suppressed": Family.DENIED,
    "sender.moved": Family.DENIED,
    "receiver.added": Family.RECEIVER, "receiver.removed": Family.RECEIVER, "receiver.policy": Family.RECEIVER,
    "receiver.denied": Family.RECEIVER,
    "hello": Family.STREAM, "resync": Family.STREAM, "overflow": Family.STREAM,
}


def test_every_kind_keeps_its_wire_string_and_has_a_family():
    assert {str(k): k.family for k in EventKind} == WIRE
    for text, family in WIRE.items():
        kind = EventKind.parse(text)
        assert kind is not None and kind == text and f"{kind}" == text and json.dumps(kind) == f'"{text}"'
        assert kind.family is family
    assert EventKind.parse("rule.renamed") is None  # a kind of a newer server
    assert EventKind.for_rule("changed") is EventKind.RULE_CHANGED
    assert EventKind.for_session("removed") is EventKind.SESSION_REMOVED
    assert REMOVALS == {EventKind.RULE_REMOVED, EventKind.SESSION_REMOVED, EventKind.RECEIVER_REMOVED}


def test_the_bus_streams_the_wire_strings():
    bus = EventBus()
    sub = bus.subscribe(None, 1.0)
    bus.publish(EventKind.MODE_CHANGED, {"mode": "monitor", "actor": "t"}, 2.0)
    hello, event = sub.queue.get_nowait(), sub.queue.get_nowait()
    assert hello.kind is EventKind.HELLO
    assert event.to_dict()["event"] == "mode.changed"
    assert json.loads(json.dumps(event.to_dict()))["event"] == "mode.changed"
