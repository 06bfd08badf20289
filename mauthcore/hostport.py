"""HOST:PORT arguments (--listen, --router, --api), parsed one way everywhere."""

from __future__ import annotations

import ipaddress


class HostPortError(ValueError):
    """Not a usable HOST:PORT; the message names the option and the text."""


def parse_hostport(text: str, what: str, default_port: int | None = None, *,
                   numeric: bool = False) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT, or HOST alone when there is a default port.

    `numeric`: the host must be an IP address (a socket to bind, not a name).
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise HostPortError(f"{what} {text!r} has an unclosed '['")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:  # a bare host, or a bare IPv6 address
        host, port = text, ""
    if not port:
        if default_port is None:
            raise HostPortError(f"{what} {text!r} is not HOST:PORT")
        port = str(default_port)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise HostPortError(f"{what} {text!r} has no valid port (1-65535)")
    if not host:
        raise HostPortError(f"{what} {text!r} has no host")
    if numeric:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise HostPortError(f"{what} {text!r} needs a numeric IP address") from None
    return host, int(port)
