"""mauthctl: the administrator's command line.

Direct mode (`--router HOST:PORT`, the paper's section 3.3) talks to one
router's musersd with protocol v2 (`--key-file`) or v1 (`--v1`).
Server mode (`--server URL`, section 3.4) talks to mauthserver's HTTP API
(`mauthclient.api`, bearer token from `--token-file`): the same rule
commands then apply to every router, and the session commands (`sessions`,
`authorize`, `revoke`, `routers`, `events`) become available. `announce`
needs neither: it sends SAP announcements of an SDP file itself.

Exit status: 0 success; 1 the router or server refused the command (the
error reply is printed); 2 bad usage or configuration; 3 the router or
server did not answer. Errors are one sentence on stderr. `--json` prints
machine-readable output on every listing command.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import click

from mauthclient import api as mapi
from musersd.config import ConfigError, load_rules
from musersd.daemon import DEFAULT_PORT
from musersd.hostport import HostPortError, parse_hostport
from musersd.protocol.errors import LocalProtocolError, ProtocolError, RouterError, Timeout
from musersd.protocol.keys import KeyFileError, load_keys
from musersd.protocol.udp import RouterClient
from musersd.rules import Rule, RuleError, RuleKey
from musersd.secretfile import SecretFileError, load_token

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


class Fail(click.ClickException):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.exit_code = code

    def show(self, file=None) -> None:
        click.echo(f"mauthctl: {self.message}", err=True)


def _router_addr(text: str) -> tuple[str, int]:
    try:
        return parse_hostport(text, "router address", DEFAULT_PORT)
    except HostPortError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None


@contextmanager
def _client(ctx):
    o = ctx.obj
    if not o["router"]:
        raise Fail("give --router HOST:PORT (direct mode) or --server URL (mauthserver)", EXIT_USAGE)
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
        raise Fail(f"{ctx.info_name} needs --server URL (mauthserver)", EXIT_USAGE)
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
  mauthctl --router 192.0.2.1:7575 --key-file /etc/mauth/router.key add-sender 192.0.2.10 239.1.1.1 --max-ttl 16
  mauthctl --router 192.0.2.1:7575 --key-file /etc/mauth/router.key --json list
  mauthctl --router 127.0.0.1 --v1 del-sender 192.0.2.10 239.1.1.1
  mauthctl check-config /etc/mauth/mauth.conf

  mauthctl --server http://127.0.0.1:7580 --token-file /etc/mauth/api.token --json sessions
  mauthctl --server http://127.0.0.1:7580 --token-file /etc/mauth/api.token authorize 3fa2 --expire-with-session
  mauthctl announce session.sdp --source 192.0.2.10 --count 1

Exit status: 0 ok, 1 refused by the router or server, 2 bad usage, 3 router or server unreachable.
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
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
    """Manage who may send multicast through mauth-guarded routers."""
    ctx.obj = dict(router=router, server=server, token_file=token_file, key_file=key_file, v1=v1, json=as_json,
                   timeout=timeout, tries=tries, http_timeout=http_timeout)


@main.command("add-sender")
@click.argument("source")
@click.argument("group")
@click.option("--max-ttl", required=True, help="Largest TTL the sender may use (1-255).")
@click.option("--replace", is_flag=True, help="Overwrite an existing rule instead of failing.")
@click.pass_context
def add_sender(ctx, source, group, max_ttl, replace):
    """Authorize SOURCE to send to GROUP with a TTL of at most --max-ttl."""
    rule = _rule(source, group, max_ttl)
    if _server_mode(ctx):
        with _server(ctx) as api:
            out = api.add_rule(str(rule.source), str(rule.group), rule.max_ttl, replace=replace)
        _emit(ctx, out, lambda: click.echo(f"{out['result']}: {rule} (committed; routers: "
                                           f"{_router_states(out['rule'])})"))
        return
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
    if _server_mode(ctx):
        with _server(ctx) as api:
            out = api.remove_rule(str(key.source), str(key.group))
        _emit(ctx, out, lambda: click.echo(f"removed: {key} (committed; routers follow)"))
        return
    with _client(ctx) as c:
        c.remove(key)
    _emit(ctx, {"result": "removed", "source": str(key.source), "group": str(key.group)},
          lambda: click.echo(f"removed: {key}"))


@main.command("list")
@click.pass_context
def list_rules(ctx):
    """List the router's rules with their counters (with --server: the desired rules and each router's state)."""
    if _server_mode(ctx):
        with _server(ctx) as api:
            rules = api.rules()
        _emit(ctx, rules, lambda: _table(
            ["SOURCE", "GROUP", "MAX-TTL", "STATE", "ROUTERS", "SESSION", "PACKETS", "BYTES"],
            [[r["source"], r["group"], r["max_ttl"], r["state"], _router_states(r), r.get("session") or "-",
              r.get("packets", 0), r.get("bytes", 0)] for r in rules]))
        return
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
    if _server_mode(ctx):
        raise Fail("each router keeps its own list of denied senders: use --router HOST:PORT", EXIT_USAGE)
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


@main.command("mode")
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


@main.command("flush")
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


# =============================================================================
# server mode only: sessions and the fleet
# =============================================================================


@main.command("sessions")
@click.pass_context
def sessions(ctx):
    """List the sessions announced with SAP that mauthserver has heard."""
    with _server(ctx) as api:
        data = api.sessions()

    def human():
        _table(["ID", "NAME", "ORIGIN", "ANNOUNCER", "GROUPS", "SOURCES", "LAST HEARD", "EXPIRES"],
               [[s["id"], s["name"], s["origin"], s["announcer"],
                 ",".join(f"{g['address']}/{g['ttl']}" if g.get("ttl") is not None else g["address"]
                          for g in s["groups"]) or "-",
                 ",".join(s["sources"]) or "any", _ago(s["last_heard"]), _ago(s["expires"])] for s in data])

    _emit(ctx, data, human)


@main.command("authorize")
@click.argument("session")
@click.option("--sender", "senders", multiple=True, metavar="ADDR",
              help="Sender to authorize on every group of the session (repeatable); required for an"
                   " any-source session, otherwise it replaces the senders the session declares.")
@click.option("--max-ttl", type=click.IntRange(1, 255), help="Max TTL instead of each group's c= TTL.")
@click.option("--expire-with-session", is_flag=True, help="Remove these rules when the session ends.")
@click.option("--replace", is_flag=True, help="Overwrite existing rules with another max TTL.")
@click.pass_context
def authorize(ctx, session, senders, max_ttl, expire_with_session, replace):
    """Turn announced SESSION (id or unique prefix) into sender rules on every router."""
    with _server(ctx) as api:
        out = api.authorize(session, senders=list(senders), max_ttl=max_ttl,
                            expire_with_session=expire_with_session, replace=replace)

    def human():
        click.echo(f"session {out['session']} ({out['name']}): {len(out['rules'])} rules"
                   f" ({out['changed']} new or changed)")
        for r in out["rules"]:
            click.echo(f"  {r['source']} -> {r['group']} max-ttl {r['max_ttl']}"
                       f"{' (expires with the session)' if r.get('expire_with_session') else ''}")
        for sk in out["skipped"]:
            click.echo(f"  skipped {sk.get('source', '*')} -> {sk['group']}: {sk['reason']}")

    _emit(ctx, out, human)


@main.command("revoke")
@click.argument("args", nargs=-1, required=True, metavar="SESSION | SOURCE GROUP")
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


@main.command("routers")
@click.pass_context
def routers(ctx):
    """Show each router's state as mauthserver sees it."""
    with _server(ctx) as api:
        data = api.routers()
    _emit(ctx, data, lambda: _table(
        ["NAME", "ADDRESS", "STATE", "PENDING", "RULES", "MODE", "LAST CONTACT", "LAST ERROR"],
        [[r["name"], r["address"], r["state"], r["pending"], r["rule_count"] if r["rule_count"] is not None else "-",
          r["mode"] or "-", _ago(r["last_contact"]), r["last_error"] or "-"] for r in data]))


@main.command("audit")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.pass_context
def audit(ctx, limit):
    """Show who changed what and when, newest first."""
    with _server(ctx) as api:
        data = api.audit(limit)
    _emit(ctx, data, lambda: _table(
        ["ID", "WHEN", "ACTOR", "ACTION", "DETAIL"],
        [[e["id"], time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"])), e["actor"], e["action"],
          json.dumps(e["detail"], sort_keys=True)[:80]] for e in data]))


@main.command("events")
@click.option("--count", type=click.IntRange(0, None), default=0, help="Stop after this many events (0: follow).")
@click.option("--last-id", metavar="ID", help="Resume after this event id.")
@click.pass_context
def events(ctx, count, last_id):
    """Follow mauthserver's event stream (sessions, rules, routers), one line per event."""
    seen = 0
    with _server(ctx) as api:
        try:
            for ev_id, kind, data in api.events(last_id, timeout=max(60.0, ctx.obj["http_timeout"])):
                if kind == "hello":
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
    if kind.startswith("session."):
        s = data.get("session", {})
        extra = f" ({data['reason']})" if "reason" in data else ""
        return f"{s.get('id')} {s.get('name')!r} from {s.get('announcer')}{extra}"
    if kind.startswith("rule."):
        r = data.get("rule", {})
        return f"{r.get('source')} -> {r.get('group')} max-ttl {r.get('max_ttl')} by {data.get('actor')}"
    if kind == "router.changed":
        return f"{data.get('name')} {data.get('state')} pending {data.get('pending')}"
    return json.dumps(data, sort_keys=True)


# =============================================================================
# announce: SAP from an SDP file (no server needed)
# =============================================================================


@main.command("announce")
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
                                                         " admin-scoped sessions, else the largest c= TTL).")
@click.option("--port", type=click.IntRange(1, 65535), default=9875, show_default=True)
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
