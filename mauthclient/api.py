"""The client of mauthserver's HTTP API, for mauthctl (`--server URL`) and the dashboard.

Strategy: the standard library only (urllib), blocking, one request at a
time: a command-line tool needs nothing more, and it keeps mauthctl's start-up
fast. Every failure becomes one of two exceptions with a one-sentence
message: `ApiError` (the server answered with an error: status, code,
details such as suggested senders) or `Unreachable` (no answer at all).
`events()` reads the Server-Sent Events stream line by line and yields
(id, kind, data) until the server closes it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator


DEFAULT_SERVER = "http://127.0.0.1:7580"
DEFAULT_TOKEN_FILE = "/etc/mauth/api.token"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or {}


class Unreachable(Exception):
    pass


class ApiClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0, user: str | None = None) -> None:
        url = base_url.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url  # HOST:PORT, as given to mauthserver --api
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"server URL {base_url!r} is not http://HOST:PORT")
        if not parsed.path.endswith("/api/v1"):
            url += "/api/v1"
        self.base = url
        self.token = token
        self.timeout = timeout
        self.user = user if user is not None else os.environ.get("USER", "")

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
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {}
            if not isinstance(payload, dict):
                payload = {}
            message = payload.pop("error", None) or f"the server answered {exc.code} {exc.reason}"
            code = payload.pop("code", "http")
            raise ApiError(exc.code, code, message, payload) from None
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

    def add_rule(self, source: str, group: str, max_ttl: int, *, replace: bool = False) -> dict:
        return self._json("POST", "/rules", {"source": source, "group": group, "max_ttl": max_ttl,
                                             "replace": replace})

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
                  expire_with_session: bool = False, replace: bool = False) -> dict:
        body: dict = {"expire_with_session": expire_with_session, "replace": replace}
        if senders:
            body["senders"] = list(senders)
        if max_ttl is not None:
            body["max_ttl"] = max_ttl
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

    def audit(self, limit: int = 100) -> list[dict]:
        return self._json("GET", f"/audit?limit={int(limit)}")

    def events(self, last_id: str | None = None, *, timeout: float = 60.0) -> Iterator[tuple[str, str, dict]]:
        """Follow the event stream; yields (id, kind, data). The server sends a keep-alive every 15 s."""
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        resp = self._request("GET", "/events", timeout=timeout, headers=headers)
        with resp:
            ev_id, kind, data = "", "message", []
            for raw in resp:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    if data:
                        try:
                            payload = json.loads("\n".join(data))
                        except ValueError:
                            payload = {"raw": "\n".join(data)}
                        yield ev_id, kind, payload
                    ev_id, kind, data = ev_id, "message", []
                    continue
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "id":
                    ev_id = value
                elif field == "event":
                    kind = value
                elif field == "data":
                    data.append(value)
