"""The declarative rule file (etc/mauth.conf), parsed strictly.

Format: one authorized sender per line, whitespace-separated, then
optional rate limits:

    # source        group            max-ttl  [pps=N] [bps=N]
    192.0.2.10      239.1.1.1        16
    192.0.2.11      239.1.1.2        1        # trailing comments are fine
    192.0.2.0/24    239.1.1.3        8        # every host of the subnet
    192.0.2.12      239.192.0.0/14   16       # every group of the range
    192.0.2.13      239.1.1.4        16       pps=500 bps=2M
    2001:db8:0:1::/64  ff0e::db8:1   8        # IPv6: the max TTL is the hop limit
    192.0.2.14      239.1.1.5        8        iface=eth1 mac=02:00:5e:10:00:01
    192.0.2.15      239.1.1.6        8        iface=eth1 rpf learn
    192.0.2.0/24    239.1.1.7        8        rpf     # a prefix takes iface and rpf only

After the TTL come optional words in any order: the rate limits, and a
binding (mauthcore/rules.py, Binding): `iface=IF` (the interface the
sender's packets must arrive on), `rpf` (its source must route back through
that interface), `mac=MAC` (the frame's source MAC) and `learn` (the first
packet pins interface and MAC).

Two more kinds of line authorize receivers (mauthcore/receivers.py;
docs/operations.md, "Authorizing receivers"); their first word says which:

    # receiver RECEIVER  GROUP          [source=S]         [iface=IF]
    receiver   10.1.0.0/24  239.1.0.0/16                      iface=eth1
    receiver   10.1.0.7     232.1.1.1   source=192.0.2.10
    receiver   fe80::/10    ff0e::db8:0/112                   iface=eth1
    # interface IF  open|closed|monitor  [limit=N]
    interface  eth1 closed limit=20
    interface  eth2 monitor

A `receiver` line allows hosts of RECEIVER (a host or prefix) to join GROUP
(a group or range), from source S only if given, on interface IF only if
given. An `interface` line sets one guarded interface's mode and group
limit; an interface the file does not name is open without a limit, on
every load and reload: the file is the whole truth.

A source or group written ADDR/LEN is a prefix (one per rule at most; see
mauthcore/rules.py); pps and bps take a whole number with an optional k, M
or G (x1000, x1000000, x1000000000). Blank lines and everything after `#`
are ignored. Anything else is an error that names the file and line: a
wrong number of fields, an invalid address, prefix, group, TTL or limit, a
limit given twice or unknown, the same (source, group) twice
(2001:DB8::10 and 2001:db8:0::10 are the same address), an invalid
receiver or interface line, the same receiver rule twice, or the same
interface on two `interface` lines. The whole file is rejected
on the first error, so a daemon reloading it on SIGHUP keeps the rules it
runs with rather than applying half a file. `mauthctl check-config` uses this
same parser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .receivers import IfacePolicy, ReceiverRule, parse_interface_words, parse_receiver_words
from .rules import Binding, Rule, RuleError

MAX_FILE_BYTES = 64 * 1024 * 1024


class ConfigError(ValueError):
    """The rule file is invalid; the message names the file and line."""


@dataclass(frozen=True)
class RuleFile:
    path: str
    rules: tuple[Rule, ...]
    receivers: tuple[ReceiverRule, ...] = ()
    interfaces: tuple[IfacePolicy, ...] = ()


def parse_rules(text: str, name: str = "<rules>") -> tuple[Rule, ...]:
    """The sender rules of a rule file's text (its receiver and interface lines are checked too)."""
    return parse_rule_file(text, name).rules


def parse_rule_file(text: str, name: str = "<rules>") -> RuleFile:
    """Every line of a rule file's text: sender rules, receiver rules, interface policies; ConfigError else."""
    seen: dict[object, int] = {}
    rules: list[Rule] = []
    receivers: dict[ReceiverRule, int] = {}
    interfaces: dict[str, tuple[IfacePolicy, int]] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if fields[0] in _OTHER_LINES:
            try:
                value = _OTHER_LINES[fields[0]](fields)
            except RuleError as exc:
                raise ConfigError(f"{name}:{lineno}: {exc}") from None
            if isinstance(value, ReceiverRule):
                if value in receivers:
                    raise ConfigError(f"{name}:{lineno}: the receiver rule {value} is already on line"
                                      f" {receivers[value]}")
                receivers[value] = lineno
            else:
                if value.iface in interfaces:
                    raise ConfigError(f"{name}:{lineno}: interface {value.iface} is already set on line"
                                      f" {interfaces[value.iface][1]}")
                interfaces[value.iface] = (value, lineno)
            continue
        if len(fields) < 3:
            raise ConfigError(
                f"{name}:{lineno}: expected 'SOURCE GROUP MAX-TTL [pps=N] [bps=N] [iface=IF] [rpf] [mac=MAC] [learn]',"
                f" got {len(fields)} field(s)"
            )
        try:
            limits, binding = _options(fields[3:])
            rule = Rule.make(*fields[:3], **limits, binding=binding)
        except RuleError as exc:
            raise ConfigError(f"{name}:{lineno}: {exc}") from None
        if rule.key in seen:
            raise ConfigError(
                f"{name}:{lineno}: {rule.key} is already authorized on line {seen[rule.key]}"
            )
        seen[rule.key] = lineno
        rules.append(rule)
    return RuleFile(name, tuple(rules), tuple(receivers), tuple(p for p, _ in interfaces.values()))


# The first word of a line that is not a sender rule -> its parser (a sender line starts with an address).
_OTHER_LINES: dict[str, Callable[[list[str]], ReceiverRule | IfacePolicy]] = {
    "receiver": parse_receiver_words,
    "interface": parse_interface_words,
}


_VALUED = ("pps", "bps", "iface", "mac")
_SWITCHES = ("rpf", "learn")


def _options(fields: list[str]) -> tuple[dict[str, str], Binding | None]:
    """The rate limits ({"pps": text, "bps": text}) and binding from the fields after the TTL; RuleError else."""
    out: dict[str, str] = {}
    switches: set[str] = set()
    for field in fields:
        name, eq, value = field.partition("=")
        if not (eq and name in _VALUED) and not (not eq and name in _SWITCHES):
            raise RuleError(f"unexpected {field!r} after the max TTL; only pps=N, bps=N, iface=IF, rpf, mac=MAC"
                            " and learn may follow it")
        if name in out or name in switches:
            raise RuleError(f"{name} is given twice")
        if eq:
            out[name] = value
        else:
            switches.add(name)
    iface, mac = out.pop("iface", None), out.pop("mac", None)
    if iface is None and mac is None and not switches:
        return out, None
    return out, Binding.make(iface, rpf="rpf" in switches, mac=mac, learn="learn" in switches)


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
    return parse_rule_file(text, str(p))
