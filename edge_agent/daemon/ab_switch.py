"""The node's deployments, one owner: transfer, verify, preflight, switch, watch, roll back.

The rest of the daemon talks to :class:`ABSwitch` alone, through a few verbs: the hub commands
(:meth:`ABSwitch.start`, :meth:`ABSwitch.chunk`), the uplink's broadcast chunks
(:meth:`ABSwitch.broadcast_chunk`), the loop (:meth:`ABSwitch.before_tick`,
:meth:`ABSwitch.tick_watched`, reload deferral), admission
(:meth:`ABSwitch.deployed_bundles`, :meth:`ABSwitch.forget`) and the readers
(:meth:`ABSwitch.stats`, :meth:`ABSwitch.counters`). Inside,
:class:`~edge_agent.fleet.deploy.DeployManager` moves the bytes and keeps the crash-safe journal
and overlay; its :class:`~edge_agent.fleet.deploy.Phase` is the deployment's state, every change
logged. This class does everything a deployment does to the running groups, in one place and one
direction::

    loop thread                  worker thread                 loop thread (between ticks)
    start, chunks -> snapshot -> verify -> stage -> check ----> poll -> switch (old group kept)
                                                                 -> watch ticks
                                                                    |-> done: old group released
                                                                    '-> rollback: old group back

A deployment with ``shadow_s`` (docs/health.md "Shadow evaluation") runs the checked bundle's
agents as a shadow beside the group first (:mod:`edge_agent.daemon.shadow`: the same
observations, their own beliefs, their actions never taken), reserved in the memory budget like
any group (a deployment whose shadow does not fit fails in one line, the group unchanged); when
its time is over the paired result is reported (an event now, and the deployment's final
result), then the switch goes on as above. A reload waits for the shadow as for a watch.

The preflight works on a :class:`CheckSnapshot` taken on the loop thread as the verification
starts (the group's config, the trusted keys, the running group's size and signature): the worker
never reads the daemon's live groups or config, so a reload or a resize meanwhile cannot change
what it checks. A switch whose group's config changed since (a reload) is refused.

The old group is held (with its memory reservation) while the new one is watched, so a rollback
is a swap, never a rebuild; a SIGHUP that arrives meanwhile is deferred until the watch ends.
The A/B switch acts on the daemon only through :class:`SwitchHost`, so it never imports the
service module.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from edge_agent.bundle.signing import TrustedKeys
from edge_agent.config.daemon import DaemonConfig, GroupConfig
from edge_agent.config.profiles import FirmwareProfile
from edge_agent.core.budget import MemoryBudget
from edge_agent.core.contract import TickWindow
from edge_agent.daemon.admission import load_group_model, trusted_keys
from edge_agent.daemon.group_runtime import (
    GroupRuntime,
    io_signature,
    make_agents,
    model_spec_key,
    preflight_steps,
    with_bundle,
)
from edge_agent.daemon.shadow import ShadowRun
from edge_agent.errors import BudgetError, EdgeAgentError
from edge_agent.fleet.outcomes import Outcome, ResultCode
from edge_agent.fleet.overlay import BUNDLES_DIR, DEPLOY_COUNTERS, Overlay, OverlayEntry
from edge_agent.kinds.base import LoadedModel
from edge_agent.state_faults import StateFaults

if TYPE_CHECKING:
    # commands and protocol: imported only by a daemon with [mqtt] enabled; deploy: when a
    # deployment needs it (ABSwitch.deployment)
    from edge_agent.fleet.commands import ChunkArgs, DeployArgs
    from edge_agent.fleet.deploy import DeployManager, Phase, PreflightCheck, ReadyToSwitch, Report
    from edge_agent.fleet.protocol import BundleChunk

logger = logging.getLogger(__name__)

#: Agents of the scratch group a deployment's preflight steps.
HEALTH_CHECK_AGENTS = 64


class SwitchHost(Protocol):
    """What the A/B switch reads and changes on the daemon, on the loop thread only (between two
    ticks, or in a hub command's handler)."""

    config: DaemonConfig
    profile: FirmwareProfile
    budget: MemoryBudget
    groups: list[GroupRuntime]

    def rebirth(self) -> None: ...


class _Shadowing(NamedTuple):
    """A checked bundle (switched to once its shadow ends), its group and the shadow."""

    ready: ReadyToSwitch
    group: GroupRuntime
    run: ShadowRun


class _NonFiniteError(Exception):
    """The watched group's state is not finite after its step (its actions are held back)."""


@dataclass(frozen=True, slots=True)
class CheckSnapshot:
    """What a deployment's preflight works on, taken on the loop thread when the check is
    prepared: the worker thread reads nothing else of the daemon."""

    #: The daemon's config then (frozen: a reload replaces it, never changes it).
    config: DaemonConfig
    #: The group's config then (the switch is refused if a reload changed it since).
    group: GroupConfig
    keys: TrustedKeys | None
    #: Agents of the scratch group: at most :data:`HEALTH_CHECK_AGENTS`, at most the group's.
    n_agents: int
    threads: int
    #: The running group's kind and :func:`~edge_agent.daemon.group_runtime.io_signature` (None: no
    #: group of that name runs).
    kind: str | None
    signature: tuple[object, ...] | None


@dataclass(frozen=True, slots=True)
class CheckedBundle:
    """A bundle that passed its preflight: the model loaded, and the snapshot it was checked
    on (the payload of :class:`~edge_agent.fleet.deploy.ReadyToSwitch`)."""

    snapshot: CheckSnapshot
    loaded: LoadedModel


def check_bundle(snapshot: CheckSnapshot, path: Path, steps: int, timeout_s: float) -> LoadedModel:
    """Load the bundle at ``path`` for ``snapshot.group`` and step a scratch group of it ``steps``
    times on random valid inputs within ``timeout_s``; raise EdgeAgentError when it cannot run
    there (any thread: it reads only its arguments). What depends on the group's kind (loading,
    building, the signature, the steps) is asked of :mod:`edge_agent.daemon.group_runtime`."""
    cfg = snapshot.group
    deadline = time.monotonic() + timeout_s
    loaded = load_group_model(with_bundle(cfg, path), snapshot.config, snapshot.keys)
    scratch = make_agents(loaded, cfg, snapshot.n_agents, threads=snapshot.threads)
    try:
        if snapshot.signature is not None and io_signature(scratch) != snapshot.signature:
            raise EdgeAgentError(
                f"group {cfg.name!r} runs {snapshot.kind} agents with inputs and actions "
                f"{snapshot.signature[1:]}; the bundle's are {io_signature(scratch)[1:]} "
                f"({loaded.kind}): its source and sink cannot take it"
            )
        preflight_steps(scratch, steps, deadline=deadline, timeout_s=timeout_s, seed=cfg.seed)
    finally:
        scratch.release()
    return loaded


class ABSwitch:
    """All deployment state of one daemon: the deployed bundles (the overlay), the deployment
    manager (transfer, journal, the overlay's writes), the group being watched and the old group
    kept to roll back to, and a reload waiting for the watch to end.

    The manager is built when a deployment needs it (:meth:`deployment`): at start when the
    state directory holds a deployment's directory (a deployment was made there: its journal
    says what the last one did, its files are cleaned up, one a crash interrupted is completed
    or undone before groups are built), else by the first deployment command. A node nothing was
    ever deployed to never imports it (docs/memory.md); it reports no phase and zero counters.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        report: Callable[[list[Report]], None],
        faults: StateFaults | None = None,
    ) -> None:
        self._report = report
        self._state_dir = Path(state_dir)
        self._faults = faults if faults is not None else StateFaults()
        self._host: SwitchHost | None = None
        #: The group the new bundle replaced, kept while the new one is watched.
        self._old: GroupRuntime | None = None
        #: A checked bundle whose candidate runs as a shadow beside its group before the switch.
        self._shadowing: _Shadowing | None = None
        self._reload_deferred = False
        #: The keys bundles are verified with (set once the config has been admitted: recovery
        #: verifies nothing).
        self._bundle_keys: TrustedKeys | None = None
        #: The deployed bundles, read at start; the manager writes them.
        self._overlay = Overlay(self._state_dir, faults=self._faults)
        self._overlay.load()
        self._deployer: DeployManager | None = None
        if os.path.lexists(self._state_dir / BUNDLES_DIR):
            self.deployment()

    def deployment(self) -> DeployManager:
        """The deployment manager, built on first need: its journal recovered (a deployment a
        crash interrupted completed or undone) and, once the switch is bound, bound to the
        daemon's groups."""
        if self._deployer is None:
            from edge_agent.fleet.deploy import DeployManager  # noqa: PLC0415 - a deployment's need

            deployer = DeployManager(
                self._state_dir,
                bundle_keys=self._bundle_keys,
                faults=self._faults,
                overlay=self._overlay,
            )
            deployer.recover()
            self._deployer = deployer
            if self._host is not None:
                self._bind(deployer)
        return self._deployer

    def bind(self, host: SwitchHost) -> None:
        """Attach to the daemon's groups (restarts a verification a crash interrupted)."""
        self._host = host
        self._bundle_keys = trusted_keys(host.config)
        if self._deployer is not None:
            self._bind(self._deployer)

    def _bind(self, deployer: DeployManager) -> None:
        deployer.bundle_keys = self._bundle_keys

        def current_sha(name: str) -> str | None:
            g = self._find(name)
            return None if g is None else g.bundle_sha256

        deployer.bind(
            self._prepare_check,
            current_sha=current_sha,
            group_exists=lambda name: self._find(name) is not None,
        )

    def bundle_key_ids(self) -> list[str]:
        """The ids of the keys deployed bundles are verified with (``[daemon]
        trusted_keys_dir``; none set: none), sorted: what the node's birth says it trusts."""
        keys = self._bundle_keys
        return [] if keys is None else sorted(keys.key_ids)

    def configured(self, config: DaemonConfig) -> None:
        """A reload admitted ``config``: bundles are verified with its keys from now on."""
        self._bundle_keys = trusted_keys(config)
        if self._deployer is not None:
            self._deployer.bundle_keys = self._bundle_keys

    @property
    def host(self) -> SwitchHost:
        if self._host is None:
            raise EdgeAgentError("internal: the A/B switch is not bound to a daemon")
        return self._host

    def _find(self, name: str) -> GroupRuntime | None:
        return next((g for g in self.host.groups if g.name == name), None)

    # -- what the rest of the daemon reads -------------------------------------------------------
    @property
    def state(self) -> Phase | None:
        """The current or last deployment's phase; None before the first."""
        return None if self._deployer is None else self._deployer.phase

    @property
    def watching(self) -> str | None:
        """The group whose new bundle is watched (the old one is still held), or None."""
        if self._old is None or self._deployer is None:
            return None
        return self._deployer.watching_group

    @property
    def shadowing(self) -> str | None:
        """The group beside which a candidate runs as a shadow, or None."""
        return None if self._shadowing is None else self._shadowing.group.name

    def deployed_bundles(self) -> dict[str, OverlayEntry]:
        """Group -> the bundle deployed to it (what admission runs instead of its model)."""
        return dict(self._overlay.entries)

    def forget(self, group: str) -> None:
        """Drop ``group``'s deployed bundle: the config's model of it changed (raises OSError
        when the overlay cannot be written; it is dropped in memory anyway)."""
        self._overlay.restore(group, None)

    def stats(self) -> dict[str, Any]:
        """The status file's ``deploy`` object (docs/status.md)."""
        if self._deployer is None:
            overlay = {g: e.sha256 for g, e in self._overlay.entries.items()}
            return {**self.counters(), "overlay": overlay}
        out = self._deployer.stats()
        shadow = self._shadowing
        if shadow is not None:
            out["shadow"] = {
                "group": shadow.group.name,
                "shadow_s": shadow.run.duration_s,
                "ticks": shadow.run.ticks,
                "pairs": shadow.run.pairs.n,
            }
        return out

    def counters(self) -> dict[str, int]:
        """The deployment counters, for the metrics registry."""
        if self._deployer is None:
            return dict.fromkeys(DEPLOY_COUNTERS, 0)
        return self._deployer.counters

    # -- hub commands and the bundle topic (the loop thread) -------------------------------------
    def start(self, args: DeployArgs, nonce: bytes) -> Outcome:
        """A verified ``deploy`` command: start, resume or refuse the deployment."""
        deployer = self.deployment()
        g = self._find(args.group)
        if g is not None and g.paused and g.name != deployer.watching_group:
            return Outcome(
                ResultCode.FAILED,
                f"group {g.name!r} is paused ({g.paused_reason}): a deployment needs it running "
                "to watch the new bundle",
            )
        return deployer.start(args, nonce)

    def chunk(self, args: ChunkArgs) -> Outcome:
        """A ``deploy_chunk`` command."""
        return self.deployment().chunk(args)

    @property
    def broadcast_bundle(self) -> str | None:
        """The bundle whose broadcast chunks this node takes now, else None."""
        return None if self._deployer is None else self._deployer.broadcast_bundle

    def broadcast_chunk(self, chunk: BundleChunk) -> Outcome:
        """A chunk heard on the bundle topic."""
        return self.deployment().broadcast_chunk(chunk)

    # -- the preflight: prepared on the loop thread, run on the worker's -----------------------
    def _prepare_check(self, group: str) -> PreflightCheck:
        """Take the preflight's :class:`CheckSnapshot` of ``group`` now (loop thread)."""
        config = self.host.config
        try:
            cfg = config.group(group)
        except KeyError:
            raise EdgeAgentError(f"no group {group!r} in the config") from None
        current = self._find(group)
        snapshot = CheckSnapshot(
            config=config,
            group=cfg,
            keys=trusted_keys(config),
            n_agents=min(HEALTH_CHECK_AGENTS, current.n_agents if current else cfg.count),
            threads=self.host.profile.inference_threads,
            kind=None if current is None else current.kind,
            signature=None if current is None else current.io_signature(),
        )

        def check(path: Path, steps: int, timeout_s: float) -> CheckedBundle:
            return CheckedBundle(snapshot, check_bundle(snapshot, path, steps, timeout_s))

        return check

    # -- between ticks ---------------------------------------------------------------------------
    def before_tick(self) -> None:
        """Switch a group whose bundle passed its preflight; roll back one whose watch
        expired; hand the deployment's reports on."""
        deployer = self._deployer
        if deployer is None:
            return
        ready = deployer.poll()
        if ready is not None:
            if deployer.shadow_s > 0.0:
                self._start_shadow(ready)
            else:
                self._switch(ready)
        if self._shadowing is not None and self._shadowing.run.due():
            self._end_shadow()
        watched = self.watching
        if watched and deployer.watch_expired():
            g = self._find(watched)
            if g is not None:
                self._rollback(g, "the group did not step its watch_ticks within watch_timeout_s")
        self.publish_reports()

    def publish_reports(self) -> None:
        if self._deployer is None:
            return
        reports = self._deployer.take_reports()
        if reports:
            self._report(reports)

    def tick_watched(self, g: GroupRuntime, now: float, window: TickWindow | None = None) -> None:
        """Tick the freshly deployed group: any exception or a non-finite state rolls it back
        (a non-finite step's actions never reach the sink); a good tick counts towards the
        watch (:meth:`_watched_stepped`)."""

        def vet() -> None:
            if not g.agents_finite():
                raise _NonFiniteError

        try:
            stepped = g.tick(now, vet, window)
            problem = None
        except _NonFiniteError:
            stepped, problem = False, "non-finite beliefs"
        except Exception as err:  # the new bundle's boundary: roll back, do not crash
            logger.exception("group %s failed on its new bundle", g.name)
            stepped, problem = False, f"{type(err).__name__}: {err}"
        if problem is not None:
            self._rollback(g, problem)
        elif stepped:
            self._watched_stepped()

    def _watched_stepped(self) -> None:
        """The watched group's actions are out: count the good tick; at the end of the watch
        release the old group."""
        if self.deployment().watch_tick():
            old, self._old = self._old, None
            if old is not None:
                old.release()
            self.publish_reports()

    def defer_reload(self) -> bool:
        """A reload asked for while a bundle is shadowed or watched waits for the watch to end
        (True)."""
        if self._old is None and self._shadowing is None:
            return False
        self._reload_deferred = True
        logger.info("reload deferred until the deployment's watch ends")
        return True

    def take_deferred_reload(self) -> bool:
        """True once, when a deferred reload may run now."""
        if not self._reload_deferred or self._old is not None or self._shadowing is not None:
            return False
        self._reload_deferred = False
        return True

    def _checked(
        self, ready: ReadyToSwitch, fail: Callable[[str], None]
    ) -> tuple[int, GroupRuntime, CheckedBundle, GroupConfig] | None:
        """The group ``ready`` is for (its index), the checked bundle and the group's config,
        when the group still runs as it was checked; else ``fail`` is told why (None)."""
        host = self.host
        groups = host.groups
        index = next((i for i, g in enumerate(groups) if g.name == ready.group), None)
        if index is None:
            fail(f"group {ready.group!r} no longer exists")
            return None
        old = groups[index]
        checked = ready.payload
        if not isinstance(checked, CheckedBundle):
            fail("internal: the preflight returned no model")
            return None
        try:
            cfg = host.config.group(old.name)
        except KeyError:
            cfg = None
        if cfg is None or cfg != checked.snapshot.group:
            fail(
                f"group {old.name!r} was reconfigured (a reload) while its new bundle was "
                "checked: deploy it again"
            )
            return None
        return index, old, checked, cfg

    def _start_shadow(self, ready: ReadyToSwitch) -> None:
        """Run the checked bundle's agents beside ``ready.group`` for the deployment's
        ``shadow_s`` before the switch (refused, the deployment failed, when the candidate does
        not fit the memory budget beside the group)."""
        deployer = self.deployment()
        found = self._checked(ready, deployer.shadow_failed)
        if found is None:
            return
        _, g, checked, _ = found
        host = self.host
        try:
            candidate = make_agents(
                checked.loaded,
                g.config,
                g.n_agents,
                budget=host.budget,
                threads=host.profile.inference_threads,
            )
        except BudgetError as err:
            deployer.shadow_failed(
                f"group {g.name!r}: the candidate's shadow of {g.n_agents} agents does not fit "
                f"the memory budget beside the group: {err}"
            )
            return
        except EdgeAgentError as err:
            deployer.shadow_failed(f"group {g.name!r}: {err}")
            return
        try:
            run = g.start_shadow(candidate, deployer.shadow_s)
        except EdgeAgentError as err:
            candidate.release()
            deployer.shadow_failed(str(err))
            return
        self._shadowing = _Shadowing(ready, g, run)
        logger.info(
            "group %s: candidate %s %s runs as a shadow for %g s (%s)",
            g.name,
            ready.name,
            ready.version,
            run.duration_s,
            "from the group's beliefs" if run.took_beliefs else "from its own priors",
        )

    def _end_shadow(self) -> None:
        """The shadow's time is over: report the paired result, then switch."""
        shadow, self._shadowing = self._shadowing, None
        assert shadow is not None
        ready, g, run = shadow
        g.end_shadow()
        try:
            result = run.finish()
        except EdgeAgentError as err:
            self.deployment().shadow_failed(f"group {g.name!r}: {err}")
            return
        data = {**result.as_data(), "shadow_s": run.duration_s, "shadow_ticks": run.ticks}
        t = "n/a" if result.t is None else f"{result.t:.3g}"
        self.deployment().shadowed(
            f"group {g.name!r}: shadow of {ready.name} {ready.version} for {run.duration_s:g} s: "
            f"{result.n} paired ticks, excess surprise candidate {result.candidate_mean:+.4g} "
            f"vs live {result.live_mean:+.4g} nats (mean difference {result.mean_diff:+.4g}, "
            f"t {t})",
            data,
        )
        self._switch(ready)

    def _switch(self, ready: ReadyToSwitch) -> None:
        """Run ``ready.group`` on the new bundle, keeping the old group to roll back to."""
        deployer = self.deployment()
        host = self.host
        groups = host.groups
        found = self._checked(ready, deployer.switch_failed)
        if found is None:
            return
        index, old, checked, cfg = found
        try:
            new = old.replaced(
                with_bundle(old.config, ready.path),
                checked.loaded,
                budget=host.budget,
                threads=host.profile.inference_threads,
                workers=old.config.workers_for(host.profile),
            )
        except EdgeAgentError as err:
            deployer.switch_failed(
                f"the old and the new group do not fit the budget together: {err}"
            )
            return
        try:
            deployer.switched(ready, model_spec_key(cfg))
        except OSError as err:
            new.release()
            deployer.switch_failed(f"cannot record the switch: {err}")
            return
        groups[index] = new
        self._old = old
        host.rebirth()
        logger.info("group %s switched to bundle %s", old.name, ready.sha256[:12])
        if new.learning is not None:  # nothing learned on the old bundle carries over
            logger.info(
                "group %s: learning starts from bundle %s's priors", old.name, ready.sha256[:12]
            )

    def _rollback(self, g: GroupRuntime, problem: str) -> None:
        """Put the old group back in place of ``g`` (the new one is released)."""
        old = self._old
        groups = self.host.groups
        index = next((i for i, x in enumerate(groups) if x is g), None)
        if old is None or index is None:
            return
        groups[index] = old  # on the source and sink the two share (GroupRuntime.replaced)
        self._old = None
        g.release()
        self.deployment().rollback(problem)
        self.host.rebirth()
        self.publish_reports()

    def close(self) -> None:
        if self._deployer is not None:
            self._deployer.close()
