"""``HOST:PORT`` parsing for the live senders."""

from __future__ import annotations

import socket

from ..errors import PtalkerError


def parse_host_port(text: str, option: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST`` with a default port) → (address, port), resolved once."""
    host, sep, port_s = str(text).strip().rpartition(":")
    if not sep:
        host, port_s = port_s, ""
    if not port_s and default_port is None:
        raise PtalkerError(f"{option} needs HOST:PORT; got '{text}'")
    try:
        port = int(port_s) if port_s else int(default_port)
    except ValueError:
        raise PtalkerError(f"{option}: '{port_s}' is not a port number (HOST:PORT)") from None
    if not 0 < port < 65536:
        raise PtalkerError(f"{option}: port {port} is outside 1..65535")
    host = host.strip("[]") or "127.0.0.1"
    try:
        addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
    except socket.gaierror:
        raise PtalkerError(f"{option}: cannot resolve host '{host}'") from None
    return addr, port
