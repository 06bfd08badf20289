"""The declarative rule file (the paper's mauth.conf), parsed strictly.

Format: one authorized sender per line, whitespace-separated:

    # source        group          max-ttl
    192.0.2.10      239.1.1.1      16
    192.0.2.11      239.1.1.2      1     # trailing comments are fine

Blank lines and everything after `#` are ignored. Anything else is an error
that names the file and line: a wrong number of fields, an invalid address,
group or TTL, or the same (source, group) twice. The whole file is rejected
on the first error, so a daemon reloading it on SIGHUP keeps the rules it
runs with rather than applying half a file. `mauthctl check-config` uses this
same parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .rules import Rule, RuleError

MAX_FILE_BYTES = 64 * 1024 * 1024


class ConfigError(ValueError):
    """The rule file is invalid; the message names the file and line."""


@dataclass(frozen=True)
class RuleFile:
    path: str
    rules: tuple[Rule, ...]


def parse_rules(text: str, name: str = "<rules>") -> tuple[Rule, ...]:
    seen: dict[object, int] = {}
    rules: list[Rule] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 3:
            raise ConfigError(
                f"{name}:{lineno}: expected 'SOURCE GROUP MAX-TTL', got {len(fields)} field(s)"
            )
        try:
            rule = Rule.make(*fields)
        except RuleError as exc:
            raise ConfigError(f"{name}:{lineno}: {exc}") from None
        if rule.key in seen:
            raise ConfigError(
                f"{name}:{lineno}: {rule.key} is already authorized on line {seen[rule.key]}"
            )
        seen[rule.key] = lineno
        rules.append(rule)
    return tuple(rules)


def load_rules(path: str | Path) -> RuleFile:
    """Read and parse a rule file; ConfigError (one sentence) on any problem."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{p}: larger than {MAX_FILE_BYTES} bytes")
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"rule file {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"rule file {p} is a directory") from None
    except PermissionError:
        raise ConfigError(f"rule file {p} is not readable") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: not valid UTF-8") from None
    return RuleFile(str(p), parse_rules(text, str(p)))
