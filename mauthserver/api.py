"""The client API: HTTP with JSON, and a Server-Sent Events stream (aiohttp, same event loop).

Strategy: a thin shell over the mediator. Handlers parse and check the
request, call one mediator method (which commits before it returns) and
answer with JSON; they decide nothing. So a 2xx answer to a command means
"committed to disk", and the fan-out's progress is in the rule's per-router
`state` (see `GET /api/v1/rules`) and in the event stream.

* Every endpoint except `/api/v1/health` and `/api/v1/openapi.json` needs
  `Authorization: Bearer <token>`, the token read from `--token-file`;
  tokens are compared in constant time (`hmac.compare_digest`).
* Errors are JSON `{"error": sentence, "code": slug, ...}` with 400 (bad
  input), 401 (token), 404, 409 (exists with another value), 422 (needs more
  input, e.g. the sender of an any-source session, with suggestions).
* The audit actor is "<X-Mauth-User or 'api'> (api <peer address>)".
* `GET /api/v1/events` streams `text/event-stream`: `id:` (resume with
  `Last-Event-ID`), `event:` (kind), `data:` (JSON); a comment line every
  15 s keeps idle connections open through proxies.
* `GET /api/v1/audit` filters the audit log (`audit_filters`; the SQL is
  `Store.audit_log` in mauthserver/store.py): `actor` (a case-insensitive
  substring), `action` (exact; repeatable or comma-separated), `since`
  (inclusive) and `until` (exclusive) as Unix seconds or ISO 8601 (UTC
  unless an offset is given), `session` (a full session id the detail
  mentions), `limit` (1-10000, default 100) and `before` (an id: the
  paging cursor). Rows come newest first.
* `GET /api/v1/traffic` is every router's rule counters and denied pairs as
  the fan-out reads them on its session with that router (`FanOut.traffic`
  in mauthserver/fanout.py; this module opens no router session of its
  own), each denied pair with when the server last reported it in a
  `denied` event, and every rule's view as `GET /api/v1/rules` answers
  it. Counters change with every packet, so they are not events: a client
  that shows rates (the dashboard) asks every few seconds.
* Receivers: `GET /api/v1/receivers` is every desired receiver rule with
  each router's state of it (applied, pending, refused with the router's
  answer, and the joins it allowed); `POST /receivers` (201, 409 when it
  exists) and `POST /receivers/delete` (404 when it does not) take the
  rule's JSON. `GET /receivers/denied`, `/receivers/joined` and
  `/receivers/policy` read every router on its session (RECV_DENIED,
  RECV_JOINED, RECV_POLICY), each entry naming its router, with "errors"
  for the routers that could not be read; `POST /receivers/policy` sets an
  interface's policy on one router or (no "router") on every router that
  has the interface.
* An unexpected exception in a handler is answered with 500, logged, and
  stops the daemon (exit status 1), as any other unexpected exception does:
  it must not limp on in an unknown state (docs/design.md).

Endpoints: see `ROUTES` below and `openapi.py` (served at /api/v1/openapi.json).
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from mauthcore.protocol.model import Mode

from . import core
from .denied import DeniedTracker, DeniedWatch
from .openapi import spec
from .store import NotLeader, StoreError

if TYPE_CHECKING:
    from .fanout import FanOut
    from .service import Mediator
    from .standby import Forwarder

log = logging.getLogger("mauthserver.api")

PREFIX = "/api/v1"
PUBLIC = {f"{PREFIX}/health", f"{PREFIX}/openapi.json"}
KEEPALIVE = 15.0
MAX_BODY = 64 * 1024
_USER = re.compile(r"[A-Za-z0-9._@+-]{1,64}")

class TokenBox:
    """The bearer token, replaceable at run time (SIGHUP) without touching the frozen app."""

    def __init__(self, value: str) -> None:
        self.value = value


MEDIATOR: web.AppKey[Mediator] = web.AppKey("mediator")
TOKEN = web.AppKey("token", TokenBox)
ON_FATAL: web.AppKey[Callable[[], None]] = web.AppKey("on_fatal")
COUNTERS: web.AppKey[dict[str, int]] = web.AppKey("counters")


class Role:
    """What this instance is: the leader (its fan-out and denied watch read the routers), or a standby,
    whose `forwarder` sends what it does not answer itself to the leader (mauthserver/standby.py).
    Changed in place when a standby becomes the leader; the app itself is frozen once served."""

    def __init__(self, fanout: FanOut | None = None, denied: DeniedWatch | None = None,
                 forwarder: Forwarder | None = None) -> None:
        self.fanout = fanout
        self.denied = denied
        self.forwarder = forwarder


ROLE = web.AppKey("role", Role)


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, sort_keys=True))


def _error(status: int, code: str, message: str, **details) -> web.Response:
    return _json({"error": message, "code": code, **details}, status=status)


@web.middleware
async def _guard(request: web.Request, handler):
    counters = request.app[COUNTERS]
    counters["requests"] += 1
    if request.path not in PUBLIC:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        token = request.app[TOKEN].value
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            counters["unauthorized"] += 1
            log.warning("peer=%s %s %s refused: %s", request.remote, request.method, request.path,
                        "no bearer token" if not header else "wrong token")
            resp = _error(401, "unauthorized", "a valid bearer token is required (see --token-file)")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="mauthserver"'
            return resp
    forwarder = request.app[ROLE].forwarder
    if forwarder is not None and not forwarder.serves(request):
        counters["forwarded"] += 1
        return await forwarder.forward(request)
    try:
        return await handler(request)
    except NotLeader as exc:  # the lease ran out under this command: nothing was committed
        counters["refused"] += 1
        return _error(503, "no-leader", f"{exc}; the command was not carried out")
    except StoreError as exc:  # the database went away (PostgreSQL; SQLite errors are bugs, see below)
        counters["errors"] += 1
        if request.method in ("GET", "HEAD"):  # a read: answer, and carry on
            return _error(503, "database", f"{exc}; try again")
        # A command whose transaction may or may not have committed: restart, and verify from the store.
        log.error("%s %s: %s; stopping so that the service manager restarts us", request.method, request.path, exc)
        request.app[ON_FATAL]()
        return _error(503, "database", f"{exc}; the command may or may not have been carried out: check, then"
                      " retry")
    except core.Refused as exc:
        counters["refused"] += 1
        return _error(exc.status, exc.code, exc.message, **exc.details)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _error(exc.status, "http", exc.reason)
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected error in %s %s; stopping so that the service manager restarts us",
                      request.method, request.path)
        counters["errors"] += 1
        request.app[ON_FATAL]()
        return _error(500, "internal", "internal error; mauthserver is restarting")


def _actor(request: web.Request) -> str:
    user = request.headers.get("X-Mauth-User", "")
    user = user if _USER.fullmatch(user) else "api"
    return f"{user} (api {request.remote})"


async def _body(request: web.Request) -> dict:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise core.Invalid(f"the request body is larger than {MAX_BODY} bytes")
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise core.Invalid(f"the request body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise core.Invalid("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise core.Invalid("the request body must be a JSON object")
    return body


def _fields(body: dict, allowed: dict[str, type | tuple], required: tuple[str, ...] = ()) -> dict:
    """Strict, typed request fields: unknown keys and wrong types are errors naming the key."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise core.Invalid(f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    for name in required:
        if body.get(name) is None:
            raise core.Invalid(f"field {name!r} is required")
    for name, value in body.items():
        types = allowed[name]
        if value is None:
            continue
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise core.Invalid(f"field {name!r} has the wrong type")
        if not isinstance(value, types):
            raise core.Invalid(f"field {name!r} has the wrong type")
    return body


def _m(request: web.Request):
    return request.app[MEDIATOR]


# -- handlers ---------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    # "standby" on an instance that forwards commands to the leader (mauthserver/standby.py): a load
    # balancer or a check may prefer the leader, though either answers every request.
    return _json({"ok": True, "role": "standby" if request.app[ROLE].forwarder is not None else "leader"})


async def openapi(request: web.Request) -> web.Response:
    return _json(spec())


async def list_rules(request: web.Request) -> web.Response:
    return _json(_m(request).rules_view())


async def add_rule(request: web.Request) -> web.Response:
    # "binding" is checked by Binding.from_json (through core.make_rule), whose sentence names what is wrong.
    body = _fields(await _body(request), {"source": str, "group": str, "max_ttl": (int, str), "replace": bool,
                                          "pps": (int, str), "bps": (int, str), "binding": object},
                   ("source", "group", "max_ttl"))
    result = _m(request).add_rule(body["source"], body["group"], body["max_ttl"],
                                  replace=bool(body.get("replace")), actor=_actor(request),
                                  pps=body.get("pps", 0), bps=body.get("bps", 0), binding=body.get("binding"))
    return _json(result, status=201 if result["result"] == "added" else 200)


async def rearm_rule(request: web.Request) -> web.Response:
    body = _fields(await _body(request), {"source": str, "group": str}, ("source", "group"))
    return _json(_m(request).rearm_rule(body["source"], body["group"], actor=_actor(request)))


async def get_rule(request: web.Request) -> web.Response:
    return _json(_m(request).get_rule(request.match_info["source"], request.match_info["group"]))


async def delete_rule(request: web.Request) -> web.Response:
    return _json(_m(request).remove_rule(request.match_info["source"], request.match_info["group"],
                                         actor=_actor(request)))


async def flush(request: web.Request) -> web.Response:
    body = _fields(await _body(request), {"confirm": bool}, ("confirm",))
    if body["confirm"] is not True:
        raise core.Invalid("flushing needs {\"confirm\": true}")
    return _json({"removed": _m(request).flush(actor=_actor(request))})


async def list_sessions(request: web.Request) -> web.Response:
    return _json(_m(request).sessions_view())


async def get_session(request: web.Request) -> web.Response:
    m = _m(request)
    return _json(m.session_view(m.find_session(request.match_info["id"])))


async def authorize(request: web.Request) -> web.Response:
    body = _fields(await _body(request), {"senders": list, "max_ttl": (int, str), "expire_with_session": bool,
                                          "replace": bool, "follow": bool})
    senders = body.get("senders") or []
    if not all(isinstance(s, str) for s in senders):
        raise core.Invalid("field 'senders' must be a list of addresses")
    return _json(_m(request).authorize(request.match_info["id"], senders=senders, max_ttl=body.get("max_ttl"),
                                       expire_with_session=bool(body.get("expire_with_session")),
                                       replace=bool(body.get("replace")), follow=body.get("follow") is not False,
                                       actor=_actor(request)))


async def revoke(request: web.Request) -> web.Response:
    await _body(request)
    return _json(_m(request).revoke(request.match_info["id"], actor=_actor(request)))


async def routers(request: web.Request) -> web.Response:
    return _json(_m(request).routers_view())


async def stats(request: web.Request) -> web.Response:
    data = _m(request).stats()
    data["api"] = request.app[COUNTERS].copy()
    return _json(data)


async def get_mode(request: web.Request) -> web.Response:
    mode = _m(request).fleet.mode
    return _json({"mode": None if mode is None else str(mode)})


async def put_mode(request: web.Request) -> web.Response:
    body = _fields(await _body(request), {"mode": str})
    text = body.get("mode")
    if text is not None and text not in ("enforce", "monitor"):
        raise core.Invalid("mode must be \"enforce\", \"monitor\" or null (leave each router's mode alone)")
    mode = None if text is None else Mode[text.upper()]
    _m(request).set_mode(mode, actor=_actor(request))
    return _json({"mode": text})


async def traffic(request: web.Request) -> web.Response:
    role = request.app[ROLE]
    fanout, watch = role.fanout, role.denied
    data = await fanout.traffic() if fanout is not None else {"at": time.time(), "routers": {}}
    # When the server last reported each denied pair in a `denied` event (null: it did not).
    data = (watch.tracker if watch is not None else DeniedTracker()).mark(data)
    # Each rule's state on each router as the server decides it now (as GET /rules answers).
    return _json({**data, "rules": _m(request).rules_view()})


# -- receivers (docs/operations.md, "Authorizing receivers: the mediator") -----------------------------------

_RECEIVER_FIELDS: dict[str, type | tuple] = {"receiver": str, "group": str, "source": str, "iface": str}


def _receiver_body(body: dict) -> dict:
    """The rule's JSON fields, typed; `ReceiverRule.from_json` (through the mediator) checks the values."""
    return {k: v for k, v in _fields(body, _RECEIVER_FIELDS, ("receiver", "group")).items() if v is not None}


async def list_receivers(request: web.Request) -> web.Response:
    return _json({"receivers": _m(request).receivers_view()})


async def add_receiver(request: web.Request) -> web.Response:
    fields = _receiver_body(await _body(request))
    return _json(_m(request).add_receiver(fields, actor=_actor(request)), status=201)


async def delete_receiver(request: web.Request) -> web.Response:
    fields = _receiver_body(await _body(request))
    return _json(_m(request).remove_receiver(fields, actor=_actor(request)))


async def _router_listing(request: web.Request, what: str) -> tuple[list[dict], dict[str, str]]:
    """Every router's receiver listing `what` (each entry with its "router"), and the routers that could not be
    read, with why (`FanOut.receivers`: read on each router's one session)."""
    fanout = request.app[ROLE].fanout
    answers = await fanout.receivers(what) if fanout is not None else {}
    entries = [{"router": name, **e} for name, a in sorted(answers.items()) if a["ok"] for e in a["entries"]]
    return entries, {name: a["error"] for name, a in sorted(answers.items()) if not a["ok"]}


async def receivers_denied(request: web.Request) -> web.Response:
    entries, errors = await _router_listing(request, "denied")
    return _json({"denied": entries, "errors": errors})


async def receivers_joined(request: web.Request) -> web.Response:
    entries, errors = await _router_listing(request, "joined")
    return _json({"joined": entries, "errors": errors})


async def receivers_policy(request: web.Request) -> web.Response:
    entries, errors = await _router_listing(request, "policy")
    return _json({"policies": entries, "desired": _m(request).policies_view(), "errors": errors})


async def set_receiver_policy(request: web.Request) -> web.Response:
    body = _fields(await _body(request), {"router": str, "iface": str, "mode": str, "limit": (int, str)},
                   ("iface", "mode"))
    return _json(_m(request).set_receiver_policy(body.get("router"), body["iface"], body["mode"],
                                                 body.get("limit", 0) if body.get("limit") is not None else 0,
                                                 actor=_actor(request)))


_AUDIT_PARAMS = ("action", "actor", "before", "limit", "session", "since", "until")
_ACTION = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_AUDIT_LIMIT = 10000


def _when(name: str, text: str) -> float:
    """A time parameter: Unix seconds, or ISO 8601 (a time without an offset is UTC)."""
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.datetime.fromisoformat(text.strip())
        except ValueError:
            raise core.Invalid(f"{name} {text!r} is neither Unix seconds nor an ISO 8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()
    if not math.isfinite(value) or value < 0:
        raise core.Invalid(f"{name} {text!r} is not a time")
    return value


def audit_filters(query) -> dict:
    """The query of `GET /audit` as keyword arguments of `Store.audit_log`; `core.Invalid` (400) names the
    first bad parameter. `action` may repeat and hold a comma-separated list; the others are given once."""
    unknown = sorted(set(query) - set(_AUDIT_PARAMS))
    if unknown:
        raise core.Invalid(f"unknown parameter {unknown[0]!r} (allowed: {', '.join(_AUDIT_PARAMS)})")
    for name in _AUDIT_PARAMS:
        if name != "action" and len(query.getall(name, [])) > 1:
            raise core.Invalid(f"parameter {name!r} is given more than once")
    out: dict = {}
    for name in ("limit", "before"):
        if name in query:
            text = query[name]
            if not text.strip().isdigit():
                raise core.Invalid(f"{name} {text!r} is not a positive integer")
            out[name] = int(text)
    if not 1 <= out.setdefault("limit", 100) <= MAX_AUDIT_LIMIT:
        raise core.Invalid(f"limit must be 1-{MAX_AUDIT_LIMIT}")
    if "actor" in query:
        if not 1 <= len(query["actor"]) <= 200:
            raise core.Invalid("actor must be 1-200 characters")
        out["actor"] = query["actor"]
    actions = [a.strip() for text in query.getall("action", []) for a in text.split(",")]
    bad = next((a for a in actions if not _ACTION.fullmatch(a)), None)
    if bad is not None:
        raise core.Invalid(f"action {bad!r} is not an action name (such as add-sender)")
    out["actions"] = sorted(set(actions))
    if "session" in query:
        if not _SESSION_ID.fullmatch(query["session"]):
            raise core.Invalid(f"session {query['session']!r} is not a session id")
        out["session"] = query["session"]
    for name in ("since", "until"):
        if name in query:
            out[name] = _when(name, query[name])
    if "since" in out and "until" in out and out["since"] >= out["until"]:
        raise core.Invalid("since must be earlier than until")
    return out


async def audit(request: web.Request) -> web.Response:
    return _json(_m(request).store.audit_log(**audit_filters(request.query)))


async def events(request: web.Request) -> web.StreamResponse:
    m = _m(request)
    bus = m.bus
    last_id = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    sub = bus.subscribe(last_id, m.clock())
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    try:
        while True:
            try:
                event = await asyncio.wait_for(sub.queue.get(), KEEPALIVE)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if event is None:
                break
            data = json.dumps({"at": event.at, **event.data}, sort_keys=True)
            await resp.write(f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        bus.unsubscribe(sub)
    return resp


ROUTES = [
    ("GET", "/health", health),
    ("GET", "/openapi.json", openapi),
    ("GET", "/rules", list_rules),
    ("POST", "/rules", add_rule),
    ("POST", "/rules/rearm", rearm_rule),
    ("GET", "/rules/{source}/{group}", get_rule),
    ("DELETE", "/rules/{source}/{group}", delete_rule),
    ("POST", "/flush", flush),
    ("GET", "/sessions", list_sessions),
    ("GET", "/sessions/{id}", get_session),
    ("POST", "/sessions/{id}/authorize", authorize),
    ("POST", "/sessions/{id}/revoke", revoke),
    ("GET", "/routers", routers),
    ("GET", "/stats", stats),
    ("GET", "/mode", get_mode),
    ("PUT", "/mode", put_mode),
    ("GET", "/audit", audit),
    ("GET", "/traffic", traffic),
    ("GET", "/receivers", list_receivers),
    ("POST", "/receivers", add_receiver),
    ("POST", "/receivers/delete", delete_receiver),
    ("GET", "/receivers/denied", receivers_denied),
    ("GET", "/receivers/joined", receivers_joined),
    ("GET", "/receivers/policy", receivers_policy),
    ("POST", "/receivers/policy", set_receiver_policy),
    ("GET", "/events", events),
]


def make_app(mediator, token: str, on_fatal: Callable[[], None] = lambda: None, *,
             fanout=None, denied=None, role: Role | None = None) -> web.Application:
    """The API app; `fanout` (mauthserver/fanout.py) reads the routers for `GET /traffic`, whose denied
    pairs say when `denied` (the DeniedWatch of mauthserver/denied.py) last reported them."""
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY)
    app[MEDIATOR] = mediator
    app[ROLE] = role if role is not None else Role(fanout, denied)
    app[TOKEN] = TokenBox(token)
    app[ON_FATAL] = on_fatal
    app[COUNTERS] = {"requests": 0, "unauthorized": 0, "refused": 0, "errors": 0, "forwarded": 0}
    for method, path, handler in ROUTES:
        app.router.add_route(method, PREFIX + path, handler)

    async def _close_streams(app: web.Application) -> None:
        mediator.bus.close_all()

    async def _close_links(app: web.Application) -> None:
        fanout = app[ROLE].fanout
        if fanout is not None:
            fanout.close()

    app.on_shutdown.append(_close_streams)
    async def _close_forwarder(app: web.Application) -> None:
        forwarder = app[ROLE].forwarder
        if forwarder is not None:
            await forwarder.close()

    app.on_cleanup.append(_close_links)
    app.on_cleanup.append(_close_forwarder)
    return app
