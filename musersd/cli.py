"""musersd command line (its manual page: docs/man/musersd.1, made by `make man`).

Errors are one sentence on stderr and a non-zero exit status: 2 for a bad
command line or configuration, 1 for a failure at run time.
"""

from __future__ import annotations

import logging
import sys

import click

from mauthcore.constants import ROUTER_PORT

from .daemon import DEFAULT_LEGACY_ALLOW, Musersd, Options, StartupError, parse_listen, parse_sap_groups
from .defaults import (
    DEFAULT_DENIED_SERIES,
    DEFAULT_QUEUE_NUM,
    DEFAULT_RULE_SERIES,
    DEFAULT_STATE_DIR,
    MetricsError,
    parse_metrics_address,
)

EPILOG = f"""\b
Examples:
  musersd --iface eth1 --key-file /etc/mauth/router.key
  musersd --iface eth1 --iface eth2 --config /etc/mauth/mauth.conf --mode monitor
  musersd --iface eth1 --listen 0.0.0.0:{ROUTER_PORT} --key-file /etc/mauth/router.key \\
          --legacy-allow 192.0.2.5/32
  musersd --iface eth1 --backend nfqueue --key-file /etc/mauth/router.key   # where XDP cannot be used

SIGHUP re-reads --config and --key-file; SIGTERM stops the daemon and leaves
the filter enforcing the last rules (unless --detach-on-exit).
"""


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--iface", "ifaces", multiple=True, required=True, metavar="IF",
              help="Internal interface to guard (repeatable).")
@click.option("--listen", default=f"127.0.0.1:{ROUTER_PORT}", show_default=True, metavar="HOST:PORT",
              help="UDP address for the command protocol.")
@click.option("--key-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Pre-shared keys for protocol v2 (without it, only v1 is served).")
@click.option("--legacy-allow", multiple=True, metavar="CIDR",
              help=f"Client addresses allowed to use unauthenticated protocol v1 "
                   f"(repeatable; default {', '.join(DEFAULT_LEGACY_ALLOW)}).")
@click.option("--config", type=click.Path(dir_okay=False), metavar="FILE",
              help="Rule file (mauth.conf: SOURCE[/LEN] GROUP[/LEN] MAX-TTL [pps=N] [bps=N] per line; receiver "
                   "and interface lines for joins), applied at start and on SIGHUP.")
@click.option("--mode", type=click.Choice(["enforce", "monitor"]),
              help="Filter mode; default: keep the pinned mode (enforce for a new router).")
@click.option("--pin-dir", default="/sys/fs/bpf/mauth", show_default=True, metavar="DIR",
              help="bpffs directory where the filter's maps are pinned.")
@click.option("--max-rules", type=click.IntRange(1, 16 * 1024 * 1024), metavar="N",
              help="Rule table capacity for new maps (default: the pinned size, or 65536).")
@click.option("--denied-pairs", type=click.IntRange(0, 1024 * 1024), metavar="N",
              help="Denied (source, group) pairs the filter records, per address family, in new maps (default: "
                   "the pinned size, or 4096); 0 records none (drops are still counted by reason), which makes "
                   "each drop under a flood about 12 % cheaper.")
@click.option("--xdp-mode", type=click.Choice(["auto", "native", "generic"]), default="auto", show_default=True,
              help="XDP attach mode; auto tries native, then generic.")
@click.option("--sap-group", "sap_groups", multiple=True, metavar="ADDR",
              help="SAP group whose announcements from senders without a rule reach this router with TTL "
                   "(hop limit) 1, never forwarded, so a local mauthserver hears every announcer; repeat for up "
                   "to 4 per address family; 'none' turns the exception off. Default: 224.2.127.254, "
                   "239.255.255.255, 239.195.255.255, ff05::2:7ffe, ff08::2:7ffe, ff0e::2:7ffe.")
@click.option("--metrics", metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (off by default; they name senders "
                   "and groups, so bind to loopback or a management address, e.g. 127.0.0.1:9575).")
@click.option("--metrics-rules", type=click.IntRange(0, 16 * 1024 * 1024), default=DEFAULT_RULE_SERIES,
              show_default=True, metavar="N",
              help="Export per-rule series while the table holds at most N rules (0: never).")
@click.option("--metrics-denied", type=click.IntRange(0, 100000), default=DEFAULT_DENIED_SERIES,
              show_default=True, metavar="N", help="Export per-pair series for the N denied pairs with the most "
                                                   "packets (0: none).")
@click.option("--backend", type=click.Choice(["xdp", "nfqueue"]), default="xdp", show_default=True,
              help="Where the policy is enforced: the XDP filter, or (where XDP cannot be used) user space through "
                   "iptables -j NFQUEUE; nfqueue drops guarded multicast while musersd is down and removes its "
                   "iptables rules on SIGTERM.")
@click.option("--queue-num", type=click.IntRange(0, 65535), default=DEFAULT_QUEUE_NUM, show_default=True,
              metavar="N", help="NFQUEUE number used by --backend nfqueue.")
@click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True, metavar="DIR",
              help="Directory where --backend nfqueue keeps its rules across restarts.")
@click.option("--rpf-iface", "rpf_ifaces", multiple=True, metavar="IF",
              help="A guarded interface on which every rule's packets must route back through it, bound or not"
                   " (repeatable, at most 8; needs forwarding on there: docs/operations.md, \"Binding a sender\").")
@click.option("--group-timeout", type=click.FloatRange(1, 86400), default=260.0, show_default=True, metavar="SECONDS",
              help="A group joined on a guarded interface is forgotten (and frees a place of the interface's group "
                   "limit) when no report has refreshed it for this long: the group membership interval.")
@click.option("--leave-grace", type=click.FloatRange(0, 3600), default=3.0, show_default=True, metavar="SECONDS",
              help="A group left on a guarded interface is forgotten this long after its leave, unless a report "
                   "joins it again meanwhile.")
@click.option("--detach-on-exit", is_flag=True, help="Remove the filter on SIGTERM instead of leaving it enforcing.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
def main(ifaces, listen, key_file, legacy_allow, config, mode, pin_dir, max_rules, denied_pairs, xdp_mode, sap_groups,
         backend,
         queue_num, state_dir, rpf_ifaces, group_timeout, leave_grace, detach_on_exit,
         metrics, metrics_rules, metrics_denied, log_level):
    """Guard a multicast router's internal interfaces with the mauth XDP filter and serve its rules."""
    logging.basicConfig(level=getattr(logging, log_level.upper()), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        opts = Options(
            ifaces=list(ifaces),
            listen=parse_listen(listen),
            key_file=key_file,
            legacy_allow=list(legacy_allow) if legacy_allow else list(DEFAULT_LEGACY_ALLOW),
            config=config,
            mode=mode,
            pin_dir=pin_dir,
            max_rules=max_rules,
            denied_pairs=denied_pairs,
            xdp_mode=xdp_mode,
            sap_groups=parse_sap_groups(sap_groups),
            detach_on_exit=detach_on_exit,
            backend=backend,
            queue_num=queue_num,
            state_dir=state_dir,
            metrics=parse_metrics_address(metrics) if metrics else None,
            metrics_rules=metrics_rules,
            metrics_denied=metrics_denied,
            rpf_ifaces=list(rpf_ifaces),
            group_timeout=group_timeout,
            leave_grace=leave_grace,
        )
        daemon = Musersd(opts)
        daemon.start()
    except (StartupError, MetricsError) as exc:
        click.echo(f"musersd: {exc}", err=True)
        sys.exit(2)
    try:
        code = daemon.serve()
    except Exception:
        logging.getLogger("musersd").exception("unexpected error, exiting so that the service manager restarts us")
        code = 1
    finally:
        daemon.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
