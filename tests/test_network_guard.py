"""The suite's network guard (tests/fixtures/network.py) refuses non-loopback hosts and leaves 127.0.0.1 alone."""

from __future__ import annotations

import socket

import pytest

from tests.fixtures import network


def test_non_loopback_hosts_are_refused_and_loopback_is_not() -> None:
    seen = len(network._BLOCKED)
    with socket.socket() as sock, pytest.raises(network.NetworkBlocked):
        sock.connect(("192.0.2.1", 443))  # TEST-NET-1: never routable, and never tried
    with pytest.raises(network.NetworkBlocked):
        socket.getaddrinfo("a.klaviyo.com", 443)
    assert len(network._BLOCKED) == seen + 2
    del network._BLOCKED[seen:]  # refused on purpose here: not a leak for the per-test check to report
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
    assert socket.getaddrinfo("localhost", 80)
