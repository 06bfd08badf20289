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
import os
import re
import stat
from dataclasses import dataclass, field

from musersd.protocol.keys import KeyFileError, KeyRing, load_keys

from .sapl import DEFAULT_SAP_GROUPS, SAP_PORT, parse_groups

DEFAULT_DB = "/var/lib/mauth/mauthserver.db"
DEFAULT_API = "127.0.0.1:7580"
DEFAULT_LISTEN = "127.0.0.1:7576"
DEFAULT_TOKEN_FILE = "/etc/mauth/api.token"
DEFAULT_ROUTER_PORT = 7575
DEFAULT_LEGACY_ALLOW = ("127.0.0.0/8", "::1/128")
MIN_TOKEN = 16
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
    db: str = DEFAULT_DB
    api: tuple[str, int] = ("127.0.0.1", 7580)
    token_file: str = DEFAULT_TOKEN_FILE
    routers: list[RouterSpec] = field(default_factory=list)
    key_file: str | None = None
    sap_groups: list = field(default_factory=lambda: parse_groups(DEFAULT_SAP_GROUPS))
    sap_port: int = SAP_PORT
    sap_ifaces: list[str] | None = None
    sap: bool = True
    sap_timeout: float | None = None  # None: RFC 2974's implicit timeout
    listen: tuple[str, int] | None = ("127.0.0.1", 7576)
    legacy_allow: list[str] = field(default_factory=lambda: list(DEFAULT_LEGACY_ALLOW))
    probe_interval: float = 2.0
    verify_interval: float = 60.0
    retry_max: float = 10.0
    router_timeout: float = 0.25
    router_tries: int = 5


def parse_hostport(text: str, what: str, default_port: int | None = None) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT, or HOST alone when there is a default port."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ConfigError(f"{what} {text!r} has an unclosed '['")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    elif ":" in text:  # a bare IPv6 address
        host, port = text, ""
    else:
        host, port = text, ""
    if not port:
        if default_port is None:
            raise ConfigError(f"{what} {text!r} is not HOST:PORT")
        port = str(default_port)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {text!r} has no valid port (1-65535)")
    if not host:
        raise ConfigError(f"{what} {text!r} has no host")
    return host, int(port)


def parse_router(text: str) -> RouterSpec:
    name, sep, address = text.partition("=")
    if not sep:
        raise ConfigError(f"--router {text!r} is not NAME=HOST:PORT")
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise ConfigError(f"--router name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    host, port = parse_hostport(address, f"--router {name}", DEFAULT_ROUTER_PORT)
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


def _read_secret_file(path: str, what: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(f"{what} {path} is accessible by group or others (mode"
                              f" {stat.S_IMODE(st.st_mode):04o}); run 'chmod 600 {path}'")
        try:
            return f.read(65536)
        except OSError as exc:
            raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None


def load_token(path: str) -> str:
    """The API bearer token: the file's first line, at least 16 printable characters."""
    data = _read_secret_file(path, "token file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"token file {path} is not ASCII text") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"token file {path} is empty")
    token = lines[0]
    if len(token) < MIN_TOKEN or not token.isprintable() or " " in token:
        raise ConfigError(f"the token in {path} must be at least {MIN_TOKEN} printable characters without spaces")
    return token


def load_key_file(path: str) -> KeyRing:
    try:
        return load_keys(path)
    except KeyFileError as exc:
        raise ConfigError(str(exc)) from None
