"""``edge-agent-hub run``: the hub service's supervised loop.

The transport's thread hears the fleet
(:class:`~edge_agent_host.hub.traffic.listener.FleetListener`) and fills the bounded queue; this
loop, on the main thread, is the only writer:

1. when the database is closed and its back-off delay has passed, connect (and migrate);
2. take batches from the queue and write each in one transaction (at most half a second of it
   per round, so the periodic jobs keep their rhythm); a batch the database could not take goes
   back to the head of the queue and the database counts as down; a batch written or refused
   leaves the spool;
3. run what is due: the status file, the replica's heartbeat row and the Prometheus file
   (``status_interval_s``), the retention bounds (``maintenance_interval_s``), the "database
   unreachable" report (``report_interval_s``, while it is), rebirth requests, a look for the
   learning rounds due (``[learning] check_interval_s``: the rounds run on the policy's own
   thread and connection, :mod:`edge_agent_host.hub.learning.policy`), the systemd watchdog;
4. wait for the next message (or, with the database down, for the next attempt).

Every database call runs on the database's own thread with a deadline
(:mod:`edge_agent_host.hub.storage.dbthread`, ``[database] operation_deadline_s``): while it runs
the loop keeps the watchdog and the status file going, and a call still running at its deadline is
an outage like a refused connection (the connection is shut down, messages are held). What the hub
holds is also in the spool (:mod:`edge_agent_host.hub.traffic.spool`, ``[queue] spool``) before the
broker is acknowledged, so a hub that is killed loses none of it: the next start hears the spool
again.

State: STARTING, RUNNING (database up), DEGRADED (database down: messages are held, bounded,
and the status, the metrics and a log line once per ``report_interval_s`` say so), STOPPING,
STOPPED. An outage starts with the first failure and ends with the first commit (a database
that opens but cannot write, such as a full disk, stays one outage). SIGTERM and SIGINT stop it:
it stops hearing, writes what it holds (for up to ``drain_timeout_s``; the rest stays in the
spool for the next start), writes a last status and exits 0. Only a bad configuration or a database
whose schema is newer than this software stops it with an error (exit 2).
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from edge_agent import __version__
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.errors import EdgeAgentError, SignatureError
from edge_agent.fleet.comms.base import Backoff, Transport
from edge_agent.fleet.protocol import LearningDelta, RebirthRequest
from edge_agent.fleet.topics import Topics
from edge_agent.fsutil import write_atomic
from edge_agent.service.metrics import Metrics
from edge_agent.service.periodic import Periodic
from edge_agent.service.systemd import SdNotifier
from edge_agent_host.hub.config.hub_toml import (
    HubConfig,
    HubConfigFile,
    PostgresDatabase,
    file_problems,
    read_password,
)
from edge_agent_host.hub.learning.catch_up_store import CatchUpStore
from edge_agent_host.hub.learning.store import LearningStore
from edge_agent_host.hub.rollouts.runner import RolloutRunner
from edge_agent_host.hub.storage.database import (
    DatabaseUnavailableError,
    HubDatabase,
    WriteOutcome,
)
from edge_agent_host.hub.storage.dbthread import DatabaseOverdueError, DatabaseThread
from edge_agent_host.hub.storage.engines import Engine, PostgresEngine, SqliteEngine
from edge_agent_host.hub.storage.writers import to_json
from edge_agent_host.hub.traffic.listener import FleetListener
from edge_agent_host.hub.traffic.publisher import HubPublisher
from edge_agent_host.hub.traffic.queue import Heard, HeldMessages
from edge_agent_host.hub.traffic.spool import Spool
from edge_agent_host.hub.web.server import WebServer
from edge_agent_host.hub.web.snapshot import GroupHealthHistory, build_snapshot

if TYPE_CHECKING:
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_agent_host.hub.learning.policy import LearningPolicy

logger = logging.getLogger(__name__)

__all__ = ["HubService", "State", "make_engine", "rollout_runner", "web_server"]

_WRITE_SLICE_S: Final = 0.5
_WATCHDOG_EVERY_S: Final = 2.0
_REBIRTHS_PER_ROUND: Final = 100
T = TypeVar("T")


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"
    STOPPING = "stopping"
    STOPPED = "stopped"


def make_engine(source: HubConfigFile, *, application_name: str = "edge-agent-hub") -> Engine:
    """The engine ``[database]`` selects (reads the password file; ConfigError if it cannot)."""
    config = source.config
    db = config.database
    if isinstance(db, PostgresDatabase):
        return PostgresEngine(
            host=db.host,
            port=db.port,
            dbname=db.dbname,
            user=db.user,
            password=read_password(source, ("database", "password_file"), db.password_file),
            sslmode=db.sslmode,
            sslrootcert=db.sslrootcert,
            connect_timeout_s=db.connect_timeout_s,
            statement_timeout_s=db.statement_timeout_s,
            application_name=application_name,
        )
    path = config.sqlite_path
    assert path is not None  # sqlite_path is None only with PostgreSQL
    return SqliteEngine(path, busy_timeout_s=db.busy_timeout_s)


def web_server(source: HubConfigFile) -> WebServer | None:
    """The HTTP side when ``[http] enabled``, bound now so that a taken port is a config error."""
    http = source.config.http
    if not http.enabled:
        return None
    try:
        return WebServer(
            http.listen,
            http.port,
            allowed_hosts=http.allowed_hosts,
            max_connections=http.max_connections,
            timeout_s=http.timeout_s,
        )
    except ModuleNotFoundError as err:
        problem = f"needs prometheus_client ({err}): pip install 'edge-agent-runtime[hub]'"
        raise source.error([(("http", "enabled"), problem)]) from err
    except OSError as err:
        problem = f"cannot listen on {http.listen}:{http.port}: {err.strerror or err}"
        raise source.error([(("http", "port"), problem)]) from err


def _signing_key(
    source: HubConfigFile, key_file: Path, loc: tuple[str, ...] = ("rollouts", "key_file")
) -> Ed25519PrivateKey:
    """The key of ``key_file`` (``[rollouts]``' or ``[learning]``'s, ``loc``); a file that is
    not one: the config's error at that key."""
    from edge_agent_host.keys import load_signing_key  # noqa: PLC0415 - only with rollouts

    try:
        return load_signing_key(key_file)
    except (OSError, EdgeAgentError) as err:
        raise source.error([(loc, str(err))]) from err


def _opener(source: HubConfigFile, role: str) -> Callable[[], HubDatabase]:
    """Opens a database connection of its own for the replica's ``role`` (rounds, rollouts),
    named so in the server's view of its clients."""
    hub_id = source.config.hub.effective_id()

    def open_db() -> HubDatabase:
        db = HubDatabase(make_engine(source, application_name=f"edge-agent-hub {hub_id} {role}"))
        db.open()
        return db

    return open_db


def learning_policy(source: HubConfigFile) -> LearningPolicy | None:
    """The replica's learning rounds when ``[learning]`` runs them (``every_s`` or
    ``min_experience``; the config makes sure ``[learning] key_file`` is set): a database
    connection of its own for each look, signing the rounds with the learning key (a bundle
    key, never the hub's command key)."""
    config = source.config
    key_file = config.learning.key_file
    if not config.learning.enabled or key_file is None:
        return None
    # The converter a round uses, only on a replica that runs rounds.
    from edge_agent_host.hub.learning.policy import LearningPolicy  # noqa: PLC0415

    key = _signing_key(source, key_file, ("learning", "key_file"))
    hub_id = config.hub.effective_id()
    return LearningPolicy(
        config.learning, _opener(source, "learning"), key, signer=f"edge-agent-hub {hub_id}",
        owner=hub_id, silent_after_s=config.hub.silent_after_s,
    )  # fmt: skip


def rollout_runner(source: HubConfigFile) -> Callable[[HubPublisher], RolloutRunner] | None:
    """The replica's rollout runner when ``[rollouts] key_file`` is set, given the service's
    publisher: its own database connection, under the same deadline as the service's, no broker
    connection of its own (it publishes through the service's and reads the results the service
    stored), signing with that key."""
    config = source.config
    key_file = config.rollouts.key_file
    if key_file is None:
        return None
    key = _signing_key(source, key_file)
    hub_id = config.hub.effective_id()
    open_db = _opener(source, "rollouts")

    def runner(publisher: HubPublisher) -> RolloutRunner:
        return RolloutRunner(
            open_db,
            publisher,
            key,
            owner=hub_id,
            poll_s=config.rollouts.poll_interval_s,
            lease_s=config.rollouts.lease_s,
            deadline_s=config.database.operation_deadline_s,
        )

    return runner


class HubService:
    """The hub service: hears the fleet, holds what it heard, writes it to the database."""

    def __init__(
        self,
        config: HubConfig,
        *,
        engine: Engine,
        transport: Transport,
        hub_keys: TrustedKeys | None = None,
        notifier: SdNotifier | None = None,
        drain_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        rollouts: Callable[[HubPublisher], RolloutRunner] | None = None,
        learning: LearningPolicy | None = None,
        web: WebServer | None = None,
    ) -> None:
        self.config = config
        self.web = web
        self._health_history = GroupHealthHistory()
        self.hub_id = config.hub.effective_id()
        self.topics = Topics(config.mqtt.fleet)
        q = config.queue
        self.spool = (
            Spool(config.hub.state_dir / "spool", sync_interval_s=q.spool_sync_interval_s)
            if q.spool
            else None
        )
        self.queue = HeldMessages(q.max_messages, q.max_bytes, self.spool)
        self.db = HubDatabase(
            engine, health_groups_per_node=config.retention.health_groups_per_node
        )
        # Learning deltas are stored, checked and counted by the learning tables' own module.
        self.learning = LearningStore(self.db)
        self.db.add_writer(LearningDelta.TYPE, self.learning.ingest)
        self.learning_counts: dict[str, int] = {}
        self.catch_up_counts: dict[str, int] = {}
        self.db_thread = DatabaseThread()
        self._close_pending = False
        self.transport = transport
        self.listener = FleetListener(
            transport,
            self.topics,
            self.queue,
            share_group=config.mqtt.share_group,
            hub_keys=hub_keys,
            clock=clock,
        )
        # The one way out to the broker (rebirth requests, and the rollout runner's commands).
        self.publisher = HubPublisher(transport, self.topics, self.hub_id, self.queue, clock=clock)
        self.rollouts = None if rollouts is None else rollouts(self.publisher)
        self.notifier = notifier or SdNotifier()
        self.drain_timeout_s = drain_timeout_s
        self._clock = clock
        self.stop_event = threading.Event()
        self.state = State.STARTING
        self.host = socket.gethostname()
        self.started_at = clock()
        db = config.database
        self._db_backoff = Backoff(
            initial_s=db.reconnect_initial_s, max_s=db.reconnect_max_s, stable_after_s=0.0
        )
        self._next_db_attempt = 0.0
        self.db_down_since: float | None = None
        self.db_outages = 0
        self.lost_at_stop = 0
        self.maintenance: dict[str, int] = {}
        self._rebirth_asked: OrderedDict[str, float] = OrderedDict()
        self.rebirths_requested = 0
        self._last_watchdog = 0.0
        self._waiting = False
        self.metrics = self._make_metrics()
        now = time.monotonic()
        hub = config.hub
        self._outage_report = Periodic(config.queue.report_interval_s, self._report_outage, now=now)
        self._status_job = Periodic(hub.status_interval_s, self._report_status, now=now)
        self._jobs = [
            self._status_job,
            Periodic(
                config.retention.maintenance_interval_s, self._maintain, now=now, first_after=True
            ),
            self._outage_report,
            Periodic(1.0, self._request_rebirths, now=now, first_after=True),
        ]
        # Rounds run by themselves ([learning]): a look every check_interval_s, on the
        # policy's own thread and database connection.
        self.learning_policy = learning
        if learning is not None:
            self._jobs.append(
                Periodic(config.learning.check_interval_s, learning.step, now=now, first_after=True)
            )

    @classmethod
    def from_config(cls, source: HubConfigFile) -> HubService:
        """The service of a config file, with its MQTT transport and database engine."""
        # paho is imported only by the transport module, and only by whoever runs the service.
        from edge_agent.fleet.comms.mqtt import (  # noqa: PLC0415
            MqttSettings,
            MqttTransport,
            TlsSettings,
        )

        config = source.config
        mqtt = config.mqtt
        hub_id = config.hub.effective_id()
        if problems := file_problems(source):  # what the first connection would meet
            raise source.error(problems)
        password = read_password(source, ("mqtt", "password_file"), mqtt.password_file)
        tls = None
        if mqtt.tls.enabled:
            tls = TlsSettings(
                ca_file=str(mqtt.tls.ca_file) if mqtt.tls.ca_file else None,
                cert_file=str(mqtt.tls.cert_file) if mqtt.tls.cert_file else None,
                key_file=str(mqtt.tls.key_file) if mqtt.tls.key_file else None,
            )
        settings = MqttSettings(
            # Fixed, so that the broker's session (session_expiry_s) is this hub's next time too.
            client_id=f"ea-hub-{mqtt.fleet}-{hub_id}",
            host=mqtt.host,
            port=mqtt.port,
            keepalive_s=mqtt.keepalive_s,
            session_expiry_s=mqtt.session_expiry_s,
            username=mqtt.username or None,
            password=password,
            tls=tls,
        )
        transport = MqttTransport(
            settings,
            backoff=Backoff(initial_s=mqtt.reconnect_initial_s, max_s=mqtt.reconnect_max_s),
        )
        keys = None
        if mqtt.hub_keys_dir is not None:
            try:
                keys = TrustedKeys.from_dir(mqtt.hub_keys_dir)
            except SignatureError as err:
                raise source.error([(("mqtt", "hub_keys_dir"), str(err))]) from err
        engine = make_engine(source, application_name=f"edge-agent-hub {hub_id}")
        return cls(
            config,
            engine=engine,
            transport=transport,
            hub_keys=keys,
            rollouts=rollout_runner(source),
            learning=learning_policy(source),
            web=web_server(source),
        )

    # metrics ----------------------------------------------------------------------------------
    def _make_metrics(self) -> Metrics:
        metrics = Metrics()
        metrics.register("hub.heard", self.listener.counts, help="messages heard and dropped")
        metrics.register(
            "hub.queue",
            self.queue.stats,
            gauges=("depth", "depth_telemetry", "bytes", "max_messages", "max_bytes", "high_water"),
            help="messages held for the database",
        )
        metrics.register(
            "hub.db",
            self._db_numbers,
            gauges=("up", "down_s", "schema_version"),
            help="the database",
        )
        metrics.register("hub.maintenance", lambda: self.maintenance, help="retention")
        metrics.register(
            "hub.health_dropped",
            lambda: dict(self.db.health_dropped),
            help="health windows dropped: of a group the node's birth does not declare, or "
            "beyond [retention] health_groups_per_node",
        )
        metrics.register(
            "hub.mqtt", self._mqtt_numbers, gauges=("connected",), help="the broker link"
        )
        return metrics

    def _db_numbers(self) -> dict[str, object]:
        return {
            "up": self.db.is_open,
            "down_s": self.db_down_s(),
            "schema_version": self.db.schema_version,
            "written": self.db.written,
            "rejected": self.db.rejected,
            "transactions": self.db.transactions,
            "opens": self.db.opens,
            "outages": self.db_outages,
            "lost_at_stop": self.lost_at_stop,
        }

    def _mqtt_numbers(self) -> dict[str, object]:
        t = self.transport
        return {
            "connected": t.is_connected,
            "connect_attempts": getattr(t, "connect_attempts", 0),
            "sessions_up": getattr(t, "sessions_up", 0),
            "sessions_resumed": getattr(t, "sessions_resumed", 0),
            "handler_errors": t.handler_errors,
            "rebirths_requested": self.rebirths_requested,
            "publishes_refused": self.publisher.refused,
        }

    def db_down_s(self) -> float:
        return 0.0 if self.db_down_since is None else max(0.0, self._clock() - self.db_down_since)

    # life -------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: stopping", signal.Signals(signum).name)
        self.stop_event.set()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        logger.warning("edge-agent-hub does not reload its config: restart it to apply changes")

    def request_stop(self) -> None:
        self.stop_event.set()

    def run(self, duration_s: float | None = None) -> int:
        """Start, loop until stopped (or ``duration_s``), stop; the exit status."""
        self.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self.stop_event.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.step()
        finally:
            self.shutdown()
        return 0

    def start(self) -> None:
        """Hear what the spool kept, connect to the broker (in the background) and the
        database (if it answers)."""
        logger.info(
            "edge-agent-hub %s (%s) starting: fleet %r on %s:%d%s, database %s",
            __version__,
            self.hub_id,
            self.config.mqtt.fleet,
            self.config.mqtt.host,
            self.config.mqtt.port,
            f", shared group {self.config.mqtt.share_group!r}"
            if self.config.mqtt.share_group
            else "",
            self.db.engine.describe(),
        )
        self._replay_spool()
        self.transport.connect()
        self._open_db()
        if self.rollouts is not None:
            self.rollouts.start()
        if self.web is not None:
            self.web.start()
            logger.info(
                "serving /metrics and the fleet page on http://%s:%d/",
                self.config.http.listen,
                self.web.port,
            )
        self._report_status()
        self.notifier.ready(self.status_line())

    def _replay_spool(self) -> None:
        if self.spool is None:
            return
        try:
            left = self.spool.open()
        except OSError as err:
            logger.error(
                "cannot use the spool %s (%s): held messages are in memory only",
                self.spool.directory,
                err.strerror or err,
            )
            self.queue.spool = self.spool = None
            return
        if left:
            held = self.listener.replay(left)
            logger.warning(
                "the spool kept %d messages a previous run acknowledged and did not store: "
                "%d held again to be written",
                len(left),
                held,
            )

    def step(self, wait_s: float = 0.2) -> None:
        """One round of the loop (see the module docstring)."""
        now = time.monotonic()
        if self._close_pending and not self.db_thread.busy:
            self._close_pending = False
            self._db_call(self.db.close)
        if not self.db.is_open and now >= self._next_db_attempt and not self.db_thread.busy:
            self._open_db()
        self._write_some(time.monotonic() + _WRITE_SLICE_S)
        self.publisher.drain()  # the broker's answers to what the hub published
        now = time.monotonic()
        for job in self._jobs:
            job.run_if_due(now)
        self._keep_alive()
        if self.stop_event.is_set():
            return
        if self._db_usable():
            if not self.queue:
                self.queue.wait(wait_s)
        else:
            self.stop_event.wait(max(0.0, min(wait_s, self._next_db_attempt - now)))

    def _keep_alive(self) -> None:
        """The watchdog, the spool's fsync and (while a database call is under way) the status
        file: what must go on whatever the database does."""
        now = time.monotonic()
        if self.spool is not None:
            self.spool.sync_due(now)
        if now - self._last_watchdog >= _WATCHDOG_EVERY_S:
            self._last_watchdog = now
            self.notifier.watchdog()
        if self._waiting and now >= self._status_job.next_at:
            self._status_job.next_at = now + self._status_job.interval_s
            self._write_status(self.status())

    def shutdown(self) -> None:
        """Stop hearing, write what is held (bounded by ``drain_timeout_s``), last status."""
        self.state = State.STOPPING
        self.notifier.stopping()
        if self.rollouts is not None:
            self.rollouts.stop()  # a deploy under way stops between two rounds; resumed later
        if self.learning_policy is not None:
            self.learning_policy.join(self.drain_timeout_s)  # a round under way ends
        if self.web is not None:
            self.web.stop()
        self.transport.disconnect()
        deadline = time.monotonic() + self.drain_timeout_s
        while self.queue and time.monotonic() < deadline:
            if not self._db_usable():
                if time.monotonic() >= self._next_db_attempt and not self.db_thread.busy:
                    self._open_db(deadline)
                if not self._db_usable():
                    time.sleep(0.05)  # the stop event is set: it would not wait
                    continue
            self._write_some(deadline)
        self.lost_at_stop = len(self.queue)
        if self.lost_at_stop:
            where = (
                f"kept in the spool {self.spool.directory} for the next start"
                if self.spool is not None and self.spool.durable
                else "lost"
            )
            logger.error(
                "stopping with %d held messages not written (%s): the database %s is unreachable",
                self.lost_at_stop,
                where,
                self.db.engine.describe(),
            )
        self.state = State.STOPPED
        self._report_status()
        if not self.db_thread.busy:
            self._db_call(self.db.close, deadline_s=5.0)
        self.db_thread.stop()
        if self.spool is not None:
            self.spool.close()
        logger.info("edge-agent-hub stopped")

    # the database -----------------------------------------------------------------------------
    def _db_usable(self) -> bool:
        return self.db.is_open and not self.db_thread.busy and not self._close_pending

    def _db_call(self, fn: Callable[[], T], *, deadline_s: float | None = None) -> T:
        """``fn()`` on the database thread within ``[database] operation_deadline_s`` (or
        ``deadline_s``); the loop's keep-alive runs meanwhile. An overdue call raises
        :class:`DatabaseOverdueError` (a DatabaseUnavailableError) and the connection is
        dropped as soon as the call comes back."""
        limit = self.config.database.operation_deadline_s if deadline_s is None else deadline_s
        self._waiting = True
        try:
            return self.db_thread.call(
                fn, limit, while_waiting=self._keep_alive, abort=self.db.abort
            )
        except DatabaseOverdueError:
            self._close_pending = True
            raise
        finally:
            self._waiting = False

    def _open_db(self, deadline: float | None = None) -> None:
        limit = None if deadline is None else max(0.5, deadline - time.monotonic())
        try:
            self._db_call(self.db.open, deadline_s=limit)
        except DatabaseUnavailableError as err:
            self._db_lost(str(err))
            return
        if self.db_down_since is not None:
            logger.info(
                "database %s answers again after %.0f s; the outage ends with its first commit",
                self.db.engine.describe(),
                self.db_down_s(),
            )
            return
        logger.info(
            "database %s open (schema version %d)",
            self.db.engine.describe(),
            self.db.schema_version,
        )
        self._db_backoff.reset()
        if self.state in (State.STARTING, State.DEGRADED):
            self.state = State.RUNNING

    def _db_committed(self) -> None:
        """A commit went through: an outage under way ends here (not at a mere connection)."""
        if self.db_down_since is not None:
            logger.warning(
                "database %s is back after %.0f s: writing %d held messages",
                self.db.engine.describe(),
                self.db_down_s(),
                len(self.queue),
            )
            self.db_down_since = None
            self._db_backoff.reset()
        if self.state in (State.STARTING, State.DEGRADED):
            self.state = State.RUNNING

    def _db_lost(self, error: str) -> None:
        self._next_db_attempt = time.monotonic() + self._db_backoff.next_delay()
        if self.state in (State.STARTING, State.RUNNING):
            self.state = State.DEGRADED
        if self.db_down_since is not None:
            return
        self.db_down_since = self._clock()
        self.db_outages += 1
        q = self.config.queue
        logger.warning(
            "database unreachable: %s; holding fleet messages in %s (%d held now, at most "
            "%d messages or %d MiB; telemetry goes first when full)",
            error,
            "memory and the spool" if self.spool is not None and self.spool.durable else "memory",
            len(self.queue),
            q.max_messages,
            q.max_bytes // 2**20,
        )
        self._outage_report.next_at = time.monotonic() + q.report_interval_s
        self.notifier.status(self.status_line())

    def _write_some(self, deadline: float) -> int:
        """Write batches until the queue is empty, the deadline passes or the database fails."""
        written = 0
        batch_max = self.config.queue.batch_max
        while self._db_usable() and self.queue and time.monotonic() < deadline:
            batch = self.queue.take(batch_max)
            outcome = self._write_batch(batch)
            written += outcome.written
            settled = len(batch) - len(outcome.left)
            if settled:
                self.queue.done(batch[:settled])
                self._db_committed()
            if outcome.left:
                self.queue.give_back(outcome.left)
                self._db_lost(self.db.last_error or "the connection was lost")
                break
        return written

    def _write_batch(self, batch: list[Heard]) -> WriteOutcome:
        try:
            return self._db_call(lambda: self.db.write(batch))
        except DatabaseOverdueError as err:
            self.db.last_error = str(err)
            return WriteOutcome(left=batch)

    # periodic jobs ----------------------------------------------------------------------------
    def _report_outage(self) -> None:
        if self.db_down_since is None:
            return
        stats = self.queue.stats()
        logger.warning(
            "database %s unreachable for %.0f s (%s): %d messages held (%.0f%% of %d), "
            "%d dropped since the hub started",
            self.db.engine.describe(),
            self.db_down_s(),
            self.db.last_error or "no answer",
            stats["depth"],
            100.0 * stats["depth"] / stats["max_messages"],
            stats["max_messages"],
            stats["dropped"],
        )

    def _maintain(self) -> None:
        if not self._db_usable():
            return
        try:
            done = self._db_call(lambda: self.db.maintain(self.config.retention, self._clock()))
        except DatabaseUnavailableError as err:
            self._db_lost(str(err))
            return
        for key, n in done.items():
            self.maintenance[key] = self.maintenance.get(key, 0) + n
        if any(n for k, n in done.items() if k != "telemetry_points_kept"):
            logger.debug("maintenance: %s", done)

    def _request_rebirths(self) -> None:
        now = time.monotonic()
        interval = self.config.hub.rebirth_interval_s
        asked = 0
        for node in self.listener.nodes_without_birth():
            if asked >= _REBIRTHS_PER_ROUND:
                break
            last = self._rebirth_asked.get(node)
            if last is not None and now - last < interval:
                continue
            if not self._publish(self.topics.rebirth(node), RebirthRequest(reason="no birth seen")):
                return
            self._rebirth_asked[node] = now
            self._rebirth_asked.move_to_end(node)
            while len(self._rebirth_asked) > self.listener.max_nodes:
                self._rebirth_asked.popitem(last=False)
            self.rebirths_requested += 1
            asked += 1

    def _publish(self, topic: str, body: Any) -> bool:
        return self.publisher.publish(topic, body)

    def _report_status(self) -> None:
        if self._db_usable():
            try:
                self.learning_counts = self._db_call(self.learning.counts_by_reason)
                if self.learning_policy is not None and self.learning_policy.section.catch_up:
                    self.catch_up_counts = self._db_call(CatchUpStore(self.db).counts)
            except DatabaseUnavailableError as err:
                self._db_lost(str(err))
        status = self.status()
        self._write_status(status)
        if self._db_usable():
            summary = {k: status[k] for k in ("state", "updated_at", "queue", "database")}
            summary["heard"] = status["heard"]
            try:
                beat = self._db_call(
                    lambda: self.db.heartbeat(
                        self.hub_id,
                        host=self.host,
                        pid=os.getpid(),
                        started=self.started_at,
                        status=summary,
                    )
                )
            except DatabaseUnavailableError as err:
                self._db_lost(str(err))
            else:
                if beat:
                    self._db_committed()
                else:
                    self._db_lost(self.db.last_error)
        if self.web is not None:
            self._refresh_web(status)

    def _write_status(self, status: dict[str, Any]) -> None:
        """The status file, the Prometheus file and systemd's status line (no database)."""
        path = self.config.hub.status_path
        try:
            write_atomic(path, (to_json(status) + "\n").encode(), durable=False, mkdir=True)
        except OSError as err:
            logger.warning("cannot write the status file %s: %s", path, err)
        prom = self.config.hub.prometheus_textfile
        if prom is not None:
            try:
                self.metrics.write_prometheus(prom, {"hub": self.hub_id})
            except OSError as err:
                logger.warning("cannot write the Prometheus file %s: %s", prom, err)
        if self.web is not None:
            self.web.hub_status = status
        self.notifier.status(self.status_line())

    def _refresh_web(self, status: dict[str, Any]) -> None:
        """A new snapshot for /metrics and the page (the HTTP thread only reads it)."""
        assert self.web is not None
        queue = status["queue"]
        hub = {
            "id": self.hub_id,
            "state": status["state"],
            "db_up": int(self.db.is_open),
            "queue_depth": queue.get("depth", 0) if isinstance(queue, dict) else 0,
            "exposure": status["exposure"],
            "silent_after_s": self.config.hub.silent_after_s,
        }
        if not self._db_usable():  # keep showing the last snapshot, with the hub's own numbers
            old = self.web.snapshot
            self.web.snapshot = replace(old, hub=hub)
            return
        try:
            self.web.snapshot = self._db_call(
                lambda: build_snapshot(
                    self.db,
                    hub,
                    silent_after_s=self.config.hub.silent_after_s,
                    history=self._health_history,
                )
            )
        except DatabaseUnavailableError as err:
            self._db_lost(str(err))

    # status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What ``edge-agent-hub status`` shows (the status file's content)."""
        mqtt = self.config.mqtt
        heard = self.listener.counts()
        queue = self.queue.stats()
        spool = {} if self.spool is None else self.spool.stats()
        return {
            "hub_id": self.hub_id,
            "version": __version__,
            "pid": os.getpid(),
            "host": self.host,
            "state": self.state.value,
            "started_at": self.started_at,
            "updated_at": self._clock(),
            "fleet": mqtt.fleet,
            "mqtt": {
                "broker": f"{mqtt.host}:{mqtt.port}",
                "connected": self.transport.is_connected,
                "refused": self.transport.last_refusal,
                "share_group": mqtt.share_group,
                "subscriptions": [p for p, _ in self.listener.patterns()],
            },
            "database": {
                "engine": self.db.engine.name,
                "where": self.db.engine.describe(),
                "up": self.db.is_open,
                "down_since": self.db_down_since,
                "down_s": round(self.db_down_s(), 1),
                "last_error": self.db.last_error,
                "schema_version": self.db.schema_version,
                "written": self.db.written,
                "rejected": self.db.rejected,
                "outages": self.db_outages,
                "lost_at_stop": self.lost_at_stop,
                "busy_s": round(self.db_thread.busy_s(), 1),
                "overdue": self.db_thread.overdue,
            },
            "queue": queue,
            "spool": None if self.spool is None else spool,
            "exposure": self.exposure(queue, spool),
            "heard": heard,
            "dropped_malformed": sum(n for k, n in heard.items() if k.startswith("malformed.")),
            "dropped_forged": sum(n for k, n in heard.items() if k.startswith("forged.")),
            "rebirths_requested": self.rebirths_requested,
            "maintenance": dict(self.maintenance),
            "health_dropped": dict(self.db.health_dropped),
            "counters": self.metrics.values(),
            "rollouts": None if self.rollouts is None else self.rollouts.status(),
            "learning": dict(self.learning_counts),
            "learning_rounds": None
            if self.learning_policy is None
            else dict(self.learning_policy.counts),
            "catch_ups": dict(self.catch_up_counts) if self.catch_up_counts else None,
            "http": None
            if self.web is None
            else {
                "url": f"http://{self.config.http.listen}:{self.web.port}/",
                "requests": self.web.requests,
                "refused": self.web.refused,
                "max_connections": self.web.max_connections,
                "connections": self.web.connection_counts(),
            },
        }

    def exposure(
        self, queue: dict[str, int], spool: dict[str, int | float | bool]
    ) -> dict[str, int | float]:
        """What a crash would cost now: ``held`` messages the broker was acknowledged and the
        database does not have yet; of them ``lost_if_killed`` are in memory only (no spool, or
        a spool that refused them) and ``lost_if_power_cut`` also counts spooled records not
        fsynced yet, the oldest of them ``unsynced_s`` old."""
        memory_only = int(queue.get("memory_only", 0))
        return {
            "held": int(queue.get("depth", 0)),
            "lost_if_killed": memory_only,
            "lost_if_power_cut": memory_only + int(spool.get("unsynced", 0)),
            "unsynced_s": float(spool.get("unsynced_s", 0.0)),
        }

    def status_line(self) -> str:
        """One line for ``systemctl status``."""
        held = len(self.queue)
        db = "database up" if self.db.is_open else f"DATABASE DOWN {self.db_down_s():.0f} s"
        broker = "broker up" if self.transport.is_connected else "broker down"
        return f"{self.state.value}: {broker}, {db}, {held} held, {self.db.written} written"
