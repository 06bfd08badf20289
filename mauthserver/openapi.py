"""The OpenAPI 3.1 description of the client API, served at /api/v1/openapi.json.

Written by hand (aiohttp does not generate one); a unit test checks that
every route the app registers is described here and nothing else is, so the
two cannot drift apart.
"""

from __future__ import annotations

_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(description: str, schema: dict | None = None) -> dict:
    out: dict = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(name: str) -> dict:
    return {"type": "array", "items": _ref(name)}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_RATE = {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?[kKMG]?$"}],
         "description": "limit per second, 0 = none; a string may use k, M, G (x1000)"}

_RULE_PARAMS = [
    {"name": "source", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "group", "in": "path", "required": True, "schema": {"type": "string"}},
]
_SESSION_PARAM = [{"name": "id", "in": "path", "required": True,
                   "schema": {"type": "string"}, "description": "session id, or a unique prefix of 4+ characters"}]

_ROUTER_ERRORS = {"type": "object", "additionalProperties": {"type": "string"},
                  "description": "router -> why it could not be read"}

PATHS: dict[str, dict] = {
    "/health": {"get": {"summary": "Liveness and role (no token needed)", "security": [],
                        "responses": {"200": _ok("alive; `role` is \"leader\", or \"standby\" on an instance that "
                                                 "forwards commands to the leader of a shared PostgreSQL database",
                                                 {"type": "object", "properties": {
                                                     "ok": {"type": "boolean"},
                                                     "role": {"enum": ["leader", "standby"]}}})}}},
    "/openapi.json": {"get": {"summary": "This description (no token needed)", "security": [],
                              "responses": {"200": _ok("OpenAPI document", {"type": "object"})}}},
    "/rules": {
        "get": {"summary": "Desired sender rules with their per-router state",
                "responses": {"200": _ok("rules", _list("Rule"))}},
        "post": {"summary": "Add a sender rule (committed before the answer; fanned out after)",
                 "requestBody": _body({"type": "object", "required": ["source", "group", "max_ttl"],
                                       "additionalProperties": False,
                                       "properties": {"source": {"type": "string"}, "group": {"type": "string"},
                                                      "max_ttl": {"type": "integer", "minimum": 1, "maximum": 255},
                                                      "pps": _RATE, "bps": _RATE, "binding": _ref("Binding"),
                                                      "replace": {"type": "boolean"}}}),
                 "responses": {"201": _ok("added", _ref("RuleResult")), "200": _ok("changed or unchanged",
                                                                                   _ref("RuleResult")),
                               "400": _ERR, "409": _ERR}},
    },
    "/rules/rearm": {
        "post": {"summary": "Make every router whose rule learns its sender forget the (interface, MAC) it"
                            " pinned (audited as rule-rearmed; sent to each router once it holds the rule)",
                 "requestBody": _body({"type": "object", "required": ["source", "group"],
                                       "additionalProperties": False,
                                       "properties": {"source": {"type": "string"}, "group": {"type": "string"}}}),
                 "responses": {"200": _ok("the routers asked", {"type": "object", "properties": {
                     "result": {"const": "rearming"}, "routers": {"type": "array", "items": {"type": "string"}},
                     "rule": _ref("Rule")}}), "400": _ERR, "404": _ERR}},
    },
    "/rules/{source}/{group}": {
        "parameters": _RULE_PARAMS,
        "get": {"summary": "One rule", "responses": {"200": _ok("rule", _ref("Rule")), "404": _ERR}},
        "delete": {"summary": "Remove a sender rule", "responses": {"200": _ok("removed", {"type": "object"}),
                                                                    "404": _ERR}},
    },
    "/flush": {"post": {"summary": "Remove every desired rule",
                        "requestBody": _body({"type": "object", "required": ["confirm"],
                                              "properties": {"confirm": {"const": True}}}),
                        "responses": {"200": _ok("removed", {"type": "object"}), "400": _ERR}}},
    "/sessions": {"get": {"summary": "Announced sessions (SAP/SDP)",
                          "responses": {"200": _ok("sessions", _list("Session"))}}},
    "/sessions/{id}": {"parameters": _SESSION_PARAM,
                       "get": {"summary": "One session", "responses": {"200": _ok("session", _ref("Session")),
                                                                       "404": _ERR}}},
    "/sessions/{id}/authorize": {
        "parameters": _SESSION_PARAM,
        "post": {"summary": "Turn a session's declared senders (or the senders given) into rules",
                 "requestBody": {"content": {"application/json": {"schema": {
                     "type": "object", "additionalProperties": False,
                     "properties": {"senders": {"type": "array", "items": {"type": "string"}},
                                    "max_ttl": {"type": "integer", "minimum": 1, "maximum": 255,
                                                "description": "instead of each group's c= TTL; IPv6 groups,"
                                                               " which have none, get 255 without it"},
                                    "expire_with_session": {"type": "boolean"},
                                    "replace": {"type": "boolean"},
                                    "follow": {"type": "boolean", "default": True,
                                               "description": "the rules follow later versions of the"
                                                              " session's announcement: re-planned with these"
                                                              " fields at each change (rules not made by this"
                                                              " authorization are never touched); false: they"
                                                              " stay as made"}}}}}},
                 "responses": {"200": _ok("rules of the session, and the authorization stored",
                                          {"type": "object", "properties": {
                                              "session": {"type": "string"}, "name": {"type": "string"},
                                              "rules": _list("Rule"), "changed": {"type": "integer"},
                                              "skipped": {"type": "array", "items": {"type": "object"}},
                                              "authorization": _ref("Authorization")}}),
                               "404": _ERR, "409": _ERR, "422": _ERR}},
    },
    "/sessions/{id}/revoke": {"parameters": _SESSION_PARAM,
                              "post": {"summary": "Remove the rules authorized from a session, and its"
                                                  " authorization (nothing follows the session any more)",
                                       "responses": {"200": _ok("revoked", {"type": "object"}), "404": _ERR}}},
    "/routers": {"get": {"summary": "Per-router state", "responses": {"200": _ok("routers", _list("Router"))}}},
    "/stats": {"get": {"summary": "Counters of the mediator, directory, routers and API",
                       "responses": {"200": _ok("stats", {"type": "object"})}}},
    "/mode": {
        "get": {"summary": "Desired filter mode of every router (null: left alone)",
                "responses": {"200": _ok("mode", {"type": "object"})}},
        "put": {"summary": "Set the desired filter mode", "requestBody": _body({
            "type": "object", "properties": {"mode": {"enum": ["enforce", "monitor", None]}}}),
            "responses": {"200": _ok("mode", {"type": "object"}), "400": _ERR}},
    },
    "/audit": {"get": {"summary": "Audit log, newest first, filtered",
                       "description": "Every filter given must hold. Rows older than the server's retention"
                                      " bounds (--audit-max-age, --audit-max-rows) are gone; each pruning pass"
                                      " left an `audit-pruned` row. Page back with `before` = the last id of a"
                                      " page. An unknown or bad parameter is a 400 naming it.",
                       "parameters": [
                           {"name": "limit", "in": "query", "description": "rows at most (default 100)",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                           {"name": "before", "in": "query", "description": "only ids below this one",
                            "schema": {"type": "integer", "minimum": 0}},
                           {"name": "actor", "in": "query", "description": "a case-insensitive substring of"
                            " the actor (\"alice\" finds \"alice (api 127.0.0.1)\")",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200}},
                           {"name": "action", "in": "query", "description": "exact action name; repeatable,"
                            " or comma-separated (add-sender,del-sender): any of them",
                            "style": "form", "explode": True,
                            "schema": {"type": "array", "items": {"type": "string"}}},
                           {"name": "since", "in": "query", "description": "rows at or after this time: Unix"
                            " seconds or ISO 8601 (UTC without an offset)", "schema": {"type": "string"}},
                           {"name": "until", "in": "query", "description": "rows before this time (exclusive),"
                            " as since", "schema": {"type": "string"}},
                           {"name": "session", "in": "query", "description": "rows whose detail mentions this"
                            " full session id (authorize, revoke, session-ended...)",
                            "schema": {"type": "string"}}],
                       "responses": {"200": _ok("entries", _list("AuditEntry")), "400": _ERR}}},
    "/traffic": {"get": {"summary": "Every router's per-rule counters and denied pairs, read on the fan-out's"
                                    " session with each router (answers younger than 1 s are shared), and every"
                                    " rule with its state on each router",
                         "responses": {"200": _ok("traffic", _ref("Traffic"))}}},
    "/receivers": {
        "get": {"summary": "Desired receiver rules with each router's state of them",
                "responses": {"200": _ok("receivers", {"type": "object", "properties": {
                    "receivers": _list("Receiver")}})}},
        "post": {"summary": "Add a receiver rule for every router (committed before the answer; fanned out after)",
                 "requestBody": _body(_ref("ReceiverRule")),
                 "responses": {"201": _ok("added", {"type": "object", "properties": {
                     "result": {"const": "added"}, "receiver": _ref("Receiver")}}),
                     "400": _ERR, "409": _ERR}}},
    "/receivers/delete": {"post": {"summary": "Remove a receiver rule (the rule is its own key)",
                                   "requestBody": _body(_ref("ReceiverRule")),
                                   "responses": {"200": _ok("removed", {"type": "object"}), "400": _ERR,
                                                 "404": _ERR}}},
    "/receivers/denied": {"get": {"summary": "Every router's refused joins (RECV_DENIED), read on its session",
                                  "responses": {"200": _ok("refused joins", {"type": "object", "properties": {
                                      "denied": {"type": "array", "items": {"type": "object", "properties": {
                                          "router": {"type": "string"}, "iface": {"type": "string"},
                                          "receiver": {"type": "string"}, "group": {"type": "string"},
                                          "source": {"type": ["string", "null"]}, "reason": {"type": "string"},
                                          "records": {"type": "integer"}, "last_seen": {"type": ["number", "null"]},
                                          "version": {"type": "integer"}}}},
                                      "errors": _ROUTER_ERRORS}})}}},
    "/receivers/joined": {"get": {"summary": "Every router's joined groups (RECV_JOINED), read on its session",
                                  "responses": {"200": _ok("joined groups", {"type": "object", "properties": {
                                      "joined": {"type": "array", "items": {"type": "object", "properties": {
                                          "router": {"type": "string"}, "iface": {"type": "string"},
                                          "group": {"type": "string"}, "reporter": {"type": "string"},
                                          "first_seen": {"type": ["number", "null"]},
                                          "last_seen": {"type": ["number", "null"]},
                                          "reports": {"type": "integer"}, "left": {"type": "boolean"}}}},
                                      "errors": _ROUTER_ERRORS}})}}},
    "/receivers/policy": {
        "get": {"summary": "Every router's guarded interfaces with their receiver policy, groups and counters"
                           " (RECV_POLICY), and the desired policies",
                "responses": {"200": _ok("policies", {"type": "object", "properties": {
                    "policies": {"type": "array", "items": {"type": "object", "properties": {
                        "router": {"type": "string"}, "iface": {"type": "string"},
                        "mode": {"enum": ["open", "closed", "monitor"]}, "limit": {"type": "integer"},
                        "groups": {"type": "integer"}, "counters": {"type": "object"}}}},
                    "desired": {"type": "array", "items": _ref("ReceiverPolicy")},
                    "errors": _ROUTER_ERRORS}})}},
        "post": {"summary": "Set an interface's receiver policy on one router, or on every router that has it",
                 "requestBody": _body({"type": "object", "required": ["iface", "mode"], "additionalProperties": False,
                                       "properties": {"router": {"type": "string"}, "iface": {"type": "string"},
                                                      "mode": {"enum": ["open", "closed", "monitor"]},
                                                      "limit": {"type": "integer", "minimum": 0,
                                                                "maximum": 65535}}}),
                 "responses": {"200": _ok("set or unchanged", {"type": "object", "properties": {
                     "result": {"enum": ["set", "unchanged"]}, "policy": _ref("ReceiverPolicy")}}),
                     "400": _ERR, "404": _ERR}}},
    "/events": {"get": {"summary": "Server-Sent Events: session.*, rule.*, router.changed, mode.changed, denied,"
                                   " denied.suppressed, sender.moved, receiver.added, receiver.removed,"
                                   " receiver.policy, receiver.denied",
                        "description": "Each event has `id:` (resume with Last-Event-ID), `event:` (the kind) and"
                                       " `data:` (JSON with `at`, Unix time, and the fields of the kind). `denied`"
                                       " (schema DeniedEvent): a router's filter dropped packets of a sender without"
                                       " a rule (or above its max TTL), new or still sending; reported at most a few"
                                       " per second in all, biggest first. `denied.suppressed` (schema"
                                       " DeniedSuppressedEvent): how many reports one poll held back."
                                       " `sender.moved` (router, source, group, reason, packets, new_packets):"
                                       " a learning rule's sender was seen from another interface or MAC, at"
                                       " most once a minute per pair and router."
                                       " `rule.added` and `rule.changed` carry `rule` (the desired rule), `actor`,"
                                       " `reason`, `previous` (changed only), and `routers` and `state` as in"
                                       " schema Rule: each router's state of the rule as the server decides it;"
                                       " `reason` is `session-changed` for a rule that followed its session's"
                                       " new announcement. `session.added` and `session.changed` of a session"
                                       " whose rules follow it carry `follow`: the rules `added`, `changed` and"
                                       " `removed`, or `error` and `kept` when the announcement asks for no rule"
                                       " (the rules are then kept as they were)."
                                       " The kinds and their data: mauthcore/events.py.",
                        "parameters": [{"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}}],
                        "responses": {"200": {"description": "event stream",
                                              "content": {"text/event-stream": {"schema": {"type": "string"}}}}}}},
}

SCHEMAS = {
    "ReceiverRule": {"type": "object", "required": ["receiver", "group"], "additionalProperties": False,
                     "properties": {"receiver": {"type": "string", "description": "a host or a prefix ADDR/LEN"},
                                    "group": {"type": "string", "description": "a group or a prefix ADDR/LEN"},
                                    "source": {"type": "string", "description": "only joins from this source"},
                                    "iface": {"type": "string", "description": "only on this interface"}}},
    "Receiver": {"type": "object", "required": ["receiver", "group", "state", "routers"], "properties": {
        "receiver": {"type": "string"}, "group": {"type": "string"}, "source": {"type": "string"},
        "iface": {"type": "string"}, "created": {"type": "number"}, "actor": {"type": "string"},
        "state": {"enum": ["applied", "pending", "refused"]},
        "routers": {"type": "object", "additionalProperties": {"type": "object", "properties": {
            "state": {"enum": ["applied", "pending", "refused"]}, "error": {"type": "string"},
            "matched": {"type": "integer"}, "last_seen": {"type": ["number", "null"]}}}}}},
    "ReceiverPolicy": {"type": "object", "properties": {
        "router": {"type": ["string", "null"], "description": "null: every router that has the interface"},
        "iface": {"type": "string"}, "mode": {"enum": ["open", "closed", "monitor"]}, "limit": {"type": "integer"},
        "updated": {"type": "number"}, "actor": {"type": "string"}}},
    "Authorization": {"type": "object", "description": "what a session was authorized with (the last"
                                                       " authorize of it; senders given each time add up)",
                      "properties": {
                          "senders": {"type": "array", "items": {"type": "string"},
                                      "description": "the senders given; empty: the ones the session declares"},
                          "max_ttl": {"type": ["integer", "null"]}, "expire_with_session": {"type": "boolean"},
                          "follow": {"type": "boolean", "description": "its rules follow the session's later"
                                                                      " announcements"},
                          "actor": {"type": "string"}, "created": {"type": "number"},
                          "updated": {"type": "number"}}},
    "DeniedEvent": {"type": "object", "required": ["at", "router", "source", "group", "reason", "packets",
                                                   "new_packets", "first"], "properties": {
        "at": {"type": "number"}, "router": {"type": "string"}, "source": {"type": "string"},
        "group": {"type": "string"}, "reason": {"type": "string", "description": "unauthorized, ttl, rate..."},
        "packets": {"type": "integer", "description": "the pair's packets in the router's denied table"},
        "bytes": {"type": "integer"},
        "new_packets": {"type": "integer", "description": "since this pair was last reported (all when first)"},
        "first": {"type": "boolean", "description": "the pair was not reported before"},
        "last_ttl": {"type": "integer"}, "last_seen": {"type": ["number", "null"]}}},
    "ReceiverDeniedEvent": {"type": "object", "required": ["at", "router", "iface", "receiver", "group", "source",
                                                        "reason", "records", "new_records", "first", "last_seen",
                                                        "version"], "properties": {
        "at": {"type": "number"}, "router": {"type": "string"}, "iface": {"type": "string"},
        "receiver": {"type": "string", "description": "the report's source address"}, "group": {"type": "string"},
        "source": {"type": ["string", "null"], "description": "a source-specific join's source; null: any"},
        "reason": {"enum": ["join_refused", "join_limit"]},
        "records": {"type": "integer", "description": "refused join records in the router's table"},
        "new_records": {"type": "integer", "description": "since this join was last reported (all when first)"},
        "first": {"type": "boolean"}, "last_seen": {"type": ["number", "null"]},
        "version": {"type": "integer", "description": "of the last report: IGMP 1..3, MLD 1..2"}}},
    "DeniedSuppressedEvent": {"type": "object", "required": ["at", "router", "suppressed", "pairs"], "properties": {
        "at": {"type": "number"}, "router": {"type": "string"},
        "suppressed": {"type": "integer", "description": "reports held back; offered again at the next poll"},
        "pairs": {"type": "integer", "description": "denied pairs in the router's table"}}},
    "AuditEntry": {"type": "object", "required": ["id", "at", "actor", "action", "detail"], "properties": {
        "id": {"type": "integer", "description": "increasing: the id order is the time order"},
        "at": {"type": "number", "description": "Unix time"},
        "actor": {"type": "string", "description": "\"USER (api ADDRESS)\", \"udp-v2 ADDRESS\" or mauthserver"},
        "action": {"type": "string", "description": "add-sender, del-sender, flush, authorize, revoke, mode,"
                                                    " rule-rearmed, session-ended, configure-routers,"
                                                    " audit-pruned..."},
        "detail": {"type": "object", "description": "what the action changed; for audit-pruned: removed,"
                                                    " by (age or rows), oldest_kept_id, oldest_kept_at"}}},
    "Error": {"type": "object", "required": ["error", "code"],
              "properties": {"error": {"type": "string"}, "code": {"type": "string"}}},
    "RouterRuleState": {"type": "object", "properties": {
        "state": {"enum": ["applied", "pending", "refused"]}, "error": {"type": "string"},
        "verified": {"type": "boolean"}, "packets": {"type": "integer"}, "bytes": {"type": "integer"},
        "last_seen": {"type": ["number", "null"]},
        "moved": {"type": "integer", "description": "a bound rule: packets dropped since it learned, from another"
                                                    " interface or MAC"},
        "learned": {"type": ["object", "null"], "description": "a learning rule: the {iface, mac} it pinned"}}},
    "Binding": {"type": "object", "additionalProperties": False, "description":
                "where the sender may be; every part optional (docs/operations.md, \"Binding a sender\")",
                "properties": {
                    "iface": {"type": "string", "description": "its ingress interface, or one per router"
                                                               " (\"r1=eth1,r2=ens4\"): the routers named get the"
                                                               " interface, MAC and learning, the others rpf only"},
                    "rpf": {"type": "boolean"}, "mac": {"type": "string", "description": "aa:bb:cc:dd:ee:ff"},
                    "learn": {"type": "boolean", "description": "the first packet pins (interface, MAC)"}}},
    "Rule": {"type": "object", "required": ["source", "group", "max_ttl", "state", "routers"], "properties": {
        "source": {"type": "string", "description": "an IPv4 or IPv6 host, or a prefix ADDR/LEN, in canonical"
                                                    " text (2001:db8::10)"},
        "group": {"type": "string", "description": "a group, or a prefix ADDR/LEN"},
        "max_ttl": {"type": "integer", "description": "largest TTL (IPv6: hop limit)"},
        "pps": {"type": "integer", "description": "packets/s limit, 0 = none"},
        "bps": {"type": "integer", "description": "bits/s limit, 0 = none"},
        "binding": _ref("Binding"),
        "session": {"type": ["string", "null"]}, "expire_with_session": {"type": "boolean"},
        "follow": {"type": "boolean", "description": "the rule follows its session's announcements"},
        "state": {"enum": ["applied", "pending", "refused"]},
        "routers": {"type": "object", "additionalProperties": _ref("RouterRuleState")},
        "packets": {"type": "integer"}, "bytes": {"type": "integer"},
        "created": {"type": "number"}, "updated": {"type": "number"}, "actor": {"type": "string"}}},
    "RuleResult": {"type": "object", "properties": {"result": {"enum": ["added", "changed", "unchanged"]},
                                                    "rule": _ref("Rule")}},
    "Group": {"type": "object", "properties": {"address": {"type": "string"},
                                               "ttl": {"type": ["integer", "null"]}}},
    "Session": {"type": "object", "required": ["id", "name", "origin", "announcer", "groups", "sources", "media",
                                               "last_heard", "expires"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "origin": {"type": "string"},
        "announcer": {"type": "string"}, "groups": {"type": "array", "items": _ref("Group")},
        "sources": {"type": "array", "items": {"type": "string"}}, "any_source": {"type": "boolean"},
        "media": {"type": "array", "items": {"type": "object"}}, "first_heard": {"type": "number"},
        "last_heard": {"type": "number"}, "expires": {"type": "number"}, "stops": {"type": ["number", "null"]},
        "suggested_senders": {"type": "array", "items": {"type": "string"}},
        "rules": {"type": "array", "items": {"type": "object"}}, "sdp": {"type": "string"},
        "authorization": {"oneOf": [_ref("Authorization"), {"type": "null"}],
                          "description": "what the session was authorized with (null: never, or before"
                                         " following existed)"}}},
    "Traffic": {"type": "object", "required": ["at", "routers", "rules"], "properties": {
        "at": {"type": "number"},
        "rules": {"type": "array", "description": "every desired rule with its state on each router, as GET"
                                                   " /rules answers now", "items": _ref("Rule")},
        "routers": {"type": "object", "additionalProperties": {"type": "object", "required": ["ok"], "properties": {
            "ok": {"type": "boolean"}, "error": {"type": "string"}, "at": {"type": "number"},
            "mode": {"enum": ["enforce", "monitor", None]}, "rule_count": {"type": "integer"},
            "filter": {"type": "object"},
            "rules": {"type": "array", "items": {"type": "object", "properties": {
                "source": {"type": "string"}, "group": {"type": "string"}, "max_ttl": {"type": "integer"},
                "pps": {"type": "integer"}, "bps": {"type": "integer"},
                "packets": {"type": "integer"}, "bytes": {"type": "integer"},
                "last_seen": {"type": ["number", "null"]}}}},
            "denied": {"type": "array", "items": {"type": "object", "properties": {
                "source": {"type": "string"}, "group": {"type": "string"},
                "reason": {"type": "string"}, "packets": {"type": "integer"}, "bytes": {"type": "integer"},
                "last_ttl": {"type": "integer"}, "last_seen": {"type": ["number", "null"]},
                "reported": {"type": ["number", "null"], "description": "when the server last reported the pair"
                                                                       " in a `denied` event (null: not)"}}}}}}}}},
    "Router": {"type": "object", "properties": {
        "name": {"type": "string"}, "address": {"type": "string"},
        "state": {"enum": ["unknown", "up", "down", "converging"]},
        "epoch": {"type": ["string", "null"]}, "state_id": {"type": ["string", "null"]},
        "mode": {"type": ["string", "null"]}, "rule_count": {"type": ["integer", "null"]},
        "pending": {"type": "integer"}, "last_contact": {"type": ["number", "null"]},
        "last_error": {"type": ["string", "null"]}}},
}


def spec() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "mauthserver client API", "version": "1",
                 "description": "Multicast sender authorization: sessions, rules and routers. On a standby of a "
                                "shared PostgreSQL database (docs/operations.md), commands and the reads of "
                                "/traffic, /routers and /stats are forwarded to the leader, whose answer comes "
                                "back with an X-Mauth-Leader header; when no leader can be reached the answer is "
                                "503 with code \"no-leader\" and the command was not carried out."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": SCHEMAS},
        "paths": PATHS,
    }
