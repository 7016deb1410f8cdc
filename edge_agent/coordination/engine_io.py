"""The coordination engine's state and its traffic with the fleet: wiring to the link,
publishing, and merging what comes in.

:class:`EngineIO` holds one node's coordination state (its groups, the ledger and its
admission, the auctioneer, peers' keys, the bounded inbound queue, the digest history) and does
the engine's message traffic: subscribing and publishing through the FleetLink
(:class:`LinkLike`), and merging incoming tasks, bids, beliefs, presence and ``task_state``
digests (anti-entropy: a ``task_sync`` on a digest mismatch). The tick, the auction, team holds
and metrics are :class:`~edge_agent.coordination.engine.CoordinationEngine`'s, built on it
(``docs/coordination.md``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Mapping
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_agent.coordination.auction import Auctioneer
from edge_agent.coordination.beliefs import BeliefSharer
from edge_agent.coordination.coordinated_group import (
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
    MAX_TASKS_PER_MESSAGE,
    Release,
    ReleaseStatus,
    TaskAnnounce,
    TaskBids,
    TaskKey,
    TaskRelease,
    TaskState,
    TaskSync,
)
from edge_agent.coordination.preferences import TaskPreferences
from edge_agent.coordination.relay_admission import RelayAdmission, Verdict
from edge_agent.coordination.settings import CoordinationSettings
from edge_agent.coordination.signing import PeerKeys, TaskSigner, release_bytes
from edge_agent.errors import EdgeAgentError
from edge_agent.fleet.comms.base import BoundedQueue
from edge_agent.fleet.names import UINT32
from edge_agent.fleet.protocol import BeliefBatch, Birth, Body, Death, Envelope, NodeState
from edge_agent.fleet.topics import Route, TopicKind, Topics, check_name

# The engine's log (these messages were the engine module's before it was split in two).
logger = logging.getLogger("edge_agent.coordination.engine")

TELEMETRY_KEY_CHARS: Final = 64
"""Longest counter name a Telemetry message carries."""
SILENCE_PERIODS: Final = 2.5
"""A peer silent for this many task_state periods, then heard again, was cut off: sync."""
HOLD_WAIT_STATES: Final = 2
"""State periods after its window a team member waits at most for every live peer's bids before
it holds its slot anyway (a peer with no agent to bid cannot keep a team from forming)."""
MOVING_SYNC_PERIODS: Final = 2
"""A peer whose digests each went unexplained, changing all the while, gets a sync after this
many ``sync_after_s`` (one it keeps unexplained, after one)."""
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

    def send_now(self) -> int:
        """Send what is published so far now, not at the tick's end (returns how many)."""
        ...


class MessageLike(Protocol):
    """What the engine needs of :class:`~edge_agent.fleet.link.Received`."""

    @property
    def route(self) -> Route: ...

    @property
    def envelope(self) -> Envelope: ...


_SUBSCRIBED_KINDS: Final = frozenset(
    {TopicKind.BELIEFS, TopicKind.TASKS, TopicKind.STATE, TopicKind.BIRTH, TopicKind.DEATH}
)


class EngineIO:
    """One node's coordination state and its message traffic (see the module docstring); the
    tick and the auction are :class:`~edge_agent.coordination.engine.CoordinationEngine`'s."""

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
        self._unexplained: OrderedDict[str, tuple[bytes, float, float]] = OrderedDict()
        """Per peer, its last digest our ledger did not explain, since when it said that one,
        and since when its digests went unexplained (:meth:`_on_state`)."""
        self._last_heard: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """Per peer, when its last ``task_state`` was merged here and when it says it sent it."""
        self._acted_version = -1
        self._acted_teams: object = None
        self._act_due = -math.inf
        self._holds_pending = False
        """Members whose window closed wait to hold for every peer's bids (:meth:`_hold`)."""
        self.formation: dict[str, float] = {}
        """The newest rounds' way to agreement on this node, wall-clock times (seconds since
        the epoch) and counts: ``opened_at`` (this node saw them), ``bids_sent_at``,
        ``peer_bids_last_at`` (the last peer's bid message merged), ``all_bids_at`` (every
        live peer's bids of the team rounds here; ``live_peers`` of them) or, when the holds'
        wait ran out first, ``rounds_waited_out``, ``bid_lag_s_max`` (the most
        a peer's bid message took from being sent to being merged here, when both clocks are
        synchronised), ``team_award_first_at``/``team_award_last_at`` and ``team_awards`` (team
        awards computed since), ``holds_sent_at`` (this node's first hold); beside each
        ``<milestone>_at`` a ``<milestone>_cpu``, the coordinating thread's CPU time then
        (``time.thread_time``), and ``<milestone>_pcpu``, the process's (``process_time``):
        the CPU a phase took against its wall clock. Empty until rounds open; started afresh by
        every new round."""
        self._formation_rounds: set[tuple[str, int]] = set()
        """The team rounds of :attr:`formation`."""
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

    def _mark(self, milestone: str, wall: float | None = None) -> None:
        """A formation milestone: its wall-clock time, this thread's and the process's CPU time
        then."""
        self.formation[f"{milestone}_at"] = self._wall() if wall is None else wall
        self.formation[f"{milestone}_cpu"] = time.thread_time()
        self.formation[f"{milestone}_pcpu"] = time.process_time()

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
                # subscribe to make too) syncs only when the digests say facts are missing,
                # and our digest goes out no sooner than ``state_min_interval_s`` after the
                # last: a fleet's rebirths at once made every node send its task_state once per
                # tick in which a birth came (issue 55: 93 task_state in 0.25 s from twenty
                # daemons, decoded by every one, just as an announcement came).
                if new_session:
                    self._sync_wanted = True
                    self._next_state = now
                else:
                    self._state_dirty = True
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
            self._on_state(env.node, body, now, sent=env.ts)
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
        if self.formation:
            wall = self._wall()
            self._mark("peer_bids_last", wall)
            if env.clock_synced and self._clock_synced is not None and self._clock_synced():
                lag = max(0.0, wall - env.ts)
                self.formation["bid_lag_s_max"] = max(self.formation["bid_lag_s_max"], lag)
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

    def _on_state(self, node: str, body: TaskState, now: float, *, sent: float) -> None:
        """Claims feed conflict detection; the digest is checked against ours (anti-entropy).

        A peer's digest is *explained* when our ledger had that digest within ``sync_after_s``
        (the peer is a little behind) or gets it later (the peer was a little ahead). One left
        unexplained for ``sync_after_s`` means facts are missing on one side: we send a sync.
        A peer whose next digest is another unexplained one is still merging what is in flight
        (a formation's bids and holds, merged in another order than ours: its ledger passed
        through states ours never had): the wait starts again from its new digest, for at most
        :data:`MOVING_SYNC_PERIODS` ``sync_after_s`` in all (issue 55: twenty daemons whose
        formation took longer than ``sync_after_s`` each synced to all once it was over).
        A peer heard again after more than ``SILENCE_PERIODS`` state periods of silence (a
        partition, a broker outage), or claiming a task our award gives to someone else (a
        conflict: its ledger or ours lacks bids), gets a sync at once. Silent by both clocks:
        here (``now``) and by the times it stamped on its messages (``sent``, its own clock,
        compared with its own): a node that stalled itself (starved of CPU on a loaded
        machine) merges its peers' queued ``task_state`` late, but they were sent a period
        apart, and it missed nothing (issue 55: every stalled node synced to all, whose merge
        stalled them in turn, for seconds).
        """
        period = self.settings.auction.state_every_s
        last = self._last_heard.get(node)
        silence = SILENCE_PERIODS * period
        if last is not None and now - last[0] > silence and sent - last[1] > silence:
            self._sync_wanted = True
            self.counters["peers_returned"] += 1
        self._last_heard[node] = (now, sent)
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
        said = self._unexplained.get(node)
        if said is None:
            self._unexplained[node] = (body.digest, now, now)
        elif said[0] != body.digest:  # its ledger moved: facts are on their way
            self._unexplained[node] = (body.digest, now, said[2])
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
        for node, (digest, since, first) in list(self._unexplained.items()):
            if digest == current:
                del self._unexplained[node]
            elif (
                now - since >= auction.sync_after_s
                or now - first >= MOVING_SYNC_PERIODS * auction.sync_after_s
            ):
                self._sync_wanted = True
                self._unexplained[node] = (digest, now, now)
        if self._sync_wanted and now - self._last_sync >= auction.sync_min_interval_s:
            self._sync_wanted = False
            self._last_sync = now
            self._publish_key()
            for part in self.board.sync_parts(own=self.node_id):
                if self._publish_task(part):
                    self.counters["syncs_sent"] += 1

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
