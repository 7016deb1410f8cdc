"""The hub's HTTP server: the page, the answers from the snapshot, its bounds."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from importlib import resources

import pytest

from edge_agent_host.hub.web.server import WebServer
from tests.unit.host.hub.web.test_snapshot import snapshot


def test_the_page_uses_nothing_from_outside() -> None:
    page = resources.files("edge_agent_host.hub").joinpath("web/index.html").read_text()
    assert "/api/fleet.json" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no CDN, no fonts


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as err:
        with err:
            return int(err.code)


def request(port: int, head: bytes) -> bytes:
    """One raw request; the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_server_answers_from_the_snapshot_and_checks_the_host() -> None:
    server = WebServer("127.0.0.1", 0, allowed_hosts=["hub.example.org"])
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        server.snapshot = snapshot()
        with urllib.request.urlopen(f"{url}/api/fleet.json", timeout=10) as answer:
            data = json.loads(answer.read())
        assert [n["node"] for n in data["nodes"]] == ["pi-1", "pi-2", "pi-3"]
        assert data["rollouts"][0]["id"] == "r1"
        assert get(f"{url}/metrics") == 200
        assert get(f"{url}/../etc/passwd") == 404
        for host, code in (
            (b"evil.example", b"421"),  # DNS rebinding: a name this hub does not answer to
            (b"evil.example:80", b"421"),
            (b"hub.example.org", b"200"),
            (b"HUB.example.org:9108", b"200"),
            (b"localhost:9108", b"200"),
            (b"127.0.0.1", b"200"),
            (b"[::1]:9108", b"200"),
        ):
            answer = request(server.port, b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            assert answer.split(b" ", 2)[1] == code, (host, answer)
        answer = request(server.port, b"POST /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 501 ")
        answer = request(server.port, b"GET /" + b"x" * 20_000 + b" HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert server.connection_counts()["wrong_host"] == 2
    finally:
        server.stop()
    assert not server._thread.is_alive()


def test_a_taken_port_is_a_config_error_naming_the_line() -> None:
    import socket

    from edge_agent.errors import ConfigError
    from edge_agent_host.hub.config.hub_toml import parse_hub_config
    from edge_agent_host.hub.service.loop import web_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = f'[http]\nenabled = true\nlisten = "127.0.0.1"\nport = {port}\n'
        with pytest.raises(ConfigError) as err:
            web_server(parse_hub_config(text, "hub.toml"))
    assert str(err.value).startswith("hub.toml:4: http.port: cannot listen on 127.0.0.1:"), err
    assert web_server(parse_hub_config("[http]\nenabled = false\n", "hub.toml")) is None
