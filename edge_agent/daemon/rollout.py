"""A/B rollout of a deployed bundle: health check, switch, watch, roll back, reload deferral.

:class:`~edge_agent.fleet.deploy.DeployManager` moves the bytes and keeps the crash-safe journal
and overlay (receive, verify, stage); this class owns everything a deployment does to the running
groups, in one place and one direction::

    DeployManager (worker thread)           Rollout (the loop's thread, between ticks)
    verify -> stage -> health_check() ----> poll -> switch (old group kept) -> watch ticks
                                                      |-> done: old group released
                                                      '-> rollback: old group back

The old group is held (with its memory reservation) while the new one is watched, so a rollback
is a swap, never a rebuild; a SIGHUP that arrives meanwhile is deferred until the watch ends.
The rollout acts on the daemon only through :class:`RolloutHost`, so it never imports the
service module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edge_agent.config.daemon import DaemonConfig
from edge_agent.config.profiles import FirmwareProfile
from edge_agent.core.budget import MemoryBudget
from edge_agent.daemon.admission import load_group_model, trusted_keys
from edge_agent.daemon.groups import (
    GroupRuntime,
    LoadedModel,
    healthy_steps,
    io_signature,
    make_agents,
    model_spec_key,
    with_bundle,
)
from edge_agent.errors import EdgeAgentError
from edge_agent.fleet.deploy import DeployManager, ReadyToSwitch, Report
from edge_agent.recovery import StateHealth

if TYPE_CHECKING:  # imported only by a daemon with [mqtt] enabled
    from edge_agent.coordination.runtime import CoordinationRuntime

logger = logging.getLogger(__name__)

#: Agents of the scratch group a deployment's health check steps.
HEALTH_CHECK_AGENTS = 64


class RolloutHost(Protocol):
    """What a rollout reads and changes on the daemon (between two ticks, but ``config`` and
    ``groups`` are also read by the health check on the deployment's worker thread)."""

    config: DaemonConfig
    profile: FirmwareProfile
    budget: MemoryBudget
    groups: list[GroupRuntime]

    def rebirth(self) -> None: ...


class Rollout:
    """All A/B deployment state of one daemon: the deployment manager, the group being watched
    and the old group kept to roll back to, and a reload waiting for the watch to end."""

    def __init__(
        self,
        state_dir: Path,
        *,
        report: Callable[[list[Report]], None],
        health: StateHealth | None = None,
    ) -> None:
        # A deployment interrupted by a crash is completed or undone before groups are built
        # (recovery verifies nothing, so the keys are set once the config has been admitted).
        self.deployer = DeployManager(state_dir, bundle_keys=None, health=health)
        self.deployer.recover()
        self._report = report
        self._host: RolloutHost | None = None
        #: The group the new bundle replaced, kept while the new one is watched.
        self.old: GroupRuntime | None = None
        self.reload_deferred = False

    def bind(self, host: RolloutHost) -> None:
        """Attach to the daemon's groups (restarts a verification a crash interrupted)."""
        self._host = host
        self.deployer.bundle_keys = trusted_keys(host.config)

        def current_sha(name: str) -> str | None:
            g = self._find(name)
            return None if g is None else g.bundle_sha256

        self.deployer.bind(
            self.health_check,
            current_sha=current_sha,
            group_exists=lambda name: self._find(name) is not None,
        )

    def configured(self, config: DaemonConfig) -> None:
        """A reload admitted ``config``: bundles are verified with its keys from now on."""
        self.deployer.bundle_keys = trusted_keys(config)

    @property
    def host(self) -> RolloutHost:
        if self._host is None:
            raise EdgeAgentError("internal: the rollout is not bound to a daemon")
        return self._host

    def _find(self, name: str) -> GroupRuntime | None:
        return next((g for g in self.host.groups if g.name == name), None)

    @property
    def watching(self) -> str | None:
        """The group whose new bundle is watched (the old one is still held), or None."""
        return self.deployer.watching_group if self.old is not None else None

    # -- the deployment worker's thread ----------------------------------------------------------
    def health_check(self, group: str, path: Path, steps: int, timeout_s: float) -> LoadedModel:
        """Load the bundle for ``group`` and step a scratch group of it (any thread)."""
        config = self.host.config
        try:
            cfg = config.group(group)
        except KeyError:
            raise EdgeAgentError(f"no group {group!r} in the config") from None
        current = self._find(group)
        deadline = time.monotonic() + timeout_s
        loaded = load_group_model(with_bundle(cfg, path), config, trusted_keys(config))
        n = min(HEALTH_CHECK_AGENTS, current.agents.n_agents if current else cfg.count)
        threads = self.host.profile.inference_threads
        scratch = make_agents(loaded, cfg, n, threads=threads)
        try:
            if current is not None and io_signature(scratch) != io_signature(current.agents):
                raise EdgeAgentError(
                    f"group {group!r} runs {current.kind} agents with inputs and actions "
                    f"{io_signature(current.agents)[1:]}; the bundle's are "
                    f"{io_signature(scratch)[1:]} ({loaded.kind}): its source and sink cannot "
                    "take it"
                )
            healthy_steps(scratch, steps, deadline=deadline, timeout_s=timeout_s, seed=cfg.seed)
        finally:
            scratch.release()
        return loaded

    # -- between ticks ---------------------------------------------------------------------------
    def before_tick(self) -> None:
        """Switch a group whose bundle passed its health check; roll back one whose watch
        expired; hand the deployment's reports on."""
        deployer = self.deployer
        ready = deployer.poll()
        if ready is not None:
            self._switch(ready)
        watched = self.watching
        if watched and deployer.watch_expired():
            g = self._find(watched)
            if g is not None:
                self.rollback(g, "the group did not step its watch_ticks within watch_timeout_s")
        self.publish_reports()

    def publish_reports(self) -> None:
        reports = self.deployer.take_reports()
        if reports:
            self._report(reports)

    def tick_watched(
        self, g: GroupRuntime, now: float, coordination: CoordinationRuntime | None
    ) -> bool:
        """Step the freshly deployed group: any exception or a non-finite state rolls it back.
        Returns whether it stepped (its actions are then to be published)."""
        try:
            stepped = g.tick(now, coordination)
            problem = None if not stepped or g.agents_finite() else "non-finite beliefs"
        except Exception as err:  # the new bundle's boundary: roll back, do not crash
            logger.exception("group %s failed on its new bundle", g.name)
            stepped, problem = False, f"{type(err).__name__}: {err}"
        if problem is not None:
            self.rollback(g, problem)
            return False
        return stepped

    def watched_stepped(self) -> None:
        """The watched group's actions are out: count the good tick; at the end of the watch
        release the old group."""
        if self.deployer.watch_tick():
            old, self.old = self.old, None
            if old is not None:
                old.agents.release()
            self.publish_reports()

    def defer_reload(self) -> bool:
        """A reload asked for while a bundle is watched waits for the watch to end (True)."""
        if self.old is None:
            return False
        self.reload_deferred = True
        logger.info("reload deferred until the deployment's watch ends")
        return True

    def take_deferred_reload(self) -> bool:
        """True once, when a deferred reload may run now."""
        if not self.reload_deferred or self.old is not None:
            return False
        self.reload_deferred = False
        return True

    def _switch(self, ready: ReadyToSwitch) -> None:
        """Run ``ready.group`` on the new bundle, keeping the old group to roll back to."""
        host = self.host
        groups = host.groups
        index = next((i for i, g in enumerate(groups) if g.name == ready.group), None)
        if index is None:
            self.deployer.switch_failed(f"group {ready.group!r} no longer exists")
            return
        old = groups[index]
        loaded = ready.payload
        if not isinstance(loaded, LoadedModel):
            self.deployer.switch_failed("internal: the health check returned no model")
            return
        try:
            agents = make_agents(
                loaded,
                old.config,
                old.agents.n_agents,
                budget=host.budget,
                history_capacity=old.agents.history_capacity,
                threads=host.profile.inference_threads,
                workers=old.config.workers_for(host.profile),
            )
        except EdgeAgentError as err:
            self.deployer.switch_failed(
                f"the old and the new group do not fit the budget together: {err}"
            )
            return
        new = old.replaced(with_bundle(old.config, ready.path), agents, loaded)
        try:
            self.deployer.switched(ready, model_spec_key(host.config.group(old.name)))
        except (KeyError, OSError) as err:
            agents.release()
            self.deployer.switch_failed(f"cannot record the switch: {err}")
            return
        groups[index] = new
        self.old = old
        host.rebirth()
        logger.info("group %s switched to bundle %s", old.name, ready.sha256[:12])

    def rollback(self, g: GroupRuntime, problem: str) -> None:
        """Put the old group back in place of ``g`` (the new one is released)."""
        old = self.old
        groups = self.host.groups
        index = next((i for i, x in enumerate(groups) if x is g), None)
        if old is None or index is None:
            return
        old.obs = g.obs
        old.env = g.env
        groups[index] = old
        self.old = None
        g.agents.release()
        self.deployer.rollback(problem)
        self.host.rebirth()
        self.publish_reports()

    def close(self) -> None:
        self.deployer.close()
