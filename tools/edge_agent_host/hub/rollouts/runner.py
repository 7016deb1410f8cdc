"""Staged rollouts: a signed bundle to a selection of nodes in waves, stopping itself on failure.

A rollout is rows in the hub's database (:class:`RolloutStore`): the plan (group, bundle, the
waves as cumulative node counts, soak time, abort criteria, an optional rollback bundle), one row
per node (its wave, its state) and the bundles' bytes, so that any replica can carry it on after
a restart. The operator writes them (``edge-agent-hub rollout start``) and asks for changes
(``pause``, ``resume``, ``abort``: a request column); the hub service's :class:`RolloutRunner`,
on its own thread, with its own database connection and the hub's signing key, does the work. It
has no broker connection of its own: it publishes through the service's
(:class:`~edge_agent_host.hub.traffic.publisher.HubPublisher`) and reads the nodes' answers from
what the service stored (:class:`~.client.ServiceDeployClient`):

=============  =====================================================================================
``pending``    created; the next runner to look takes it (a lease in the row: one replica at a
               time; a replica that stops renewing it loses it to another after ``lease_s``)
``running``    wave by wave: **deploying** (one broadcast of the bundle to the wave's nodes,
               see :func:`~edge_agent_host.fleet.transfer.broadcast_bundle`; every node's final
               result is recorded), then **soaking** for ``soak_s`` while the abort criteria are
               checked against what the nodes report (events and telemetry in the database)
``paused``     the operator paused it: nothing more is sent until ``resume``
``halting``    a criterion failed (or the operator aborted): the nodes of the waves done are
               sent the rollback bundle, when the plan names one
``rolled_back`` / ``halted``  the end of a halt, with or without the rollback
``done``       every wave deployed and soaked
=============  =====================================================================================

Abort criteria, per wave (:class:`Criteria`): the share of the wave's nodes whose deployment
failed (transfer, verification, preflight, switch) or that rolled back while soaking
(``max_failed_pct``); the share of the deployed nodes that sent an error event since their
switch (``max_error_events_pct``); the median over the deployed nodes of their tick p99 while
soaking over their tick p99 in the ``baseline_s`` before their wave (``max_tick_p99_ratio``).
Criteria on behaviour (``Criteria.health``, :mod:`edge_agent_host.hub.gates.health`): at the end of
a wave's soak, each health criterion compares the wave's deployed nodes against the nodes not yet
touched, over the soak's window, and gives a verdict (pass, fail, inconclusive) that is recorded
with the rollout and as one of the hub's events; a fail halts, an inconclusive verdict pauses
(``rollout resume`` judges again), a dry-run criterion only records. The last wave, with no
untouched node left to compare with, is judged by the other criteria only.
A halt in wave *k* leaves every node of later waves untouched. A wave whose commands the broker
refuses (``0x87 not authorized``: the service's identity lacks the hub role) halts at once, its
nodes failed with the broker's reason.

Waves are numbered from 1 wherever an operator reads them (logs, ``rollout status`` and its
``--json``, the metrics); the tables store them from 0.

The runner's database calls run on a database thread of its own with the service's deadline
(``[database] operation_deadline_s``, :mod:`edge_agent_host.hub.storage.dbthread`): a database that
hangs makes a call fail after that long (one warning line, the connection dropped when the call
comes back), the runner tries again every ``poll_s`` and goes on where the rows say once the
database answers; it never hangs with it, and stopping it does not wait for the database.

A restart of the hub resumes: a wave that was deploying is deployed again (nodes that finished
answer ``ok`` at once: the group already runs the bundle; a node mid-transfer resumes its
chunks), a soak goes on until its recorded end.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import CommandResult
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.fleet.transfer import DeployPlan, broadcast_bundle
from edge_agent_host.hub.gates.health import Outcome, Verdict, WaveWindow
from edge_agent_host.hub.gates.shadow import ShadowResults
from edge_agent_host.hub.rollouts.client import PublishRefusedError, ServiceDeployClient
from edge_agent_host.hub.rollouts.plan import ACTIVE, WENT_OFFLINE, NodeState, RolloutState
from edge_agent_host.hub.rollouts.store import Rollout, RolloutStore
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.dbthread import DatabaseOverdueError, DatabaseThread
from edge_agent_host.hub.traffic.publisher import HubPublisher

logger = logging.getLogger(__name__)

__all__ = ["RolloutRunner"]

T = TypeVar("T")


class RolloutRunner:
    """Carries rollouts forward on its own thread (module docstring).

    ``open_db`` opens this runner's own database connection; ``publisher`` is the service's
    way out to the broker; ``key`` the hub's command signing key; ``deadline_s`` the longest a
    database call may take. One rollout at a time.
    """

    def __init__(
        self,
        open_db: Callable[[], HubDatabase],
        publisher: HubPublisher,
        key: Ed25519PrivateKey,
        *,
        owner: str,
        poll_s: float = 1.0,
        lease_s: float = 30.0,
        deadline_s: float = 30.0,
    ) -> None:
        self._open_db = open_db
        self.owner = owner
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.deadline_s = deadline_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db: HubDatabase | None = None
        self._db_thread = DatabaseThread("hub-rollouts-db")
        self._stale: HubDatabase | None = None
        """A connection whose call went overdue: closed once that call has come back."""
        self._db_hangs = False
        self._client = ServiceDeployClient(publisher, self._store, key)
        self.current: str | None = None
        self.errors = 0
        self.last_error = ""
        self.counters: dict[str, int] = dict.fromkeys(
            ("waves_deployed", "halts", "rollbacks", "done", "pauses"), 0
        )

    def status(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "errors": self.errors,
            "last_error": self.last_error,
            **self.counters,
        }

    # life ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rollouts", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop between two steps (a call under way ends by its deadline); close the
        connection unless a call still hangs on it (then it is left to the process's end)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        db, self._db = self._db, None
        if db is not None:
            try:
                self._guard(db.close)
            except DatabaseOverdueError:
                logger.warning("rollout runner: its database connection hangs: left open")
        self._db_thread.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except DatabaseOverdueError as err:  # a hung database: drop the connection, retry
                self.errors += 1
                self.last_error = f"the database: {err}"[:512]
                if not self._db_hangs:  # once per outage, not once per poll
                    self._db_hangs = True
                    logger.warning("rollout runner: the database: %s; trying again", err)
                self._stale = self._stale or self._db
                self._db = None
                busy = False
            except FleetError as err:  # e.g. the broker connection is down: said in one line
                self.errors += 1
                self.last_error = str(err)[:512]
                logger.warning("rollout runner: %s; trying again", err)
                busy = False
            except Exception as err:  # the runner's boundary: report, back off, go on
                self.errors += 1
                self.last_error = f"{type(err).__name__}: {err}"[:512]
                logger.exception("rollout runner step failed")
                self._stale = self._stale or self._db
                self._db = None
                busy = False
            else:
                if self._db_hangs:
                    self._db_hangs = False
                    logger.warning("rollout runner: the database answers again")
            if not busy:
                self._stop.wait(self.poll_s)

    def _guard(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the runner's database thread, within ``deadline_s``."""
        db = self._db

        def abort() -> None:
            if db is not None:
                db.abort()

        return self._db_thread.call(fn, self.deadline_s, while_waiting=_nothing, abort=abort)

    def _store(self) -> RolloutStore:
        if self._stale is not None:
            self._guard(self._stale.close)  # its call still hangs: raises, tried next step
            self._stale = None
        if self._db is None or not self._db.is_open:
            self._db = self._guard(self._open_db)
        return RolloutStore(self._db, self._guard)

    def _client_ready(self) -> ServiceDeployClient:
        self._client.forget()  # a new deployment: nothing of the last one is awaited
        return self._client

    # one step ------------------------------------------------------------------------------
    def step(self, now: float | None = None) -> bool:
        """Carry the current rollout one phase further; True when there may be more to do."""
        store = self._store()
        now = time.time() if now is None else now
        if self.current is None or not store.renew(self.current, self.owner, self.lease_s, now):
            self.current = store.claim(self.owner, self.lease_s, now)
            if self.current is None:
                return False
        r = store.get(self.current)
        if r.request is not None:
            self._apply_request(store, r)
            r = store.get(r.id)
        if r.state not in ACTIVE:
            store.release(r.id, self.owner)
            self.current = None
            return True
        if r.state is RolloutState.PAUSED:
            return False
        if r.state is RolloutState.PENDING:
            store.update(r.id, state=RolloutState.RUNNING, wave=0, phase="deploying")
            logger.info("rollout %s: started (%d waves)", r.id, len(r.plan.waves))
            return True
        if r.state is RolloutState.HALTING:
            self._halt(store, r)
            return True
        if r.phase == "deploying":
            self._deploy_wave(store, r)
            return True
        return self._soak(store, r, now)

    def _apply_request(self, store: RolloutStore, r: Rollout) -> None:
        req = r.request
        if req == "pause" and r.state in (RolloutState.PENDING, RolloutState.RUNNING):
            store.update(r.id, state=RolloutState.PAUSED, request=None, detail="paused")
        elif req == "resume" and r.state is RolloutState.PAUSED:
            state = RolloutState.RUNNING if r.phase else RolloutState.PENDING
            store.update(r.id, state=state, request=None, detail="resumed")
        elif req == "abort" and r.state in ACTIVE - {RolloutState.HALTING}:
            store.update(
                r.id, state=RolloutState.HALTING, request=None, detail="aborted by the operator"
            )
        else:
            store.update(r.id, request=None)
        logger.info("rollout %s: %s", r.id, req)

    def _cancelled(
        self, store: RolloutStore, rollout_id: str, watched: Sequence[str] = ()
    ) -> Callable[[], bool]:
        """For the deploy loop: stop when the hub stops, the lease is lost, a request came, or
        (``watched``: a plan with ``stop_if_offline``) every one of those nodes went offline
        (checked once a second)."""
        checked = [0.0, False]

        def cancel() -> bool:
            if self._stop.is_set():
                return True
            now = time.monotonic()
            if now - checked[0] >= 1.0:
                checked[0] = now
                kept = store.renew(rollout_id, self.owner, self.lease_s)
                checked[1] = not kept or store.get(rollout_id).request is not None
                if watched and not checked[1]:
                    checked[1] = set(store.offline(watched)) == set(watched)
            return bool(checked[1])

        return cancel

    def _deploy_wave(self, store: RolloutStore, r: Rollout) -> None:
        wave, plan = r.wave, r.plan
        nodes = [n for n in r.wave_nodes(wave) if r.nodes[n]["state"] != NodeState.OK]
        started = time.time()
        if r.phase_started is None:  # the wave's first attempt (not a resume)
            baseline = store.mean_tick_p99(nodes, started - plan.criteria.baseline_s, started)
            store.set_nodes(
                r.id,
                {n: (NodeState(r.nodes[n]["state"]), "deploying") for n in nodes},
                baseline={n: baseline.get(n) for n in nodes},
            )
            store.update(r.id, phase_started=started)
        data = store.bundle(plan.bundle_sha256)
        deploy_plan = DeployPlan.from_bytes(data, plan.chunk_size)
        shadow_s = plan.shadow_s if wave == 0 else 0.0  # the canaries only
        logger.info("rollout %s: wave %d: deploying to %d node(s)", r.id, wave + 1, len(nodes))
        try:
            results = broadcast_bundle(
                self._client_ready(),
                deploy_plan,
                plan.group,
                nodes,
                rate_chunks_s=plan.rate_chunks_s,
                timeout_s=plan.deploy_timeout_s + shadow_s,
                watch_ticks=plan.watch_ticks,
                health_steps=plan.health_steps,
                shadow_s=shadow_s,
                cancel=self._cancelled(store, r.id, nodes if plan.stop_if_offline else ()),
            )
        except PublishRefusedError as err:
            why = str(err)[:900]
            store.set_nodes(r.id, dict.fromkeys(nodes, (NodeState.FAILED, why)))
            self._start_halt(store, store.get(r.id), f"wave {wave + 1}: {why}")
            return
        store.set_nodes(r.id, {n: _node_outcome(res) for n, res in results.items()})
        missing = [n for n in nodes if n not in results]
        if missing and plan.stop_if_offline and not self._stop.is_set():
            gone = store.offline(missing)
            store.set_nodes(r.id, dict.fromkeys(gone, (NodeState.FAILED, WENT_OFFLINE)))
            missing = [n for n in missing if n not in gone]
        if missing:  # cancelled: the next step applies the request or resumes
            return
        self.counters["waves_deployed"] += 1
        r = store.get(r.id)
        failed = [n for n in r.wave_nodes(wave) if r.nodes[n]["state"] == NodeState.FAILED]
        verdict = _too_many(len(failed), len(r.wave_nodes(wave)), plan.criteria.max_failed_pct)
        if verdict:
            self._start_halt(store, r, f"wave {wave + 1}: {len(failed)} failed ({verdict})")
            return
        now = time.time()
        store.update(r.id, phase="soaking", phase_started=now)
        if shadow_s > 0.0 and plan.criteria.shadow:
            self._shadow_gate(store, store.get(r.id), results, now)

    def _shadow_gate(
        self, store: RolloutStore, r: Rollout, results: dict[str, CommandResult], now: float
    ) -> None:
        """Judge the canaries on their shadow (:mod:`edge_agent_host.hub.gates.shadow`) as soon as
        they are deployed: record the verdicts, halt on a fail, pause on an inconclusive one
        (``rollout resume`` goes on to the soak: the shadow is not run again)."""
        window = WaveWindow(
            group=r.plan.group,
            wave_nodes=[n for n in r.wave_nodes(r.wave) if r.nodes[n]["state"] == NodeState.OK],
            control_nodes=[],
            since=r.phase_started if r.phase_started is not None else now,
            until=now,
        )
        evidence = ShadowResults(results)
        verdicts = [c.evaluate(window, evidence) for c in r.plan.criteria.shadow]
        self._verdicts(store, r, verdicts, now, "'rollout resume' goes on to the soak")

    def _soak(self, store: RolloutStore, r: Rollout, now: float) -> bool:
        plan, c = r.plan, r.plan.criteria
        since = r.phase_started if r.phase_started is not None else now
        wave_nodes = r.wave_nodes(r.wave)
        deployed = r.deployed()
        rolled = store.nodes_with_events(deployed, since, kind="rollback", group=plan.group)
        if rolled:
            store.set_nodes(
                r.id, dict.fromkeys(rolled, (NodeState.FAILED, "rolled back while soaking"))
            )
            r = store.get(r.id)
        failed = [n for n in wave_nodes if r.nodes[n]["state"] == NodeState.FAILED]
        verdict = _too_many(len(failed), len(wave_nodes), c.max_failed_pct)
        if verdict:
            self._start_halt(store, r, f"wave {r.wave + 1}: {len(failed)} failed ({verdict})")
            return True
        erring = store.nodes_with_events(deployed, since)
        verdict = _too_many(len(erring), len(deployed), c.max_error_events_pct)
        if deployed and verdict:
            self._start_halt(
                store, r, f"wave {r.wave + 1}: {len(erring)} node(s) sent error events ({verdict})"
            )
            return True
        if c.max_tick_p99_ratio > 0.0:
            ratio = self._p99_ratio(store, r, since, now)
            if ratio is not None and ratio > c.max_tick_p99_ratio:
                self._start_halt(
                    store,
                    r,
                    f"wave {r.wave + 1}: tick p99 {ratio:.2f}x its baseline "
                    f"(limit {c.max_tick_p99_ratio:g}x)",
                )
                return True
        if now - since < plan.soak_s:
            return False
        if c.health and r.untouched() and self._gate(store, r, since, now):
            return True
        if r.wave + 1 >= len(plan.waves):
            store.update(r.id, state=RolloutState.DONE, phase="", detail="every wave deployed")
            self.counters["done"] += 1
            logger.info("rollout %s: done", r.id)
        else:
            store.update(r.id, wave=r.wave + 1, phase="deploying", phase_started=None)
        return True

    def _gate(self, store: RolloutStore, r: Rollout, since: float, now: float) -> bool:
        """Judge the wave on its health criteria (the wave's deployed nodes against the
        untouched ones since the soak began), record the verdicts, and halt on a fail or pause
        on an inconclusive one (dry-run criteria never do); True when it stopped the wave."""
        window = WaveWindow(
            group=r.plan.group,
            wave_nodes=[n for n in r.wave_nodes(r.wave) if r.nodes[n]["state"] == NodeState.OK],
            control_nodes=r.untouched(),
            since=since,
            until=now,
        )
        verdicts = [c.evaluate(window, store) for c in r.plan.criteria.health]
        return self._verdicts(
            store, r, verdicts, now, "'rollout resume' judges again with the samples since"
        )

    def _verdicts(
        self, store: RolloutStore, r: Rollout, verdicts: list[Verdict], now: float, resume: str
    ) -> bool:
        """Record ``verdicts`` on the wave; halt on a fail, pause on an inconclusive one (dry-run
        criteria never do; ``resume`` says what ``rollout resume`` does then); True when the
        wave stopped."""
        store.add_verdicts(r, verdicts, hub=self.owner, now=now)
        for v in verdicts:
            logger.info("rollout %s: wave %d: %s: %s", r.id, r.wave + 1, v.criterion, v.detail)
        enforced = [v for v in verdicts if not v.dry_run]
        failed = [v for v in enforced if v.outcome is Outcome.FAIL]
        if failed:
            self._start_halt(
                store, r, f"wave {r.wave + 1}: {failed[0].criterion}: {failed[0].detail}"
            )
            return True
        unsure = [v for v in enforced if v.outcome is Outcome.INCONCLUSIVE]
        if unsure:
            self.counters["pauses"] += 1
            why = f"wave {r.wave + 1}: {unsure[0].criterion}: {unsure[0].detail}; {resume}"
            logger.warning("rollout %s: paused: %s", r.id, why)
            store.update(r.id, state=RolloutState.PAUSED, detail=why[:1024])
            return True
        return False

    def _p99_ratio(self, store: RolloutStore, r: Rollout, since: float, now: float) -> float | None:
        nodes = [n for n in r.wave_nodes(r.wave) if r.nodes[n]["state"] == NodeState.OK]
        soaking = store.mean_tick_p99(nodes, since, now + 1.0)
        ratios = [
            soaking[n] / float(r.nodes[n]["baseline_p99_ms"])
            for n in nodes
            if n in soaking and r.nodes[n]["baseline_p99_ms"]
        ]
        return statistics.median(ratios) if ratios else None

    def _start_halt(self, store: RolloutStore, r: Rollout, why: str) -> None:
        logger.warning("rollout %s: halting: %s", r.id, why)
        self.counters["halts"] += 1
        store.update(r.id, state=RolloutState.HALTING, detail=why)

    def _halt(self, store: RolloutStore, r: Rollout) -> None:
        """Roll the deployed nodes back to the plan's rollback bundle, when it names one."""
        deployed = r.deployed()
        if r.plan.rollback_sha256 is None or not deployed:
            keep = f"; {len(deployed)} node(s) keep the new bundle" if deployed else ""
            store.update(
                r.id, state=RolloutState.HALTED, phase="", detail=f"{r.detail}{keep}"[:1024]
            )
            return
        data = store.bundle(r.plan.rollback_sha256)
        logger.info("rollout %s: rolling %d node(s) back", r.id, len(deployed))
        try:
            results = broadcast_bundle(
                self._client_ready(),
                DeployPlan.from_bytes(data, r.plan.chunk_size),
                r.plan.group,
                deployed,
                rate_chunks_s=r.plan.rate_chunks_s,
                timeout_s=r.plan.deploy_timeout_s,
                watch_ticks=r.plan.watch_ticks,
                health_steps=r.plan.health_steps,
                cancel=self._stop.is_set,
            )
        except PublishRefusedError as err:
            detail = f"{r.detail}; rollback not sent: {err}"
            logger.error("rollout %s: rollback not sent: %s", r.id, err)
            store.update(r.id, state=RolloutState.HALTED, phase="", detail=detail[:1024])
            return
        if len(results) < len(deployed):
            return  # the hub is stopping: the next runner rolls back again
        store.set_nodes(
            r.id,
            {
                n: (
                    (NodeState.REVERTED, "rollback bundle runs")
                    if res.code is ResultCode.OK
                    else (NodeState.REVERT_FAILED, f"{res.code.value}: {res.detail}")
                )
                for n, res in results.items()
            },
        )
        self.counters["rollbacks"] += 1
        bad = sum(res.code is not ResultCode.OK for res in results.values())
        tail = f"; rollback failed on {bad} node(s)" if bad else f"; {len(results)} rolled back"
        store.update(
            r.id, state=RolloutState.ROLLED_BACK, phase="", detail=f"{r.detail}{tail}"[:1024]
        )


def _nothing() -> None:
    """What the runner does while it waits for its database: nothing (it has no watchdog)."""


def _node_outcome(result: CommandResult) -> tuple[NodeState, str]:
    if result.code is ResultCode.OK:
        return NodeState.OK, result.detail[:1024]
    return NodeState.FAILED, f"{result.code.value}: {result.detail}"[:1024]


def _too_many(bad: int, total: int, max_pct: float) -> str:
    """Why ``bad`` of ``total`` is over ``max_pct`` percent, or '' when it is not."""
    if bad == 0 or total == 0:
        return ""
    pct = 100.0 * bad / total
    return f"{pct:.1f} % > {max_pct:g} %" if pct > max_pct else ""
