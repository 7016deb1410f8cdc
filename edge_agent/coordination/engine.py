"""CoordinationEngine: one node's coordination layer, between its agent groups and its FleetLink.

The daemon owns one engine per node and calls it around every tick:

1. for every message the FleetLink received, :meth:`CoordinationEngine.handle` (it keeps the
   coordination messages in a bounded queue and returns True; anything else returns False);
2. :meth:`CoordinationEngine.before_step`: up to ``max_messages_per_tick`` queued messages are
   merged (beliefs into the peer tables, task messages into the ledger, presence into the dead
   sessions), then peers' evidence is fused into every sharing group's prior;
3. each group steps -- :meth:`CoordinationEngine.step` runs ``group.step(obs)``, or, while some
   of its agents hold a task, the same step with their preferences replaced
   (:class:`~edge_agent.coordination.preferences.TaskPreferences`);
4. :meth:`CoordinationEngine.after_step`: own evidence is accumulated and belief messages go out;
   the auction moves on (bids for new rounds, awards, holders' preferences, releases of done or
   expired tasks, ``task_state`` and, on a digest mismatch, ``task_sync``).

Nothing here blocks: every message is handled in time proportional to its size, the queue is
bounded (the newest message is dropped and counted when it is full), and publishing goes through
the link (QoS 1 into its outbox, QoS 0 straight to the transport).

Presence: the engine subscribes to every node's ``state``, ``birth`` and ``death``. An offline
state (the MQTT will) or a death with ``bdseq = b`` makes sessions ``<= b`` of that node dead:
their bids stop counting, the tasks they won move to the next epoch (re-auctioned), and their
belief slot is freed.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Mapping
from typing import Final, Protocol

import numpy as np
from msgspec import UNSET
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.coordination.auction import Auctioneer
from edge_agent.coordination.beliefs import BeliefSharer
from edge_agent.coordination.coordinated_group import (
    NO_ROWS,
    CoordinatedGroup,
    GroupState,
    same_agents,
)
from edge_agent.coordination.ledger import (
    Bid,
    TaskBoard,
    abandon,
)
from edge_agent.coordination.messages import (
    MAX_BIDS_PER_MESSAGE,
    MAX_CLAIMS,
    MAX_TASKS_PER_MESSAGE,
    MAX_TEAM_STATES,
    SIGNATURE_BYTES,
    Claim,
    Release,
    ReleaseStatus,
    TaskAnnounce,
    TaskBids,
    TaskKey,
    TaskRelease,
    TaskSpec,
    TaskState,
    TaskSync,
    TeamState,
    announcement_parts,
)
from edge_agent.coordination.preferences import TaskPreferences
from edge_agent.coordination.relay_admission import RelayAdmission, Verdict
from edge_agent.coordination.settings import CoordinationSettings
from edge_agent.coordination.signing import PeerKeys, TaskSigner, release_bytes, sign_specs
from edge_agent.coordination.utility import select_bids, task_costs
from edge_agent.errors import EdgeAgentError, InputError
from edge_agent.fleet.comms.base import BoundedQueue
from edge_agent.fleet.names import UINT32
from edge_agent.fleet.protocol import BeliefBatch, Birth, Body, Death, Envelope, NodeState
from edge_agent.fleet.topics import Route, TopicKind, Topics, check_name

logger = logging.getLogger(__name__)

TELEMETRY_KEY_CHARS: Final = 64
"""Longest counter name a Telemetry message carries."""
SILENCE_PERIODS: Final = 2.5
"""A peer silent for this many task_state periods, then heard again, was cut off: sync."""
HOLD_WAIT_STATES: Final = 2
"""State periods after its window a team member waits at most for every live peer's bids before
it holds its slot anyway (a peer with no agent to bid cannot keep a team from forming)."""
DIGEST_HISTORY: Final = 64
"""Own ledger digests remembered (one per tick that changed the ledger), to explain peers'."""


class LinkLike(Protocol):
    """What the engine needs of :class:`~edge_agent.fleet.link.FleetLink`."""

    @property
    def node_id(self) -> str: ...

    @property
    def topics(self) -> Topics: ...

    @property
    def bdseq(self) -> int | None: ...

    def publish(
        self,
        msg_type: str,
        body: Body,
        cls: str = "event",
        *,
        topic: str | None = None,
        qos: int = 1,
        retain: bool = False,
    ) -> int: ...

    def subscribe(self, pattern: str, qos: int = 1) -> None: ...


class MessageLike(Protocol):
    """What the engine needs of :class:`~edge_agent.fleet.link.Received`."""

    @property
    def route(self) -> Route: ...

    @property
    def envelope(self) -> Envelope: ...


_SUBSCRIBED_KINDS: Final = frozenset(
    {TopicKind.BELIEFS, TopicKind.TASKS, TopicKind.STATE, TopicKind.BIRTH, TopicKind.DEATH}
)


class CoordinationEngine:
    """Belief sharing and task allocation for one node (see the module docstring)."""

    def __init__(
        self,
        link: LinkLike,
        groups: Mapping[str, CoordinatedGroup],
        settings: CoordinationSettings | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        clock_synced: Callable[[], bool] | None = None,
        signer: TaskSigner | None = None,
        authorities: Collection[bytes] = (),
    ) -> None:
        """``authorities``: the raw public keys of the fleet's hubs (the node's hub keys): an
        announcer whose task key is one of them owns every task id it announces, before any
        node (:meth:`~edge_agent.coordination.ledger.TaskBoard.owner_key`)."""
        self.link = link
        self.signer = signer if signer is not None else TaskSigner.generate()
        """Signs this node's releases; its public key goes out retained as ``task_key``."""
        self.authorities = frozenset(authorities)
        self.node_id = link.node_id
        self.topics = link.topics
        self.settings = settings or CoordinationSettings()
        self._mono = monotonic
        self._wall = wall_clock
        self._clock_synced = clock_synced
        auction = self.settings.auction
        self.groups: dict[str, GroupState] = {}
        for name, spec in groups.items():
            check_name(name, "group")
            self.groups[name] = GroupState(name, spec, self.node_id, auction.max_held_per_group)
        self.peer_keys = PeerKeys(self.settings.max_peers)
        # Our own releases of an earlier run come back in peers' syncs (the key is kept).
        self.peer_keys.learn(self.node_id, self.signer.public)
        self.board = TaskBoard(
            max_tasks=auction.max_tasks,
            max_bids=auction.max_bids,
            max_nodes=self.settings.max_peers,
            authority=lambda node: self.peer_keys.raw(node) in self.authorities,
        )
        self.auctioneer = Auctioneer(
            self.node_id, self.board, auction, max_peers=self.settings.max_peers
        )
        self._queue: BoundedQueue[MessageLike] = BoundedQueue(self.settings.max_inbox)
        self.admission = RelayAdmission(
            self.board, self.peer_keys, self.topics.fleet, self.settings.max_peers
        )
        self._bseq = 0
        self.tick = 0
        self._started_at: float | None = None
        self._last_state = -math.inf
        self._next_state = -math.inf
        self._state_dirty = False
        self._last_sync = -math.inf
        self._sync_wanted = False
        self._digests: deque[tuple[bytes, float]] = deque(maxlen=DIGEST_HISTORY)
        self._digest_version = -1
        self._unexplained: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._last_heard: OrderedDict[str, float] = OrderedDict()
        self._acted_version = -1
        self._act_due = -math.inf
        self._holds_pending = False
        """Members whose window closed wait to hold for every peer's bids (:meth:`_hold`)."""
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "task_msgs_sent",
                "task_msgs_received",
                "bids_sent",
                "belief_msgs_sent",
                "belief_msgs_received",
                "publish_refused",
                "malformed",
                "tasks_done",
                "tasks_expired",
                "tasks_preempted",
                "holdings_refused",
                "syncs_sent",
                "syncs_received",
                "digest_mismatches",
                "peers_returned",
                "deaths_seen",
                "death_reauctions",
                "tasks_abandoned",
                "relays_refused",
                "bids_refused",
                "specs_refused",
                "keys_learned",
            ),
            0,
        )

    # -- wiring ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Subscribe to beliefs, tasks and presence (now and on every reconnect)."""
        t = self.topics
        for pattern in (  # presence first: the retained births come before any bid
            t.all_nodes(TopicKind.STATE),
            t.all_nodes(TopicKind.BIRTH),
            t.all_nodes(TopicKind.DEATH),
            t.all_nodes(TopicKind.BELIEFS),
            t.all_nodes(TopicKind.TASKS),
        ):
            self.link.subscribe(pattern, 1)
        self._publish_key()

    def _publish_key(self) -> None:
        """This node's public task key, retained on its own ``tasks`` topic (again with every
        sync: a broker that lost its retained messages gets it back after the reconnects)."""
        self._publish(
            TaskKey.TYPE,
            TaskKey(key=self.signer.public),
            topic=self.topics.tasks(self.node_id),
            retain=True,
        )

    def handle(self, msg: MessageLike) -> bool:
        """Queue a received message if it is the engine's; False when it is not."""
        if msg.route.kind not in _SUBSCRIBED_KINDS:
            return False
        if msg.envelope.node == self.node_id and msg.route.kind is not TopicKind.STATE:
            return True  # our own (a retained birth, an outbox re-send): nothing to learn
        self._queue.put(msg)
        return True

    @property
    def my_bdseq(self) -> int:
        bdseq = self.link.bdseq
        return 0 if bdseq is None else bdseq

    def rebind(self, groups: Mapping[str, CoordinatedGroup]) -> None:
        """The daemon rebuilt, resized, replaced or removed groups (reload, resize, deployment).

        A group whose agents keep their meaning -- same name, same model (``group.key``), same
        size, same sharing settings, capabilities and channels -- keeps its state (evidence not
        yet sent or fused, its holders and their preferences): only the group object is swapped.
        Any other group starts afresh, and the tasks its agents had won are released as
        ``abandoned``, so every node re-auctions them at the next epoch.
        """
        max_held = self.settings.auction.max_held_per_group
        new: dict[str, GroupState] = {}
        for name, spec in groups.items():
            check_name(name, "group")
            prev = self.groups.get(name)
            if prev is not None and same_agents(prev, spec):
                prev.spec, prev.group = spec, spec.group
                new[name] = prev
            else:
                new[name] = GroupState(name, spec, self.node_id, max_held)
        gone = {name for name, gs in self.groups.items() if new.get(name) is not gs}
        self.groups = new
        if gone:
            won = [*self.board.award().values()]
            for team in self.board.teams().values():
                won += team.members
            self._give_up([b for b in won if b.node == self.node_id and b.group in gone])
        self._acted_version = -1  # give the new groups' winners their tasks at the next tick

    def _give_up(self, bids: list[Bid]) -> None:
        """Release won tasks as ``abandoned`` (re-auctioned at the next epoch everywhere; a team
        member's slot is left vacant, and filled again)."""
        if not bids:
            return
        items = [abandon(b, team=self.board.is_team(b.task)) for b in bids]
        self._release(items)
        self.counters["tasks_abandoned"] += len(items)
        self._state_dirty = True
        logger.info("coordination: gave up %d task(s) of groups that changed", len(items))

    def reset_agents(self, group: str, mask: NDArray[np.bool_] | None = None) -> None:
        """Agents of ``group`` start a new episode (their beliefs went back to ``D``): their
        unsent evidence is dropped. Call it where ``group.reset(mask)`` is called."""
        sharer = self.groups[group].sharer
        if sharer is not None:
            sharer.reset(mask)

    @staticmethod
    def bytes_for(
        groups: Mapping[str, CoordinatedGroup], settings: CoordinationSettings | None = None
    ) -> int:
        """:attr:`nbytes` of an engine over ``groups``, before building it (reserve, then
        allocate)."""
        max_held = (settings or CoordinationSettings()).auction.max_held_per_group
        total = 0
        for spec in groups.values():
            g = spec.group
            total += TaskPreferences.bytes_for(
                g.cm, g.n_agents, use_utility=g.settings.use_utility, max_held=max_held
            )
            if spec.sharing is not None:
                total += BeliefSharer.bytes_for(
                    g.n_agents, g.cm.num_states, spec.sharing, dtype=g.dtype.type
                )
        return total

    @property
    def nbytes(self) -> int:
        """Bytes of the per-agent coordination arrays of every group (the ledger is extra:
        bounded by ``max_tasks`` and ``max_bids``)."""
        total = 0
        for gs in self.groups.values():
            total += gs.prefs.nbytes
            if gs.sharer is not None:
                total += gs.sharer.nbytes
        return total

    def live_nodes(self) -> int:
        """This node and the peers whose last known session is not dead."""
        return 1 + self.admission.live_peers(self.node_id)

    # -- the tick -------------------------------------------------------------------------------
    def before_step(self, now: float | None = None) -> None:
        """Merge queued messages, then fuse peers' evidence into the sharing groups' priors."""
        now = self._mono() if now is None else now
        if self._started_at is None:
            self._started_at = now
        for msg in self._queue.drain(self.settings.max_messages_per_tick):
            try:
                self._process(msg, now)
            except (EdgeAgentError, ValueError) as err:
                self.counters["malformed"] += 1
                logger.warning(
                    "coordination: dropped %s from %s: %s",
                    msg.envelope.type,
                    msg.envelope.node,
                    err,
                )
        for gs in self.groups.values():
            if gs.sharer is not None:
                gs.sharer.fuse(gs.group.prior)

    def step(self, name: str, obs: np.ndarray, now: float | None = None) -> NDArray[np.int64]:
        """Step group ``name`` with its holders' task preferences; returns its actions.

        ``now`` is passed to ``group.step`` (the history's timestamp). A group that does not
        step in a tick (paused, waiting for observations) simply is not passed here: it neither
        accumulates nor publishes evidence of its own that tick.

        The whole group takes its ordinary (fused) step; then the agents holding a task decide
        again with their preferences replaced: ``G += Delta G``, ``q_pi``, action and next prior
        recomputed for those rows only (pymdp's general-path kernels). Same result as planning
        them with the task's ``C`` in the first place. Until ``AifAgentGroup`` takes the
        preference hook (``docs/coordination.md``), a group's history records the holders'
        action from before the override.
        """
        gs = self.groups[name]
        group = gs.group
        actions = group.step(obs, now)
        gs.stepped = True
        rows = gs.prefs.rows
        if rows.size == 0:
            return actions
        s = group.settings
        cm = group.cm
        qs_rows = [q[rows] for q in group.qs]
        G_rows = group.G[rows] + gs.prefs.policy_delta(qs_rows, rows)
        q_rows = kernels.policy_posterior(G_rows, cm.lnE, s.gamma)
        group.G[rows] = G_rows
        group.q_pi[rows] = q_rows
        chosen = kernels.select_actions(
            cm,
            q_rows,
            mode=s.sampling_mode,
            deterministic=s.action_selection == "deterministic",
            alpha=s.alpha,
            rng=group.selection_rng(),
        )
        # The group's next prior already follows from the action it chose; only the holders
        # whose action changed need theirs again (most keep it: re-deciding is then cheap).
        changed = np.flatnonzero((chosen != actions[rows]).any(axis=1))
        actions[rows] = chosen
        if changed.size:
            moved = [q[changed] for q in qs_rows]
            for prior, new in zip(
                group.prior, kernels.next_prior(cm, moved, chosen[changed], None), strict=True
            ):
                prior[rows[changed]] = new
        return actions

    def after_step(self, now: float | None = None) -> None:
        """Publish beliefs, run the auction, update holders, release finished tasks."""
        now = self._mono() if now is None else now
        if self._started_at is None:
            self._started_at = now
        wall = self._wall()
        for gs in self.groups.values():
            stepped, gs.stepped = gs.stepped, False
            if gs.sharer is not None and stepped:
                gs.sharer.observe(gs.group.qs)
                for batch in gs.sharer.publish(self.tick, now):
                    if self._publish(
                        BeliefBatch.TYPE,
                        batch,
                        qos=gs.sharer.settings.qos,
                        topic=self.topics.beliefs(self.node_id),
                    ):
                        self.counters["belief_msgs_sent"] += 1
        self.tick += 1
        # Holders that finished let go first (their agents can bid again); then bids for the
        # rounds this node just saw and for rounds left without a winner; then one award.
        self._finish(wall)
        opened = self.auctioneer.open_rounds(now)  # the award once, after this node's bids
        if opened:
            self._bid(opened, now, rebid=False)
        due = self.auctioneer.rebid_due(now)
        if due:
            self._bid(due, now, rebid=True)
        self._update(now)
        self._act(now)
        if self._holds_pending:
            self._hold(self.auctioneer.holdings(now), now)
        self._anti_entropy(now)
        self._publish_state(now)

    # -- announcing -----------------------------------------------------------------------------
    def announce(self, specs: list[TaskSpec]) -> None:
        """Announce tasks from this node (the hub does the same on its own ``tasks`` topic).
        :class:`InputError` for a spec in another's name, or of a task id that belongs to an
        announcer that ranks before this node (peers would refuse it)."""
        for spec in specs:
            if spec.announced_by != self.node_id:
                raise InputError(
                    f"task {spec.task!r} says it is announced by "
                    f"{spec.announced_by!r}, not {self.node_id!r}"
                )
            if self.board.outranked(spec):
                raise InputError(
                    f"task {spec.task!r} is {self.board.owner(spec.task)!r}'s: "
                    "announce it under another id"
                )
        # Team specs in messages of their own: a node of the version before teams refuses a
        # message with one, and takes the one-agent tasks of the others.
        specs = [s for s in specs if not s.is_team] + [s for s in specs if s.is_team]
        sigs = sign_specs(self.signer.sign, self.topics.fleet, specs)
        for i, spec in enumerate(specs):
            self.board.add_spec(spec, sigs[i * SIGNATURE_BYTES : (i + 1) * SIGNATURE_BYTES])
        for start, end in announcement_parts(specs):
            part = sigs[start * SIGNATURE_BYTES : end * SIGNATURE_BYTES]
            self._publish_task(TaskAnnounce(tasks=specs[start:end], sigs=part))

    # -- internals: publishing ------------------------------------------------------------------
    def _publish(
        self,
        msg_type: str,
        body: Body,
        *,
        qos: int = 1,
        topic: str | None = None,
        retain: bool = False,
    ) -> bool:
        try:
            self.link.publish(
                msg_type,
                body,
                self.settings.auction.outbox_class,
                topic=topic,
                qos=qos,
                retain=retain,
            )
        except EdgeAgentError as err:
            self.counters["publish_refused"] += 1
            logger.warning("coordination: could not publish %s: %s", msg_type, err)
            return False
        return True

    def _publish_task(self, body: Body) -> bool:
        sent = self._publish(body.TYPE, body, topic=self.topics.tasks(self.node_id))
        if sent:
            self.counters["task_msgs_sent"] += 1
        return sent

    def _next_bseq(self) -> int:
        self._bseq = (self._bseq + 1) % UINT32
        return self._bseq

    # -- internals: incoming --------------------------------------------------------------------
    def _process(self, msg: MessageLike, now: float) -> None:
        env = msg.envelope
        body = env.body
        kind = msg.route.kind
        # The link checked that the envelope's node is the topic's: this is the node speaking.
        self.admission.heard_from(env.node, env.bdseq)
        if kind is TopicKind.BELIEFS:
            if isinstance(body, BeliefBatch):
                self._on_beliefs(env, body, now)
            return
        if kind is TopicKind.STATE:
            if isinstance(body, NodeState):
                if body.online:
                    self.admission.born_in(env.node, env.bdseq)
                else:
                    self._on_dead(env.node, env.bdseq, now)
            return
        if kind is TopicKind.DEATH:
            if isinstance(body, Death):
                self._on_dead(env.node, env.bdseq, now)
            return
        if kind is TopicKind.BIRTH:
            if isinstance(body, Birth):
                new_session = env.bdseq > self.admission.born_session(env.node)
                self.admission.born_in(env.node, env.bdseq)
                # A new node, a restart or a reconnect: it may lack what we know, and we what it
                # knows. A rebirth of the session we know (a peer asked for it after a gap in
                # its sequence -- which a node's messages on topics that peer does not
                # subscribe to make too) syncs only when the digests say facts are missing.
                if new_session:
                    self._sync_wanted = True
                self._next_state = now
            return
        self.counters["task_msgs_received"] += 1
        self._on_task(env, body, now)

    def _on_task(self, env: Envelope, body: Body, now: float) -> None:
        if isinstance(body, TaskAnnounce):
            # The sender's own announcements only (it is the node of its topic, which a broker
            # ACL binds to its identity); other nodes' specs arrive in syncs.
            for spec in body.tasks:
                if spec.announced_by != env.node:
                    raise ValueError(f"task {spec.task} announced by {spec.announced_by}")
            # Taken only with the announcer's signature (the key it published on its own
            # topic): the same check a relayed spec meets, so every spec a sync relays has one;
            # and only of a task id that is not another announcer's who ranks first.
            for i, spec in enumerate(body.tasks):
                sig = body.signature(i)
                if not self.board.outranked(spec) and self.admission.spec_signed(spec, sig):
                    self.board.add_spec(spec, sig)
                else:
                    self.counters["specs_refused"] += 1
        elif isinstance(body, TaskBids):
            self._on_bids(env, body)
        elif isinstance(body, TaskRelease):
            for item in body.items:
                if item.node != env.node:
                    raise ValueError(f"release of {item.node}'s agent sent by {env.node}")
            # Judged against the ledger as it was before this message (one award for all).
            verdicts = [self.admission.release_verdict(item) for item in body.items]
            for i, (item, verdict) in enumerate(zip(body.items, verdicts, strict=True)):
                refused = self.admission.merge_release(item, verdict, body.signature(i))
                self.counters["relays_refused"] += refused
        elif isinstance(body, TaskState):
            self._on_state(env.node, body, now)
        elif isinstance(body, TaskSync):
            self.counters["syncs_received"] += 1
            admitted, refused_facts = self.admission.admit_sync(env.node, body)
            self.counters["relays_refused"] += refused_facts
            _, held = self.board.merge_sync(admitted)
            self._reauction(held)
        elif isinstance(body, TaskKey) and self.peer_keys.learn(env.node, body.key):
            self.counters["keys_learned"] += 1

    def _on_beliefs(self, env: Envelope, batch: BeliefBatch, now: float) -> None:
        self.counters["belief_msgs_received"] += 1
        gs = self.groups.get(batch.group)
        if gs is None or gs.sharer is None:
            return
        transit = 0.0
        if env.clock_synced and self._clock_synced is not None and self._clock_synced():
            transit = max(0.0, self._wall() - env.ts)
        gs.sharer.receive(
            env.node,
            env.bdseq,
            env.seq,
            batch,
            transit_s=transit,
            tick_period_s=self.settings.tick_period_s,
        )

    def _on_bids(self, env: Envelope, body: TaskBids) -> None:
        # Refused: of a session not seen born, beyond the task's signed spec, below any cost.
        admitted, refused = self.admission.admit_bids(env.node, env.bdseq, body)
        self.counters["bids_refused"] += refused
        if not admitted.tasks:
            return
        self.board.add_bids(
            env.node,
            body.group,
            env.bdseq,
            body.bseq,
            admitted.tasks,
            epochs=admitted.epochs,
            task_index=admitted.task_index,
            agents=admitted.agents,
            costs=admitted.costs,
            roles=admitted.roles,
            holds=admitted.holds,
        )

    def _on_dead(self, node: str, bdseq: int, now: float) -> None:
        if node == self.node_id and bdseq >= self.my_bdseq:
            return  # not about a session of ours that ended
        if self.board.is_dead(node, bdseq):
            return
        self.counters["deaths_seen"] += 1
        held = self.board.add_dead(node, bdseq)
        self._reauction(held)
        if self.admission.born_session(node) <= bdseq:
            for gs in self.groups.values():
                if gs.sharer is not None:
                    gs.sharer.forget_peer(node)
            self.auctioneer.forget_peer(node, now)
        if held:
            logger.info(
                "coordination: %s (bdseq %d) died; re-auctioning %d task(s)", node, bdseq, len(held)
            )

    def _reauction(self, held: list[Bid]) -> None:
        """A dead session's tasks move to their next epoch (a fact every node derives too), but
        not past the last round (``MAX_ROUNDS``): there the round stays, without the dead."""
        for bid in held:
            rel = abandon(bid)
            self.admission.merge_release(rel, self.admission.release_verdict(rel))
        self.counters["death_reauctions"] += len(held)

    def _on_state(self, node: str, body: TaskState, now: float) -> None:
        """Claims feed conflict detection; the digest is checked against ours (anti-entropy).

        A peer's digest is *explained* when our ledger had that digest within ``sync_after_s``
        (the peer is a little behind) or gets it later (the peer was a little ahead). One left
        unexplained for ``sync_after_s`` means facts are missing on one side: we send a sync.
        A peer heard again after more than ``SILENCE_PERIODS`` state periods of silence (a
        partition, a broker outage), or claiming a task our award gives to someone else (a
        conflict: its ledger or ours lacks bids), gets a sync at once.
        """
        period = self.settings.auction.state_every_s
        last = self._last_heard.get(node)
        if last is not None and now - last > SILENCE_PERIODS * period:
            self._sync_wanted = True
            self.counters["peers_returned"] += 1
        self._last_heard[node] = now
        self._last_heard.move_to_end(node)
        while len(self._last_heard) > self.settings.max_peers:
            self._last_heard.popitem(last=False)
        conflicts = self.auctioneer.metrics.conflicts_detected
        self.auctioneer.on_claims(node, list(body.claims), now)
        if self.auctioneer.metrics.conflicts_detected > conflicts:
            self._sync_wanted = True
        self._record_digest(now)
        horizon = now - self.settings.auction.sync_after_s
        if any(d == body.digest and t >= horizon for d, t in self._digests):
            self._unexplained.pop(node, None)
            return
        self.counters["digest_mismatches"] += 1
        since = self._unexplained.get(node, (b"", now))[1]
        self._unexplained[node] = (body.digest, since)
        self._unexplained.move_to_end(node)
        while len(self._unexplained) > self.settings.max_peers:
            self._unexplained.popitem(last=False)

    def _record_digest(self, now: float) -> None:
        if self.board.version != self._digest_version:
            self._digest_version = self.board.version
            self._digests.append((self.board.digest(), now))

    def _anti_entropy(self, now: float) -> None:
        self._record_digest(now)
        current = self._digests[-1][0] if self._digests else self.board.digest()
        auction = self.settings.auction
        for node, (digest, since) in list(self._unexplained.items()):
            if digest == current:
                del self._unexplained[node]
            elif now - since >= auction.sync_after_s:
                self._sync_wanted = True
                self._unexplained[node] = (digest, now)
        if self._sync_wanted and now - self._last_sync >= auction.sync_min_interval_s:
            self._sync_wanted = False
            self._last_sync = now
            self._publish_key()
            for part in self.board.sync_parts(own=self.node_id):
                if self._publish_task(part):
                    self.counters["syncs_sent"] += 1

    # -- internals: the auction -----------------------------------------------------------------
    def _update(self, now: float) -> list[tuple[str, int]]:
        return self.auctioneer.update(now, teams=self._teams_ready(now))

    def _teams_ready(self, now: float) -> bool:
        """Whether to compute the team award now: unless a team round is in its bidding window
        with bids of a live peer missing here. Until then the fill would change with every
        peer's bids that come (one fill per peer's message, each of every slot); with them in,
        one fill gives the award the window's close would (a peer with no agent to bid holds it
        back until the window closes, as members' holds are, :meth:`_hold`)."""
        if not self.auctioneer.teams_stale():
            return True
        peers: list[str] | None = None
        for task, epoch in self.auctioneer.rounds:
            if not self.board.is_team(task) or self.auctioneer.window_closed(task, epoch, now):
                continue
            if peers is None:
                peers = self.admission.live_peer_names(self.node_id)
            if not self.board.bid_by_all(task, peers):
                return False
        return True

    def _eligible(self, gs: GroupState, winners: set[tuple[str, int]]) -> NDArray[np.int64]:
        mask = np.ones(gs.group.n_agents, dtype=bool)
        mask[gs.prefs.rows] = False
        taken = [a for g, a in winners if g == gs.name and a < mask.size]
        if taken:
            mask[taken] = False
        return np.flatnonzero(mask)

    def _bid(self, rounds: list[tuple[str, int]], now: float, *, rebid: bool) -> None:
        """Bids of every group for ``rounds``: per role of each task (a one-agent task has
        one), the ``k`` cheapest agents that neither hold nor win anything, ``k =
        clamp(ceil(S / live_nodes), min_bids_per_task, max_bids_per_task)`` with ``S`` the slots
        of the group's new rounds (their tasks, for one-agent tasks); a rebid bids
        ``min_bids_per_task`` agents that have not bid on the role yet, and of a team only for
        the roles with a vacant slot."""
        auction = self.settings.auction
        winners = self.auctioneer.winners()
        specs = [self.board.specs[t] for t, _ in rounds if t in self.board.specs]
        epochs = dict(rounds)
        for gs in self.groups.values():
            columns = [
                (s, r)
                for s in specs
                for r in self._roles_wanted(s, rebid=rebid)
                if gs.takes(s.slots()[r])
            ]
            if not columns:
                continue
            rows = self._eligible(gs, winners)
            if rows.size == 0:
                continue
            group = gs.group
            U = np.stack([gs.utility(s, auction.preference_scale, r) for s, r in columns], axis=1)
            costs = task_costs(
                group.cm,
                [q[rows] for q in group.qs],
                group.G[rows],
                U,
                base_utility=group.cm.utility if group.settings.use_utility else None,
            )
            if rebid:
                k = auction.min_bids_per_task
                for j, (s, r) in enumerate(columns):
                    already = self.board.bidders(s.task, self.node_id, gs.name, r)
                    if already:
                        costs[np.isin(rows, list(already)), j] = np.inf
            else:
                slots = sum(s.slots()[r].agents for s, r in columns)
                k = math.ceil(slots / self.live_nodes())
                k = max(auction.min_bids_per_task, min(auction.max_bids_per_task, k))
            column, agent_pos, cost = select_bids(costs, k)
            keep = np.isfinite(cost)
            column, agents, cost = column[keep], rows[agent_pos[keep]], cost[keep]
            team = np.array([s.is_team for s, _ in columns], dtype=bool)
            for is_team in (False, True):
                sel = team[column] == is_team
                if sel.any():
                    self._send_bids(
                        gs.name,
                        columns,
                        epochs,
                        column=column[sel],
                        agents=agents[sel],
                        costs=cost[sel],
                        team=is_team,
                    )
        for t, e in rounds:
            self.auctioneer.note_bid(t, e, now)

    def _roles_wanted(self, spec: TaskSpec, *, rebid: bool) -> range | list[int]:
        """The roles of ``spec`` to bid on: all of them, or in a rebid of a team those with a
        vacant slot."""
        n = len(spec.slots())
        team = self.auctioneer.teams.get(spec.task) if rebid and spec.is_team else None
        if team is None:
            return range(n)
        filled = [0] * n
        for m in team.members:
            filled[m.role] += 1
        for d in team.done:
            filled[d.role_index] += 1
        return [r for r in range(n) if filled[r] < team.slots[r]]

    def _send_bids(
        self,
        group: str,
        columns: list[tuple[TaskSpec, int]],
        epochs: Mapping[str, int],
        *,
        column: NDArray[np.int64],
        agents: NDArray[np.int64],
        costs: np.ndarray,
        team: bool,
        holds: NDArray[np.bool_] | None = None,
    ) -> None:
        """Send (and merge) bids on ``columns`` (a task and its role each); a team task's bids
        carry their role (and ``holds``), in messages of their own."""
        if column.size == 0:
            return
        names = sorted({columns[c][0].task for c in np.unique(column).tolist()})
        index = {n: i for i, n in enumerate(names)}
        task_of = np.array([index.get(s.task, -1) for s, _ in columns], dtype=np.int64)
        role_of = np.array([r for _, r in columns], dtype=np.int64)
        task_index, roles = task_of[column], role_of[column]
        held = np.zeros(column.size, dtype=bool) if holds is None else holds
        order = np.argsort(task_index, kind="stable")
        task_index, agents, costs = task_index[order], agents[order], costs[order]
        roles, held = roles[order], held[order]
        costs32 = costs.astype(np.float32)
        bdseq = self.my_bdseq
        for t0 in range(0, len(names), MAX_TASKS_PER_MESSAGE):
            t1 = min(len(names), t0 + MAX_TASKS_PER_MESSAGE)
            lo, hi = np.searchsorted(task_index, [t0, t1])
            part = names[t0:t1]
            part_epochs = [epochs[n] for n in part]
            for b0 in range(int(lo), int(hi), MAX_BIDS_PER_MESSAGE):
                b1 = min(int(hi), b0 + MAX_BIDS_PER_MESSAGE)
                sub_t = task_index[b0:b1] - t0
                bseq = self._next_bseq()
                body = TaskBids.from_arrays(
                    group,
                    bseq,
                    part,
                    epochs=part_epochs,
                    task_index=sub_t,
                    agents=agents[b0:b1],
                    costs=costs32[b0:b1],
                    roles=roles[b0:b1] if team else None,
                    holds=held[b0:b1] if team else None,
                )
                self.board.add_bids(
                    self.node_id,
                    group,
                    bdseq,
                    bseq,
                    part,
                    epochs=part_epochs,
                    task_index=sub_t.tolist(),
                    agents=agents[b0:b1].tolist(),
                    costs=costs32[b0:b1].tolist(),
                    roles=roles[b0:b1].tolist() if team else None,
                    holds=held[b0:b1].tolist() if team else None,
                )
                if self._publish_task(body):
                    self.counters["bids_sent"] += b1 - b0

    def _act(self, now: float) -> None:
        """Give this node's winners and team members their tasks' preferences (a member its
        role's goal, once it holds its slot), take them from agents that lost theirs; members
        take their slots (:meth:`_hold`). Runs when the board changed or a bidding window
        closed."""
        if self.board.version == self._acted_version and now < self._act_due:
            return
        self._acted_version = self.board.version
        self._act_due = self.auctioneer.next_window_close(now)
        holdings = self.auctioneer.holdings(now)
        auction = self.settings.auction
        for gs in self.groups.values():
            prefs = gs.prefs
            for agent, held in prefs.held.items():
                bid = holdings.get((gs.name, agent))
                if bid is None or (bid.task, bid.epoch, bid.role) != (*held, prefs.role(agent)):
                    prefs.release(agent)
                    self.counters["tasks_preempted"] += 1
                    self._state_dirty = True
        ghosts = []
        for (group, agent), bid in holdings.items():
            target = self.groups.get(group)
            if target is None or agent >= target.prefs.n_agents:
                ghosts.append(bid)  # the group was removed or shrunk since the agent bid
                continue
            if target.prefs.slot[agent] >= 0:
                continue
            if bid.task in self.auctioneer.teams and not bid.held:
                continue  # a team member pursues once it took its slot (its team is fixed)
            spec = self.board.specs[bid.task]
            utility = target.utility(spec, auction.preference_scale, bid.role)
            goal = spec.slots()[bid.role]
            key = (goal.goal_factor, goal.goal_state)
            if target.prefs.assign(agent, spec, bid.epoch, utility, key=key, role=bid.role):
                self._state_dirty = True
            else:
                self.counters["holdings_refused"] += 1
        if ghosts:
            self._give_up(ghosts)
        self._hold(holdings, now)

    def _hold(self, holdings: Mapping[tuple[str, int], Bid], now: float) -> None:
        """This node's team members whose window closed take their slots: each sends its bid
        again as a *hold* (the award then keeps it in the team whatever else is bid) -- once
        this node holds bids of the round from every live peer (a node that held with a peer's
        bids missing would fix a team the others would not form), or :data:`HOLD_WAIT_STATES`
        state periods after its window closed (a peer with no agent to bid), whichever comes
        first. A hold the award no longer counts (another agent's won the slot after a
        partition healed) is sent again as a plain bid, so that it cannot count later over what
        the agent won since."""
        mine: dict[tuple[str, str], list[tuple[Bid, bool]]] = {}
        late = self.settings.auction.window_s + HOLD_WAIT_STATES * (
            self.settings.auction.state_every_s
        )
        peers = self.admission.live_peer_names(self.node_id)
        ready: dict[str, bool] = {}
        self._holds_pending = False
        for bid in holdings.values():
            if bid.task in self.auctioneer.teams and not bid.held:
                if bid.task not in ready:
                    ready[bid.task] = (
                        self.board.bid_by_all(bid.task, peers)
                        or self.auctioneer.open_for(bid.task, bid.epoch, now) >= late
                    )
                if ready[bid.task]:
                    mine.setdefault((bid.group, bid.task), []).append((bid, True))
                else:
                    self._holds_pending = True
        members = {(b.task, b.group, b.agent, b.role) for b in holdings.values()}
        teams = self.auctioneer.teams
        for bid in self.board.holds_of(self.node_id, teams):
            if (bid.task, bid.group, bid.agent, bid.role) not in members and (
                teams[bid.task].member(bid.holder) is None
            ):
                mine.setdefault((bid.group, bid.task), []).append((bid, False))
        by_group: dict[str, list[tuple[Bid, bool]]] = {}
        for (group, _), rows in sorted(mine.items()):
            by_group.setdefault(group, []).extend(rows)
        for group, rows in by_group.items():
            columns = [(self.board.specs[b.task], b.role) for b, _ in rows]
            self._send_bids(
                group,
                columns,
                {b.task: b.epoch for b, _ in rows},
                column=np.arange(len(rows), dtype=np.int64),
                agents=np.array([b.agent for b, _ in rows], dtype=np.int64),
                costs=np.array([b.cost for b, _ in rows]),
                team=True,
                holds=np.array([held for _, held in rows], dtype=bool),
            )
            self._state_dirty = True

    def complete(self, group: str, agents: NDArray[np.integer] | list[int]) -> None:
        """The application says these agents of ``group`` finished their tasks (released as
        ``done`` at the end of this tick); agents without a task are ignored."""
        gs = self.groups[group]
        rows = np.asarray(agents, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= gs.group.n_agents):
            raise InputError(f"agents out of range [0, {gs.group.n_agents}) in group {group!r}")
        gs.completed = np.union1d(gs.completed, rows)

    def _finish(self, wall: float) -> bool:
        """Release the tasks of holders that reached their goal, were told so (:meth:`complete`)
        or ran past the deadline."""
        auction = self.settings.auction
        items: list[Release] = []
        bdseq = self.my_bdseq
        for gs in self.groups.values():
            prefs = gs.prefs
            if prefs.rows.size == 0:
                gs.completed = NO_ROWS
                continue
            done = gs.completed
            gs.completed = NO_ROWS
            if auction.done_belief is not None:
                reached = prefs.reached(gs.group.qs, auction.done_belief)
                done = np.union1d(done, reached) if done.size else reached
            expired = prefs.expired(wall)
            for rows, status in ((done, ReleaseStatus.DONE), (expired, ReleaseStatus.EXPIRED)):
                for agent in rows.tolist():
                    role = prefs.role(agent)
                    held = prefs.release(agent)
                    if held is None:
                        continue
                    task, epoch = held
                    items.append(
                        Release(
                            task=task,
                            epoch=epoch,
                            node=self.node_id,
                            group=gs.name,
                            agent=agent,
                            bdseq=bdseq,
                            bseq=self._next_bseq(),
                            status=status,
                            role=role if self.board.is_team(task) else UNSET,
                        )
                    )
                    key = "tasks_done" if status is ReleaseStatus.DONE else "tasks_expired"
                    self.counters[key] += 1
        if not items:
            return False
        self._release(items)
        self._state_dirty = True
        return True

    def _release(self, items: list[Release]) -> None:
        """Merge this node's own releases, signed, and send them."""
        fleet = self.topics.fleet
        sigs = [self.signer.sign(release_bytes(fleet, item)) for item in items]
        for item, sig in zip(items, sigs, strict=True):
            # Its own word, but an abandoned round stops at the last one, as its peers will.
            abandoned = item.status is ReleaseStatus.ABANDONED
            verdict = self.admission.release_verdict(item) if abandoned else Verdict.TAKE
            self.admission.merge_release(item, verdict, sig)
        for start in range(0, len(items), MAX_TASKS_PER_MESSAGE):
            end = start + MAX_TASKS_PER_MESSAGE
            self._publish_task(TaskRelease(items=items[start:end], sigs=b"".join(sigs[start:end])))

    def _publish_state(self, now: float) -> None:
        auction = self.settings.auction
        due = now >= self._next_state or (
            self._state_dirty and now - self._last_state >= auction.state_min_interval_s
        )
        if not due:
            return
        claims = []
        for gs in self.groups.values():
            for agent, (task, epoch) in gs.prefs.held.items():
                role = gs.prefs.role(agent) if self.board.is_team(task) else UNSET
                claims.append(Claim(task=task, epoch=epoch, group=gs.name, agent=agent, role=role))
        teams = [
            TeamState(
                task=t.task,
                epoch=t.epoch,
                slots=t.size,
                filled=len(t.members),
                done=len(t.done),
            )
            for t in list(self.auctioneer.teams.values())[:MAX_TEAM_STATES]
        ]
        body = TaskState(
            digest=self.board.digest(),
            open_tasks=len(self.board.open_epochs()),
            claims=claims[:MAX_CLAIMS],
            teams=teams or UNSET,
        )
        self._publish_task(body)
        self._last_state = now
        self._next_state = now + auction.state_every_s
        self._state_dirty = False

    # -- metrics --------------------------------------------------------------------------------
    def telemetry_counters(self, now: float | None = None) -> dict[str, float]:
        """:meth:`metrics` as ``coord.*`` keys for ``Telemetry.counters`` (keys of at most 64
        characters: per-group keys of very long group names are left out)."""
        return {
            f"coord.{k}": v
            for k, v in self.metrics(now).items()
            if len(k) + len("coord.") <= TELEMETRY_KEY_CHARS
        }

    def assignment(self) -> dict[str, tuple[str, str, int]]:
        """The local award: ``task -> (node, group, agent)``."""
        return {t: b.holder for t, b in self.board.award().items()}

    def metrics(self, now: float | None = None) -> dict[str, float]:
        """Counters and derived figures for telemetry (flat, numeric)."""
        now = self._mono() if now is None else now
        out: dict[str, float] = {k: float(v) for k, v in self.counters.items()}
        m = self.auctioneer.metrics
        mean, worst, n = self.auctioneer.converge_stats()
        out.update(
            rounds=float(m.rounds),
            reawards=float(m.reawards),
            conflicts_detected=float(m.conflicts_detected),
            conflicts_resolved=float(m.conflicts_resolved),
            conflicts_open=float(len(self.auctioneer.conflicts)),
            resolve_s_mean=m.resolve_s_total / m.conflicts_resolved
            if m.conflicts_resolved
            else 0.0,
            converge_s_mean=mean,
            converge_s_max=worst,
            converged_rounds=float(n),
            messages_per_task=self.counters["task_msgs_sent"] / m.rounds if m.rounds else 0.0,
            **self.auctioneer.team_stats(),
            tasks_open=float(len(self.board.open_epochs())),
            tasks_held=float(sum(gs.prefs.rows.size for gs in self.groups.values())),
            live_nodes=float(self.live_nodes()),
            board_bids=float(self.board.n_bids),
            board_overflow=float(self.board.overflow),
            stale_bids=float(self.board.stale_bids),
            inbox_depth=float(len(self._queue)),
            inbox_dropped=float(self._queue.dropped),
        )
        elapsed = now - self._started_at if self._started_at is not None else 0.0
        for name, gs in self.groups.items():
            if gs.sharer is not None:
                for key, value in gs.sharer.stats(elapsed).items():
                    out[f"beliefs.{name}.{key}"] = value
        return out
