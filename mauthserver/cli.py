"""mauthserver command line (its manual page: docs/man/mauthserver.1, made by `make man`).

Errors are one sentence on stderr and a non-zero exit status: 2 for a bad
command line, configuration, secrets file or database, 1 for a failure at
run time (an unexpected exception: systemd's Restart= takes over).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys

import click

from mauthcore.constants import ROUTER_PORT, SAP_PORT
from sap.directory import DEFAULT_MAX_SESSIONS

from .config import (
    DEFAULT_API,
    DEFAULT_AUDIT_MAX_AGE,
    DEFAULT_AUDIT_MAX_ROWS,
    DEFAULT_DB,
    DEFAULT_LEGACY_ALLOW,
    DEFAULT_LISTEN,
    DEFAULT_TOKEN_FILE,
    MAX_MAX_SESSIONS,
    ConfigError,
    Options,
    load_key_file,
    load_token,
    parse_advertise,
    parse_audit_max_age,
    parse_audit_max_rows,
    parse_cidrs,
    parse_hostport,
    parse_routers,
)
from .sapl import DEFAULT_SAP_GROUPS, parse_groups
from .store import is_postgresql_url

EPILOG = f"""\b
Examples:
  mauthserver --router r1=192.0.2.1:7575 --router r2=192.0.2.65:7575 \\
              --key-file /etc/mauth/router.key --token-file /etc/mauth/api.token
  mauthserver --db /var/lib/mauth/mauthserver.db --api 0.0.0.0:7580 --sap-group 239.255.255.255 ...

\b
The API (for mauthctl --server and the dashboard) is at http://HOST:PORT/api/v1/;
its OpenAPI description at /api/v1/openapi.json. The router protocol (v2 with
--key-file, v1 from --legacy-allow addresses) is served on --listen for the
whole fleet. SIGHUP re-reads --token-file and --key-file. The audit log
('mauthctl audit') keeps --audit-max-age days and --audit-max-rows rows at
most; each pruning pass is an audit-pruned row in it.
Default SAP groups: {", ".join(DEFAULT_SAP_GROUPS)}.
"""




@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", default=DEFAULT_DB, show_default=True, metavar="PATH|URL",
              help="Database holding rules, routers, sessions and the audit log: a SQLite file, or a PostgreSQL"
                   " URL postgresql://[USER@]HOST[:PORT]/DBNAME[?PARAM=VALUE...] without password.")
@click.option("--db-password-file", metavar="FILE",
              help="Password of a PostgreSQL --db (first line; mode 600; default: libpq's PGPASSFILE or"
                   " ~/.pgpass).")
@click.option("--api", "api_addr", default=DEFAULT_API, show_default=True, metavar="HOST:PORT",
              help="Address of the HTTP API.")
@click.option("--token-file", default=DEFAULT_TOKEN_FILE, show_default=True, metavar="FILE",
              help="Bearer token of the API (first line; mode 600).")
@click.option("--router", "routers", multiple=True, metavar="NAME=HOST:PORT",
              help=f"A router's musersd to manage (repeatable; port defaults to {ROUTER_PORT}).")
@click.option("--key-file", metavar="FILE",
              help="Pre-shared keys of the router protocol v2 (needed with --router).")
@click.option("--sap-group", "sap_groups", multiple=True, metavar="ADDR",
              help="SAP group to listen on (repeatable; replaces the default list).")
@click.option("--sap-port", type=click.IntRange(1, 65535), default=SAP_PORT, show_default=True,
              help="UDP port of SAP.")
@click.option("--sap-iface", "sap_ifaces", multiple=True, metavar="IF",
              help="Join the SAP groups on these interfaces only (repeatable; default: every multicast one).")
@click.option("--no-sap", is_flag=True, help="Do not listen for session announcements.")
@click.option("--sap-timeout", type=click.FloatRange(1, None), metavar="SECONDS",
              help="Drop a session not heard for this long (default: RFC 2974's ten announcement periods"
                   " or one hour, whichever is greater).")
@click.option("--max-sessions", type=click.IntRange(1, MAX_MAX_SESSIONS), default=DEFAULT_MAX_SESSIONS,
              show_default=True, metavar="N",
              help="Announced sessions to hold; when a new one arrives with the directory full, the least"
                   " recently heard session is dropped from it (counted as evicted; its rules stay).")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT|off",
              help="UDP address where the router protocol is served for the whole fleet.")
@click.option("--legacy-allow", multiple=True, metavar="CIDR",
              help=f"Clients allowed to use the unauthenticated protocol v1 on --listen "
                   f"(repeatable; default {', '.join(DEFAULT_LEGACY_ALLOW)}).")
@click.option("--probe-interval", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True,
              metavar="SECONDS", help="HELLO each router this often, to notice restarts.")
@click.option("--verify-interval", type=click.FloatRange(0, None), default=60.0, show_default=True,
              metavar="SECONDS", help="List each router's rules this often to check them (0: only when needed).")
@click.option("--retry-max", type=click.FloatRange(0.5, 3600), default=10.0, show_default=True,
              metavar="SECONDS", help="Longest back-off between attempts to reach a router.")
@click.option("--router-timeout", type=click.FloatRange(0.01, 10), default=0.25, show_default=True,
              metavar="SECONDS", help="First retransmission timeout of a router call.")
@click.option("--router-tries", type=click.IntRange(1, 20), default=5, show_default=True,
              help="Transmissions of a router call before the router counts as unreachable.")
@click.option("--metrics", "metrics_addr", metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics, without the API token (off by "
                   "default; bind to loopback or a management address, e.g. 127.0.0.1:9576).")
@click.option("--denied-interval", type=click.FloatRange(0, 3600), default=5.0, show_default=True,
              metavar="SECONDS", help="List each router's denied senders this often and report new ones on the "
                                      "event stream and in the log, rate-limited (0: never).")
@click.option("--instance", metavar="NAME",
              help="This instance's name in the leader row of a shared PostgreSQL database (default: the host "
                   "name).")
@click.option("--advertise", metavar="URL",
              help="The API URL other instances forward commands to while this one leads (default: http://"
                   "--api, or this host's name and the API port when --api is a wildcard address).")
@click.option("--lease", type=click.FloatRange(1, 60), default=3.0, show_default=True, metavar="SECONDS",
              help="With a shared PostgreSQL database: how long a leader's lease lasts without renewal; a "
                   "standby takes over about SECONDS x 4/3 after the leader's last renewal.")
@click.option("--audit-max-age", default=str(DEFAULT_AUDIT_MAX_AGE), show_default=True, metavar="DAYS",
              help="Delete audit log rows older than this, oldest first, at start-up and hourly (0: keep every "
                   "row). Nothing but expired audit rows is ever deleted.")
@click.option("--audit-max-rows", default=str(DEFAULT_AUDIT_MAX_ROWS), show_default=True, metavar="N",
              help="Keep at most this many audit log rows, deleting the oldest (0: no limit; else at least 100).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
def main(db, db_password_file, api_addr, token_file, routers, key_file, sap_groups, sap_port, sap_ifaces, no_sap,
         sap_timeout, max_sessions, listen, legacy_allow, probe_interval, verify_interval, retry_max, router_timeout,
         router_tries, metrics_addr, denied_interval, instance, advertise, lease, audit_max_age, audit_max_rows,
         log_level):
    """Mediate between the administrator and the routers: sessions, rules, fan-out, recovery."""
    logging.basicConfig(level=getattr(logging, log_level.upper()), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from .daemon import Daemon, StartupError

    try:
        api = parse_hostport(api_addr, "--api")
        opts = Options(
            db=db,
            db_password_file=db_password_file,
            api=api,
            token_file=token_file,
            routers=parse_routers(routers),
            key_file=key_file,
            sap_groups=_groups(sap_groups),
            sap_port=sap_port,
            sap_ifaces=list(sap_ifaces) or None,
            sap=not no_sap,
            sap_timeout=sap_timeout,
            max_sessions=max_sessions,
            listen=None if listen.strip().lower() in ("off", "none", "") else parse_hostport(listen, "--listen"),
            legacy_allow=parse_cidrs(legacy_allow) if legacy_allow else list(DEFAULT_LEGACY_ALLOW),
            probe_interval=probe_interval,
            verify_interval=verify_interval,
            retry_max=retry_max,
            router_timeout=router_timeout,
            router_tries=router_tries,
            metrics=parse_hostport(metrics_addr, "--metrics") if metrics_addr else None,
            denied_interval=denied_interval,
            instance=_instance(instance),
            advertise=parse_advertise(advertise, api),
            lease=lease,
            audit_max_age=parse_audit_max_age(audit_max_age),
            audit_max_rows=parse_audit_max_rows(audit_max_rows),
        )
        if db_password_file is not None and not is_postgresql_url(db):
            raise ConfigError("--db-password-file is for a PostgreSQL --db URL; a SQLite database has no password")
        token = load_token(token_file)
        keys = load_key_file(key_file) if key_file else None
        if opts.routers and keys is None:
            raise ConfigError("managing routers needs --key-file (the routers' protocol v2 keys)")
    except ConfigError as exc:
        click.echo(f"mauthserver: {exc}", err=True)
        sys.exit(2)
    daemon = Daemon(opts, token, keys)
    try:
        code = asyncio.run(daemon.run())
    except StartupError as exc:
        click.echo(f"mauthserver: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        code = 0
    except Exception:
        logging.getLogger("mauthserver").exception(
            "unexpected error, exiting so that the service manager restarts us")
        code = 1
    sys.exit(code)


def _instance(text: str | None) -> str | None:
    if text is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text):
        raise ConfigError(f"--instance {text!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return text


def _groups(texts) -> list:
    try:
        return parse_groups(texts or DEFAULT_SAP_GROUPS)
    except ValueError as exc:
        raise ConfigError(f"--sap-group: {exc}") from None


if __name__ == "__main__":
    main()
