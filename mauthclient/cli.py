"""mauthctl: the administrator's command line.

Direct mode (`--router HOST:PORT`, the paper's section 3.3) talks to one
router's musersd with protocol v2 (`--key-file`) or v1 (`--v1`).

Exit status: 0 success; 1 the router refused the command (the error reply
is printed); 2 bad usage or configuration; 3 the router did not answer.
Errors are one sentence on stderr. `--json` prints machine-readable output
on every listing command.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager

import click

from musersd.config import ConfigError, load_rules
from musersd.daemon import DEFAULT_PORT
from musersd.protocol.errors import LocalProtocolError, ProtocolError, RouterError, Timeout
from musersd.protocol.keys import KeyFileError, load_keys
from musersd.protocol.udp import RouterClient
from musersd.rules import Rule, RuleError, RuleKey

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


class Fail(click.ClickException):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.exit_code = code

    def show(self, file=None) -> None:
        click.echo(f"mauthctl: {self.message}", err=True)


def _router_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(DEFAULT_PORT)
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise Fail(f"router address {text!r} is not HOST:PORT", EXIT_USAGE)
    return host, int(port)


@contextmanager
def _client(ctx):
    o = ctx.obj
    if not o["router"]:
        raise Fail("give --router HOST:PORT (direct mode)", EXIT_USAGE)
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


def _rule(source, group, max_ttl) -> Rule:
    try:
        return Rule.make(source, group, max_ttl)
    except RuleError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None


def _key(source, group) -> RuleKey:
    try:
        return RuleKey.make(source, group)
    except RuleError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None


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


EPILOG = """\b
Examples:
  mauthctl --router 192.0.2.1:7575 --key-file /etc/mauth/router.key add-sender 192.0.2.10 239.1.1.1 --max-ttl 16
  mauthctl --router 192.0.2.1:7575 --key-file /etc/mauth/router.key --json list
  mauthctl --router 127.0.0.1 --v1 del-sender 192.0.2.10 239.1.1.1
  mauthctl check-config /etc/mauth/mauth.conf

Exit status: 0 ok, 1 refused by the router, 2 bad usage, 3 router unreachable.
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--router", metavar="HOST:PORT", envvar="MAUTH_ROUTER", help="Talk directly to this musersd.")
@click.option("--key-file", type=click.Path(dir_okay=False), envvar="MAUTH_KEY_FILE", metavar="FILE",
              help="Pre-shared key file for protocol v2.")
@click.option("--v1", is_flag=True, help="Use the unauthenticated protocol v1 (add/del-sender only).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", type=float, default=0.5, show_default=True, help="First retransmission timeout (s).")
@click.option("--tries", type=click.IntRange(1, 20), default=6, show_default=True, help="Transmissions per call.")
@click.pass_context
def main(ctx, router, key_file, v1, as_json, timeout, tries):
    """Manage who may send multicast through mauth-guarded routers."""
    ctx.obj = dict(router=router, key_file=key_file, v1=v1, json=as_json, timeout=timeout, tries=tries)


@main.command("add-sender")
@click.argument("source")
@click.argument("group")
@click.option("--max-ttl", required=True, help="Largest TTL the sender may use (1-255).")
@click.option("--replace", is_flag=True, help="Overwrite an existing rule instead of failing.")
@click.pass_context
def add_sender(ctx, source, group, max_ttl, replace):
    """Authorize SOURCE to send to GROUP with a TTL of at most --max-ttl."""
    rule = _rule(source, group, max_ttl)
    with _client(ctx) as c:
        if replace:
            created = c.replace(rule)
            verb = "added" if created else "replaced"
        else:
            c.add(rule)
            verb = "added"
    _emit(ctx, {"result": verb, "source": str(rule.source), "group": str(rule.group), "max_ttl": rule.max_ttl},
          lambda: click.echo(f"{verb}: {rule}"))


@main.command("del-sender")
@click.argument("source")
@click.argument("group")
@click.pass_context
def del_sender(ctx, source, group):
    """Remove the authorization of SOURCE to send to GROUP."""
    key = _key(source, group)
    with _client(ctx) as c:
        c.remove(key)
    _emit(ctx, {"result": "removed", "source": str(key.source), "group": str(key.group)},
          lambda: click.echo(f"removed: {key}"))


@main.command("list")
@click.pass_context
def list_rules(ctx):
    """List the router's rules with their counters."""
    with _client(ctx) as c:
        entries = c.list_all()
    data = [{"source": str(e.rule.source), "group": str(e.rule.group), "max_ttl": e.rule.max_ttl,
             "packets": e.packets, "bytes": e.octets, "last_seen": e.last_seen / 1000 if e.last_seen else None}
            for e in entries]
    _emit(ctx, data, lambda: _table(
        ["SOURCE", "GROUP", "MAX-TTL", "PACKETS", "BYTES", "LAST SEEN"],
        [[e.rule.source, e.rule.group, e.rule.max_ttl, e.packets, e.octets, _when(e.last_seen)] for e in entries]))


@main.command("denied")
@click.pass_context
def denied(ctx):
    """List the (source, group) pairs the filter is dropping (or would drop, in monitor mode)."""
    with _client(ctx) as c:
        entries = c.denied_all()
    data = [{"source": str(d.source), "group": str(d.group), "reason": str(d.reason), "packets": d.packets,
             "bytes": d.octets, "last_ttl": d.last_ttl, "last_seen": d.last_seen / 1000 if d.last_seen else None}
            for d in entries]
    _emit(ctx, data, lambda: _table(
        ["SOURCE", "GROUP", "REASON", "PACKETS", "BYTES", "LAST TTL", "LAST SEEN"],
        [[d.source, d.group, d.reason, d.packets, d.octets, d.last_ttl, _when(d.last_seen)] for d in entries]))


@main.command("stats")
@click.pass_context
def stats(ctx):
    """Show the router's mode, rule count and per-reason counters."""
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


@main.command("mode")
@click.argument("mode", required=False, type=click.Choice(["enforce", "monitor"]))
@click.pass_context
def mode(ctx, mode):
    """Show the filter mode, or set it to enforce or monitor."""
    with _client(ctx) as c:
        now = c.mode(mode)
    _emit(ctx, {"mode": str(now)}, lambda: click.echo(str(now)))


@main.command("flush")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def flush(ctx, yes):
    """Remove every rule from the router (all authorized multicast stops)."""
    if not yes and not click.confirm("Remove every rule from the router?", err=True):
        raise Fail("flush cancelled", EXIT_USAGE)
    with _client(ctx) as c:
        n = c.flush()
    _emit(ctx, {"removed": n}, lambda: click.echo(f"removed {n} rules"))


@main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def check_config(ctx, file):
    """Check a musersd rule file (mauth.conf) without applying it."""
    try:
        rf = load_rules(file)
    except ConfigError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None
    _emit(ctx, {"file": rf.path, "rules": len(rf.rules)},
          lambda: click.echo(f"{rf.path}: {len(rf.rules)} rules, OK"))


if __name__ == "__main__":
    main()
