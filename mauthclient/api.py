"""The clients of mauthserver's HTTP API: `ApiClient` for mauthctl, `AsyncApiClient` for the dashboard.

Strategy: `ApiClient` uses the standard library only (urllib), blocking, one
request at a time: a command-line tool needs nothing more, and it keeps
mauthctl's start-up fast. The dashboard lives in an event loop and must be
able to drop a request or the event stream the moment the operator quits,
so it uses `AsyncApiClient` (aiohttp, cancellable). Both share the URL
rules, the error mapping and the Server-Sent Events parser (`SseParser`,
sans-IO: lines in, events out), so they cannot disagree.

Every failure becomes one of two exceptions with a one-sentence message:
`ApiError` (the server answered with an error: status, code, details such as
suggested senders) or `Unreachable` (no answer at all). `events()` yields
(id, kind, data) until the server closes the stream.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: mauthctl's ApiClient never loads it
    import aiohttp

DEFAULT_SERVER = "http://127.0.0.1:7580"
DEFAULT_TOKEN_FILE = "/etc/mauth/api.token"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or {}


class Unreachable(Exception):
    pass


def api_base(base_url: str) -> str:
    """The API's base URL from what an operator types: HOST:PORT, http://HOST:PORT, or the full /api/v1 URL."""
    url = base_url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url  # HOST:PORT, as given to mauthserver --api
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"server URL {base_url!r} is not http://HOST:PORT")
    if not parsed.path.endswith("/api/v1"):
        url += "/api/v1"
    return url


def error_of(status: int, reason: str, raw: bytes) -> ApiError:
    """The `ApiError` for an error answer: the server's JSON sentence and code when it sent them."""
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    message = payload.pop("error", None) or f"the server answered {status} {reason}"
    code = payload.pop("code", "http")
    return ApiError(status, code, message, payload)


class SseParser:
    """Server-Sent Events, sans-IO: `feed(line)` returns a finished (id, kind, data) or None.

    The id persists across events (the last one seen is the one to resume
    from); `data:` lines are joined and parsed as JSON.
    """

    def __init__(self) -> None:
        self.last_id = ""
        self._kind = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str, dict] | None:
        line = line.rstrip("\r\n")
        if not line:
            kind, data = self._kind, self._data
            self._kind, self._data = "message", []
            if not data:
                return None
            try:
                payload = json.loads("\n".join(data))
            except ValueError:
                payload = {"raw": "\n".join(data)}
            if not isinstance(payload, dict):
                payload = {"value": payload}
            return self.last_id, kind, payload
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            self.last_id = value
        elif field == "event":
            self._kind = value
        elif field == "data":
            self._data.append(value)
        return None


def _why(exc: BaseException) -> str:
    """A short reason for an aiohttp or socket failure ("Connection refused", "timed out")."""
    os_error = getattr(exc, "os_error", None)
    if os_error is not None:
        if os_error.errno:
            return os.strerror(os_error.errno)
        return os_error.strerror or str(os_error)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _user(user: str | None) -> str:
    return user if user is not None else os.environ.get("USER", "")


class ApiClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0, user: str | None = None) -> None:
        self.base = api_base(base_url)
        self.token = token
        self.timeout = timeout
        self.user = _user(user)

    # -- plumbing -----------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None = None, *, timeout: float | None = None,
                 headers: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.user:
            req.add_header("X-Mauth-User", self.user)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout if timeout is None else timeout)
        except urllib.error.HTTPError as exc:
            raise error_of(exc.code, exc.reason, exc.read()) from None
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
            raise Unreachable(f"cannot reach mauthserver at {self.base}: {reason}") from None
        except (TimeoutError, OSError) as exc:
            raise Unreachable(f"cannot reach mauthserver at {self.base}: {exc}") from None

    def _json(self, method: str, path: str, body: dict | None = None):
        with self._request(method, path, body) as resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except ValueError:
            raise Unreachable(f"mauthserver at {self.base} answered something that is not JSON") from None

    @staticmethod
    def _q(text: str) -> str:
        return urllib.parse.quote(str(text), safe="")

    # -- commands ---------------------------------------------------------------

    def health(self) -> dict:
        return self._json("GET", "/health")

    def add_rule(self, source: str, group: str, max_ttl: int, *, pps: int = 0, bps: int = 0,
                 replace: bool = False, binding: dict | None = None) -> dict:
        """POST /rules: `pps` and `bps` limit the rule's packets and bits per second (0 = no limit);
        `binding` ({"iface", "rpf", "mac", "learn"}, the parts set) binds the sender, and is sent only if given."""
        body: dict = {"source": source, "group": group, "max_ttl": max_ttl, "pps": pps, "bps": bps,
                      "replace": replace}
        if binding:
            body["binding"] = binding
        return self._json("POST", "/rules", body)

    def rearm_rule(self, source: str, group: str) -> dict:
        """POST /rules/rearm: the learning rule forgets, on every router, the interface and MAC it pinned."""
        return self._json("POST", "/rules/rearm", {"source": source, "group": group})

    def remove_rule(self, source: str, group: str) -> dict:
        return self._json("DELETE", f"/rules/{self._q(source)}/{self._q(group)}")

    def rules(self) -> list[dict]:
        return self._json("GET", "/rules")

    def rule(self, source: str, group: str) -> dict:
        return self._json("GET", f"/rules/{self._q(source)}/{self._q(group)}")

    def flush(self) -> dict:
        return self._json("POST", "/flush", {"confirm": True})

    def sessions(self) -> list[dict]:
        return self._json("GET", "/sessions")

    def session(self, session_id: str) -> dict:
        return self._json("GET", f"/sessions/{self._q(session_id)}")

    def authorize(self, session_id: str, *, senders: list[str] | None = None, max_ttl: int | None = None,
                  expire_with_session: bool = False, replace: bool = False, follow: bool = True) -> dict:
        body: dict = {"expire_with_session": expire_with_session, "replace": replace}
        if senders:
            body["senders"] = list(senders)
        if max_ttl is not None:
            body["max_ttl"] = max_ttl
        if not follow:  # only then: a server older than following knows no such field
            body["follow"] = False
        return self._json("POST", f"/sessions/{self._q(session_id)}/authorize", body)

    def revoke(self, session_id: str) -> dict:
        return self._json("POST", f"/sessions/{self._q(session_id)}/revoke", {})

    def routers(self) -> list[dict]:
        return self._json("GET", "/routers")

    def stats(self) -> dict:
        return self._json("GET", "/stats")

    def mode(self, mode: str | None = None, *, set_it: bool = False) -> dict:
        if set_it:
            return self._json("PUT", "/mode", {"mode": mode})
        return self._json("GET", "/mode")

    def audit(self, limit: int = 100, *, before: int | None = None, actor: str | None = None,
              actions: Iterable[str] = (), since: float | None = None, until: float | None = None,
              session: str | None = None) -> list[dict]:
        """Audit rows, newest first, that pass every filter given (`GET /audit`, mauthserver/api.py)."""
        query: list[tuple[str, str]] = [("limit", str(int(limit)))]
        if before is not None:
            query.append(("before", str(int(before))))
        if actor is not None:
            query.append(("actor", actor))
        query += [("action", a) for a in actions]
        for name, t in (("since", since), ("until", until)):
            if t is not None:
                query.append((name, repr(float(t))))
        if session is not None:
            query.append(("session", session))
        return self._json("GET", "/audit?" + urllib.parse.urlencode(query))

    def traffic(self) -> dict:
        """Every router's per-rule counters and denied pairs, read live by the server."""
        return self._json("GET", "/traffic")

    # -- receivers (docs/operations.md, "Authorizing receivers: the mediator") --

    def receivers(self) -> list[dict]:
        """The desired receiver rules, each with its state on every router."""
        return self._json("GET", "/receivers")["receivers"]

    def add_receiver(self, rule: dict) -> dict:
        """Add a receiver rule (its JSON: receiver, group, and source, iface when set)."""
        return self._json("POST", "/receivers", rule)

    def remove_receiver(self, rule: dict) -> dict:
        return self._json("POST", "/receivers/delete", rule)

    def denied_receivers(self) -> dict:
        """Every router's refused joins: {"denied": [...], "errors": {router: why}}."""
        return self._json("GET", "/receivers/denied")

    def joined(self) -> dict:
        """Every router's joined groups: {"joined": [...], "errors": {router: why}}."""
        return self._json("GET", "/receivers/joined")

    def receiver_policies(self) -> dict:
        """Every router's guarded interfaces: {"policies": [...], "desired": [...], "errors": {...}}."""
        return self._json("GET", "/receivers/policy")

    def set_receiver_policy(self, iface: str, mode: str, limit: int = 0, *, router: str | None = None) -> dict:
        body: dict = {"iface": iface, "mode": mode, "limit": limit}
        if router is not None:
            body["router"] = router
        return self._json("POST", "/receivers/policy", body)

    def events(self, last_id: str | None = None, *, timeout: float = 60.0) -> Iterator[tuple[str, str, dict]]:
        """Follow the event stream; yields (id, kind, data). The server sends a keep-alive every 15 s."""
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        resp = self._request("GET", "/events", timeout=timeout, headers=headers)
        parser = SseParser()
        with resp:
            for raw in resp:
                event = parser.feed(raw.decode("utf-8", "replace"))
                if event is not None:
                    yield event


class AsyncApiClient:
    """The same API for an asyncio program (the dashboard): every call can be cancelled at once."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0, user: str | None = None) -> None:
        self.base = api_base(base_url)
        self.token = token
        self.timeout = timeout
        self.user = _user(user)
        self._session: aiohttp.ClientSession | None = None

    def _headers(self, extra: dict | None = None) -> dict:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if self.user:
            headers["X-Mauth-User"] = self.user
        headers.update(extra or {})
        return headers

    def _http(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _json(self, method: str, path: str, body: dict | None = None):
        import aiohttp

        try:
            async with self._http().request(method, self.base + path, json=body, headers=self._headers(),
                                            timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise error_of(resp.status, resp.reason or "", raw)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"cannot reach mauthserver at {self.base}: {_why(exc)}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise Unreachable(f"mauthserver at {self.base} answered something that is not JSON") from None

    async def sessions(self) -> list[dict]:
        return await self._json("GET", "/sessions")

    async def rules(self) -> list[dict]:
        return await self._json("GET", "/rules")

    async def routers(self) -> list[dict]:
        return await self._json("GET", "/routers")

    async def mode(self) -> dict:
        return await self._json("GET", "/mode")

    async def traffic(self) -> dict:
        return await self._json("GET", "/traffic")

    async def authorize(self, session_id: str, *, senders: list[str] | None = None,
                        expire_with_session: bool = False) -> dict:
        body: dict = {"expire_with_session": expire_with_session}
        if senders:
            body["senders"] = list(senders)
        return await self._json("POST", f"/sessions/{ApiClient._q(session_id)}/authorize", body)

    async def add_rule(self, source: str, group: str, max_ttl: int) -> dict:
        return await self._json("POST", "/rules", {"source": source, "group": group, "max_ttl": max_ttl})

    async def revoke(self, session_id: str) -> dict:
        return await self._json("POST", f"/sessions/{ApiClient._q(session_id)}/revoke", {})

    async def receivers(self) -> list[dict]:
        """GET /receivers: the receiver rules, each with its state on each router."""
        return self._listed(await self._json("GET", "/receivers"), "receivers")

    async def denied_receivers(self) -> tuple[list[dict], dict[str, str]]:
        """GET /receivers/denied: the joins the routers refused (router, iface, receiver, group, source, ...),
        and the routers that could not be read, with why."""
        answer = await self._json("GET", "/receivers/denied")
        return self._listed(answer, "denied"), self._errors(answer)

    async def joined(self) -> tuple[list[dict], dict[str, str]]:
        """GET /receivers/joined: the groups joined on each router's guarded interfaces, and the routers that
        could not be read, with why."""
        answer = await self._json("GET", "/receivers/joined")
        return self._listed(answer, "joined"), self._errors(answer)

    async def add_receiver(self, rule: dict) -> dict:
        """POST /receivers: a receiver rule's JSON ({"receiver", "group"} and "source", "iface" when set)."""
        return await self._json("POST", "/receivers", rule)

    def _listed(self, answer: object, name: str) -> list[dict]:
        """The list `name` of an answer; Unreachable if the answer has none (not a mauthserver that has it)."""
        items = answer.get(name) if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise Unreachable(f"mauthserver at {self.base} answered without the list {name!r}")
        return [item for item in items if isinstance(item, dict)]

    @staticmethod
    def _errors(answer: object) -> dict[str, str]:
        errors = answer.get("errors") if isinstance(answer, dict) else None
        return {str(k): str(v) for k, v in errors.items()} if isinstance(errors, dict) else {}

    async def remove_rule(self, source: str, group: str) -> dict:
        return await self._json("DELETE", f"/rules/{ApiClient._q(source)}/{ApiClient._q(group)}")

    async def events(self, last_id: str | None = None) -> AsyncIterator[tuple[str, str, dict]]:
        """Follow the event stream until the server closes it (the server sends a keep-alive every 15 s)."""
        import aiohttp

        headers = self._headers({"Accept": "text/event-stream"})
        if last_id:
            headers["Last-Event-ID"] = last_id
        parser = SseParser()
        started = False
        try:
            async with self._http().get(self.base + "/events", headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as resp:
                if resp.status >= 400:
                    raise error_of(resp.status, resp.reason or "", await resp.read())
                started = True
                async for raw in resp.content:
                    event = parser.feed(raw.decode("utf-8", "replace"))
                    if event is not None:
                        yield event
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            what = "the event stream of mauthserver at {} broke" if started else "cannot reach mauthserver at {}"
            raise Unreachable(f"{what.format(self.base)}: {_why(exc)}") from None
