"""A collector's address as the command line gives it: [udp://|tcp://]HOST[:PORT]."""

from __future__ import annotations

import socket

from .encoder import IPFIX_PORT


def parse_target(s: str) -> tuple[str, str, int]:
    """Parse ``[udp://|tcp://]HOST[:PORT]``, IPv6 literals in brackets (``[::1]:4739``).

    Returns (transport, host, port); the port defaults to 4739. Raises
    ValueError with a one-line message for anything else.
    """
    transport, host, port, _ = split_target(s)
    return transport, host, port


def split_target(s: str) -> tuple[str, str, int, bool]:
    def bad(why: str) -> ValueError:
        return ValueError(f"invalid IPFIX target {s!r}: {why}")

    if not isinstance(s, str):
        raise ValueError(f"invalid IPFIX target {s!r}: not a string")
    text = s.strip()
    transport = "udp"
    explicit = False
    if "://" in text:
        scheme, text = text.split("://", 1)
        transport = scheme.lower()
        explicit = True
        if transport not in ("udp", "tcp"):
            raise bad(f"transport {scheme!r} is not supported, use udp:// or tcp://")
    if not text:
        raise bad("expected HOST:PORT")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise bad("missing ']' after IPv6 address")
        host = text[1:close]
        rest = text[close + 1 :]
        try:
            socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        except (OSError, ValueError):
            raise bad(f"{host!r} is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise bad("expected ':PORT' after ']'")
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            raise bad("put IPv6 addresses in brackets, e.g. [::1]:4739")
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
        if not host:
            raise bad("empty host")
        if any(c.isspace() or c in "/@[]" for c in host) or len(host) > 253:
            raise bad(f"{host!r} is not a host name or address")
    if port_text is None:
        port = IPFIX_PORT
    else:
        if not port_text.isdigit() or not port_text.isascii():
            raise bad(f"port {port_text!r} is not a number")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise bad(f"port {port} is outside 1..65535")
    return transport, host, port, explicit
