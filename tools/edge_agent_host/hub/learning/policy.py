"""Rounds the hub service runs by itself (``[learning]``, docs/fleet-learning.md "Rounds run by
the service").

:meth:`LearningPolicy.run_due` looks at every model line (``[learning] lines``, or every line
with deltas) and builds a round of each one that is due: it has accepted experience waiting and
its last round is ``every_s`` old (or it never had one), or ``min_experience`` agent-ticks wait;
and the rollout of its last round has ended (a round built while it runs would merge only what
its canaries learned on the new version, and be rolled out after it whatever its verdict).
A round the converter's gate refused is not tried again until more experience arrives. Several
replicas may run the policy against one PostgreSQL database: each line's round is built by the
one replica that holds the line's lease (:meth:`~.store.LearningStore.take_lease`,
``[learning] lease_s``), the others skip the line and count it (``skipped``); the owner looks
again whether the round is still due once it holds the lease (another replica may have just
built it), gives the lease up after the round, and stores the round only while it still holds
it. Lines are thereby spread over the replicas that look first. With
``publish``, a built round's bundle starts a staged rollout with ``[learning] rollout``'s options
(those of ``rollout start``, the behaviour gate's criteria too), recorded with the round, whose
rollback bundle is the round's parent: a round halted by its gate rolls the nodes it reached
back to the version they ran.

The service calls :meth:`LearningPolicy.step` from its loop every ``check_interval_s``: a due
check and its rounds run on a thread of their own with a database connection of their own (a
round converts and simulates for seconds; the service's writes go on meanwhile), one at a time.
Each look first, with ``[learning] catch_up``, starts a deployment of a line's current version to
every online node's group behind it (:func:`~.catch_up_store.catch_up`),
while it holds the catch-up look's lease (one replica looks at a time; the others skip the look
and count it, ``catch_up_skipped``), and then builds the rounds due. First, because the rollout
runner carries out one rollout at a time, oldest first: a catch-up started after a new round's
staged rollout would wait for all of it (canaries, soaks, waves), its node on an older version
meanwhile, and then deploy a version that is no longer the newest. The rounds a look builds are
those already due before its catch-up: a line whose rollout ends while the catch-up runs (after it
took the lines' current versions) waits for the next look, whose catch-up deploys that version
first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_agent.bundle.signing import key_id
from edge_agent_host.converter.aif.options import AifThresholds
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.fleet.transfer import DeployPlan
from edge_agent_host.hub.config.hub_toml import LearningSection
from edge_agent_host.hub.config.rollout_options import parse_start_options
from edge_agent_host.hub.learning.catch_up_store import catch_up
from edge_agent_host.hub.learning.merge import MergeSettings
from edge_agent_host.hub.learning.round import LearnInputError, RoundSettings, build_round
from edge_agent_host.hub.learning.store import LearningStore, LeaseLostError
from edge_agent_host.hub.rollouts.plan import ACTIVE, untrusted_line
from edge_agent_host.hub.rollouts.start import store_rollout
from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.hub.storage.database import HubDatabase

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["LearningPolicy"]

logger = logging.getLogger("edge_agent_host.hub.learning")


class LearningPolicy:
    """Builds (and publishes) the rounds that are due (module docstring)."""

    def __init__(
        self,
        section: LearningSection,
        open_db: Callable[[], HubDatabase],
        key: Ed25519PrivateKey,
        *,
        signer: str,
        owner: str,
        silent_after_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.section = section
        self.open_db = open_db
        self.key = key
        self.signer = signer
        self.owner = owner
        self.silent_after_s = silent_after_s
        self.clock = clock
        self.settings = RoundSettings(
            merge=MergeSettings(
                forgetting=section.forgetting, max_share=section.max_share, mad_k=section.mad_k
            ),
            rollouts=section.gate_rollouts,
            steps=section.gate_steps,
            thresholds=AifThresholds(),
        )
        self.rollout = parse_start_options(section.rollout) if section.publish else None
        self.key_id = key_id(key.public_key())
        self._refused_at: dict[str, int] = {}
        self._untrusted: dict[str, str] = {}
        """Per line, the refusal last logged for nodes that do not trust the key (once each)."""
        self._thread: threading.Thread | None = None
        self.counts = {
            "built": 0, "refused": 0, "published": 0, "skipped": 0, "lease_lost": 0, "errors": 0,
            "catch_up_errors": 0, "catch_up_skipped": 0, "untrusted": 0,
        }  # fmt: skip

    # the service's side -----------------------------------------------------------------------
    def step(self) -> bool:
        """Start a look for due rounds on the policy's thread unless one is under way; whether
        it started one."""
        if self._thread is not None and self._thread.is_alive():
            return False
        self._thread = threading.Thread(target=self._run, name="learning-rounds", daemon=True)
        self._thread.start()
        return True

    def join(self, timeout_s: float) -> None:
        """Wait for a round under way (the service's stop)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            db = self.open_db()
        except Exception as err:  # the database: the next look tries again
            self.counts["errors"] += 1
            logger.warning("learning rounds: the database cannot be opened: %s", err)
            return
        try:
            lines: set[str] | None = None
            try:
                if self.section.catch_up:  # first: module docstring
                    lines = set(self.due(LearningStore(db), self.clock()))
                    self.catch_up(db)
            except Exception:  # logged, counted; the next look tries again
                self.counts["catch_up_errors"] += 1
                logger.exception("catch-up deployments failed")
            try:
                self.run_due(db, lines)
            except Exception:  # logged, counted; the next look tries again
                self.counts["errors"] += 1
                logger.exception("learning rounds failed")
        finally:
            db.close()

    # the policy -------------------------------------------------------------------------------
    def due(self, store: LearningStore, now: float) -> dict[str, int]:
        """The lines a round is due for, with the experience waiting (module docstring)."""
        s = self.section
        out: dict[str, int] = {}
        for row in store.status():
            line = row["line"]
            if s.lines and line not in s.lines:
                continue
            waiting = int(row["waiting"]["experience"])
            if waiting <= self._refused_at.get(line, 0):
                continue
            last = row["last_round"]
            if last is not None and self._rolling_out(store, line):
                continue
            by_time = s.every_s > 0 and (last is None or now - last["created"] >= s.every_s)
            by_experience = s.min_experience > 0 and waiting >= s.min_experience
            if by_time or by_experience:
                out[line] = waiting
        return out

    @staticmethod
    def _rolling_out(store: LearningStore, line: str) -> bool:
        """Whether the rollout of ``line``'s newest built round is still under way."""
        built = store.latest_round(line)
        if built is None or built["rollout"] is None:
            return False
        try:
            state = RolloutStore(store.db).get(built["rollout"]).state
        except FleetError:  # the rollout was deleted
            return False
        return state in ACTIVE

    def run_due(self, db: HubDatabase, lines: set[str] | None = None) -> list[dict[str, Any]]:
        """Build (and publish) every round due (of ``lines`` only, when given: those due before
        the look's catch-up); their summaries (``rollout``: its id, or ``publish_error``: why it
        was not published)."""
        store = LearningStore(db)
        done = []
        for line in self.due(store, self.clock()):
            if lines is not None and line not in lines:
                continue  # its rollout ended during the catch-up: the next look's (docstring)
            if self._not_trusted(store, line):
                continue
            if not store.take_lease(line, self.owner, now=self.clock(),
                                    lease_s=self.section.lease_s):  # fmt: skip
                self.counts["skipped"] += 1
                logger.debug("learning round of %s: another replica holds the line", line)
                continue
            try:
                summary = self._build(store, line)
            finally:
                store.release_lease(line, self.owner)
            if summary is None:
                continue
            waiting = summary.pop("waiting")
            if summary["state"] != "built":
                self.counts["refused"] += 1
                self._refused_at[line] = waiting
                logger.warning("learning round %s of %s refused by the int8 gate: %s",
                               summary["round"], line, "; ".join(summary["gate"]))  # fmt: skip
                done.append(summary)
                continue
            self.counts["built"] += 1
            self._refused_at.pop(line, None)
            logger.info(
                "learning round %s built %s@%s from %d nodes",
                summary["round"], line, summary["version"], len(summary["nodes"]),
            )  # fmt: skip
            if self.rollout is not None:
                self._publish(db, store, summary)
            done.append(summary)
        return done

    def _not_trusted(self, store: LearningStore, line: str) -> bool:
        """Whether nodes that run ``line`` say (their births) they do not trust the learning
        key: the round is not built (its canary would refuse it), counted, and said in one
        line naming the key and the nodes' directory, once until it changes."""
        refusing = store.not_trusting(line, self.key_id, silent_after_s=self.silent_after_s)
        if not refusing:
            self._untrusted.pop(line, None)
            return False
        self.counts["untrusted"] += 1
        where = f"the learning key {self.key_id} ([learning] key_file = {self.section.key_file})"
        why = untrusted_line(refusing, self.key_id, where)
        if self._untrusted.get(line) != why:
            self._untrusted[line] = why
            logger.error("learning rounds of %s not built: %s", line, why)
        return True

    def _build(self, store: LearningStore, line: str) -> dict[str, Any] | None:
        """The round of ``line`` under its lease, with ``waiting`` (the experience it saw due);
        None when it is no longer due or there is nothing to build."""
        waiting = self.due(store, self.clock()).get(line)
        if waiting is None:  # another replica built it since this look began
            return None
        try:
            summary = build_round(store, line, self.key, signer=self.signer,
                                  settings=self.settings, owner=self.owner)  # fmt: skip
        except LearnInputError as err:  # nothing against the current version
            logger.debug("learning round of %s: %s", line, err)
            return None
        except LeaseLostError as err:
            self.counts["lease_lost"] += 1
            logger.warning("learning round of %s not stored: %s", line, err)
            return None
        return {**summary, "waiting": waiting}

    def catch_up(self, db: HubDatabase) -> dict[str, Any]:
        """Bring the groups behind their line's current version up to it
        (hub/learning/catch_up_store.py); what the look did."""
        out = catch_up(
            db, lines=self.section.lines, silent_after_s=self.silent_after_s, now=self.clock(),
            owner=self.owner, lease_s=self.section.lease_s,
            timeout_s=self.section.catch_up_timeout_s,
        )  # fmt: skip
        if out.get("skipped"):
            self.counts["catch_up_skipped"] += 1
        return out

    def _publish(self, db: HubDatabase, store: LearningStore, summary: dict[str, Any]) -> None:
        assert self.rollout is not None
        built = store.latest_round(summary["line"], round_id=summary["round"])
        if built is None or built["bundle"] is None:
            raise LookupError(f"round {summary['round']} has no bundle")
        size = self.rollout.chunk_size
        plan = DeployPlan.from_bytes(built["bundle"], size, where=f"round {built['id']}")
        try:  # the rollback bundle: the version the round was built on (the hub holds it)
            parent = DeployPlan.from_bytes(
                RolloutStore(db).bundle(built["parent_sha256"]), size, where="its parent"
            )
            started = store_rollout(
                db, self.rollout, plan, rollback=parent, silent_after_s=self.silent_after_s,
                on_stored=lambda db, rollout_id: LearningStore(db).set_rollout(
                    built["id"], rollout_id),
            )  # fmt: skip
        except FleetError as err:  # no node online, a criterion no node reports, ...
            summary["publish_error"] = str(err)
            self.counts["errors"] += 1
            logger.warning("learning round %s not published: %s", built["id"], err)
            return
        summary["rollout"] = started["id"]
        self.counts["published"] += 1
        logger.info("learning round %s published: rollout %s", built["id"], started["id"])
