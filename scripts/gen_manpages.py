#!/usr/bin/env python3
"""Write the manual pages of musersd, mauthserver and mauthctl from their click definitions.

    python scripts/gen_manpages.py [--out DIR] [--check]

Strategy: the command-line definitions are the single source of truth, so
the pages are generated from the very click objects the programs run:
usage, description, every option with its help and default, each mauthctl
command, and the epilogs (examples, signals, exit status). What click does
not know (files, see also) is a short table here. The output carries the
package version but no date, so regenerating an unchanged CLI gives the same
bytes: `--check` (and tests/unit/test_systemd_units.py) compare the committed
pages with a fresh rendering and fail when a CLI changed without `make man`.

Why not click-man: it leaves out click epilogs, where these programs keep
their examples, signals and exit statuses; it writes click's `\\b`
no-rewrap markers and lines starting with '.' into the roff unescaped; and it
stamps the build date into every page.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "man"

# name -> (import path of the click command, FILES entries, SEE ALSO entries)
PAGES: dict[str, tuple[str, list[tuple[str, str]], list[str]]] = {
    "musersd": (
        "musersd.cli:main",
        [
            ("/etc/mauth/musersd.env", "Settings of musersd.service: interfaces, listen address, other flags."),
            ("/etc/mauth/router.key", "Pre-shared keys of protocol v2 (mode 0600)."),
            ("/sys/fs/bpf/mauth/", "The filter's pinned maps; they outlive musersd and keep enforcing."),
        ],
        ["mauthserver(1)", "mauthctl(1)", "smcrouted(8)", "bpftool(8)", "systemd.service(5)"],
    ),
    "mauthserver": (
        "mauthserver.cli:main",
        [
            ("/etc/mauth/mauthserver.env", "Settings of mauthserver.service: API address, routers, other flags."),
            ("/etc/mauth/api.token", "Bearer token of the HTTP API (mode 0600)."),
            ("/etc/mauth/router.key", "Pre-shared keys of the router protocol v2 (mode 0600)."),
            ("/var/lib/mauth/mauthserver.db", "SQLite database (WAL): rules, routers, sessions, audit log."),
        ],
        ["musersd(1)", "mauthctl(1)", "sqlite3(1)", "systemd.service(5)"],
    ),
    "mauthctl": (
        "mauthclient.cli:main",
        [
            ("/etc/mauth/mauthctl.toml", "System-wide configuration (server or router, key and token files)."),
            ("~/.config/mauth/mauthctl.toml", "Per-user configuration."),
            ("/etc/mauth/router.key", "Pre-shared keys of protocol v2 (mode 0600)."),
            ("/etc/mauth/api.token", "Bearer token of mauthserver's API (mode 0600)."),
        ],
        ["musersd(1)", "mauthserver(1)"],
    ),
}


def load(target: str) -> click.Command:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def esc(text: str) -> str:
    """Escape running text for roff: backslashes, and control characters at line starts."""
    out = []
    for line in text.replace("\\", "\\e").split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def opt(text: str) -> str:
    """An option or usage string: escaped, with minus signs that stay minus signs."""
    return esc(text).replace("-", "\\-")


def help_text(cmd: click.Command) -> str:
    """The command's help as click shows it (anything after a \\f is for code readers only)."""
    return (cmd.help or "").split("\f", 1)[0].strip()


def paragraphs(text: str) -> list[str]:
    """Click help/epilog text as roff: a paragraph after a \\b line keeps its line breaks."""
    out: list[str] = []
    for para in text.strip("\n").split("\n\n"):
        lines = para.split("\n")
        if lines and lines[0].strip() == "\b":
            body = "\n".join(line.rstrip() for line in lines[1:])
            out += [".PP", ".nf", ".RS 2", esc(body), ".RE", ".fi"]
        elif para.strip():
            out += [".PP", esc(" ".join(line.strip() for line in lines))]
    return out


def options(cmd: click.Command, ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in cmd.get_params(ctx):
        if not isinstance(param, click.Option):  # arguments are in the synopsis
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, text = record
        out += [".TP", f"\\fB{opt(names)}\\fR", esc(text) if text else ""]
    return [line for line in out if line != ""]


def context(cmd: click.Command, name: str, parent: click.Context | None = None) -> click.Context:
    """The context the program would run `cmd` in (its context_settings, e.g. -h), without parsing."""
    return click.Context(cmd, info_name=name, parent=parent, **cmd.context_settings)


def usage(cmd: click.Command, ctx: click.Context) -> str:
    return f".B {opt(ctx.command_path)}\n{opt(' '.join(cmd.collect_usage_pieces(ctx)))}"


def render(name: str, cmd: click.Command, files: list[tuple[str, str]], see_also: list[str], version: str) -> str:
    ctx = context(cmd, name)
    summary = help_text(cmd).split("\n\n", 1)[0].replace("\n", " ")
    lines = [
        f'.\\" Generated by scripts/gen_manpages.py from the {name} command definitions; do not edit.',
        f'.TH {name.upper()} 1 "" "mauth {version}" "mauth manual"',
        ".SH NAME",
        f"{name} \\- {esc(summary[0].lower() + summary[1:]).rstrip('.')}",
        ".SH SYNOPSIS",
        usage(cmd, ctx),
        ".SH DESCRIPTION",
        *paragraphs(help_text(cmd)),
        ".SH OPTIONS",
        *options(cmd, ctx),
    ]
    if isinstance(cmd, click.Group):
        lines.append(".SH COMMANDS")
        for sub_name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, sub_name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = context(sub, sub_name, ctx)
            lines += [f".SS {opt(sub_name)}", usage(sub, sub_ctx), *paragraphs(help_text(sub))]
            sub_opts = options(sub, sub_ctx)
            if sub_opts:
                lines += [".PP", "Options:", ".RS 4", *sub_opts, ".RE"]
            if sub.epilog:
                lines += paragraphs(sub.epilog)
    if cmd.epilog:
        lines += [".SH NOTES", *paragraphs(cmd.epilog)]
    lines.append(".SH FILES")
    for path, what in files:
        lines += [".TP", f"\\fI{opt(path)}\\fR", esc(what)]
    lines += [".SH SEE ALSO", ", ".join(f"\\fB{opt(ref.split('(')[0])}\\fR({ref.split('(')[1]}" for ref in see_also)]
    return "\n".join(lines) + "\n"


def generate() -> dict[str, str]:
    """{file name: page text} for every program."""
    version = importlib.metadata.version("mauth")
    return {f"{name}.1": render(name, load(target), files, see_also, version)
            for name, (target, files, see_also) in PAGES.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the pages (default docs/man)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    pages = generate()
    stale = [n for n, text in pages.items()
             if not (args.out / n).exists() or (args.out / n).read_text() != text]
    if args.check:
        for n in stale:
            print(f"{args.out / n} is out of date; run 'make man'", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n, text in pages.items():
        (args.out / n).write_text(text)
    print(f"wrote {', '.join(sorted(pages))} to {args.out} ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
