"""Local ports: a free one to bind, and whether one is taken. Standard library only (the training entries import
this before torch)."""

from __future__ import annotations

import socket

WILDCARDS = ("0.0.0.0", "", "::")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it; a wildcard host is probed on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1" if host in WILDCARDS else host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """Something already listens there (a readiness check would talk to it instead of our server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1" if host in WILDCARDS else host, port)) == 0
