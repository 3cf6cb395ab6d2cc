"""The local servers start again on fresh ports when a picked port was taken in between.

Two xdist workers pick free ports and start their own SeaweedFS/PostgreSQL at the same time;
a port picked by one can be bound by the other before the server binds it. These tests take
the port themselves (a listening socket) and hand it to the server on its first attempt.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from usage_etl import local_stack


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _hand_out_taken_port(monkeypatch, taken: int, index: int, times: int) -> list[list[int]]:
    """The first `times` calls of free_ports put the taken port at `index`."""
    real = local_stack.free_ports
    handed: list[list[int]] = []

    def free_ports(count: int) -> list[int]:
        ports = real(count)
        if len(handed) < times:
            ports[index] = taken
        handed.append(ports)
        return ports

    monkeypatch.setattr(local_stack, "free_ports", free_ports)
    return handed


def test_free_ports_are_distinct():
    ports = local_stack.free_ports(13)
    assert len(set(ports)) == 13


def test_seaweed_starts_again_on_fresh_ports_when_a_port_was_taken(
    tmp_path: Path, monkeypatch, taken_port: int
):
    webdav = local_stack.WEED_PORT_FLAGS.index("-webdav.port")
    handed = _hand_out_taken_port(monkeypatch, taken_port, webdav, times=1)

    server = local_stack.start_seaweed(tmp_path / "weed")
    try:
        server.ensure_bucket("probe")
        assert len(handed) == 2
        assert taken_port not in handed[1]
        assert "port allocation failed" in (tmp_path / "weed" / "weed.log").read_text().lower()
    finally:
        server.stop()


def test_seaweed_names_the_clash_when_every_attempt_finds_a_port_taken(
    tmp_path: Path, monkeypatch, taken_port: int
):
    webdav = local_stack.WEED_PORT_FLAGS.index("-webdav.port")
    handed = _hand_out_taken_port(monkeypatch, taken_port, webdav, times=99)

    with pytest.raises(local_stack.ServiceError, match="after 4 attempts") as raised:
        local_stack.start_seaweed(tmp_path / "weed")
    assert "is not available" in str(raised.value)
    assert len(handed) == local_stack.START_ATTEMPTS


def test_seaweed_fails_at_once_on_an_error_that_is_not_a_port_clash(tmp_path: Path, monkeypatch):
    handed = _hand_out_taken_port(monkeypatch, 0, 0, times=0)
    monkeypatch.setattr(local_stack, "weed_binary", lambda: "/bin/false")

    with pytest.raises(local_stack.ServiceError, match="weed mini exited with 1"):
        local_stack.start_seaweed(tmp_path / "weed")
    assert len(handed) == 1


def test_postgres_starts_again_on_a_fresh_port_when_its_port_was_taken(
    tmp_path: Path, monkeypatch, taken_port: int
):
    real = local_stack.free_port
    calls: list[int] = []

    def free_port() -> int:
        port = taken_port if not calls else real()
        calls.append(port)
        return port

    monkeypatch.setattr(local_stack, "free_port", free_port)
    server = local_stack.start_postgres(tmp_path / "pg")
    try:
        assert calls[0] == taken_port
        assert server.port != taken_port
        assert local_stack._psql(server, "-tAc", "SELECT 1").strip() == "1"
    finally:
        server.stop()
