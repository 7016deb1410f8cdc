"""One simulated node: the daemon's fleet parts for real, no agents.

A :class:`SimNode` is what a real node shows the hub and the broker, built by the daemon's own
:class:`~edge_agent.fleet.node.NodeStack`: a real MQTT connection
(:class:`~edge_agent.fleet.comms.mqtt.MqttTransport`), the real durable outbox and fleet link
(birth, presence, will, telemetry, events, results, sequence numbers), real command verification
(signatures, nonces and replays in a real nonce store) and the real deployment transfer
(:class:`~edge_agent.fleet.deploy.DeployManager`: unicast chunks and the bundle broadcast, the
whole file's hash, the bundle's signature against the trusted keys, staging, the overlay and the
journal). Only the agents are missing: the preflight is a rule (``fails``: this node's check
fails) instead of stepping a scratch group, and the "group" steps by itself once per
:meth:`step`, so that a switched bundle is watched for ``watch_ticks`` steps and reported.

At the telemetry cadence the node also publishes its group's :class:`~edge_agent.fleet.protocol.
Health` (``health=True``): window means of a model that fits, an excess surprise around 0 with
the noise of a mean over its agents (:data:`EXCESS_NOISE`), and the other measures around fixed
levels; while it runs a bundle of manifest version ``worse_version`` every measure is shifted the
way a worse model shifts them (``worse_shift`` nats more excess surprise). A Page-Hinkley
statistic on the window means stands in for the device's drift detector.

With a :class:`~.learning.DeltaMaker` (``learning``) the group also learns: :meth:`SimNode.report`
publishes one report of learning deltas as a learning group does (through the outbox, class
``event``, QoS 1, on the node's ``learning`` topic), against the bundle the node runs when it is
of the line, else the line's bundle; its ``seq`` continues from the last one sent (kept in the
node's state directory, as a daemon keeps it).

The simulator steps many nodes from one thread (:mod:`.fleet`); each node's transport has its
own network thread (paho), as a real node's does.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from edge_agent import __version__
from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.errors import EdgeAgentError
from edge_agent.fleet.commands import DeployArgs, Outcome
from edge_agent.fleet.comms.base import Backoff
from edge_agent.fleet.comms.mqtt import MqttSettings
from edge_agent.fleet.deploy import DeployManager, PreflightCheck
from edge_agent.fleet.node import NodeStack
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import (
    Birth,
    BundleChunk,
    Command,
    CommandResult,
    DriftState,
    EventKind,
    GroupHealth,
    GroupInfo,
    Health,
    LearningDelta,
    MeasureSummary,
    Telemetry,
)
from edge_agent.fleet.topics import Topics
from edge_agent_host.fleetsim.learning import DeltaMaker

logger = logging.getLogger(__name__)

__all__ = ["GROUP", "SimNode"]

GROUP: Final = "grid"
"""The one group every simulated node has."""
AGENTS: Final = 1000
BUDGET: Final = 48 * 1024 * 1024
_EVENT_KINDS: Final = frozenset(k.value for k in EventKind)
#: Standard deviation of a window's mean excess surprise (nats) of a model that fits.
EXCESS_NOISE: Final = 0.03
#: The simulated drift detector: Page-Hinkley on the window means, tolerance and threshold.
DRIFT_DELTA: Final = 0.05
DRIFT_THRESHOLD: Final = 2.0


class SimNode:
    """A simulated node (module docstring). Single-threaded: call :meth:`step` from one thread."""

    def __init__(
        self,
        node_id: str,
        state_dir: Path,
        *,
        fleet: str,
        host: str,
        port: int,
        hub_keys: TrustedKeys | None,
        bundle_keys: TrustedKeys | None,
        fails: bool = False,
        fail_version: str | None = None,
        telemetry_s: float = 10.0,
        seed: int = 0,
        health: bool = True,
        worse_version: str | None = None,
        worse_shift: float = 0.5,
        learning: DeltaMaker | None = None,
    ) -> None:
        self.node_id = node_id
        self.learning = learning
        self._seq_file = state_dir / "learning_seq"
        self.reports = 0
        self.state_dir = state_dir
        self.fails = fails
        self.fail_version = fail_version
        self.telemetry_s = telemetry_s
        self.health = health
        self.worse_version = worse_version
        self.worse_shift = worse_shift
        self._rng = np.random.default_rng(seed)
        self._drift = 0.0
        self._drift_since: float | None = None
        self._health_ticks = 0
        self.topics = Topics(fleet)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.bundle_sha: str | None = None
        self.bundle_name: str | None = None
        self.ticks = 0
        self.started = time.monotonic()
        self._next_telemetry = self.started + (seed % 97) / 97 * telemetry_s  # spread them out
        self.deployer = DeployManager(state_dir, bundle_keys=bundle_keys)
        self.deployer.recover()
        entry = self.deployer.deployed(GROUP)
        if entry is not None:
            self.bundle_sha, self.bundle_name = entry.sha256, _bundle_name(Path(entry.path))
        self.deployer.bind(
            self._prepare_check,
            current_sha=lambda _group: self.bundle_sha,
            group_exists=lambda group: group == GROUP,
        )
        self.stack = NodeStack(
            state_dir,
            node_id=node_id,
            fleet=fleet,
            mqtt=MqttSettings(
                client_id=f"ea-{fleet}-{node_id}", host=host, port=port, keepalive_s=30
            ),
            backoff=Backoff(initial_s=0.5, max_s=10.0),
            birth=self._birth(),
            hub_keys=hub_keys,
            handlers={
                "ping": lambda _args, _cmd: Outcome(ResultCode.OK, "pong"),
                "rebirth": self._rebirth,
                "deploy": self._deploy,
                "deploy_chunk": lambda args, _cmd: self.deployer.chunk(args),
            },
            bundles=self.deployer,
        )
        self.link = self.stack.link
        self.commands = self.stack.commands
        self._watching = False

    # life -------------------------------------------------------------------------------------
    def start(self) -> None:
        self.link.start()

    def stop(self) -> None:
        try:
            self.link.stop(drain_timeout_s=1.0)
        finally:
            self.deployer.close()
            self.stack.close()

    # one round --------------------------------------------------------------------------------
    def step(self, now: float | None = None) -> None:
        """What a daemon does between two ticks, and the tick of its (absent) agents."""
        now = time.monotonic() if now is None else now
        link = self.link
        link.pump()
        for received in link.receive(64):
            body = received.envelope.body
            if isinstance(body, Command):
                self.commands.offer(body)
            elif isinstance(body, BundleChunk):
                self.deployer.broadcast_chunk(body)
        for _cmd, result in self.commands.process(64):
            link.publish_result(result)
        self.stack.follow_broadcast()
        ready = self.deployer.poll()
        if ready is not None:
            self.bundle_sha, self.bundle_name = ready.sha256, _bundle_name(ready.path)
            self.deployer.switched(ready, "{}")
            self._watching = True
        self.ticks += 1
        if self._watching and self.deployer.watch_tick():
            self._watching = False
            link.set_birth(self._birth())
        self._publish_reports()
        if now >= self._next_telemetry:
            self._next_telemetry = now + self.telemetry_s
            self._telemetry(now)
            if self.health:
                self._publish_health()
        link.pump()

    def report(self) -> int:
        """Publish one report of what the group learned (module docstring); the messages sent."""
        if self.learning is None:
            return 0
        ours = self.bundle_name is not None and self.bundle_name.startswith(
            self.learning.model.split("@")[0] + "@"
        )
        try:
            seq = int(self._seq_file.read_text())
        except (FileNotFoundError, ValueError):
            seq = 1
        deltas = self.learning.deltas(
            self._rng, next_seq=seq, max_payload_bytes=self.link.max_payload_bytes,
            model=self.bundle_name if ours else None, sha256=self.bundle_sha if ours else None,
        )  # fmt: skip
        for delta in deltas:
            self.link.publish(LearningDelta.TYPE, delta, "event", qos=1)
        self._seq_file.write_text(str(seq + len(deltas)))
        self.reports += 1
        return len(deltas)

    def _publish_reports(self) -> None:
        for report in self.deployer.take_reports():
            if report.nonce is not None and report.code is not None:
                self.link.publish_result(
                    CommandResult(
                        nonce=report.nonce,
                        name="deploy",
                        code=report.code,
                        detail=report.detail[:1024],
                        data=report.data,
                    )
                )
            if report.event is not None:
                kind = report.event if report.event in _EVENT_KINDS else EventKind.OTHER
                self.link.publish_event(
                    kind, report.detail[:1024], severity=report.severity, group=report.group
                )

    def _telemetry(self, now: float) -> None:
        # Plausible numbers, fixed per node, so a hub's tables and metrics have something real
        # to show; no agents stand behind them.
        h = int.from_bytes(self.node_id.encode()[-4:].rjust(4, b"\0"), "big")
        p50 = 1.5 + (h % 100) / 100
        self.link.publish_telemetry(
            Telemetry(
                uptime_s=now - self.started,
                rss_bytes=30 * 1024 * 1024 + (h % 8) * 1024 * 1024,
                budget_used_bytes=20 * 1024 * 1024,
                budget_total_bytes=BUDGET,
                ticks=self.ticks,
                tick_p50_ms=p50,
                tick_p99_ms=p50 * 1.6,
                overruns=0,
                groups={GROUP: AGENTS},
                cpu_temp_c=45.0 + h % 15,
            )
        )

    def _publish_health(self) -> None:
        worse = self.worse_version is not None and (self.bundle_name or "").endswith(
            f"@{self.worse_version}"
        )
        shift = self.worse_shift if worse else 0.0
        excess = float(shift + self._rng.normal(0.0, EXCESS_NOISE))
        self._drift = max(0.0, self._drift + excess - DRIFT_DELTA)
        alarm = self._drift > DRIFT_THRESHOLD
        if alarm and self._drift_since is None:
            self._drift_since = time.time()
        elif not alarm:
            self._drift_since = None
        steps = AGENTS * max(0, self.ticks - self._health_ticks)
        self._health_ticks = self.ticks
        if steps == 0:
            return

        def summary(mean: float, spread: float) -> MeasureSummary:
            return MeasureSummary(mean=mean, p95=mean + spread, n=steps)

        group = GroupHealth(
            model=self.bundle_name or "grid10",
            agent_steps=steps,
            measures={
                "surprise": summary(1.1 + excess, 2.0),
                "excess_surprise": summary(excess, 1.5),
                "free_energy": summary(1.3 + excess, 2.2),
                "policy_entropy": summary(0.6 + 0.2 * shift, 0.4),
                "belief_change": summary(0.2 + 0.5 * shift, 0.5),
                "preference": summary(-0.8 - excess, 0.6),
            },
            drift=DriftState(
                alarm=alarm,
                statistic=self._drift,
                threshold=DRIFT_THRESHOLD,
                since=self._drift_since,
            ),
        )
        self.link.publish(
            Health.TYPE,
            Health(window_s=self.telemetry_s, groups={GROUP: group}),
            "telemetry",
            topic=self.topics.health(self.node_id),
        )

    # commands ---------------------------------------------------------------------------------
    def _rebirth(self, _args: Any, _cmd: Command) -> Outcome:
        self.link.set_birth(self._birth())
        return Outcome(ResultCode.OK, "birth sent")

    def _deploy(self, args: DeployArgs, cmd: Command) -> Outcome:
        return self.deployer.start(args, cmd.nonce)

    def _prepare_check(self, group: str) -> PreflightCheck:
        """The preflight of ``group``'s new bundle (no agents here: a simulated verdict)."""
        return lambda path, _steps, _timeout_s: self._health_check(group, path)

    def _health_check(self, group: str, path: Path) -> object:
        """Runs on the deployment's worker thread after the bundle verified."""
        if not self.fails:
            return None
        if self.fail_version is not None:
            version = load_bundle(path, trusted_keys=None, require_signature=False).manifest.version
            if version != self.fail_version:
                return None
        raise EdgeAgentError(
            f"group {group!r}: simulated health check failure of {_bundle_name(path)}"
        )

    def _birth(self) -> Birth:
        return Birth(
            software_version=f"{__version__}+fleetsim",
            profile="fleetsim",
            budget_bytes=BUDGET,
            groups={
                GROUP: GroupInfo(
                    agents=AGENTS, bundle=self.bundle_name, bundle_sha256=self.bundle_sha
                )
            },
            capabilities=["commands", "ota"],
            labels={"sim": "1", "fails": "1" if self.fails else "0", "pid": str(os.getpid())},
        )


def _bundle_name(path: Path) -> str:
    """What a real daemon's birth calls a group's bundle: ``name@version`` of its manifest."""
    try:
        manifest = load_bundle(path, trusted_keys=None, require_signature=False).manifest
    except (EdgeAgentError, OSError):
        return path.name
    return f"{manifest.name}@{manifest.version}"[:256]
