"""The session directory: what a SAP listener knows, as a pure state machine.

Strategy: like faucet's Valve, the core decides and a thin shell acts. The
receive loop hands packets in (``handle_packet(data, now)``) and calls
``expire(now)`` when ``next_expiry()`` comes; every call returns the list of
events (added / changed / removed with a reason) for the server to persist and
stream. No sockets, no clock, no logging here: ``now`` is Unix time (it is
compared with the ``t=`` stop times of descriptions) and tests drive it.

Identity (RFC 2974):

* §3.1: "Sessions are uniquely identified by the combination of the message
  identifier hash and originating source fields of the SAP header" -- that
  identifies an *announcement*, i.e. one version of one description. We use
  it as a cache: a packet whose (originating source, hash) we know and whose
  payload is byte-for-byte the one we hold is a plain refresh, not re-parsed.
  The payload is still compared, as §10 warns against trusting the pair alone.
* §5: "The session itself, as distinct from the session announcement, is
  uniquely identified by the payload and not by the message identifier hash";
  §3: listeners are "to parse such multiple announcements as the same session
  (as identified by the SDP origin field, for example)". RFC 8866 §5.2 makes
  (username, sess-id, nettype, addrtype, unicast-address) the session's
  identity, and sess-version orders its versions: a higher version replaces,
  a lower one is stale and ignored.
* §5 also says a modification is accepted only if signed by the same key, or
  if neither is signed and it "originate[s] from the same host"; otherwise it
  is "a new and different announcement, and displayed in addition". We cannot
  verify signatures (no PGP/CMS keys), so the key of a session is the o=
  identity plus the SAP originating source plus whether the announcement
  carried authentication data. Two hosts announcing the same o= are two
  entries, exactly as §5 asks.

Removal (RFC 2974 §4):

* Explicit deletion: a deletion packet names the o= line of the session
  (§6); it removes the entry with the same key, i.e. from the same
  originating source and with authentication present iff the announcement
  had it ("If this authentication is missing, the deletion message SHOULD be
  ignored"). A deletion whose payload has no usable o= line may still match
  by the (source, hash) of the announcement it deletes.
* Explicit timeout: once the last ``t=`` stop time has passed ("stopped").
* Implicit timeout: "If a session announcement message has not been received
  for ten times the announcement period, or one hour, whichever is the
  greater, then the session is deleted". "The announcement period can be
  predicted by the receiver from the set of sessions currently being
  announced": we take the larger of (a) the §3.1 formula
  max(300, 8 * bytes of all cached announcements / 4000 bit/s) and (b) the
  interval observed for that session (a moving average of the gaps between
  arrivals; gaps under a second are duplicates and ignored). Taking the larger
  never times out a session that is still being announced at its own pace.
  The deadline is computed each time the session is heard.

Bounded memory: at most ``max_sessions`` entries and ``max_bytes`` of stored
descriptions; beyond that the least recently heard session is evicted
(``removed`` with reason "evicted", counter ``evicted``). A flood of distinct
announcements thus costs bounded memory and shows up in the counters; it can
push out quiet legitimate sessions, which come back when next announced.
Evicting rather than refusing the newcomer is deliberate: a full directory
that refused new announcements would lock out every new session until the
flood's entries timed out (an hour or more), while an evicted session only
waits for its next announcement (minutes).
Encrypted announcements (which we cannot read) are counted and kept aside in
their own bounded table, visible through ``encrypted()``, and never produce
session events.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import itertools
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from enum import StrEnum

from sap.errors import SAPDecodeError, SDPDecodeError
from sap.sap import (
    DEFAULT_BANDWIDTH_LIMIT,
    DEFAULT_MAX_PAYLOAD,
    MIN_ANNOUNCEMENT_INTERVAL,
    SAPMessage,
    decode,
)
from sap.sdp import Group, Origin, SessionDescription, deletion_origin, parse_sdp

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ONE_HOUR = 3600.0
DEFAULT_MAX_SESSIONS = 2000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_DUPLICATE_GAP = 1.0  # seconds; closer arrivals are copies, not announcement periods
_EWMA_WEIGHT = 0.25


class RemovalReason(StrEnum):
    DELETED = "deleted"
    TIMEOUT = "timeout"
    STOPPED = "stopped"
    EVICTED = "evicted"


@dataclass(frozen=True)
class SessionKey:
    """What makes two announcements the same session (see the module docstring)."""

    username: str
    sess_id: str
    nettype: str
    addrtype: str
    address: str
    announcer: IPAddress
    authenticated: bool = False

    @classmethod
    def make(cls, origin: Origin, announcer: IPAddress, authenticated: bool) -> SessionKey:
        return cls(*origin.identity, announcer=announcer, authenticated=authenticated)

    @property
    def id(self) -> str:
        """A stable 16-hex-digit id: the same session gets the same id after a restart."""
        text = "\0".join(
            (
                self.username,
                self.sess_id,
                self.nettype,
                self.addrtype,
                self.address,
                str(self.announcer),
                "auth" if self.authenticated else "",
            )
        )
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@dataclass(frozen=True)
class MediaInfo:
    """One media of a session: where it goes and who may send it."""

    media: str
    port: int
    port_count: int
    proto: str
    formats: tuple[str, ...]
    groups: tuple[Group, ...]
    sources: tuple[IPAddress, ...]
    any_source: bool

    def to_dict(self) -> dict:
        return {
            "media": self.media,
            "port": self.port,
            "port_count": self.port_count,
            "proto": self.proto,
            "formats": list(self.formats),
            "groups": [_group_dict(g) for g in self.groups],
            "sources": [str(s) for s in self.sources],
            "any_source": self.any_source,
        }


@dataclass(frozen=True)
class Session:
    """A session as the directory knows it (a snapshot; the directory replaces it when it changes).

    ``origin`` is the o= unicast address as written; ``announcer`` the SAP
    originating source. ``sources`` are the senders its "incl" source filters
    declare (empty for an any-source session). ``expires`` is when it will be
    removed unless heard again: the earlier of the implicit timeout and the
    ``t=`` stop time (``stops``). Times are Unix seconds.
    """

    id: str
    key: SessionKey
    name: str
    origin: str
    announcer: IPAddress
    version: int
    msg_id_hash: int
    groups: tuple[Group, ...]
    sources: tuple[IPAddress, ...]
    any_source: bool
    media: tuple[MediaInfo, ...]
    first_heard: float
    last_heard: float
    expires: float
    stops: float | None
    interval: float
    authenticated: bool
    sdp: bytes
    description: SessionDescription = field(compare=False, repr=False)

    @property
    def raw_sdp(self) -> bytes:
        """The description exactly as announced (same as ``sdp``)."""
        return self.sdp

    def to_dict(self) -> dict:
        """A JSON-ready view for the server's API and event stream."""
        return {
            "id": self.id,
            "name": self.name,
            "origin": self.origin,
            "announcer": str(self.announcer),
            "version": self.version,
            "msg_id_hash": self.msg_id_hash,
            "groups": [_group_dict(g) for g in self.groups],
            "sources": [str(s) for s in self.sources],
            "any_source": self.any_source,
            "media": [m.to_dict() for m in self.media],
            "first_heard": self.first_heard,
            "last_heard": self.last_heard,
            "expires": self.expires,
            "stops": self.stops,
            "interval": self.interval,
            "authenticated": self.authenticated,
            "sdp": self.sdp.decode("utf-8", "replace"),
        }


def _group_dict(group: Group) -> dict:
    return {"address": str(group.address), "ttl": group.ttl}


@dataclass(frozen=True)
class SessionAdded:
    session: Session
    kind = "added"

    def to_dict(self) -> dict:
        return {"event": self.kind, "session": self.session.to_dict()}


@dataclass(frozen=True)
class SessionChanged:
    session: Session
    previous: Session
    kind = "changed"

    def to_dict(self) -> dict:
        return {"event": self.kind, "session": self.session.to_dict(), "previous": self.previous.to_dict()}


@dataclass(frozen=True)
class SessionRemoved:
    session: Session
    reason: RemovalReason
    kind = "removed"

    def to_dict(self) -> dict:
        return {"event": self.kind, "reason": self.reason.value, "session": self.session.to_dict()}


Event = SessionAdded | SessionChanged | SessionRemoved


@dataclass(frozen=True)
class EncryptedAnnouncement:
    """An encrypted announcement we hold aside: who sends it, how big, when heard."""

    announcer: IPAddress
    msg_id_hash: int
    size: int
    first_heard: float
    last_heard: float
    expires: float


class _Entry:
    """Mutable bookkeeping around one Session snapshot."""

    __slots__ = ("session", "size", "wire", "observed", "scheduled")

    def __init__(self, session: Session, size: int, wire: int) -> None:
        self.session = session
        self.size = size  # payload bytes we store
        self.wire = wire  # bytes on the wire, for the §3.1 interval estimate
        self.observed: float | None = None  # moving average of arrival gaps
        self.scheduled = session.expires  # earliest deadline queued in the heap


class Directory:
    """The session cache of RFC 2974, driven by packets and a ``now`` parameter."""

    def __init__(
        self,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_encrypted: int | None = None,
        min_timeout: float = ONE_HOUR,
        timeout_factor: float = 10.0,
        bandwidth_limit: float = DEFAULT_BANDWIDTH_LIMIT,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        allow_missing_ttl: bool = False,
    ) -> None:
        if max_sessions < 1 or max_bytes < 1:
            raise ValueError("max_sessions and max_bytes must be at least 1")
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.max_encrypted = max_sessions if max_encrypted is None else max_encrypted
        self.min_timeout = float(min_timeout)
        self.timeout_factor = float(timeout_factor)
        self.bandwidth_limit = float(bandwidth_limit)
        self.max_payload = max_payload
        self.allow_missing_ttl = allow_missing_ttl
        # Least recently heard first: eviction pops from the front.
        self._sessions: OrderedDict[SessionKey, _Entry] = OrderedDict()
        self._by_id: dict[str, SessionKey] = {}
        self._by_hash: dict[tuple[IPAddress, int], SessionKey] = {}
        self._encrypted: OrderedDict[tuple[IPAddress, int], EncryptedAnnouncement] = OrderedDict()
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._bytes = 0  # payload bytes of stored sessions
        self._ad_bytes = 0  # wire bytes of everything announced (sessions + encrypted)
        self._counters: Counter[str] = Counter()

    # -- queries -------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._by_id

    def get(self, session_id: str) -> Session | None:
        key = self._by_id.get(session_id)
        return None if key is None else self._sessions[key].session

    def sessions(self) -> list[Session]:
        """Every session, sorted by name then id (a stable order for display)."""
        return sorted((e.session for e in self._sessions.values()), key=lambda s: (s.name.lower(), s.id))

    def encrypted(self) -> list[EncryptedAnnouncement]:
        return list(self._encrypted.values())

    @property
    def counters(self) -> dict[str, int]:
        """A copy of the counters (packets, added, changed, evicted, encrypted, malformed_sdp...)."""
        return dict(self._counters)

    @property
    def stored_bytes(self) -> int:
        """Payload bytes of the descriptions held (bounded by ``max_bytes``)."""
        return self._bytes

    def predicted_interval(self) -> float:
        """RFC 2974 §3.1 interval for the announcements now cached, in seconds."""
        return max(MIN_ANNOUNCEMENT_INTERVAL, 8.0 * self._ad_bytes / self.bandwidth_limit)

    def next_expiry(self) -> float | None:
        """When the next session or encrypted entry is due to expire (None if nothing is held)."""
        due = None
        while self._heap:
            when, _, entry = self._heap[0]
            if not self._live(entry, when):
                heapq.heappop(self._heap)
                continue
            if entry.session.expires != when:
                heapq.heapreplace(self._heap, (entry.session.expires, next(self._seq), entry))
                entry.scheduled = entry.session.expires
                continue
            due = when
            break
        if self._encrypted:
            first = next(iter(self._encrypted.values())).expires
            due = first if due is None else min(due, first)
        return due

    # -- input ---------------------------------------------------------

    def handle_packet(self, data: bytes, now: float) -> list[Event]:
        """Decode a SAP packet and apply it.

        Raises SAPDecodeError or SDPDecodeError (after counting it) if the
        packet or its description is garbage; the caller logs it with the
        sender's address and carries on. Expiries due at ``now`` are applied
        first, so their events come first in the list.
        """
        self._counters["packets"] += 1
        try:
            msg = decode(data, max_payload=self.max_payload)
        except SAPDecodeError as exc:
            self._counters["malformed_sap"] += 1
            self._counters[f"malformed_sap:{exc.reason}"] += 1
            raise
        return self.handle_message(msg, now, size=len(data))

    def handle_message(self, msg: SAPMessage, now: float, *, size: int | None = None) -> list[Event]:
        """Apply a decoded SAP message; ``size`` is its wire size (estimated if None).

        Everything that can raise (parsing the description) happens before
        any state changes, so an error never loses the events of expiries.
        """
        if size is None:
            size = 4 + len(msg.origin.packed) + len(msg.auth_data) + len(msg.payload)
            if msg.payload_type is not None:
                size += len(msg.payload_type) + 1
        if msg.encrypted:
            events = self.expire(now)
            self._note_encrypted(msg, now, size)
            return events
        if not msg.is_sdp:
            self._counters["unsupported_payload"] += 1
            return self.expire(now)
        if msg.is_deletion:
            self._counters["deletions"] += 1
            target = self._deletion_target(msg)  # may raise
            events = self.expire(now)
            if target is not None and target in self._sessions:
                events.append(self._remove(target, RemovalReason.DELETED))
            return events
        self._counters["announcements"] += 1
        desc = self._description(msg)  # may raise
        events = self.expire(now)
        events += self._handle_announcement(msg, desc, now, size)
        return events

    def expire(self, now: float) -> list[Event]:
        """Remove what is due at ``now``: timed-out and stopped sessions, stale encrypted entries."""
        events: list[Event] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, entry = heapq.heappop(self._heap)
            if not self._live(entry, when):
                continue
            session = entry.session
            if session.expires > now:  # heard again since: queue its new deadline
                entry.scheduled = session.expires
                heapq.heappush(self._heap, (session.expires, next(self._seq), entry))
                continue
            stopped = session.stops is not None and session.stops <= now and session.stops <= session.expires
            reason = RemovalReason.STOPPED if stopped else RemovalReason.TIMEOUT
            events.append(self._remove(session.key, reason))
        while self._encrypted:
            hkey, item = next(iter(self._encrypted.items()))
            if item.expires > now:
                break
            self._drop_encrypted(hkey)
            self._counters["encrypted_expired"] += 1
        if len(self._heap) > 2 * len(self._sessions) + 64:
            self._rebuild_heap()
        return events

    # -- announcements -------------------------------------------------

    def _description(self, msg: SAPMessage) -> SessionDescription:
        """The announcement's description: cached if (source, hash, payload) is known, else parsed."""
        if msg.msg_id_hash:
            known = self._by_hash.get((msg.origin, msg.msg_id_hash))
            if known is not None:
                session = self._sessions[known].session
                if session.sdp == msg.payload and known.authenticated == bool(msg.auth_data):
                    return session.description
        try:
            return parse_sdp(msg.payload, allow_missing_ttl=self.allow_missing_ttl)
        except SDPDecodeError as exc:
            self._counters["malformed_sdp"] += 1
            self._counters[f"malformed_sdp:{exc.reason}"] += 1
            raise

    def _handle_announcement(
        self, msg: SAPMessage, desc: SessionDescription, now: float, size: int
    ) -> list[Event]:
        key = SessionKey.make(desc.origin, msg.origin, bool(msg.auth_data))
        entry = self._sessions.get(key)
        stops = desc.stop_unix

        if entry is not None:
            old = entry.session
            if desc.origin.sess_version < old.version:
                self._counters["stale"] += 1
                return []
            if desc.origin.sess_version == old.version and msg.payload == old.sdp:
                self._refresh(entry, msg, now)
                return []
        if stops is not None and stops <= now:
            # §4 explicit timeout: the description says the session is over.
            self._counters["already_stopped"] += 1
            if entry is not None:
                return [self._remove(key, RemovalReason.STOPPED)]
            return []

        if entry is None:
            events: list[Event] = []
            session = self._build(key, desc, msg, now, first_heard=now, observed=None)
            entry = _Entry(session, len(msg.payload), size)
            self._insert(entry)
            self._counters["added"] += 1
            events.append(SessionAdded(session))
            events += self._enforce_bounds(keep=key)
            return events

        # Same session, newer version (or same version with new content,
        # which an announcer may send without bumping sess-version).
        old = entry.session
        observed = self._observe(entry, now)
        session = self._build(key, desc, msg, now, first_heard=old.first_heard, observed=observed)
        self._unindex_hash(old)
        self._bytes += len(msg.payload) - entry.size
        self._ad_bytes += size - entry.wire
        entry.size, entry.wire = len(msg.payload), size
        self._set(entry, session)
        self._by_hash_add(session)
        self._counters["changed"] += 1
        return [SessionChanged(session, old)] + self._enforce_bounds(keep=key)

    def _refresh(self, entry: _Entry, msg: SAPMessage, now: float) -> None:
        old = entry.session
        observed = self._observe(entry, now)
        interval = self._interval(observed)
        timeout_at = now + max(self.min_timeout, self.timeout_factor * interval)
        expires = timeout_at if old.stops is None else min(timeout_at, old.stops)
        session = replace(
            old, last_heard=now, expires=expires, interval=interval, msg_id_hash=msg.msg_id_hash
        )
        if msg.msg_id_hash != old.msg_id_hash:
            self._unindex_hash(old)
        self._set(entry, session)
        self._by_hash_add(session)
        self._counters["refreshed"] += 1

    def _observe(self, entry: _Entry, now: float) -> float | None:
        gap = now - entry.session.last_heard
        if gap >= _DUPLICATE_GAP:
            if entry.observed is None:
                entry.observed = gap
            else:
                entry.observed += _EWMA_WEIGHT * (gap - entry.observed)
        return entry.observed

    def _interval(self, observed: float | None) -> float:
        predicted = self.predicted_interval()
        return predicted if observed is None else max(predicted, observed)

    def _build(
        self,
        key: SessionKey,
        desc: SessionDescription,
        msg: SAPMessage,
        now: float,
        *,
        first_heard: float,
        observed: float | None,
    ) -> Session:
        interval = self._interval(observed)
        timeout_at = now + max(self.min_timeout, self.timeout_factor * interval)
        stops = desc.stop_unix
        expires = timeout_at if stops is None else min(timeout_at, float(stops))
        media = []
        media_groups = desc.media_groups
        for index, m in enumerate(desc.media):
            flows = [f for f in desc.flows if f.media_index == index]
            groups = media_groups[index]
            sources = tuple(dict.fromkeys(s for f in flows if f.mode == "incl" for s in f.sources))
            media.append(
                MediaInfo(
                    media=m.media,
                    port=m.port,
                    port_count=m.port_count,
                    proto=m.proto,
                    formats=m.formats,
                    groups=groups,
                    sources=sources,
                    any_source=all(f.mode != "incl" for f in flows),
                )
            )
        return Session(
            id=key.id,
            key=key,
            name=desc.name,
            origin=desc.origin.address,
            announcer=msg.origin,
            version=desc.origin.sess_version,
            msg_id_hash=msg.msg_id_hash,
            groups=desc.groups,
            sources=desc.declared_senders,
            any_source=desc.is_any_source,
            media=tuple(media),
            first_heard=first_heard,
            last_heard=now,
            expires=expires,
            stops=None if stops is None else float(stops),
            interval=interval,
            authenticated=key.authenticated,
            sdp=msg.payload,
            description=desc,
        )

    # -- deletions -----------------------------------------------------

    def _deletion_target(self, msg: SAPMessage) -> SessionKey | None:
        """The session a deletion removes, None if it matches nothing (counted)."""
        authenticated = bool(msg.auth_data)
        error: SDPDecodeError | None = None
        key: SessionKey | None = None
        try:
            origin = deletion_origin(msg.payload)
        except SDPDecodeError as exc:
            error = exc
        else:
            key = SessionKey.make(origin, msg.origin, authenticated)
            if key not in self._sessions:
                if not authenticated and replace(key, authenticated=True) in self._sessions:
                    # §4: "If this authentication is missing, the deletion
                    # message SHOULD be ignored."
                    self._counters["deletion_unauthenticated"] += 1
                    return None
                key = None
        if error is not None and msg.msg_id_hash:
            # No usable o= line: fall back on the (source, hash) of the
            # announcement being deleted. A valid o= that names nothing we
            # hold wins over the hash: it deletes nothing.
            known = self._by_hash.get((msg.origin, msg.msg_id_hash))
            if known is not None and known.authenticated == authenticated:
                key = known
        if key is None:
            if error is not None:
                self._counters["malformed_sdp"] += 1
                self._counters[f"malformed_sdp:{error.reason}"] += 1
                raise error
            self._counters["deletion_unknown"] += 1
        return key

    # -- encrypted -----------------------------------------------------

    def _note_encrypted(self, msg: SAPMessage, now: float, size: int) -> None:
        self._counters["encrypted"] += 1
        hkey = (msg.origin, msg.msg_id_hash)
        if msg.is_deletion:
            if hkey in self._encrypted:
                self._drop_encrypted(hkey)
                self._counters["encrypted_deleted"] += 1
            return
        old = self._encrypted.pop(hkey, None)
        if old is not None:
            self._ad_bytes -= old.size
        expires = now + max(self.min_timeout, self.timeout_factor * self.predicted_interval())
        self._encrypted[hkey] = EncryptedAnnouncement(
            announcer=msg.origin,
            msg_id_hash=msg.msg_id_hash,
            size=size,
            first_heard=now if old is None else old.first_heard,
            last_heard=now,
            expires=expires,
        )
        self._ad_bytes += size
        while len(self._encrypted) > self.max_encrypted:
            self._drop_encrypted(next(iter(self._encrypted)))
            self._counters["encrypted_evicted"] += 1

    def _drop_encrypted(self, hkey: tuple[IPAddress, int]) -> None:
        item = self._encrypted.pop(hkey)
        self._ad_bytes -= item.size

    # -- bookkeeping ---------------------------------------------------

    def _live(self, entry: _Entry, when: float) -> bool:
        return self._sessions.get(entry.session.key) is entry and entry.scheduled == when

    def _set(self, entry: _Entry, session: Session) -> None:
        entry.session = session
        self._sessions.move_to_end(session.key)
        if session.expires < entry.scheduled:
            entry.scheduled = session.expires
            heapq.heappush(self._heap, (session.expires, next(self._seq), entry))

    def _insert(self, entry: _Entry) -> None:
        session = entry.session
        self._sessions[session.key] = entry
        self._by_id[session.id] = session.key
        self._by_hash_add(session)
        self._bytes += entry.size
        self._ad_bytes += entry.wire
        heapq.heappush(self._heap, (session.expires, next(self._seq), entry))

    def _by_hash_add(self, session: Session) -> None:
        if session.msg_id_hash:
            self._by_hash[(session.announcer, session.msg_id_hash)] = session.key

    def _unindex_hash(self, session: Session) -> None:
        hkey = (session.announcer, session.msg_id_hash)
        if self._by_hash.get(hkey) == session.key:
            del self._by_hash[hkey]

    def _remove(self, key: SessionKey, reason: RemovalReason) -> SessionRemoved:
        entry = self._sessions.pop(key)
        session = entry.session
        del self._by_id[session.id]
        self._unindex_hash(session)
        self._bytes -= entry.size
        self._ad_bytes -= entry.wire
        self._counters[f"removed_{reason.value}"] += 1
        if reason is RemovalReason.EVICTED:
            self._counters["evicted"] += 1
        return SessionRemoved(session, reason)

    def _enforce_bounds(self, keep: SessionKey) -> list[Event]:
        events: list[Event] = []
        while len(self._sessions) > self.max_sessions or (
            self._bytes > self.max_bytes and len(self._sessions) > 1
        ):
            victim = next(iter(self._sessions))
            if victim == keep:  # never evict what we just stored
                break
            events.append(self._remove(victim, RemovalReason.EVICTED))
        return events

    def _rebuild_heap(self) -> None:
        self._heap = []
        for entry in self._sessions.values():
            entry.scheduled = entry.session.expires
            self._heap.append((entry.scheduled, next(self._seq), entry))
        heapq.heapify(self._heap)
