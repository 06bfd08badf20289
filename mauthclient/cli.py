"""mauthctl: the administrator's command line.

Direct mode (`--router HOST:PORT`, docs/design.md) talks to one
router's musersd with protocol v2 (`--key-file`) or v1 (`--v1`).
Server mode (`--server URL`, the mediator) talks to mauthserver's HTTP API
(`mauthclient.api`, bearer token from `--token-file`): the same rule
commands then apply to every router, and the session commands (`sessions`,
`authorize`, `revoke`, `routers`, `events`, `dashboard`) become available.
`announce`, `check-config`, `keygen`, `config` and `completion` need neither.

Where the server and the secrets are can be written once in a configuration
file (`mauthclient.config`); flags and MAUTH_* variables override it.

Exit status: 0 success; 1 the router or server refused the command (the
error reply is printed); 2 bad usage or configuration; 3 the router or
server did not answer. Errors are one sentence on stderr. `--json` (before
or after the command) prints machine-readable output on every listing command.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from contextlib import contextmanager

import click

from mauthclient import api as mapi
from mauthclient import config as mconfig
from mauthclient.board import binding_text as _binding_text
from mauthclient.board import learned_text as _learned_text
from mauthclient.board import offender_text
from mauthclient.when import parse_when
from mauthcore.constants import ROUTER_PORT, SAP_PORT
from mauthcore.events import EventKind, Family
from mauthcore.hostport import HostPortError, parse_hostport
from mauthcore.protocol.errors import (
    LocalProtocolError,
    ProtocolError,
    ReplyCode,
    RouterError,
    RouterNotFound,
    Timeout,
)
from mauthcore.protocol.keys import KeyFileError, format_key_line, generate_secret, load_keys
from mauthcore.protocol.udp import RouterClient
from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthcore.rulefile import ConfigError, load_rules
from mauthcore.rules import Binding, Rule, RuleError, RuleKey
from mauthcore.secretfile import SecretFileError, load_token

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


class Fail(click.ClickException):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        # click declares exit_code a ClassVar but reads it from the raised instance (sys.exit(e.exit_code)).
        self.exit_code = code  # type: ignore[misc]

    def show(self, file=None) -> None:
        click.echo(f"mauthctl: {self.message}", err=True)


def _router_addr(text: str) -> tuple[str, int]:
    try:
        return parse_hostport(text, "router address", ROUTER_PORT)
    except HostPortError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None


@contextmanager
def _client(ctx):
    o = ctx.obj
    if not o["router"]:
        raise Fail("give --router HOST:PORT (direct mode) or --server URL (mauthserver), or set one in the"
                   " configuration file (see 'mauthctl config')", EXIT_USAGE)
    host, port = _router_addr(o["router"])
    keys = None
    if not o["v1"]:
        if not o["key_file"]:
            raise Fail("protocol v2 needs --key-file (or use --v1 from an allowed address)", EXIT_USAGE)
        try:
            keys = load_keys(o["key_file"])
        except KeyFileError as exc:
            raise Fail(str(exc), EXIT_USAGE) from None
    try:
        client = RouterClient(host, port, keys, v1=o["v1"], timeout=o["timeout"], tries=o["tries"])
    except OSError as exc:
        raise Fail(f"cannot reach router {host}:{port}: {exc.strerror or exc}", EXIT_UNREACHABLE) from None
    try:
        yield client
    except Timeout as exc:
        raise Fail(str(exc), EXIT_UNREACHABLE) from None
    except RouterError as exc:
        raise Fail(str(exc), EXIT_REFUSED) from None
    except LocalProtocolError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None
    except ProtocolError as exc:
        raise Fail(str(exc), EXIT_REFUSED) from None
    finally:
        client.close()


def _server_mode(ctx) -> bool:
    o = ctx.obj
    if o["server"] and o["router"]:
        raise Fail("give either --router (one router) or --server (mauthserver), not both", EXIT_USAGE)
    return bool(o["server"])


# HTTP status -> exit status: bad input and missing input are usage errors,
# a wrong token is a configuration error, the rest is a refusal.
_HTTP_EXIT = {400: EXIT_USAGE, 401: EXIT_USAGE, 403: EXIT_USAGE, 422: EXIT_USAGE}


@contextmanager
def _server(ctx):
    o = ctx.obj
    if not o["server"]:
        raise Fail(f"{ctx.info_name} needs --server URL (mauthserver), or 'server' in the configuration file"
                   " (see 'mauthctl config')", EXIT_USAGE)
    if o["router"]:
        raise Fail("give either --router (one router) or --server (mauthserver), not both", EXIT_USAGE)
    try:
        token = load_token(o["token_file"] or mapi.DEFAULT_TOKEN_FILE)
        client = mapi.ApiClient(o["server"], token, timeout=o["http_timeout"])
    except (SecretFileError, ValueError) as exc:
        raise Fail(str(exc), EXIT_USAGE) from None
    try:
        yield client
    except mapi.ApiError as exc:
        message = exc.message
        if exc.details.get("suggestions"):
            message += "; retry with --sender ADDR"
        raise Fail(message, _HTTP_EXIT.get(exc.status, EXIT_REFUSED)) from None
    except mapi.Unreachable as exc:
        raise Fail(str(exc), EXIT_UNREACHABLE) from None


def _rule(source, group, max_ttl, pps=0, bps=0, binding: Binding | None = None) -> Rule:
    try:
        return Rule.make(source, group, max_ttl, pps=pps, bps=bps, binding=binding)
    except RuleError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None


def _binding(iface, rpf: bool, mac, learn: bool) -> Binding | None:
    """The binding of --iface, --rpf, --mac and --learn (None when none is given); Fail on a bad name or MAC."""
    if iface is None and mac is None and not rpf and not learn:
        return None
    if iface is not None and not iface.strip():
        raise Fail("--iface needs an interface name, e.g. eth1, or ROUTER=IF pairs such as r1=eth1,r2=ens4",
                   EXIT_USAGE)
    try:
        return Binding.make(iface, rpf=rpf, mac=mac, learn=learn)
    except RuleError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None


def _limits(rule) -> str:
    """A rule's rate limits for a table cell ("-" for none); `rule` is a Rule or a rule's JSON."""
    get = rule.get if isinstance(rule, dict) else lambda name, default=0: getattr(rule, name, default)
    parts = [f"{name} {get(name, 0)}" for name in ("pps", "bps") if get(name, 0)]
    return ", ".join(parts) or "-"


def _add_through_server(api, rule: Rule, replace: bool) -> dict:
    return api.add_rule(str(rule.source), str(rule.group), rule.max_ttl, pps=rule.pps, bps=rule.bps,
                        replace=replace, binding=rule.binding.as_json() if rule.bound else None)


def _key(source, group) -> RuleKey:
    try:
        return RuleKey.make(source, group)
    except RuleError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None


def json_option(f):
    """`--json` after the command too (`mauthctl list --json`), as well as before it."""
    def set_json(ctx, param, value):
        if value:
            ctx.find_root().obj["json"] = True
        return value

    return click.option("--json", "json_", is_flag=True, expose_value=False, callback=set_json,
                        help="Machine-readable output.")(f)


def examples(*lines: str) -> str:
    """An epilog with examples, kept as written by click's help formatter."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def _emit(ctx, data, human) -> None:
    if ctx.obj["json"]:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        human()


def _when(ms: int) -> str:
    if not ms:
        return "never"
    age = time.time() - ms / 1000
    return f"{age:.0f}s ago" if age < 3600 else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _table(headers: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(fmt.format(*headers))
    for r in rows:
        click.echo(fmt.format(*[str(x) for x in r]))


def _router_states(rule: dict) -> str:
    routers = rule.get("routers") or {}
    if not routers:
        return "none"
    return " ".join(f"{name}:{st.get('state', '?')}" for name, st in sorted(routers.items()))


def _ago(t) -> str:
    if t is None:
        return "-"
    d = time.time() - t
    if d >= 0:
        return f"{d:.0f}s ago" if d < 3600 else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    return f"in {-d:.0f}s" if -d < 86400 else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


EPILOG = """\b
Examples:
  mauthctl --server http://127.0.0.1:7580 --token-file api.token sessions
  mauthctl sessions                 # server and token from the config file
  mauthctl authorize 3fa2           # authorize an announced session
  mauthctl dashboard                # the live view
  mauthctl --router 192.0.2.1 --key-file router.key add-sender 192.0.2.10 239.1.1.1 --max-ttl 16
  mauthctl --router [2001:db8::1]:7575 --key-file router.key add-sender 2001:db8::10 ff0e::db8:1 --max-ttl 16
  mauthctl --router 192.0.2.1 --key-file router.key list --json
  mauthctl check-config /etc/mauth/mauth.conf
  mauthctl announce session.sdp --source 192.0.2.10 --count 1

\b
Configuration: write the server (or router) and the secrets files once in
~/.config/mauth/mauthctl.toml or /etc/mauth/mauthctl.toml ('mauthctl config
--example' prints one); then 'mauthctl sessions' or 'mauthctl dashboard'
needs no flags. Flags and MAUTH_SERVER, MAUTH_ROUTER, MAUTH_TOKEN_FILE,
MAUTH_KEY_FILE override the file. Shell completion: 'mauthctl completion bash'.

\b
Exit status: 0 ok, 1 refused by the router or server, 2 bad usage or
configuration, 3 router or server unreachable.
"""


def _load_config(ctx, param, value):
    """Eager: read the configuration file first, so that its values are the other options' defaults."""
    try:
        path, settings = mconfig.load(value)
    except mconfig.ConfigFileError as exc:
        if ctx.resilient_parsing:  # shell completion: never fail
            return value
        raise Fail(str(exc), EXIT_USAGE) from None
    ctx.meta["mauthctl.config"] = path
    if settings:
        ctx.default_map = {**settings, **(ctx.default_map or {})}
    return value


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=_load_config, metavar="FILE",
              help="Configuration file (default: $MAUTHCTL_CONFIG, ~/.config/mauth/mauthctl.toml,"
                   " /etc/mauth/mauthctl.toml).")
@click.option("--router", metavar="HOST:PORT", envvar="MAUTH_ROUTER", help="Talk directly to this musersd.")
@click.option("--server", metavar="URL", envvar="MAUTH_SERVER",
              help="Talk to mauthserver's API (e.g. http://127.0.0.1:7580).")
@click.option("--token-file", type=click.Path(dir_okay=False), envvar="MAUTH_TOKEN_FILE", metavar="FILE",
              help="Bearer token of mauthserver's API (with --server; default /etc/mauth/api.token).")
@click.option("--key-file", type=click.Path(dir_okay=False), envvar="MAUTH_KEY_FILE", metavar="FILE",
              help="Pre-shared key file for protocol v2.")
@click.option("--v1", is_flag=True, help="Use the unauthenticated protocol v1 (add/del-sender only).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", type=float, default=0.5, show_default=True, help="First retransmission timeout (s).")
@click.option("--tries", type=click.IntRange(1, 20), default=6, show_default=True, help="Transmissions per call.")
@click.option("--http-timeout", type=click.FloatRange(0.1, 600), default=30.0, show_default=True,
              help="Seconds to wait for mauthserver's answer (with --server).")
@click.pass_context
def main(ctx, router, server, token_file, key_file, v1, as_json, timeout, tries, http_timeout):
    """Manage who may send multicast through mauth-guarded routers.

    With --router, commands go to one router's musersd; with --server, to
    mauthserver, which applies rules to every router and knows the sessions
    announced with SAP. 'mauthctl COMMAND --help' shows each command's examples.
    """
    # A server or router given on the command line (or in the environment) wins over the other one
    # from the configuration file, so that a configured server does not get in the way of --router.
    src = ctx.get_parameter_source
    if router and server and src("server") == click.core.ParameterSource.DEFAULT_MAP:
        server = None
    elif router and server and src("router") == click.core.ParameterSource.DEFAULT_MAP:
        router = None
    ctx.obj = dict(router=router, server=server, token_file=token_file, key_file=key_file, v1=v1, json=as_json,
                   timeout=timeout, tries=tries, http_timeout=http_timeout)


@main.command("add-sender", epilog=examples(
    "mauthctl add-sender 192.0.2.10 239.1.1.1 --max-ttl 16",
    "mauthctl add-sender 2001:db8::10 ff3e::8000:1 --max-ttl 8 --replace",
    "mauthctl add-sender 2001:db8:0:1::/64 ff0e::db8:1 --max-ttl 8",
    "mauthctl add-sender 2001:db8::10 ff15::/16 --max-ttl 16",
    "mauthctl --router 192.0.2.1 --key-file router.key add-sender 192.0.2.0/28 232.1.1.1 --max-ttl 4",
    "mauthctl add-sender 192.0.2.10 239.192.0.0/14 --max-ttl 16",
    "mauthctl add-sender 192.0.2.10 239.1.1.1 --max-ttl 16 --pps 500 --bps 2M",
    "mauthctl add-sender 192.0.2.10 239.1.1.1 --max-ttl 16 --iface eth1 --rpf --mac 02:00:5e:10:00:01",
    "mauthctl add-sender 192.0.2.10 239.1.1.1 --max-ttl 16 --iface eth1 --learn",
    "mauthctl --server http://127.0.0.1:7580 add-sender 192.0.2.10 239.1.1.1 --max-ttl 16 --iface r1=eth1,r2=ens4",
    "mauthctl add-sender 192.0.2.0/24 239.1.1.1 --max-ttl 8 --iface eth1 --rpf"))
@json_option
@click.argument("source", metavar="SOURCE[/LEN]")
@click.argument("group", metavar="GROUP[/LEN]")
@click.option("--max-ttl", required=True, help="Largest TTL (IPv6: hop limit) the sender may use (1-255).")
@click.option("--pps", default="0", show_default=True, metavar="N",
              help="Packets per second the rule lets through (0 = no limit; k, M, G = x1000).")
@click.option("--bps", default="0", show_default=True, metavar="N",
              help="Bits per second the rule lets through (0 = no limit; e.g. 2M).")
@click.option("--iface", metavar="IF|ROUTER=IF,...",
              help="Bind the sender to the interface its packets must arrive on (with --server, one per router:"
                   " r1=eth1,r2=ens4; the routers not named check --rpf only).")
@click.option("--rpf", is_flag=True, help="Bind the sender to the reverse path: its source must route back"
                                          " through the interface its packets arrive on.")
@click.option("--mac", metavar="MAC", help="Bind the sender to this source MAC address (exact rules only).")
@click.option("--learn", is_flag=True, help="The first packet pins the interface and MAC; later ones must match"
                                            " ('mauthctl rearm' forgets them; exact rules only).")
@click.option("--replace", is_flag=True, help="Overwrite an existing rule instead of failing.")
@click.pass_context
def add_sender(ctx, source, group, max_ttl, pps, bps, iface, rpf, mac, learn, replace):
    """Authorize SOURCE to send to GROUP with a TTL of at most --max-ttl.

    SOURCE/LEN authorizes every host of a subnet for GROUP; GROUP/LEN lets
    SOURCE send to every group of a range (one prefix per rule). An exact
    rule wins over a prefix rule, a longer prefix over a shorter one.

    --iface, --rpf, --mac and --learn bind the sender to where it is
    (docs/operations.md, "Binding a sender"): packets from it that arrive
    elsewhere are dropped. A prefix rule takes --iface and --rpf only.
    """
    rule = _rule(source, group, max_ttl, pps, bps, _binding(iface, rpf, mac, learn))
    if _server_mode(ctx):
        with _server(ctx) as api:
            out = _add_through_server(api, rule, replace)
        _emit(ctx, out, lambda: click.echo(f"{out['result']}: {rule} (committed; routers: "
                                           f"{_router_states(out['rule'])})"))
        return
    if rule.binding.per_router is not None:
        raise Fail(f"--iface {rule.binding.iface} names an interface per router, which only mauthserver"
                   " resolves; give a router its own interface name (e.g. --iface eth1)", EXIT_USAGE)
    if rule.bound and ctx.obj["v1"]:
        raise Fail(f"v1 carries no binding, so it cannot add {rule}; use v2 (--key-file)", EXIT_USAGE)
    with _client(ctx) as c:
        if replace:
            created = c.replace(rule)
            verb = "added" if created else "replaced"
        else:
            c.add(rule)
            verb = "added"
    _emit(ctx, {"result": verb, **rule.as_json(limits=rule.rate_limited)},
          lambda: click.echo(f"{verb}: {rule}"))


@main.command("del-sender", epilog=examples("mauthctl del-sender 192.0.2.10 239.1.1.1",
                                            "mauthctl del-sender 2001:db8::10 ff15::/16"))
@json_option
@click.argument("source", metavar="SOURCE[/LEN]")
@click.argument("group", metavar="GROUP[/LEN]")
@click.pass_context
def del_sender(ctx, source, group):
    """Remove the authorization of SOURCE to send to GROUP."""
    key = _key(source, group)
    if _server_mode(ctx):
        with _server(ctx) as api:
            out = api.remove_rule(str(key.source), str(key.group))
        _emit(ctx, out, lambda: click.echo(f"removed: {key} (committed; routers follow)"))
        return
    with _client(ctx) as c:
        c.remove(key)
    _emit(ctx, {"result": "removed", **key.as_json()},
          lambda: click.echo(f"removed: {key}"))


@main.command("list", epilog=examples("mauthctl list",
                                      "mauthctl list --json | jq '.[] | select(.state != \"applied\")'",
                                      "mauthctl --router 192.0.2.1 --key-file router.key list"))
@json_option
@click.pass_context
def list_rules(ctx):
    """List the router's rules with their counters (with --server: the desired rules and each router's state)."""
    if _server_mode(ctx):
        with _server(ctx) as api:
            rules = api.rules()
        _emit(ctx, rules, lambda: _bound_table(
            ["SOURCE", "GROUP", "MAX-TTL", "STATE", "ROUTERS", "SESSION", "PACKETS", "BYTES", "LIMITS"],
            [[r["source"], r["group"], r["max_ttl"], r["state"], _router_states(r), r.get("session") or "-",
              r.get("packets", 0), r.get("bytes", 0), _limits(r)] for r in rules],
            [r.get("binding") for r in rules], [_server_learned(r) for r in rules]))
        return
    with _client(ctx) as c:
        entries = c.list_all()
    data = [e.as_json() for e in entries]
    _emit(ctx, data, lambda: _bound_table(
        ["SOURCE", "GROUP", "MAX-TTL", "PACKETS", "BYTES", "LAST SEEN", "LIMITS"],
        [[e.rule.source, e.rule.group, e.rule.max_ttl, e.packets, e.octets, _when(e.last_seen), _limits(e.rule)]
         for e in entries],
        [e.rule.binding for e in entries],
        [_learned_text(e.learned, e.moved) if e.rule.binding.learn else None for e in entries]))


def _bound_table(headers: list[str], rows: list[list], bindings: list, learned: list[str | None]) -> None:
    """`_table`, with a BINDING column when some rule is bound and a LEARNED one when some rule learns."""
    headers, rows = list(headers), [list(r) for r in rows]
    if any(_binding_text(b) != "-" for b in bindings):
        headers.append("BINDING")
        for row, b in zip(rows, bindings):
            row.append(_binding_text(b))
    if any(text is not None for text in learned):
        headers.append("LEARNED")
        for row, text in zip(rows, learned):
            row.append("-" if text is None else text)
    _table(headers, rows)


def _server_learned(rule: dict) -> str | None:
    """What a learning rule pinned on each router ("r1:eth1 02:..:01, moved 3"), when mauthserver reports it
    in the rule's router states as LIST does ("learned", "moved"); None for a rule that does not learn."""
    if not (rule.get("binding") or {}).get("learn"):
        return None
    routers = rule.get("routers") or {}
    parts = [f"{name}:{_learned_text(st.get('learned'), st.get('moved', 0))}"
             for name, st in sorted(routers.items()) if isinstance(st, dict) and "learned" in st]
    return " ".join(parts) or "-"


@main.command("rearm", epilog=examples(
    "mauthctl rearm 192.0.2.10 239.1.1.1",
    "mauthctl --router 192.0.2.1 --key-file router.key rearm 192.0.2.10 239.1.1.1"))
@json_option
@click.argument("source", metavar="SOURCE")
@click.argument("group", metavar="GROUP")
@click.pass_context
def rearm(ctx, source, group):
    """Make the learning rule SOURCE GROUP forget the interface and MAC it pinned (with --server: on every router).

    The next packet of the sender pins them again. Use it when a sender that
    was added with --learn has really moved (another port, a new NIC): until
    then its packets count as moved and are dropped.
    """
    key = _key(source, group)
    if _server_mode(ctx):
        with _server(ctx) as api:
            out = api.rearm_rule(str(key.source), str(key.group))
        _emit(ctx, out, lambda: click.echo(f"rearmed: {key} (committed; routers follow)"))
        return
    with _client(ctx) as c:
        try:
            c.rearm(key)
        except RouterNotFound:
            raise Fail(f"router {ctx.obj['router']} has no rule for {key}", EXIT_REFUSED) from None
        except RouterError as exc:
            if exc.code != ReplyCode.INVALID_ARGUMENT:
                raise
            raise Fail(f"the rule for {key} does not learn its sender (it was not added with --learn), so there"
                       " is nothing to rearm", EXIT_REFUSED) from None
    _emit(ctx, {"result": "rearmed", **key.as_json()},
          lambda: click.echo(f"rearmed: {key}; its next packet pins the interface and MAC again"))


@main.command("denied", epilog=examples("mauthctl denied",
                                        "mauthctl --router 192.0.2.1 --key-file router.key denied --json"))
@json_option
@click.pass_context
def denied(ctx):
    """List the (source, group) pairs the filter is dropping (or would drop, in monitor mode).

    With --server, every router is asked (through mauthserver) and each pair
    names its router; a router that cannot be read is reported on stderr and
    makes the exit status 3.
    """
    if _server_mode(ctx):
        with _server(ctx) as api:
            traffic = api.traffic()
        data, broken = [], []
        for name, r in sorted(traffic["routers"].items()):
            if not r.get("ok"):
                broken.append((name, r.get("error") or "unreadable"))
                continue
            data += [{"router": name, **d} for d in r["denied"]]
        where = any(d.get("iface") or d.get("mac") for d in data)
        _emit(ctx, data, lambda: _table(
            ["ROUTER", "SOURCE", "GROUP", "REASON", "PACKETS", "BYTES", "LAST TTL", "LAST SEEN",
             *(["OFFENDER"] if where else [])],
            [[d["router"], d["source"], d["group"], d["reason"], d["packets"], d["bytes"], d["last_ttl"],
              _ago(d["last_seen"]), *([_offender(d)] if where else [])] for d in data]))
        for name, error in broken:
            click.echo(f"mauthctl: router {name} could not be read: {error}", err=True)
        if broken:
            ctx.exit(EXIT_UNREACHABLE)
        return
    with _client(ctx) as c:
        entries = c.denied_all()
    data = [d.as_json() for d in entries]
    where = any(d.get("iface") or d.get("mac") for d in data)
    _emit(ctx, data, lambda: _table(
        ["SOURCE", "GROUP", "REASON", "PACKETS", "BYTES", "LAST TTL", "LAST SEEN", *(["OFFENDER"] if where else [])],
        [[d.source, d.group, d.reason, d.packets, d.octets, d.last_ttl, _when(d.last_seen),
          *([_offender(j)] if where else [])] for d, j in zip(entries, data, strict=True)]))


def _offender(d: dict) -> str:
    """Where the last packet a binding dropped came from ("eth1 02:00:5e:10:00:09"); "-" for other drops."""
    return offender_text(d) or "-"


# =============================================================================
# receivers: who may join which groups (docs/operations.md, "Authorizing receivers")
# =============================================================================


def _receiver_rule(receiver, group, source, iface) -> ReceiverRule:
    try:
        return ReceiverRule.make(receiver, group, source, iface)
    except RuleError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None


def _receiver_args(f):
    """RECEIVER GROUP [--source S] [--iface IF]: one receiver rule, as add-receiver and del-receiver take it."""
    f = click.option("--iface", metavar="IF", help="Only on this guarded interface (default: any).")(f)
    f = click.option("--source", metavar="ADDRESS", help="Only joins of GROUP from this source (SSM).")(f)
    f = click.argument("group", metavar="GROUP[/LEN]")(f)
    return click.argument("receiver", metavar="RECEIVER[/LEN]")(f)


def _dash(value) -> str:
    return "-" if value in (None, "") else str(value)


def _unread(ctx, errors: dict[str, str]) -> None:
    """After a listing mauthserver read from every router: the routers it could not read, on stderr, and the
    exit status 3 if there was one."""
    for name, error in sorted(errors.items()):
        click.echo(f"mauthctl: router {name} could not be read: {error}", err=True)
    if errors:
        ctx.exit(EXIT_UNREACHABLE)


@main.command("add-receiver", epilog=examples(
    "mauthctl add-receiver 10.1.0.0/24 239.1.0.0/16",
    "mauthctl add-receiver 10.1.0.7 232.1.1.1 --source 192.0.2.10 --iface eth1",
    "mauthctl add-receiver fe80::/10 ff3e::/96 --iface eth2",
    "mauthctl --router 192.0.2.1 --key-file router.key add-receiver 10.1.0.0/24 239.1.0.0/16"))
@json_option
@_receiver_args
@click.pass_context
def add_receiver(ctx, receiver, group, source, iface):
    """Allow hosts of RECEIVER to join GROUP (with --server: on every router).

    RECEIVER/LEN allows a subnet, GROUP/LEN a range of groups. --source allows
    only the source-specific join of (SOURCE, GROUP); without it, any-source
    and source-specific joins are allowed. --iface limits the rule to one
    guarded interface; a router that does not guard it refuses the rule and
    the others hold it. Joins are judged only on interfaces that are closed,
    monitored or limited (see receiver-policy).
    """
    rule = _receiver_rule(receiver, group, source, iface)
    if _server_mode(ctx):
        with _server(ctx) as api:
            out = api.add_receiver(rule.as_json())
        _emit(ctx, out, lambda: click.echo(f"added: {rule} (committed; routers: "
                                           f"{_router_states(out['receiver'])})"))
        return
    with _client(ctx) as c:
        c.add_receiver(rule)
    _emit(ctx, {"result": "added", **rule.as_json()}, lambda: click.echo(f"added: {rule}"))


@main.command("del-receiver", epilog=examples(
    "mauthctl del-receiver 10.1.0.0/24 239.1.0.0/16",
    "mauthctl del-receiver 10.1.0.7 232.1.1.1 --source 192.0.2.10 --iface eth1"))
@json_option
@_receiver_args
@click.pass_context
def del_receiver(ctx, receiver, group, source, iface):
    """Remove a receiver rule (give it exactly as it was added)."""
    rule = _receiver_rule(receiver, group, source, iface)
    if _server_mode(ctx):
        with _server(ctx) as api:
            out = api.remove_receiver(rule.as_json())
        _emit(ctx, out, lambda: click.echo(f"removed: {rule} (committed; routers follow)"))
        return
    with _client(ctx) as c:
        c.remove_receiver(rule)
    _emit(ctx, {"result": "removed", **rule.as_json()}, lambda: click.echo(f"removed: {rule}"))


@main.command("receivers", epilog=examples("mauthctl receivers",
                                           "mauthctl --router 192.0.2.1 --key-file router.key receivers --json"))
@json_option
@click.pass_context
def receivers(ctx):
    """List the receiver rules (with --server: the desired ones and each router's state of them)."""
    if _server_mode(ctx):
        with _server(ctx) as api:
            rules = api.receivers()
        _emit(ctx, rules, lambda: _table(
            ["RECEIVER", "GROUP", "SOURCE", "IFACE", "STATE", "ROUTERS", "MATCHED"],
            [[r["receiver"], r["group"], _dash(r.get("source")), _dash(r.get("iface")), r["state"],
              _router_states(r), sum(st.get("matched", 0) for st in (r.get("routers") or {}).values())]
             for r in rules]))
        for r in rules:
            for name, st in sorted((r.get("routers") or {}).items()):
                if st.get("state") == "refused":
                    click.echo(f"mauthctl: router {name} refused {r['receiver']} {r['group']}: {st.get('error')}",
                               err=True)
        return
    with _client(ctx) as c:
        entries = c.list_receivers()
    _emit(ctx, [e.as_json() for e in entries], lambda: _table(
        ["RECEIVER", "GROUP", "SOURCE", "IFACE", "MATCHED", "LAST SEEN"],
        [[j["receiver"], j["group"], _dash(j.get("source")), _dash(j.get("iface")), e.matched,
          _when(e.last_seen_ms)] for e, j in ((e, e.as_json()) for e in entries)]))


@main.command("joined", epilog=examples("mauthctl joined",
                                        "mauthctl --router 192.0.2.1 --key-file router.key joined --json"))
@json_option
@click.pass_context
def joined(ctx):
    """List the groups joined on the guarded interfaces, with their last reporter (with --server: every router)."""
    errors: dict[str, str] = {}
    if _server_mode(ctx):
        with _server(ctx) as api:
            answer = api.joined()
            data, errors = answer["joined"], answer.get("errors") or {}
    else:
        with _client(ctx) as c:
            data = [e.as_json() for e in c.joined()]
    where = ["ROUTER"] if _server_mode(ctx) else []
    _emit(ctx, data, lambda: _table(
        [*where, "IFACE", "GROUP", "REPORTER", "REPORTS", "FIRST SEEN", "LAST SEEN", "LEFT"],
        [[*([d["router"]] if where else []), d["iface"], d["group"], d["reporter"], d["reports"],
          _ago(d["first_seen"]), _ago(d["last_seen"]), "yes" if d["left"] else "no"] for d in data]))
    _unread(ctx, errors)


@main.command("denied-receivers", epilog=examples(
    "mauthctl denied-receivers", "mauthctl --router 192.0.2.1 --key-file router.key denied-receivers --json"))
@json_option
@click.pass_context
def denied_receivers(ctx):
    """List the joins the filter refused (or would refuse, on a monitored interface): who, which group, why.

    With --server, every router is asked (through mauthserver) and each join
    names its router; a router that cannot be read is reported on stderr and
    makes the exit status 3.
    """
    errors: dict[str, str] = {}
    if _server_mode(ctx):
        with _server(ctx) as api:
            answer = api.denied_receivers()
            data, errors = answer["denied"], answer.get("errors") or {}
    else:
        with _client(ctx) as c:
            data = [e.as_json() for e in c.denied_joins()]
    where = ["ROUTER"] if _server_mode(ctx) else []
    _emit(ctx, data, lambda: _table(
        [*where, "IFACE", "RECEIVER", "GROUP", "SOURCE", "REASON", "RECORDS", "LAST SEEN", "VERSION"],
        [[*([d["router"]] if where else []), d["iface"], d["receiver"], d["group"], _dash(d.get("source")),
          d["reason"], d["records"], _ago(d["last_seen"]), d["version"]] for d in data]))
    _unread(ctx, errors)


@main.command("receiver-policy", epilog=examples(
    "mauthctl receiver-policy",
    "mauthctl receiver-policy eth1 monitor",
    "mauthctl receiver-policy eth1 closed --limit 20",
    "mauthctl receiver-policy eth2 open --router r1",
    "mauthctl --router 192.0.2.1 --key-file router.key receiver-policy eth1 closed"))
@json_option
@click.argument("iface", metavar="[IFACE", required=False)
@click.argument("mode", metavar="open|closed|monitor]", required=False)
@click.option("--limit", type=click.IntRange(0, 65535), default=0, show_default=True, metavar="N",
              help="At most N groups joined on the interface at once (0: no limit).")
@click.option("--router", "router_name", metavar="NAME",
              help="With --server: set it on this router only (default: every router that has the interface).")
@click.pass_context
def receiver_policy(ctx, iface, mode, limit, router_name):
    """Set what an interface does with joins, or (without arguments) list every guarded interface's policy.

    open keeps every join (the default), closed keeps only the joins a
    receiver rule allows, monitor judges like closed but keeps every join
    (a dry run: refused joins are recorded). --limit caps the groups joined
    on the interface, in every mode.
    """
    if iface is not None and mode is None:
        raise Fail("give the interface and its mode (open, closed or monitor), or nothing to list the policies",
                   EXIT_USAGE)
    policy = None
    errors: dict[str, str] = {}
    if iface is not None:
        try:
            policy = IfacePolicy.make(iface, mode, limit)
        except RuleError as exc:
            raise Fail(str(exc), EXIT_USAGE) from None
    if _server_mode(ctx):
        with _server(ctx) as api:
            if policy is not None:
                out = api.set_receiver_policy(policy.iface, str(policy.mode), policy.limit, router=router_name)
                _emit(ctx, out, lambda: click.echo(f"{out['result']}: {policy} on {router_name or 'every router'}"
                                                   " (committed; routers follow)"))
                return
            answer = api.receiver_policies()
            data, errors = answer["policies"], answer.get("errors") or {}
    else:
        if router_name is not None:
            raise Fail("--router NAME names a router of mauthserver (with --server); with the global --router,"
                       " the command goes to that router alone", EXIT_USAGE)
        with _client(ctx) as c:
            entries = c.receiver_policy(policy)
        if policy is not None:
            _emit(ctx, {"result": "set", **policy.as_json()}, lambda: click.echo(f"set: {policy}"))
            return
        data = [e.as_json() for e in entries]
    where = ["ROUTER"] if _server_mode(ctx) else []
    _emit(ctx, data, lambda: _table(
        [*where, "IFACE", "MODE", "LIMIT", "GROUPS", "REPORTS", "KEPT", "REFUSED", "LIMITED", "MALFORMED"],
        [[*([d["router"]] if where else []), d["iface"], d["mode"], d["limit"] or "-", d["groups"],
          *(d["counters"][c] for c in ("reports", "kept", "refused", "limited", "malformed"))] for d in data]))
    _unread(ctx, errors)


@main.command("stats", epilog=examples("mauthctl stats",
                                        "mauthctl --router 192.0.2.1 --key-file router.key stats --json"))
@json_option
@click.pass_context
def stats(ctx):
    """Show the router's mode, rule count and per-reason counters (with --server: the fleet's)."""
    if _server_mode(ctx):
        with _server(ctx) as api:
            data = api.stats()

        def human_server():
            click.echo(f"mauthserver: {data['rules']} rules, {data['sessions']} sessions, "
                       f"{data['routers_up']}/{len(data['routers'])} routers up, mode {data['mode'] or 'per router'}")
            _table(["ROUTER", "STATE", "PENDING", "RULES", "MODE", "LAST ERROR"],
                   [[n, r["state"], r["pending"], r["rule_count"] if r["rule_count"] is not None else "-",
                     r["mode"] or "-", r["last_error"] or "-"] for n, r in sorted(data["routers"].items())])

        _emit(ctx, data, human_server)
        return
    with _client(ctx) as c:
        hello = c.hello()
        counters = c.counters()
    data = {
        "router": ctx.obj["router"],
        "mode": str(counters.mode),
        "backend": counters.backend,
        "rules": counters.rule_count,
        "epoch": hello.epoch,
        "state_id": hello.state_id,
        "reasons": {str(r.reason): {"packets": r.packets, "bytes": r.octets} for r in counters.reasons},
    }

    def human():
        click.echo(f"router {ctx.obj['router']}: mode {counters.mode}, backend {counters.backend}, "
                   f"{counters.rule_count} rules, epoch {hello.epoch:016x}, state {hello.state_id:016x}")
        _table(["REASON", "PACKETS", "BYTES"], [[r.reason, r.packets, r.octets] for r in counters.reasons])

    _emit(ctx, data, human)


@main.command("mode", epilog=examples("mauthctl mode", "mauthctl mode monitor   # dry run: count, drop nothing",
                                      "mauthctl mode enforce"))
@json_option
@click.argument("mode", required=False, type=click.Choice(["enforce", "monitor"]))
@click.pass_context
def mode(ctx, mode):
    """Show the filter mode, or set it to enforce or monitor (with --server: on every router)."""
    if _server_mode(ctx):
        with _server(ctx) as api:
            out = api.mode(mode, set_it=mode is not None)
        _emit(ctx, out, lambda: click.echo(out["mode"] or "per router (not set by mauthserver)"))
        return
    with _client(ctx) as c:
        now = c.mode(mode)
    _emit(ctx, {"mode": str(now)}, lambda: click.echo(str(now)))


@main.command("flush", epilog=examples("mauthctl flush",
                                        "mauthctl --router 192.0.2.1 --key-file router.key flush --yes"))
@json_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def flush(ctx, yes):
    """Remove every rule from the router (all authorized multicast stops)."""
    where = "every router (all desired rules)" if ctx.obj["server"] else "the router"
    if not yes and not click.confirm(f"Remove every rule from {where}?", err=True):
        raise Fail("flush cancelled", EXIT_USAGE)
    if _server_mode(ctx):
        with _server(ctx) as api:
            n = api.flush()["removed"]
        _emit(ctx, {"removed": n}, lambda: click.echo(f"removed {n} rules"))
        return
    with _client(ctx) as c:
        n = c.flush()
    _emit(ctx, {"removed": n}, lambda: click.echo(f"removed {n} rules"))


@main.command("check-config", epilog=examples("mauthctl check-config /etc/mauth/mauth.conf"))
@json_option
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def check_config(ctx, file):
    """Check a musersd rule file (mauth.conf) without applying it."""
    try:
        rf = load_rules(file)
    except ConfigError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None
    bound = sum(1 for rule in rf.rules if rule.bound)
    receivers = (f", {len(rf.receivers)} receiver rules" if rf.receivers else "") + (
        f", {len(rf.interfaces)} interface policies" if rf.interfaces else "")
    _emit(ctx, {"file": rf.path, "rules": len(rf.rules), "bound": bound, "receivers": len(rf.receivers),
                "interfaces": len(rf.interfaces)},
          lambda: click.echo(f"{rf.path}: {len(rf.rules)} rules{f' ({bound} bound)' if bound else ''}{receivers}, OK"))


# =============================================================================
# server mode only: sessions and the fleet
# =============================================================================


@main.command("sessions", epilog=examples("mauthctl sessions", "mauthctl sessions --json | jq -r '.[].name'"))
@json_option
@click.pass_context
def sessions(ctx):
    """List the sessions announced with SAP that mauthserver has heard."""
    with _server(ctx) as api:
        data = api.sessions()

    def human():
        _table(["ID", "NAME", "ORIGIN", "ANNOUNCER", "GROUPS", "SOURCES", "AUTHORIZED", "LAST HEARD", "EXPIRES"],
               [[s["id"], s["name"], s["origin"], s["announcer"],
                 ",".join(f"{g['address']}/{g['ttl']}" if g.get("ttl") is not None else g["address"]
                          for g in s["groups"]) or "-",
                 ",".join(s["sources"]) or "any", _authorized(s), _ago(s["last_heard"]), _ago(s["expires"])]
                for s in data])

    _emit(ctx, data, human)


def _authorized(session: dict) -> str:
    """A session's authorization in one word: follows, as-made (--no-follow, or made before following), -."""
    auth = session.get("authorization")
    if auth is None:
        return "as-made" if session.get("rules") else "-"
    return "follows" if auth["follow"] else "as-made"


@main.command("authorize", epilog=examples(
    "mauthctl authorize 3fa2                       # the senders the session declares",
    "mauthctl authorize 3fa2 --sender 192.0.2.55   # an any-source session: name the sender",
    "mauthctl authorize 3fa2 --expire-with-session --max-ttl 16",
    "mauthctl authorize 3fa2 --no-follow           # rules stay as made when the session changes"))
@json_option
@click.argument("session", shell_complete=lambda ctx, param, incomplete: _complete_sessions(ctx, incomplete))
@click.option("--sender", "senders", multiple=True, metavar="ADDR",
              help="Sender to authorize on every group of the session of its address family (repeatable);"
                   " required for an any-source session, otherwise it replaces the senders the session"
                   " declares.")
@click.option("--max-ttl", type=click.IntRange(1, 255),
              help="Max TTL instead of each group's c= TTL (IPv6 groups have none: 255 unless given).")
@click.option("--expire-with-session", is_flag=True, help="Remove these rules when the session ends.")
@click.option("--replace", is_flag=True, help="Overwrite existing rules with another max TTL.")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Whether the rules follow later versions of the session's announcement (new groups or"
                   " senders added, changed TTLs updated, withdrawn ones removed), or stay as made.")
@click.pass_context
def authorize(ctx, session, senders, max_ttl, expire_with_session, replace, follow):
    """Turn announced SESSION (id or unique prefix) into sender rules on every router.

    Each rule's max TTL is the c= TTL of its group, or --max-ttl. IPv6
    groups have no TTL in c= (their scope, not a hop count, bounds them):
    their rules allow hop limit 255 unless --max-ttl is given. Unless
    --no-follow, mauthserver re-plans them with the same options whenever the
    session's announcement changes; rules it did not make are never touched.
    """
    with _server(ctx) as api:
        out = api.authorize(session, senders=list(senders), max_ttl=max_ttl,
                            expire_with_session=expire_with_session, replace=replace, follow=follow)

    def human():
        auth = out.get("authorization")  # absent from a server older than following
        how = ("" if auth is None else "; they follow the session's announcements" if auth["follow"]
               else "; they stay as made (--no-follow)")
        click.echo(f"session {out['session']} ({out['name']}): {len(out['rules'])} rules"
                   f" ({out['changed']} new or changed){how}")
        for r in out["rules"]:
            click.echo(f"  {r['source']} -> {r['group']} max-ttl {r['max_ttl']}"
                       f"{' (expires with the session)' if r.get('expire_with_session') else ''}")
        for sk in out["skipped"]:
            click.echo(f"  skipped {sk.get('source', '*')} -> {sk['group']}: {sk['reason']}")

    _emit(ctx, out, human)


@main.command("revoke", epilog=examples("mauthctl revoke 3fa2", "mauthctl revoke 192.0.2.10 239.1.1.1"))
@json_option
@click.argument("args", nargs=-1, required=True, metavar="SESSION | SOURCE GROUP",
                shell_complete=lambda ctx, param, incomplete: _complete_sessions(ctx, incomplete))
@click.pass_context
def revoke(ctx, args):
    """Remove the rules authorized from SESSION, or the rule SOURCE GROUP."""
    if len(args) == 2:
        key = _key(*args)
        with _server(ctx) as api:
            out = api.remove_rule(str(key.source), str(key.group))
        _emit(ctx, out, lambda: click.echo(f"removed: {key}"))
        return
    if len(args) != 1:
        raise Fail("revoke takes a session id, or a source and a group", EXIT_USAGE)
    with _server(ctx) as api:
        out = api.revoke(args[0])
    _emit(ctx, out, lambda: click.echo(f"revoked session {out['session']}: {len(out['rules'])} rules removed"))


@main.command("routers", epilog=examples("mauthctl routers", "mauthctl routers --json"))
@json_option
@click.pass_context
def routers(ctx):
    """Show each router's state as mauthserver sees it."""
    with _server(ctx) as api:
        data = api.routers()
    _emit(ctx, data, lambda: _table(
        ["NAME", "ADDRESS", "STATE", "PENDING", "RULES", "MODE", "LAST CONTACT", "LAST ERROR"],
        [[r["name"], r["address"], r["state"], r["pending"], r["rule_count"] if r["rule_count"] is not None else "-",
          r["mode"] or "-", _ago(r["last_contact"]), r["last_error"] or "-"] for r in data]))


@main.command("audit", epilog=examples(
    "mauthctl audit                                  # the last 50 entries",
    "mauthctl audit --since 2d --actor alice",
    "mauthctl audit --action add-sender --action del-sender --since 2026-12-07 --until 2026-12-08",
    "mauthctl audit --session 3fa2c1d09b7e4f55       # what happened to one session",
    "mauthctl audit --limit 200 --before 5120        # the next page",
    "mauthctl audit --since 1h --json | jq -r '.[].action'"))
@json_option
@click.option("--actor", metavar="TEXT", help="Entries whose actor contains TEXT (case-insensitive).")
@click.option("--action", "actions", multiple=True, metavar="ACTION",
              help="Entries with exactly this action, e.g. add-sender, authorize, audit-pruned (repeatable).")
@click.option("--since", metavar="WHEN", help="Entries at or after WHEN: 2026-12-07, 2026-12-07T10:00 (local time)"
                                              " or an age, 30m, 1h, 2d.")
@click.option("--until", metavar="WHEN", help="Entries before WHEN (as --since).")
@click.option("--session", metavar="ID", help="Entries whose detail mentions this (full) session id.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True, help="Entries at most.")
@click.option("--before", type=click.IntRange(0, None), metavar="ID", help="Entries older than entry ID (paging).")
@click.pass_context
def audit(ctx, actor, actions, since, until, session, limit, before):
    """Show who changed what and when, newest first.

    Filters combine: an entry is shown when it passes every one given. The
    server keeps the log for --audit-max-age days and --audit-max-rows rows
    (mauthserver(1)); each pruning is an audit-pruned entry. When --limit
    entries are shown, the last line says how to get the older ones. --json
    prints the entries as the API returns them (times in Unix seconds).
    """
    now = time.time()
    try:
        since_t = None if since is None else parse_when(since, now=now, option="--since")
        until_t = None if until is None else parse_when(until, now=now, option="--until")
    except ValueError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None
    with _server(ctx) as api:
        data = api.audit(limit, before=before, actor=actor, actions=actions, since=since_t, until=until_t,
                         session=session)

    def human():
        if not data:
            click.echo("no audit entries match")
            return
        _table(["ID", "WHEN", "ACTOR", "ACTION", "DETAIL"],
               [[e["id"], time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"])), e["actor"], e["action"],
                 _audit_detail(e["detail"])] for e in data])
        if len(data) == limit:
            click.echo(f"-- {limit} entries shown; for older ones add --before {data[-1]['id']}")

    _emit(ctx, data, human)


def _audit_detail(detail, width: int = 100) -> str:
    """An audit entry's detail on one line: `key=value ...`, values compact JSON unless plain words."""
    def value(v) -> str:
        if isinstance(v, str) and v and not any(c.isspace() or c in "\"=" for c in v):
            return v
        return json.dumps(v, sort_keys=True, separators=(",", ":"))

    text = " ".join(f"{k}={value(v)}" for k, v in sorted(detail.items())) if isinstance(detail, dict) \
        else value(detail)
    return text if len(text) <= width else text[:width - 3] + "..."


@main.command("events", epilog=examples("mauthctl events", "mauthctl events --json --count 10"))
@json_option
@click.option("--count", type=click.IntRange(0, None), default=0, help="Stop after this many events (0: follow).")
@click.option("--last-id", metavar="ID", help="Resume after this event id.")
@click.pass_context
def events(ctx, count, last_id):
    """Follow mauthserver's event stream (sessions, rules, routers), one line per event."""
    seen = 0
    with _server(ctx) as api:
        try:
            for ev_id, kind, data in api.events(last_id, timeout=max(60.0, ctx.obj["http_timeout"])):
                if kind == EventKind.HELLO:
                    continue
                if ctx.obj["json"]:
                    click.echo(json.dumps({"id": ev_id, "event": kind, **data}, sort_keys=True))
                else:
                    click.echo(f"{ev_id} {kind} {_event_summary(kind, data)}")
                seen += 1
                if count and seen >= count:
                    return
        except KeyboardInterrupt:
            return
    if not count or seen < count:
        raise Fail("the server closed the event stream", EXIT_UNREACHABLE)


def _event_summary(kind: str, data: dict) -> str:
    ev = EventKind.parse(kind)
    family = None if ev is None else ev.family
    if family is Family.SESSION:
        s = data.get("session", {})
        extra = f" ({data['reason']})" if "reason" in data else ""
        return f"{s.get('id')} {s.get('name')!r} from {s.get('announcer')}{extra}"
    if family is Family.RULE:
        r = data.get("rule", {})
        bound = f" {_binding_text(r['binding'])}" if r.get("binding") else ""
        return f"{r.get('source')} -> {r.get('group')} max-ttl {r.get('max_ttl')}{bound} by {data.get('actor')}"
    if ev is EventKind.DENIED:
        offender = f" from {_offender(data)}" if data.get("iface") or data.get("mac") else ""
        return (f"{data.get('router')}: {data.get('source')} -> {data.get('group')} {data.get('reason')}{offender}"
                f" (+{data.get('new_packets')} packets, {data.get('packets')} in all, last TTL {data.get('last_ttl')})")
    if ev is EventKind.SENDER_MOVED:
        return (f"{data.get('router')}: the sender of {data.get('source')} -> {data.get('group')} moved"
                f" ({data.get('reason')}, {data.get('packets')} packets dropped); `mauthctl rearm` pins it afresh")
    if ev is EventKind.ROUTER_CHANGED:
        return f"{data.get('name')} {data.get('state')} pending {data.get('pending')}"
    if ev in (EventKind.RECEIVER_ADDED, EventKind.RECEIVER_REMOVED):
        r = data.get("receiver", {})
        extra = "".join(f" {k} {r[k]}" for k in ("source", "iface") if r.get(k))
        return f"{r.get('receiver')} may join {r.get('group')}{extra} by {data.get('actor')}"
    if ev is EventKind.RECEIVER_POLICY:
        p = data.get("policy", {})
        return (f"{p.get('iface')} {p.get('mode')} limit {p.get('limit') or '-'} on {p.get('router') or 'every router'}"
                f" by {data.get('actor')}")
    if ev is EventKind.RECEIVER_DENIED:
        src = f" from {data['source']}" if data.get("source") else ""
        return (f"{data.get('router')}: {data.get('receiver')} on {data.get('iface')} -> {data.get('group')}{src}"
                f" {data.get('reason')} (+{data.get('new_records')}, {data.get('records')} in all)")
    return json.dumps(data, sort_keys=True)


def _complete_sessions(ctx, incomplete: str) -> list:
    """Shell completion of session ids from mauthserver (nothing, quietly, when it cannot be asked)."""
    from click.shell_completion import CompletionItem

    params = ctx.find_root().params
    try:
        token = load_token(params.get("token_file") or mapi.DEFAULT_TOKEN_FILE)
        sessions = mapi.ApiClient(params["server"], token, timeout=2.0).sessions()
    except Exception:  # completion must never print an error into the shell
        return []
    return [CompletionItem(s["id"], help=s.get("name")) for s in sessions if s["id"].startswith(incomplete)]


# =============================================================================
# the dashboard
# =============================================================================


@main.command("dashboard", epilog=examples(
    "mauthctl dashboard",
    "mauthctl --server http://127.0.0.1:7580 --token-file /etc/mauth/api.token dashboard",
    "mauthctl dashboard --interval 5"))
@click.option("--interval", type=click.FloatRange(0.5, 60), default=2.0, show_default=True, metavar="SECONDS",
              help="Seconds between reads of the routers' counters (rates and denied pairs).")
@click.pass_context
def dashboard(ctx, interval):
    """Live view of sessions, senders, denied traffic, routers and receivers; authorize with one key.

    \b
    Panes (keys 1-5): Sessions announced with SAP, Senders (the rules, with
    their state on each router and their rates), Denied (who is being dropped
    right now, and why), Routers, Receivers (the joins the routers refused,
    then the groups joined on each interface). Keys: a authorize the selected
    session, denied pair or refused join, r revoke the selected rule,
    / filter, ? help, q quit. Sessions, rules and routers follow mauthserver's
    event stream; counters are read every --interval seconds. Fits an 80x24
    terminal; no mouse needed.
    """
    if ctx.obj["json"]:
        raise Fail("the dashboard is interactive; for machine-readable output use 'mauthctl events --json'",
                   EXIT_USAGE)
    with _server(ctx) as api:
        api.routers()  # fail now, in one sentence, on a wrong URL or token
    from mauthclient.dashboard import Dashboard

    app = Dashboard(ctx.obj["server"], api.token, http_timeout=ctx.obj["http_timeout"], traffic_interval=interval)
    try:
        code = app.run()
    except KeyboardInterrupt:
        code = 0
    ctx.exit(code or 0)


# =============================================================================
# setting up: configuration, completion, secrets files
# =============================================================================


@main.command("config", epilog=examples("mauthctl config", "mauthctl config --example > ~/.config/mauth/mauthctl.toml",
                                        "mauthctl --config ./lab.toml config --json"))
@json_option
@click.option("--example", is_flag=True, help="Print an example configuration file.")
@click.pass_context
def config(ctx, example):
    """Show which configuration file is used and the settings in effect (and where each comes from)."""
    if example:
        click.echo(mconfig.EXAMPLE, nl=False)
        return
    root = ctx.find_root()
    path = root.meta.get("mauthctl.config")
    names = {"COMMANDLINE": "command line", "ENVIRONMENT": "environment", "DEFAULT_MAP": "config file",
             "DEFAULT": "default"}
    settings: dict[str, dict[str, object]] = {}
    data = {"file": str(path) if path else None, "settings": settings}
    for key in mconfig.KEYS:
        source = root.get_parameter_source(key)
        value = ctx.obj[key]
        if key == "token_file" and value is None:
            value = mapi.DEFAULT_TOKEN_FILE
        settings[key] = {"value": value, "from": names.get(source.name if source else "", "default")}

    def human():
        looked = f"none (looked for $MAUTHCTL_CONFIG, {mconfig.user_file()}, {mconfig.SYSTEM_FILE})"
        click.echo(f"configuration file: {path or looked}")
        _table(["SETTING", "VALUE", "FROM"],
               [[k, "-" if v["value"] is None else v["value"], v["from"]] for k, v in settings.items()])

    _emit(ctx, data, human)


@main.command("completion", epilog=examples(
    "mauthctl completion bash > /etc/bash_completion.d/mauthctl",
    "mauthctl completion zsh > \"${fpath[1]}/_mauthctl\"",
    "mauthctl completion fish > ~/.config/fish/completions/mauthctl.fish",
    'eval "$(mauthctl completion bash)"   # this shell only'))
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx, shell):
    """Print the shell completion script for SHELL (commands, options, and session ids from the server)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    click.echo(cls(main, {}, "mauthctl", "_MAUTHCTL_COMPLETE").source())


def _write_new(path: str, text: str) -> None:
    """Create `path` with mode 0600 and `text`, refusing to overwrite anything."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise Fail(f"{path} already exists; refusing to overwrite it", EXIT_USAGE) from None
    except OSError as exc:
        raise Fail(f"cannot create {path}: {exc.strerror}", EXIT_USAGE) from None
    with os.fdopen(fd, "w") as f:
        f.write(text)


@main.command("keygen", epilog=examples(
    "mauthctl keygen key /etc/mauth/router.key      # for musersd, mauthserver and mauthctl --router",
    "mauthctl keygen token /etc/mauth/api.token     # for mauthserver --token-file and mauthctl --server",
    "mauthctl keygen key /etc/mauth/router.key --rotate   # new current key first, old keys kept"))
@json_option
@click.argument("kind", type=click.Choice(["key", "token"]))
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--key-id", type=click.IntRange(1, 0xFFFF), metavar="N",
              help="Id of the new key (default 1, or one more than the largest with --rotate).")
@click.option("--rotate", is_flag=True, help="Add a new current key in front of the keys of an existing key file.")
@click.pass_context
def keygen(ctx, kind, file, key_id, rotate):
    """Create a secrets file (mode 0600): a protocol v2 KEY file, or an API TOKEN file.

    An existing file is never overwritten. With --rotate, the new key becomes
    the current one (the one clients sign with) and the old keys stay, so
    routers and clients can be moved over one at a time; remove the old line
    when all have the new file.
    """
    if kind == "token":
        if rotate or key_id:
            raise Fail("--rotate and --key-id are for key files", EXIT_USAGE)
        _write_new(file, secrets.token_urlsafe(32) + "\n")
        _emit(ctx, {"file": file, "kind": "token"}, lambda: click.echo(f"wrote API token file {file} (mode 0600)"))
        return
    if not rotate:
        kid = key_id or 1
        _write_new(file, "# mauth router key (protocol v2); the first key is the current one\n"
                         + format_key_line(kid, generate_secret()))
        _emit(ctx, {"file": file, "kind": "key", "key_id": kid},
              lambda: click.echo(f"wrote key file {file} with key id {kid} (mode 0600)"))
        return
    try:
        ring = load_keys(file)
        with open(file, encoding="utf-8") as f:
            old = f.read()
    except (KeyFileError, OSError) as exc:
        raise Fail(str(exc) if isinstance(exc, KeyFileError) else f"cannot read {file}: {exc.strerror}",
                   EXIT_USAGE) from None
    ids = list(ring.key_ids)
    kid = key_id or max(ids) + 1
    if kid in ids or kid > 0xFFFF:
        raise Fail(f"key id {kid} is already in {file} (or out of range); give another with --key-id", EXIT_USAGE)
    tmp = f"{file}.new"
    lines = old.splitlines(keepends=True)
    head = 0
    while head < len(lines) and (not lines[head].strip() or lines[head].lstrip().startswith("#")):
        head += 1  # keep the leading comments on top
    _write_new(tmp, "".join(lines[:head]) + format_key_line(kid, generate_secret()) + "".join(lines[head:]))
    os.replace(tmp, file)
    _emit(ctx, {"file": file, "kind": "key", "key_id": kid, "keys": [kid, *ids]},
          lambda: click.echo(f"{file}: new current key id {kid}; old keys {', '.join(map(str, ids))} kept"))


# =============================================================================
# announce: SAP from an SDP file (no server needed)
# =============================================================================


@main.command("announce", epilog=examples(
    "mauthctl announce session.sdp --source 192.0.2.10 --count 1",
    "mauthctl announce session.sdp --interval 30        # until Ctrl-C, then a deletion",
    "mauthctl announce session.sdp --delete"))
@json_option
@click.argument("sdpfile", type=click.Path(dir_okay=False))
@click.option("--interval", type=click.FloatRange(0.01, 86400), metavar="SECONDS",
              help="Seconds between announcements (default: RFC 2974's, at least 300 s, randomized).")
@click.option("--count", type=click.IntRange(0, None), default=0, show_default=True,
              help="Announcements to send (0: until interrupted, then a deletion).")
@click.option("--delete", is_flag=True, help="Send deletions of the session instead (--count of them, default 1).")
@click.option("--source", metavar="ADDR", help="Send from this address, and name it as the announcer"
                                              " (default: the o= address as announcer).")
@click.option("--group", "groups", multiple=True, metavar="ADDR",
              help="SAP group (repeatable; default: the SAP group of the session's scope).")
@click.option("--ttl", type=click.IntRange(1, 255), help="TTL of the SAP packets (default: 255 for"
                                                         " admin-scoped and IPv6 sessions, else the largest"
                                                         " c= TTL).")
@click.option("--port", type=click.IntRange(1, 65535), default=SAP_PORT, show_default=True)
@click.option("--iface", metavar="IF", help="Send on this interface.")
@click.pass_context
def announce(ctx, sdpfile, interval, count, delete, source, groups, ttl, port, iface):
    """Announce the session in SDPFILE with SAP on the standard SAP groups."""
    import signal

    from sap import announcer as ann

    try:
        with open(sdpfile, "rb") as f:
            sdp = f.read()
    except OSError as exc:
        raise Fail(f"cannot read {sdpfile}: {exc.strerror}", EXIT_USAGE) from None
    try:
        plan = ann.plan(sdp, origin=source, groups=list(groups) or None, ttl=ttl)
    except ann.AnnounceError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None
    if delete and not count:
        count = 1
    try:
        sender = ann.Announcer(plan, source=source, port=port, iface=iface)
    except OSError as exc:
        raise Fail(f"cannot send SAP{' from ' + source if source else ''}: {exc.strerror or exc}",
                   EXIT_USAGE) from None

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    info = {"session": plan.description.name, "origin": str(plan.origin), "groups": [str(g) for g in plan.groups],
            "ttl": plan.ttl, "msg_id_hash": plan.msg_id_hash, "kind": "deletion" if delete else "announcement"}

    def progress(kind, n):
        if not ctx.obj["json"]:
            click.echo(f"{kind} {n} of {plan.description.name!r} sent to "
                       f"{', '.join(str(g) for g in plan.groups)} port {port}", err=True)

    try:
        rounds = ann.run(sender, count=count, interval=interval, delete=delete, on_send=progress)
    except KeyboardInterrupt:
        rounds = None
    except OSError as exc:
        raise Fail(f"sending SAP failed: {exc.strerror or exc}", EXIT_UNREACHABLE) from None
    finally:
        sender.close()
    info["sent"] = rounds
    _emit(ctx, info, lambda: None)


if __name__ == "__main__":
    main()
