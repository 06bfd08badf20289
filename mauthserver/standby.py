"""A standby's API: reads answered here, everything else forwarded to the leader.

A standby (mauthserver/leader.py) shares the leader's PostgreSQL database but
writes nothing and talks to no router. Its API therefore:

* answers **reads of stored state** itself, from views it re-reads from the
  database whenever the leader's event stream says something changed
  (`Mediator.follow_store`): rules (with each router's state as the leader
  last recorded it), sessions, the mode, the audit log, and the event stream
  (relayed, mauthserver/relay.py); `/health` and the OpenAPI document;
* **forwards** every command (POST, PUT, DELETE) and the reads that need the
  routers or the leader's memory (`/traffic`, `/routers`, `/stats`) to the
  leader's API, as they came: same method, path, query, body, bearer token
  and `X-Mauth-User`, and returns the leader's answer with an
  `X-Mauth-Leader` header naming it. So `mauthctl` and the dashboard work
  against any instance, and a command is acknowledged only after the
  leader committed it, exactly as on the leader;
* when no leader is known or it cannot be reached, answers `503` with code
  `no-leader`, one sentence, and the last known leader's URL: the command
  was not carried out, and the client may retry (a fail-over takes a few
  seconds).

The forwarding is one hop only: a request that already carries
`X-Mauth-Forwarded` is answered here or refused, so two instances that
each believe the other leads cannot bounce a request between them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import aiohttp
from aiohttp import web

log = logging.getLogger("mauthserver.standby")

# (method, path below the API prefix) a standby answers itself; a trailing "/" matches a prefix.
LOCAL_GET = ("/health", "/openapi.json", "/rules", "/rules/", "/sessions", "/sessions/", "/mode", "/audit",
             "/events")
FORWARDED_HEADERS = ("Authorization", "X-Mauth-User", "Content-Type", "Accept")
FORWARD_MARK = "X-Mauth-Forwarded"
TIMEOUT = 30.0


class Forwarder:
    """Decides what a standby answers itself and forwards the rest to `leader()`'s API URL."""

    def __init__(self, prefix: str, leader: Callable[[], str | None], last_known: Callable[[], str | None],
                 *, timeout: float = TIMEOUT) -> None:
        self.prefix = prefix
        self.leader = leader  # the valid leader's API URL, or None
        self.last_known = last_known  # whoever held the lease last, even if it ran out
        self.timeout = timeout
        self.counters = {"forwarded": 0, "no_leader": 0}
        self._session: aiohttp.ClientSession | None = None

    def serves(self, request: web.Request) -> bool:
        """True if this standby answers `request` itself."""
        if request.method not in ("GET", "HEAD"):
            return False
        path = request.path[len(self.prefix):] if request.path.startswith(self.prefix) else request.path
        return any(path == p or (p.endswith("/") and path.startswith(p)) for p in LOCAL_GET)

    async def forward(self, request: web.Request) -> web.Response:
        url = self.leader()
        if request.headers.get(FORWARD_MARK):
            return self._refuse(None, "this mauthserver is a standby and does not forward a forwarded request")
        if url is None:
            return self._refuse(self.last_known(), "this mauthserver is a standby and no leader holds the lease"
                                " now (a fail-over takes a few seconds); the command was not carried out")
        body = await request.read()
        headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
        headers[FORWARD_MARK] = "1"
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.request(request.method, url.rstrip("/") + request.path_qs, data=body or None,
                                             headers=headers, allow_redirects=False) as resp:
                data = await resp.read()
                self.counters["forwarded"] += 1
                out = web.Response(body=data, status=resp.status,
                                   content_type=resp.content_type or "application/json")
                out.headers["X-Mauth-Leader"] = url
                return out
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = " ".join(str(exc).split())[:160] or type(exc).__name__
            return self._refuse(url, f"this mauthserver is a standby and cannot reach the leader at {url}"
                                f" ({reason}); the command may or may not have been carried out there")

    def _refuse(self, leader: str | None, message: str) -> web.Response:
        self.counters["no_leader"] += 1
        data = {"error": message, "code": "no-leader", "leader": leader}
        return web.Response(text=json.dumps(data, sort_keys=True), status=503, content_type="application/json",
                            headers={"Retry-After": "1"})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
