"""The daemon's side of the fleet link: one object between the tick loop and the broker.

:class:`FleetUplink` builds the node's fleet stack from the config
(:class:`~edge_agent.fleet.node.NodeStack`: the MQTT transport, the durable outbox, the
:class:`~edge_agent.fleet.link.FleetLink`, the nonce store, the command verifier and processor;
the fleet simulator builds the same), the observation routes of the MQTT sources, and does the
fleet's bounded work between two ticks:

- before the groups step (:meth:`before_tick`): connection events and acknowledgements, at most
  :data:`MAX_MESSAGES_PER_TICK` incoming messages, at most :data:`MAX_COMMANDS_PER_TICK` hub
  commands dispatched to the handler table and answered;
- after (:meth:`after_tick`): the tick's messages sent, the outbox committed.

It publishes what the daemon hands it (actions, events with rate-limited noisy kinds, results,
telemetry, births) and counts what it could not. Every piece of work runs under
:meth:`guarded`, so a fleet failure is logged and counted, never the tick's. paho is imported
only when the stack is built, and only by daemons with ``[mqtt] enabled``; nothing here imports
the service module.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from edge_agent.config.daemon import ConfigFile, DaemonConfig
from edge_agent.coordination.config import CoordinationConfig
from edge_agent.daemon.admission import hub_keys, mqtt_password
from edge_agent.daemon.group_runtime import GroupRuntime
from edge_agent.errors import EdgeAgentError
from edge_agent.fleet.commands import Handler
from edge_agent.fleet.comms.base import Backoff, Incoming, reason_text
from edge_agent.fleet.link import Received
from edge_agent.fleet.node import BundleReceiver, NodeLimits, NodeStack
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import (
    ActionBatch,
    Birth,
    BundleChunk,
    Command,
    CommandResult,
    Envelope,
    EventKind,
    Health,
    LearningDelta,
    ObservationBatch,
    Severity,
)
from edge_agent.fleet.topics import Topics
from edge_agent.state_faults import StateFaults

if TYPE_CHECKING:  # the engine is imported only by a daemon that coordinates (service.py)
    from edge_agent.coordination.runtime import CoordinationRuntime

    # The groups' MQTT I/O: imported only when a group has an MQTT source or sink (bind_sources,
    # group_runtime.py), 0.16 MB a node without one does not pay (docs/memory.md).
    from edge_agent.fleet.agent_io import ActionPublisher, ObservationBuffer, ObservationRouter

logger = logging.getLogger(__name__)

#: Fleet work per tick is bounded: incoming messages taken, commands applied.
MAX_MESSAGES_PER_TICK: Final = 32
MAX_COMMANDS_PER_TICK: Final = 16
#: Refused commands are answered at most this many per second (QoS 0, never through the outbox)
#: and held at most this many deep; the rest are counted, not answered.
REFUSAL_ANSWERS_PER_S: Final = 10.0
REFUSAL_ANSWERS_HELD: Final = 64
#: Refusals are logged as one summary line at most this often (the first one at once).
REFUSAL_LOG_INTERVAL_S: Final = 60.0
#: Result codes that refuse a command: answered at a bounded rate, without durability.
REFUSALS: Final = frozenset(
    {
        ResultCode.BAD_SIGNATURE,
        ResultCode.UNKNOWN_KEY,
        ResultCode.EXPIRED,
        ResultCode.REPLAYED,
        ResultCode.UNKNOWN_COMMAND,
        ResultCode.BAD_ARGS,
    }
)
#: Noisy events (rejected input, refused commands) are published at most this often per kind
#: and group; the next one carries how many were folded into it.
NOISY_EVENT_INTERVAL_S: Final = 5.0

#: The daemon's own event names -> the protocol's event kinds.
EVENT_KINDS: Final = {
    "memory_degraded": EventKind.BUDGET,
    "thermal_throttle": EventKind.THERMAL,
    "thermal_critical": EventKind.THERMAL,
    "under_voltage": EventKind.ALARM,
    "snapshot_failed": EventKind.ALARM,
    "snapshot_corrupt": EventKind.ALARM,
    "tick_failed": EventKind.ALARM,
    "fleet_failed": EventKind.ALARM,
    "command_refused": EventKind.ALARM,
    "state_recovered": EventKind.ALARM,
    "storage_error": EventKind.ALARM,
    "reload_refused": EventKind.CONFIG,
    "overlay_ignored": EventKind.CONFIG,
    "rejected_input": EventKind.REJECTED_INPUT,
    "io_refused": EventKind.ALARM,
    "io_silent": EventKind.ALARM,
    "input_out_of_range": EventKind.ALARM,
    "drift": EventKind.ALARM,  # a group's model stopped fitting (docs/health.md)
    "drift_cleared": EventKind.ALARM,  # ... and fits again (severity info)
    "deploy": EventKind.DEPLOY,
    "rollback": EventKind.ROLLBACK,
    "connectivity": EventKind.CONNECTIVITY,
    "started": EventKind.OTHER,
}
_NOISY: Final = frozenset({"rejected_input", "command_refused"})

#: ``event(kind, severity, detail, group=..., data=...)``: the daemon records it and calls back
#: :meth:`FleetUplink.publish_event`.
EventSink = Callable[..., None]


class FleetUplink:
    """Transport, outbox, link, observation routes and commands of one daemon (module doc)."""

    def __init__(
        self,
        config: DaemonConfig,
        source: ConfigFile,
        state_dir: Path,
        *,
        birth: Birth,
        handlers: dict[str, Handler],
        event: EventSink,
        bundles: BundleReceiver | None = None,
        faults: StateFaults | None = None,
    ) -> None:
        # paho is imported only by daemons that use MQTT.
        from edge_agent.fleet.comms.mqtt import MqttSettings, TlsSettings  # noqa: PLC0415

        m = config.mqtt
        self.config = config
        self.bundles = bundles
        self.node_id = m.effective_node_id()
        self.topics = Topics(m.fleet)
        self._event = event
        password = mqtt_password(config, source)
        tls = None
        if m.tls.enabled:
            tls = TlsSettings(
                ca_file=str(m.tls.ca_file) if m.tls.ca_file else None,
                cert_file=str(m.tls.cert_file) if m.tls.cert_file else None,
                key_file=str(m.tls.key_file) if m.tls.key_file else None,
            )
        settings = MqttSettings(
            client_id=f"ea-{m.fleet}-{self.node_id}"[:256],
            host=m.host,
            port=m.port,
            keepalive_s=m.keepalive_s,
            username=m.username or None,
            password=password,
            tls=tls,
        )
        keys = hub_keys(config, source)
        self.hub_keys = keys
        """The keys whose signed commands the node obeys (None: none); their holders are also
        the fleet's authority over task ids (``docs/coordination.md``)."""
        if keys is None:
            logger.warning(
                "no hub keys ([mqtt] hub_keys_dir or [daemon] trusted_keys_dir): every hub "
                "command will be refused"
            )
        self.stack = NodeStack(
            state_dir,
            node_id=self.node_id,
            fleet=m.fleet,
            mqtt=settings,
            backoff=Backoff(initial_s=m.reconnect_initial_s, max_s=m.reconnect_max_s),
            birth=birth,
            hub_keys=keys,
            handlers=handlers,
            bundles=bundles,
            limits=NodeLimits(
                outbox_max_bytes=m.outbox_max_bytes,
                outbox_commit_interval_s=m.outbox_commit_interval_s,
                max_inbox=128 + (config.coordination or CoordinationConfig()).max_inbox,
                command_max_ttl_s=m.command_max_ttl_s,
            ),
            faults=faults if faults is not None else StateFaults(),
        )
        self.outbox = self.stack.outbox
        self.transport = self.stack.transport
        self.link = self.stack.link
        self.nonces = self.stack.nonces
        self.commands = self.stack.commands
        self.router: ObservationRouter | None = None  # built by bind_sources for MQTT sources
        self._routes: dict[str, list[ObservationBuffer]] = {}  # filled by listen
        self._sinks: dict[str, list[ActionPublisher]] = {}  # filled by publishes
        self._io_said: set[tuple[str, str, str]] = set()  # (what, topic, group) logged once
        self._online_since: float | None = None  # monotonic; the link's last connect
        self.link.claim(self._claim)  # MQTT sources' topics never reach the link's inbox
        self.link.on_refused = self._refused
        self.coordination: CoordinationRuntime | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "telemetry_published",
                "events_published",
                "events_suppressed",
                "events_lost",
                "results_published",
                "health_published",
                "learning_published",
                "learning_lost",
                "publish_refused",
                "actions_refused",
                "obs_unrouted",
                "io_refused",
                "messages_ignored",
                "errors",
                "published_unstored",
            ),
            0,
        )
        self._noisy: dict[tuple[str, str | None], tuple[float, int]] = {}
        self._last_error = -1e18
        # The link's connects and disconnects already reported as connectivity events.
        self._links_seen = (0, 0)
        # Refusals: answers waiting for their turn (bounded), a token bucket, the log summary.
        self._refusal_lock = threading.Lock()
        self._refusals: deque[CommandResult] = deque()
        self._tokens = REFUSAL_ANSWERS_PER_S
        self._tokens_at = time.monotonic()
        self._refused_codes: Counter[str] = Counter()
        self._refusal_logged_at = -1e18
        self._last_refusal = ""
        self.refusals: dict[str, int] = dict.fromkeys(
            ("screened", "answered", "unanswered", "logged_summaries"), 0
        )
        self.link.screen = self._screen

    # -- life -----------------------------------------------------------------------------------
    @property
    def online(self) -> bool:
        return self.link.online

    def _claim(self, msg: Incoming) -> bool:
        """The link's claim (transport thread): a message on an MQTT source's topic filter goes
        to the router; none is claimed while no group has an MQTT source."""
        router = self.router
        return router is not None and router.handle(msg)

    def bind_sources(self, groups: Sequence[GroupRuntime]) -> None:
        """Point the MQTT sources' topic filters at their groups' observation buffers, and
        subscribe to the filters outside the node's own inbox; connect the MQTT sinks to this
        uplink (their port)."""
        self._routes, self._sinks = {}, {}
        for g in groups:
            g.connect(self)  # the inboxes call listen, the mqtt sinks publishes
        if self._routes and self.router is None:
            from edge_agent.fleet.agent_io import ObservationRouter  # noqa: PLC0415

            self.router = ObservationRouter(self.topics)
        if self.router is None:
            return
        self.router.bind(self._routes)
        inbox_prefix = self.topics.obs_all(self.node_id)[:-1]  # the node subscribes to obs/#
        for pattern in self.router.patterns:
            if not pattern.startswith(inbox_prefix):
                self.link.subscribe(pattern, 1)

    def start(self) -> None:
        """Start connecting in the background (the broker may be down: nothing waits)."""
        if self.coordination is not None:
            self.coordination.start()
        self.link.start()

    def stop(self) -> None:
        """Drain briefly, disconnect, close the stores (after the last telemetry and death)."""
        try:
            self.link.stop(drain_timeout_s=1.0)
        except Exception:  # shutting down: report and go on closing
            logger.exception("fleet link did not stop cleanly")
        if self.coordination is not None:
            self.coordination.close()
        self.stack.close()

    def guarded(self, step: Callable[[], object]) -> None:
        """Run one piece of fleet work; its failure is logged and counted, never the tick's."""
        try:
            step()
        except Exception:  # the fleet's boundary: the agents keep ticking
            self.counters["errors"] += 1
            now = time.monotonic()
            if now - self._last_error > 60.0:
                self._last_error = now
                logger.exception("fleet work failed (logged at most once a minute)")

    # -- refusals (a flood is screened on the transport thread) ----------------------------------
    def _screen(self, env: Envelope) -> bool:
        """Transport thread: a command whose target, key or signature is wrong never reaches
        the inbox; its refusal waits for a bounded, rate-limited answer."""
        cmd = env.body
        if not isinstance(cmd, Command):
            return True
        outcome = self.commands.verifier.precheck(cmd)
        if outcome is None:
            return True
        self.commands.refuse_early(cmd, outcome)
        result = CommandResult(
            nonce=cmd.nonce, name=cmd.name, code=outcome.code, detail=outcome.detail[:1024]
        )
        with self._refusal_lock:
            self.refusals["screened"] += 1
            self._note_refusal(cmd.name, result)
        return False

    def _note_refusal(self, name: str, result: CommandResult) -> None:
        """Hold an answer (bounded: the oldest unanswered one is dropped) and count it for the
        summary; the caller holds the lock."""
        if len(self._refusals) >= REFUSAL_ANSWERS_HELD:
            self._refusals.popleft()
            self.refusals["unanswered"] += 1
        self._refusals.append(result)
        self._refused_codes[result.code.value] += 1
        self._last_refusal = f"{name}: {result.code.value}: {result.detail}"[:256]

    def _answer_refusals(self) -> None:
        """Between ticks: answer held refusals at REFUSAL_ANSWERS_PER_S with QoS 0 (a refusal is
        worth nothing late and never touches storage), and log the summary when due."""
        now = time.monotonic()
        with self._refusal_lock:
            self._tokens = min(
                REFUSAL_ANSWERS_PER_S,
                self._tokens + (now - self._tokens_at) * REFUSAL_ANSWERS_PER_S,
            )
            self._tokens_at = now
            answers = []
            while self._refusals and self._tokens >= 1.0:
                answers.append(self._refusals.popleft())
                self._tokens -= 1.0
            codes, last = self._refused_codes, self._last_refusal
            summary = bool(codes) and (now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL_S)
            if summary:
                self._refused_codes = Counter()
                self._refusal_logged_at = now
                self.refusals["logged_summaries"] += 1
        for result in answers:
            try:
                self.link.publish(CommandResult.TYPE, result, "result", qos=0)
            except EdgeAgentError:
                self.refusals["unanswered"] += 1
            else:
                self.refusals["answered"] += 1
        if summary:
            total = sum(codes.values())
            by_code = ", ".join(f"{code} {n}" for code, n in codes.most_common())
            logger.warning(
                "refused %d command(s) (%s); last: %s; at most one such line a minute",
                total,
                by_code,
                last,
            )

    # -- between ticks ----------------------------------------------------------------------------
    def before_tick(self) -> None:
        """Link events, incoming messages, commands (their results go out at once)."""
        link, commands = self.link, self.commands
        link.pump()
        seen = (link.counters["connects"], link.counters["disconnects"])
        if seen != self._links_seen:
            # By the counts, not by `online` alone: a connection lost and made again within
            # one pump (a node resumed after the broker came back) is reported too.
            made, lost = seen[0] > self._links_seen[0], seen[1] > self._links_seen[1]
            self._links_seen = seen
            m = self.config.mqtt
            if lost and link.online:  # lost, then connected again: in that order
                self._event("connectivity", "warning", f"lost {m.host}:{m.port}")
            if made:
                self._event("connectivity", "info", f"connected to {m.host}:{m.port}")
            if lost and not link.online:
                self._event("connectivity", "warning", f"lost {m.host}:{m.port}")
            self._online_since = time.monotonic() if link.online else None
        self._note_silent_sources()
        for received in self._receive(min(commands.room, MAX_MESSAGES_PER_TICK)):
            body = received.envelope.body
            if isinstance(body, Command):
                commands.offer(body)
            elif isinstance(body, BundleChunk):
                if self.bundles is None:
                    self.counters["messages_ignored"] += 1
                else:
                    self.bundles.broadcast_chunk(body)
            elif isinstance(body, ObservationBatch):
                # An observation on the node's own inbox topic (obs/#), routed to its group.
                router = self.router
                if router is None or not router.deliver(received.topic, received.envelope):
                    self.counters["obs_unrouted"] += 1
            else:
                self.counters["messages_ignored"] += 1
        answered = commands.process(MAX_COMMANDS_PER_TICK)
        for cmd, result in answered:
            if result.code in REFUSALS:
                with self._refusal_lock:
                    self._note_refusal(cmd.name, result)
            else:
                self.publish_result(result)
            if result.code not in (ResultCode.OK, ResultCode.ACCEPTED) and (
                cmd.name != "deploy_chunk"
            ):
                self._event(
                    "command_refused",
                    "warning",
                    f"command {cmd.name} from key {cmd.key_id[:16]!r}: {result.code.value}: "
                    f"{result.detail}",
                    data={"code": result.code.value, "command": cmd.name},
                )
        self._answer_refusals()
        self.stack.follow_broadcast()
        if answered:
            link.pump()  # results go out now, not after the groups' step

    def _receive(self, limit: int) -> list[Received]:
        """Up to ``limit`` incoming messages for the daemon; coordination messages met on the
        way go to the coordination runtime's bounded queue and do not count."""
        coordination = self.coordination
        if coordination is None:
            return self.link.receive(limit)
        out: list[Received] = []
        for _ in range(1 + coordination.config.max_inbox // MAX_MESSAGES_PER_TICK):
            batch = self.link.receive(limit - len(out))
            out.extend(m for m in batch if not coordination.handle(m))
            if not batch or len(out) >= limit:
                break
        return out

    def after_tick(self) -> None:
        self.link.pump()  # sends this tick's messages now; commits the outbox first
        self.link.flush()

    def listen(self, topic: str, inbox: ObservationBuffer) -> None:
        """An ``mqtt`` source's port: route the topic filter ``topic`` to ``inbox`` (while
        :meth:`bind_sources` runs)."""
        self._routes.setdefault(topic, []).append(inbox)

    def publishes(self, topic: str, publisher: ActionPublisher) -> None:
        """An ``mqtt`` sink's port: the broker's refusals of ``topic`` go to ``publisher``
        (while :meth:`bind_sources` runs)."""
        self._sinks.setdefault(topic, []).append(publisher)

    # -- the broker's answers about the groups' I/O ---------------------------------------------
    def _refused(self, what: str, topic: str, code: int) -> None:
        """The link's ``on_refused``: the broker refused the subscription to ``topic``
        (``what`` ``subscribe``) or a message on it (``publish``). A group's I/O topic: counted
        by the group, said once per topic and group in one line and one ``io_refused`` event."""
        reason = reason_text(code)
        subscribe = what == "subscribe"
        targets: list[ObservationBuffer] | list[ActionPublisher] = (
            self._routes.get(topic, []) if subscribe else self._sinks.get(topic, [])
        )
        self.counters["io_refused"] += len(targets)
        access = "read" if subscribe else "write"
        for group in [t.group for t in targets if t.refused(reason)]:
            self._say_io(
                "io_refused",
                topic,
                group,
                f"group {group!r}: the broker refused the "
                f"{'subscription to' if subscribe else 'actions published on'} "
                f"{topic!r} ({reason}): its ACL must let node {self.node_id!r} {access} it "
                f"(edge-agent-host broker init --io-topic / --io-read, docs/security.md)",
            )

    def _note_silent_sources(self) -> None:
        """Between ticks: an MQTT source whose group still waits with nothing heard
        ``[mqtt] io_silent_after_s`` after the link came up is said once (mosquitto grants a
        subscription its ACL denies and delivers nothing: no SUBACK tells)."""
        since, after = self._online_since, self.config.mqtt.io_silent_after_s
        if since is None or time.monotonic() - since < after:
            return
        for topic, buffers in self._routes.items():
            for buf in buffers:
                said = ("io_silent", topic, buf.group) in self._io_said
                if said or buf.refusals or buf.heard or not buf.unobserved:
                    continue
                self._say_io(
                    "io_silent",
                    topic,
                    buf.group,
                    f"group {buf.group!r}: nothing arrived on {topic!r} in "
                    f"{after:g} s online ({buf.unobserved} agents never observed): "
                    f"does a sensor publish there, and may node {self.node_id!r} read it? "
                    "(mosquitto grants a subscription its ACL denies and delivers nothing: "
                    "edge-agent-host broker init --io-read / --io-topic, docs/security.md)",
                )

    def _say_io(self, kind: str, topic: str, group: str, line: str) -> None:
        """``line`` in the log and as a ``kind`` event, once per kind, topic and group."""
        if (kind, topic, group) in self._io_said:
            return
        self._io_said.add((kind, topic, group))
        severity = "error" if kind == "io_refused" else "warning"
        logger.log(logging.ERROR if kind == "io_refused" else logging.WARNING, "%s", line)
        self._event(kind, severity, line, group=group, data={"topic": topic})

    # -- publishing -------------------------------------------------------------------------------
    def send_actions(self, topic: str, body: ActionBatch) -> bool:
        """An ``mqtt`` sink's port (:class:`~edge_agent.fleet.agent_io.ActionPort`): one body
        of a group's actions to ``topic``; False, counted, if the link refused it."""
        try:
            self.link.publish(
                ActionBatch.TYPE, body, "action", topic=topic, qos=self.config.mqtt.action_qos
            )
        except EdgeAgentError:
            self.counters["actions_refused"] += 1
            return False
        return True

    def publish_result(self, result: CommandResult) -> None:
        try:
            self.link.publish_result(result)
        except EdgeAgentError as err:
            self.counters["publish_refused"] += 1
            logger.warning("result of %s not published: %s", result.name, err)
        else:
            self.counters["results_published"] += 1

    def publish_event(
        self,
        kind: str,
        severity: str,
        detail: str,
        *,
        group: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Publish a daemon event (class ``event``). Noisy kinds (rejected input, refused
        commands) go out at most once per :data:`NOISY_EVENT_INTERVAL_S` per group; the next
        carries ``suppressed``."""
        payload = dict(data or {})
        if kind in _NOISY:
            key = (kind, group)
            last, suppressed = self._noisy.get(key, (-1e18, 0))
            mono = time.monotonic()
            if mono - last < NOISY_EVENT_INTERVAL_S:
                self._noisy[key] = (last, suppressed + 1)
                self.counters["events_suppressed"] += 1
                return
            self._noisy[key] = (mono, 0)
            if suppressed:
                payload["suppressed"] = suppressed
        self.counters["events_published"] += 1
        payload.update(n=self.counters["events_published"], name=kind)
        qos = self._qos()
        try:
            self.link.publish_event(
                EVENT_KINDS.get(kind, EventKind.OTHER),
                detail[:1024],
                severity=severity if severity in Severity.__members__.values() else "info",
                group=group,
                data=payload,
                qos=qos,
            )
        except EdgeAgentError as err:
            # The number stays used: receivers see the gap in data.n (and events_lost counts it).
            self.counters["events_lost"] += 1
            self.counters["publish_refused"] += 1
            logger.warning("event %s (n=%d) not published: %s", kind, payload["n"], err)

    def publish_telemetry(self, body: dict[str, Any], counters: dict[str, int | float]) -> None:
        """One telemetry message: ``body`` (the protocol's fields) with ``counters`` (the
        daemon's metrics) numbered by ``telemetry.n``."""
        n = self.counters["telemetry_published"] + 1
        body["counters"] = {"telemetry.n": n, **counters}
        self.link.publish_telemetry(body, qos=self._qos())
        self.counters["telemetry_published"] = n

    def publish_health(self, body: Health) -> None:
        """One :class:`~edge_agent.fleet.protocol.Health` message (class telemetry: the next
        supersedes it, dropped oldest first when the outbox is full)."""
        self.link.publish(Health.TYPE, body, "telemetry", qos=self._qos())
        self.counters["health_published"] += 1

    def publish_learning(self, body: LearningDelta) -> bool:
        """One :class:`~edge_agent.fleet.protocol.LearningDelta` on the node's ``learning``
        topic, through the outbox as class ``event`` (kept across outages, never dropped for
        telemetry). False, counted ``learning_lost`` and logged, when the outbox refused it
        (full, or its storage failing)."""
        try:
            self.link.publish(LearningDelta.TYPE, body, "event", qos=1)
        except EdgeAgentError as err:
            self.counters["learning_lost"] += 1
            logger.warning(
                "learning delta of group %r (seq %d) not published: %s", body.group, body.seq, err
            )
            return False
        self.counters["learning_published"] += 1
        return True

    @property
    def max_payload_bytes(self) -> int:
        """The largest message the link encodes."""
        return self.link.max_payload_bytes

    def _qos(self) -> int:
        """1 (through the outbox), or 0 while the outbox cannot commit (a full disk): what it
        stores is lost anyway, and sent now the hub still sees the node and its storage errors."""
        if self.outbox.commit_failing:
            self.counters["published_unstored"] += 1
            return 0
        return 1

    def set_birth(self, birth: Birth) -> None:
        self.link.set_birth(birth)

    def metrics(self) -> dict[str, int]:
        """The uplink's counters for the metrics registry (``fleet.*``, ``fleet.refusals_*``)."""
        out = {k: v for k, v in self.counters.items() if k != "telemetry_published"}
        with self._refusal_lock:
            out.update({f"refusals_{k}": v for k, v in self.refusals.items()})
        return out

    def _broker_problem(self) -> str:
        """Why the broker does not take this node, when it said (a refusal, TLS it wants)."""
        wanted = self.transport.tls_wanted
        if wanted:
            from edge_agent.fleet.comms.tls_probe import CONFIG_TLS_OPTIONS  # noqa: PLC0415

            return f"it wants {wanted}: {CONFIG_TLS_OPTIONS.advice(wanted)}"
        refusal = self.transport.last_refusal
        return f"it refused: {refusal}" if refusal else ""

    def status(self) -> dict[str, Any]:
        m = self.config.mqtt
        return {
            "node_id": self.node_id,
            "fleet": m.fleet,
            "broker": f"{m.host}:{m.port}",
            "online": self.link.online,
            "broker_problem": self._broker_problem(),
            **self.counters,
            "refusals": dict(self.refusals),
            "link": self.link.stats(),
            "nonces": {
                "available": self.nonces.available,
                "replay_floor": self.nonces.replay_floor or None,
                "lost": self.nonces.lost,
            },
        }
