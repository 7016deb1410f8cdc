"""Whether a port speaks TLS (``edge_agent/fleet/comms/tls_probe.py``), against real servers on
127.0.0.1: a TLS server that wants a client certificate (TLS 1.3, which refuses after the
handshake, and TLS 1.2, which refuses during it), one that wants none, a plain server that
closes on the ClientHello, one that answers it with bytes that are not TLS, and a port nobody
listens on."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.fleet.comms.tls_probe import (
    CONFIG_TLS_OPTIONS,
    TLS,
    TLS_WITH_CLIENT_CERTIFICATE,
    TlsOptions,
    tls_wanted,
)
from edge_agent_host.broker.certs import cert_pem, issue_cert, key_pem, make_ca
from tests.support.broker import free_port


@pytest.fixture(scope="module")
def server_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A CA and the server's certificate and key, as files."""
    out = tmp_path_factory.mktemp("tls")
    ca_key, ca = make_ca("probe", 1)
    key, cert = issue_cert(ca_key, ca, "broker", days=1, server_names=["127.0.0.1"])
    (out / "ca.crt").write_bytes(cert_pem(ca))
    (out / "server.crt").write_bytes(cert_pem(cert))
    (out / "server.key").write_bytes(key_pem(key))
    return out / "ca.crt", out / "server.crt", out / "server.key"


def serve(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A server on a free loopback port that runs ``handle`` on each connection."""
    listener = socket.create_server(("127.0.0.1", free_port()))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):  # the probe hangs up as it likes
                    handle(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def tls_server(
    files: tuple[Path, Path, Path], *, client_cert: bool, version: ssl.TLSVersion
) -> Callable[[socket.socket], None]:
    ca, cert, key = files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.minimum_version = context.maximum_version = version
    if client_cert:
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED

    def handle(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)  # an MQTT broker waits for the CONNECT

    return handle


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_a_server_that_wants_a_client_certificate(
    server_files: tuple[Path, Path, Path], version: ssl.TLSVersion
) -> None:
    handle = tls_server(server_files, client_cert=True, version=version)
    for port in serve(handle):
        assert tls_wanted("127.0.0.1", port) == TLS_WITH_CLIENT_CERTIFICATE


def test_a_server_that_wants_tls_alone(server_files: tuple[Path, Path, Path]) -> None:
    handle = tls_server(server_files, client_cert=False, version=ssl.TLSVersion.TLSv1_3)
    for port in serve(handle):
        assert tls_wanted("127.0.0.1", port, timeout_s=0.5) == TLS


def test_a_plain_server_that_closes_on_the_client_hello() -> None:
    def handle(conn: socket.socket) -> None:
        conn.recv(64)  # a malformed MQTT packet to a broker: it hangs up
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    for port in serve(handle):
        assert tls_wanted("127.0.0.1", port) == ""


def test_a_plain_server_that_answers_with_what_is_not_tls() -> None:
    def handle(conn: socket.socket) -> None:
        conn.recv(64)
        conn.sendall(b"\x20\x03\x00\x00\x00")  # an MQTT CONNACK, not a TLS record

    for port in serve(handle):
        assert tls_wanted("127.0.0.1", port) == ""


def test_nobody_listening() -> None:
    assert tls_wanted("127.0.0.1", free_port()) == ""


def test_what_to_give_is_said_in_the_client_s_words() -> None:
    cli = TlsOptions("--ca-file", "--cert-file", "--key-file", "docs/security.md")
    assert cli.advice(TLS_WITH_CLIENT_CERTIFICATE) == (
        "give --ca-file, --cert-file and --key-file (docs/security.md)"
    )
    assert cli.advice(TLS) == "give --ca-file (docs/security.md)"
    assert CONFIG_TLS_OPTIONS.advice(TLS_WITH_CLIENT_CERTIFICATE).startswith(
        "give [mqtt.tls] enabled, ca_file, cert_file and key_file ("
    )
