"""mauthctl's configuration file: where the server and the secrets are, so daily use needs no flags.

Strategy: a small TOML file (tomllib, standard library), strict like every
mauth configuration: unknown keys and wrong types are errors that name the
key and the file. Its values become the defaults of mauthctl's global
options (click's `default_map`), so the order of precedence is the usual
one: command-line flag, then environment variable (MAUTH_SERVER, ...), then
this file, then the built-in default.

The file used is the first that exists of: `--config FILE`, $MAUTHCTL_CONFIG,
$XDG_CONFIG_HOME/mauth/mauthctl.toml (~/.config/...), /etc/mauth/mauthctl.toml.
A file named explicitly must exist; the standard places may be absent.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

SYSTEM_FILE = "/etc/mauth/mauthctl.toml"

EXAMPLE = """\
# mauthctl configuration (TOML). Command-line flags and MAUTH_* variables override it.
# Talk to mauthserver (every router, sessions, the dashboard):
server = "http://127.0.0.1:7580"
token_file = "/etc/mauth/api.token"
# Or talk to one router's musersd directly (give either server or router):
# router = "192.0.2.1:7575"
key_file = "/etc/mauth/router.key"
# Optional:
# http_timeout = 30.0   # seconds to wait for mauthserver
# timeout = 0.5         # first retransmission timeout of the router protocol
# tries = 6             # transmissions per router call
"""

# key -> (accepted types, description); the keys are mauthctl's option names.
KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "server": ((str,), "mauthserver's URL"),
    "token_file": ((str,), "file holding mauthserver's API token"),
    "router": ((str,), "HOST:PORT of one musersd"),
    "key_file": ((str,), "protocol v2 key file"),
    "http_timeout": ((int, float), "seconds"),
    "timeout": ((int, float), "seconds"),
    "tries": ((int,), "count"),
}


class ConfigFileError(ValueError):
    """The configuration file is unusable; the message is one sentence naming it."""


def user_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mauth" / "mauthctl.toml"


def find(explicit: str | None) -> tuple[Path | None, bool]:
    """(the configuration file to read or None, whether it was named explicitly)."""
    if explicit:
        return Path(explicit), True
    env = os.environ.get("MAUTHCTL_CONFIG")
    if env:
        return Path(env), True
    for candidate in (user_file(), Path(SYSTEM_FILE)):
        if candidate.is_file():
            return candidate, False
    return None, False


def parse(text: str, source: str) -> dict:
    """The settings in TOML `text`, checked; paths are made absolute relative to the file's folder."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{source} is not valid TOML: {exc}") from None
    out = {}
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigFileError(f"{source}: unknown setting {key!r} (known: {', '.join(KEYS)})")
        types, what = KEYS[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ConfigFileError(f"{source}: setting {key!r} must be a {' or '.join(t.__name__ for t in types)}"
                                  f" ({what})")
        if key.endswith("_file"):
            assert isinstance(value, str)  # every *_file setting in KEYS takes a str, checked above
            value = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(source)), os.path.expanduser(value)))
        out[key] = value
    if "server" in out and "router" in out:
        raise ConfigFileError(f"{source}: set either 'server' or 'router', not both")
    return out


def load(explicit: str | None) -> tuple[Path | None, dict]:
    """(the file read or None, its settings)."""
    path, named = find(explicit)
    if path is None:
        return None, {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if named:
            raise ConfigFileError(f"configuration file {path} does not exist") from None
        return None, {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"configuration file {path} cannot be read: {getattr(exc, 'strerror', exc)}") from None
    return path, parse(text, str(path))
