"""The hub's read-only HTTP side: Prometheus metrics, the fleet as JSON, and one fleet page.

The HTTP server (stdlib asyncio, one thread; bounds and timeouts in :class:`WebServer`) only reads
the newest :class:`~.snapshot.FleetSnapshot` and the hub's status, which the service's loop
swaps in, so a scrape or a page never touches the database nor waits for it.

Routes: ``/metrics`` (Prometheus text format, :mod:`.metrics`), ``/api/fleet.json``
(:mod:`.fleet_view`), ``/`` (the page: static HTML + vanilla JS that polls the JSON, no build step,
no external resource), ``/healthz``. Only GET and HEAD.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import resource
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterable
from http import HTTPStatus
from importlib import resources
from typing import Any, Final

from edge_agent_host.hub.web.fleet_view import FleetQuery, fleet_page
from edge_agent_host.hub.web.snapshot import FleetSnapshot

logger = logging.getLogger(__name__)

__all__ = ["WebServer"]

_HEAD_LIMIT: Final = 16 * 1024
_OUTCOMES: Final = ("answered", "timed_out", "evicted", "refused", "wrong_host", "hung_up")


class WebServer:
    """The HTTP side: one asyncio loop on its own thread (see the module docstring).

    An open connection costs a descriptor and a few kilobytes, never a thread. A client has
    ``timeout_s`` to send its request head and ``timeout_s`` to take the answer; at most
    ``max_connections`` are open (also at most a quarter of the process's descriptor limit, so
    that the broker and the database always find one): a new connection closes the oldest one
    that has not sent its request yet, or is closed itself when every open one is being answered.
    Connections are accepted one at a time, each only once the one before it has its place (an
    asyncio server accepts up to its backlog at once: at a low descriptor limit that burst took
    the descriptors the broker's reconnection needed), so the HTTP side never holds more than
    ``max_connections + 1`` descriptors for clients; the rest wait in the kernel's queue.
    One request per connection (``Connection: close``). A request whose ``Host`` is not
    localhost, an IP address, the listen address, this machine's name or one of
    ``allowed_hosts`` gets 421 (DNS rebinding). A client that hangs up is counted, not logged.
    ``snapshot`` and ``hub_status`` are swapped by the service's loop, read here.
    """

    def __init__(
        self,
        listen: str,
        port: int,
        *,
        allowed_hosts: Iterable[str] = (),
        max_connections: int = 64,
        timeout_s: float = 10.0,
    ) -> None:
        from prometheus_client import (  # noqa: PLC0415 - the hub extra
            CollectorRegistry,
            ProcessCollector,
            generate_latest,
        )

        from edge_agent_host.hub.web.metrics import collector_for  # noqa: PLC0415 - the same

        self.snapshot = FleetSnapshot()
        self.hub_status: dict[str, Any] = {}
        self.registry = CollectorRegistry()
        self.registry.register(collector_for(self))
        ProcessCollector(registry=self.registry)
        self._generate = generate_latest
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.max_connections = max(2, min(max_connections, soft // 4))
        self.timeout_s = timeout_s
        self.allowed_hosts = frozenset(
            h.lower().strip("[]")
            for h in (*allowed_hosts, "localhost", listen, socket.gethostname())
        )
        self._counts: dict[str, int] = dict.fromkeys(_OUTCOMES, 0)
        self._waiting: OrderedDict[asyncio.StreamWriter, None] = OrderedDict()
        self._open = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._starved = False
        self._page = resources.files("edge_agent_host.hub").joinpath("web/index.html").read_bytes()
        self._sock = socket.create_server((listen, port), backlog=128)
        self._sock.setblocking(False)
        self.port = int(self._sock.getsockname()[1])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="http", daemon=True)

    # what the status shows -------------------------------------------------------------------
    @property
    def requests(self) -> int:
        return self._counts["answered"]

    @property
    def refused(self) -> int:
        return self._counts["refused"] + self._counts["evicted"]

    def connection_counts(self) -> dict[str, int]:
        return dict(self._counts)

    # life ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stopped.set)
            self._thread.join(10)
        self._sock.close()

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        accepting = asyncio.create_task(self._accept())
        self._ready.set()
        await self._stopped.wait()
        accepting.cancel()
        for writer in list(self._waiting):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(accepting, *self._tasks, return_exceptions=True)

    async def _accept(self) -> None:
        """Take connections from the kernel's queue one at a time (see the class docstring)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(self._sock)
            except OSError as err:
                # Out of descriptors (the rest of the process holds them): leave the client in
                # the kernel's queue and try again; one warning per shortage, no traceback.
                if not self._starved:
                    self._starved = True
                    logger.warning("http: cannot accept a connection now: %s", err)
                await asyncio.sleep(0.1)
                continue
            self._starved = False
            if self._open >= self.max_connections and not self._evict_one():
                self._counts["refused"] += 1
                conn.close()
            else:
                self._open += 1
                task = asyncio.create_task(self._connection(conn))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            # Let an evicted connection's close run before the next accept (an accept that
            # finds a client waiting does not yield to the loop by itself).
            await asyncio.sleep(0)

    # one connection --------------------------------------------------------------------------
    async def _connection(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=_HEAD_LIMIT)
        except OSError:
            self._open -= 1
            self._counts["hung_up"] += 1
            conn.close()
            return
        try:
            self._waiting[writer] = None
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout_s)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
                self._end_idle(writer)
                return
            except asyncio.LimitOverrunError:
                self._waiting.pop(writer, None)
                await self._reply(writer, 431, "text/plain", b"request head too large\n", False)
                return
            if self._waiting.pop(writer, "gone") == "gone":
                writer.transport.abort()  # evicted after its request came in: it lost the race
                return
            await self._answer(writer, head)
        except asyncio.CancelledError:
            writer.transport.abort()  # the server stops
            raise
        finally:
            self._open -= 1
            self._waiting.pop(writer, None)

    def _evict_one(self) -> bool:
        """Close the oldest connection that has not sent a request; False when none is left."""
        if not self._waiting:
            return False
        writer, _ = self._waiting.popitem(last=False)
        self._counts["evicted"] += 1
        writer.transport.abort()
        return True

    def _end_idle(self, writer: asyncio.StreamWriter) -> None:
        if self._waiting.pop(writer, "gone") != "gone":
            self._counts["timed_out"] += 1  # idle, slow, or hung up before its request
        writer.transport.abort()

    async def _answer(self, writer: asyncio.StreamWriter, head: bytes) -> None:
        try:
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
        except ValueError:
            await self._reply(writer, 400, "text/plain", b"bad request\n", False)
            return
        headers = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            await self._reply(writer, 501, "text/plain", b"only GET and HEAD\n", False)
            return
        if not self._host_allowed(headers.get("host")):
            self._counts["wrong_host"] += 1
            await self._reply(writer, 421, "text/plain", b"unknown Host\n", head_only)
            return
        path, _, query = target.partition("?")
        if path == "/metrics":
            body = self._generate(self.registry)
            await self._reply(
                writer, 200, "text/plain; version=0.0.4; charset=utf-8", body, head_only
            )
        elif path == "/api/fleet.json":  # filtered and paged: fleet_view.py
            try:
                wanted = FleetQuery.parse(query)
            except ValueError as err:
                await self._reply(writer, 400, "text/plain", f"{err}\n".encode(), head_only)
                return
            body = json.dumps(fleet_page(self.snapshot.as_json(), wanted)).encode()
            await self._reply(writer, 200, "application/json", body, head_only)
        elif path in ("/", "/index.html"):
            await self._reply(writer, 200, "text/html; charset=utf-8", self._page, head_only)
        elif path == "/healthz":
            await self._reply(writer, 200, "text/plain", b"ok\n", head_only)
        else:
            await self._reply(writer, 404, "text/plain", b"not found\n", head_only)

    def _host_allowed(self, host: str | None) -> bool:
        if host is None:
            return True  # HTTP/1.0 without Host: no browser sends that
        name = host.lower()
        if name.startswith("["):
            name = name[1:].split("]", 1)[0]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        if name in self.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(name)  # an address is its own origin: no rebinding
        except ValueError:
            return False
        return True

    async def _reply(
        self, writer: asyncio.StreamWriter, code: int, kind: str, body: bytes, head_only: bool
    ) -> None:
        reason = HTTPStatus(code).phrase
        head = (
            f"HTTP/1.1 {code} {reason}\r\n"
            f"Server: edge-agent-hub\r\n"
            f"Content-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        try:
            writer.write(head if head_only else head + body)
            await asyncio.wait_for(writer.drain(), self.timeout_s)
        except (TimeoutError, ConnectionError, OSError):
            self._counts["hung_up"] += 1
            writer.transport.abort()
            return
        self._counts["answered"] += 1
        writer.close()
