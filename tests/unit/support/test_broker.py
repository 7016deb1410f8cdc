"""tests.support.broker: free_port hands out a loopback port nothing listens on, below the kernel's
ephemeral range, so that no client retrying a stopped server there connects to itself."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.broker import LOWEST_PORT, free_port


def test_ports_are_free_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert len(ports) > 1  # chosen at random, not one fixed port
    for port in ports:
        assert LOWEST_PORT <= port < low, (port, low)
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free: it binds


def test_a_stopped_server_s_port_refuses_instead_of_connecting_to_itself() -> None:
    """What the range is for: connecting to the port of a server that is gone is refused,
    every time (a port of the ephemeral range can, now and then, connect to itself)."""
    port = free_port()
    for _ in range(200):
        with socket.socket() as s:
            try:
                s.connect(("127.0.0.1", port))
            except ConnectionRefusedError:
                continue
            raise AssertionError(f"connected to {s.getsockname()} -> {s.getpeername()}")
