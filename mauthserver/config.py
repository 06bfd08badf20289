"""mauthserver's configuration: strict, typed, and checked before anything starts.

Strategy (faucet `conf.py`): every option is parsed into a typed value here,
and anything wrong is a `ConfigError` whose message names the option and
says what is wrong in one sentence; the command line turns it into exit
status 2. Secrets files (the API token, the router key file) are checked
like musersd's key file: a regular file, readable, not accessible by group
or others, and the check is made on the open descriptor.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from mauthcore.constants import API_PORT, MEDIATOR_PORT, ROUTER_PORT, SAP_PORT
from mauthcore.hostport import HostPortError
from mauthcore.hostport import parse_hostport as _parse_hostport
from mauthcore.protocol.keys import KeyFileError, KeyRing, load_keys
from mauthcore.secretfile import SecretFileError
from mauthcore.secretfile import load_token as _load_token
from sap.directory import DEFAULT_MAX_SESSIONS

from .sapl import DEFAULT_SAP_GROUPS, parse_groups

DEFAULT_DB = "/var/lib/mauth/mauthserver.db"
DEFAULT_API = f"127.0.0.1:{API_PORT}"
DEFAULT_LISTEN = f"127.0.0.1:{MEDIATOR_PORT}"
DEFAULT_TOKEN_FILE = "/etc/mauth/api.token"
MAX_MAX_SESSIONS = 1_000_000  # about 16 KiB of memory each: a typo should not ask for 100 GiB
DEFAULT_LEGACY_ALLOW = ("127.0.0.0/8", "::1/128")
DEFAULT_AUDIT_MAX_AGE = 400  # days of audit log kept: a year and a month, for a yearly review
DEFAULT_AUDIT_MAX_ROWS = 1_000_000  # audit rows kept: a few hundred MB of database at most
MAX_AUDIT_MAX_AGE = 36_500  # a century: anything longer is a typo (0 is "keep for ever")
MIN_AUDIT_MAX_ROWS = 100  # every pruning pass writes a row of its own: fewer would be mostly that
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ConfigError(ValueError):
    """A bad option or file; the message is one sentence naming it."""


@dataclass(frozen=True)
class RouterSpec:
    name: str
    host: str
    port: int


@dataclass
class Options:
    db: str = DEFAULT_DB  # a SQLite file, or a postgresql:// URL (mauthserver/store.py's open_store)
    db_password_file: str | None = None  # PostgreSQL's password, first line (never in the URL)
    api: tuple[str, int] = ("127.0.0.1", API_PORT)
    token_file: str = DEFAULT_TOKEN_FILE
    routers: list[RouterSpec] = field(default_factory=list)
    key_file: str | None = None
    sap_groups: list = field(default_factory=lambda: parse_groups(DEFAULT_SAP_GROUPS))
    sap_port: int = SAP_PORT
    sap_ifaces: list[str] | None = None
    sap: bool = True
    sap_timeout: float | None = None  # None: RFC 2974's implicit timeout
    max_sessions: int = DEFAULT_MAX_SESSIONS  # announced sessions held; beyond it the least recently heard goes
    listen: tuple[str, int] | None = ("127.0.0.1", MEDIATOR_PORT)
    legacy_allow: list[str] = field(default_factory=lambda: list(DEFAULT_LEGACY_ALLOW))
    probe_interval: float = 2.0
    verify_interval: float = 60.0
    retry_max: float = 10.0
    router_timeout: float = 0.25
    router_tries: int = 5
    metrics: tuple[str, int] | None = None  # Prometheus endpoint; None: off
    denied_interval: float = 5.0  # seconds between listings of each router's denied table; 0: off
    # Several instances on one PostgreSQL database (mauthserver/leader.py):
    instance: str | None = None  # this instance's name in the leader row (default: the host name)
    advertise: str | None = None  # the API URL standbys forward commands to while this one leads
    lease: float = 3.0  # seconds a leader's lease lasts without renewal
    audit_max_age: int = DEFAULT_AUDIT_MAX_AGE  # days; 0: unbounded
    audit_max_rows: int = DEFAULT_AUDIT_MAX_ROWS  # 0: unbounded


def parse_advertise(text: str | None, api: tuple[str, int]) -> str | None:
    """--advertise URL, or the API address when it is one another instance can reach."""
    if text:
        url = text.strip().rstrip("/")
        if not re.fullmatch(r"https?://[^\s/]+", url):
            raise ConfigError(f"--advertise {text!r} is not an http://HOST:PORT URL")
        return url
    host, port = api
    if host in ("0.0.0.0", "::", ""):
        return None  # the daemon asks for --advertise if the database is shared
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def parse_hostport(text: str, what: str, default_port: int | None = None) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT, or HOST alone when there is a default port."""
    try:
        return _parse_hostport(text, what, default_port)
    except HostPortError as exc:
        raise ConfigError(str(exc)) from None


def parse_router(text: str) -> RouterSpec:
    name, sep, address = text.partition("=")
    if not sep:
        raise ConfigError(f"--router {text!r} is not NAME=HOST:PORT")
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise ConfigError(f"--router name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    host, port = parse_hostport(address, f"--router {name}", ROUTER_PORT)
    return RouterSpec(name, host, port)


def parse_routers(texts) -> list[RouterSpec]:
    out: list[RouterSpec] = []
    for text in texts:
        spec = parse_router(text)
        if any(r.name == spec.name for r in out):
            raise ConfigError(f"--router {spec.name} is given twice")
        out.append(spec)
    return out


def parse_cidrs(texts) -> list[str]:
    for c in texts:
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError:
            raise ConfigError(f"--legacy-allow {c!r} is not an address or CIDR prefix") from None
    return list(texts)


def _whole_number(text: str, option: str) -> int:
    try:
        value = int(str(text).strip().replace("_", ""), 10)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a whole number") from None
    if value < 0:
        raise ConfigError(f"{option} {text!r} is negative (0 keeps the audit log unbounded)")
    return value


def parse_audit_max_age(text: str) -> int:
    """--audit-max-age DAYS: 0 (unbounded) or 1-36500."""
    days = _whole_number(text, "--audit-max-age")
    if days > MAX_AUDIT_MAX_AGE:
        raise ConfigError(f"--audit-max-age {text!r} is more than {MAX_AUDIT_MAX_AGE} days (0 keeps every row)")
    return days


def parse_audit_max_rows(text: str) -> int:
    """--audit-max-rows N: 0 (unbounded) or at least 100."""
    rows = _whole_number(text, "--audit-max-rows")
    if 0 < rows < MIN_AUDIT_MAX_ROWS:
        raise ConfigError(f"--audit-max-rows {text!r} is below {MIN_AUDIT_MAX_ROWS} (0 keeps every row)")
    return rows


def load_token(path: str) -> str:
    """The API bearer token (mauthcore.secretfile.load_token), as a ConfigError on failure."""
    try:
        return _load_token(path)
    except SecretFileError as exc:
        raise ConfigError(str(exc)) from None


def load_key_file(path: str) -> KeyRing:
    try:
        return load_keys(path)
    except KeyFileError as exc:
        raise ConfigError(str(exc)) from None
