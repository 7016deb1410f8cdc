"""``edge-agent-host tasks``: announce tasks to a fleet and see who holds them.

Tasks are auctioned among the fleet's agents by the nodes themselves (``docs/coordination.md``):
whoever announces a task publishes a ``task_announce`` on its own ``tasks`` topic, and every
node bids, computes the same award and lets the winning agent pursue it. This command is a hub
doing that; a node can do the same (``CoordinationRuntime.announce``).

    edge-agent-host tasks [--host H --port P --fleet F] announce --key K --capability C ID=GOAL ...
    edge-agent-host tasks ... announce --key K --capability C --count N --goal-states S [--seed 0]
    edge-agent-host tasks ... announce --key K --capability C --team K [--role CAP:N[:GOAL]] ...
    edge-agent-host tasks ... announce --key K --capability C --count N --goal-states S \
        --team-sizes LO-HI [--max-roles R]
    edge-agent-host tasks ... list [--wait S] [--json]

``ID=GOAL``: task ``ID`` (a topic-level name) is to reach state ``GOAL`` of hidden-state factor
``--goal-factor`` (default 0). ``--count N --goal-states S`` makes ``N`` tasks
``{prefix}0000 ...`` with goals drawn uniformly from ``0 ... S-1``. ``--epoch`` re-announces a
task as a new round; ``--deadline-in S`` gives it a deadline ``S`` seconds from now.
``--team K`` makes each task a team task of ``K`` agents of ``--capability`` at its goal, and
each ``--role CAP:N[:GOAL]`` adds ``N`` agents of capability ``CAP`` to reach ``GOAL`` (the task's
goal when left out); ``--team-sizes LO-HI`` makes the ``--count`` tasks teams of ``LO ... HI``
agents, split into up to ``--max-roles`` roles with goals of their own (docs/coordination.md,
"Team tasks"). ``announce --wait S`` then waits until a node claims every task -- every slot of a
team (its holder's node says so in its periodic ``task_state``) -- and prints the assignment;
``list`` prints what the nodes claim and whether their ledgers agree (the same digest), and per
team its slots, how many agents fill them and finished, and the vacant ones.

Task specs are signed: ``announce --key`` is the hub's signing key (the ``command --key``), whose
public half goes out retained as the hub's ``task_key`` on ``node/{hub-id}/tasks`` before the
specs, each with its signature; nodes take a spec, from the hub or relayed by a peer, only with
a valid signature of its announcer (``docs/security.md``). A broker ACL (``edge-agent-host broker
init``) decides who may write on that topic; ``--hub-id`` must then be the hub's broker identity.
A node that has the key's public half among its hub keys takes the hub as the owner of every task
id it announces: no node's spec of such an id counts (``docs/coordination.md``, "Whose task id").
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
from msgspec import UNSET

from edge_agent.coordination.messages import (
    Claim,
    Role,
    TaskAnnounce,
    TaskKey,
    TaskSpec,
    TaskState,
    TeamState,
    announcement_parts,
)
from edge_agent.coordination.signing import sign_specs
from edge_agent.errors import InputError, ProtocolError
from edge_agent.fleet.names import NAME_PATTERN
from edge_agent_host.fleetctl import FleetClient, FleetError
from edge_agent_host.fleetctl.cli import add_broker_arguments, connect

__all__ = [
    "RoleArg",
    "TaskView",
    "announce",
    "configure",
    "format_claims",
    "make_specs",
    "random_specs",
    "random_team_specs",
    "run",
    "specs_of",
    "watch_claims",
]

_NAME_RE: Final = re.compile(NAME_PATTERN)
_ACK_TIMEOUT_S: Final = 10.0


# ---------------------------------------------------------------------------------------- specs
def make_specs(
    goals: Mapping[str, int],
    *,
    capability: str,
    announced_by: str,
    goal_factor: int = 0,
    epoch: int = 0,
    deadline: float = 0.0,
    team: int = 1,
    roles: Sequence[RoleArg] = (),
) -> list[TaskSpec]:
    """One :class:`TaskSpec` per ``task id -> goal state``; :class:`InputError` if one is bad.

    ``team > 1`` or ``roles``: team tasks of ``team`` agents of ``capability`` at the goal and
    each role's ``count`` agents of its capability at its goal (the task's goal when None)."""
    try:
        return [
            _spec(
                task,
                goal,
                capability=capability,
                announced_by=announced_by,
                goal_factor=goal_factor,
                epoch=epoch,
                deadline=deadline,
                team=team,
                roles=[
                    Role(
                        capability=r.capability,
                        count=r.count,
                        goal_factor=goal_factor,
                        goal_state=goal if r.goal is None else r.goal,
                    )
                    for r in roles
                ],
            )
            for task, goal in goals.items()
        ]
    except msgspec.ValidationError as err:
        # msgspec reports the first problem, with the field it is in (`` - at `$.task` ``).
        raise InputError(f"invalid task: {err}") from err


def _spec(task: str, goal: int, *, team: int, roles: list[Role], **fields: Any) -> TaskSpec:
    """A one-agent spec (``team == 1`` without roles: no team field at all), or a team's."""
    if team == 1 and not roles:
        return TaskSpec(task=task, goal_state=goal, **fields)
    return TaskSpec(
        task=task,
        goal_state=goal,
        team=UNSET if team == 1 else team,
        roles=roles or UNSET,
        **fields,
    )


@dataclass(frozen=True)
class RoleArg:
    """``--role CAPABILITY:COUNT[:GOAL]``: ``count`` more agents of ``capability``, to reach
    ``goal`` (the task's own goal when None)."""

    capability: str
    count: int
    goal: int | None = None


def random_team_specs(
    count: int,
    goal_states: int,
    *,
    sizes: tuple[int, int] = (2, 5),
    max_roles: int = 1,
    seed: int = 0,
    prefix: str = "team",
    capability: str,
    **spec: Any,
) -> list[TaskSpec]:
    """``count`` team tasks ``{prefix}0000 ...`` of ``sizes[0] ... sizes[1]`` agents of
    ``capability`` each (uniform), split into up to ``max_roles`` roles (uniform), every role
    with its own goal drawn uniformly from ``[0, goal_states)``: mixed roles, one capability."""
    lo, hi = sizes
    if count < 1 or goal_states < 1 or not 1 <= lo <= hi or max_roles < 1:
        raise InputError(
            f"need count >= 1, goal states >= 1, 1 <= team sizes {lo}-{hi}, roles >= 1"
        )
    rng = np.random.default_rng(seed)
    width = max(4, len(str(count - 1)))
    specs = []
    for i in range(count):
        size = int(rng.integers(lo, hi + 1))
        n_roles = int(rng.integers(1, min(max_roles, size) + 1))
        cuts = np.sort(rng.choice(np.arange(1, size), n_roles - 1, replace=False))
        counts = np.diff(np.concatenate([[0], cuts, [size]])).tolist()
        goals = rng.integers(0, goal_states, n_roles).tolist()
        specs += make_specs(
            {f"{prefix}{i:0{width}d}": goals[0]},
            capability=capability,
            team=counts[0],
            roles=[RoleArg(capability, c, g) for c, g in zip(counts[1:], goals[1:], strict=True)],
            **spec,
        )
    return specs


def random_specs(
    count: int,
    goal_states: int,
    *,
    seed: int = 0,
    prefix: str = "t",
    **spec: Any,
) -> list[TaskSpec]:
    """``count`` tasks ``{prefix}0000 ...`` with goals drawn uniformly from ``[0, goal_states)``."""
    if count < 1 or goal_states < 1:
        raise InputError(f"need count >= 1 and goal states >= 1, got {count} and {goal_states}")
    goals = np.random.default_rng(seed).integers(0, goal_states, count)
    width = max(4, len(str(count - 1)))
    return make_specs({f"{prefix}{i:0{width}d}": int(g) for i, g in enumerate(goals)}, **spec)


def announce(client: FleetClient, specs: Sequence[TaskSpec]) -> int:
    """Publish ``specs``, signed with the hub's key, on the hub's ``tasks`` topic, after the
    key's public half (retained: the hub's ``task_key``); returns how many announcements it
    took. Every spec must be announced by the hub (``announced_by`` = its ``hub_id``): nodes
    drop an announcement made in another's name."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: PLC0415

    strangers = sorted({s.announced_by for s in specs} - {client.hub_id})
    if strangers:
        raise InputError(
            f"tasks announced by {', '.join(strangers)}: the hub {client.hub_id!r} announces "
            "only its own"
        )
    if client.key is None:
        raise FleetError("announcing tasks needs the hub's signing key (--key)")
    topic = client.topics.tasks(client.hub_id)
    public = client.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    client.publish(topic, TaskKey(key=public), retain=True)
    fleet = client.topics.fleet
    # Team specs in messages of their own: a node of the version before teams refuses those
    # whole, and takes the one-agent tasks of the others.
    ordered = [s for s in specs if not s.is_team] + [s for s in specs if s.is_team]
    sent = 0
    for start, end in announcement_parts(ordered):
        part = ordered[start:end]
        client.publish(
            topic, TaskAnnounce(tasks=part, sigs=sign_specs(client.key.sign, fleet, part))
        )
        sent += 1
    return sent


# --------------------------------------------------------------------------------------- claims
@dataclass
class TaskView:
    """What the nodes said in their last ``task_state``: claims, open tasks, ledger digests."""

    claims: dict[str, list[Claim]] = field(default_factory=dict)
    open_tasks: dict[str, int] = field(default_factory=dict)
    digests: dict[str, bytes] = field(default_factory=dict)
    heard_at: dict[str, float] = field(default_factory=dict)
    announced: dict[str, TaskSpec] = field(default_factory=dict)
    teams: dict[str, dict[str, TeamState]] = field(default_factory=dict)
    """Per node, the team tasks of its award (task -> slots, filled, done)."""

    def take(self, node: str, body: object) -> None:
        if isinstance(body, TaskState):
            self.claims[node] = list(body.claims)
            self.open_tasks[node] = body.open_tasks
            self.digests[node] = body.digest
            self.heard_at[node] = time.monotonic()
            teams = [] if body.teams is UNSET else body.teams
            self.teams[node] = {t.task: t for t in teams}
        elif isinstance(body, TaskAnnounce):
            for spec in body.tasks:
                self.announced[spec.task] = spec

    def holders(self) -> dict[str, list[tuple[str, str, int, int]]]:
        """``task -> [(node, group, agent, epoch)]`` over every node's claims, sorted."""
        out: dict[str, list[tuple[str, str, int, int]]] = {}
        for node, claims in self.claims.items():
            for c in claims:
                out.setdefault(c.task, []).append((node, c.group, c.agent, c.epoch))
        return {t: sorted(h) for t, h in sorted(out.items())}

    def roles(self) -> dict[tuple[str, str, str, int], int]:
        """``(task, node, group, agent) -> role`` of every claim of a team task."""
        return {
            (c.task, node, c.group, c.agent): c.role
            for node, claims in self.claims.items()
            for c in claims
            if c.role is not UNSET
        }

    def team_states(self) -> dict[str, TeamState]:
        """Every team task some node reported, as the node that reported the newest round
        (then the most slots filled) has it."""
        out: dict[str, TeamState] = {}
        for node in sorted(self.teams):
            for task, state in self.teams[node].items():
                cur = out.get(task)
                if cur is None or (state.epoch, state.filled + state.done) > (
                    cur.epoch,
                    cur.filled + cur.done,
                ):
                    out[task] = state
        return dict(sorted(out.items()))

    def duplicates(self) -> set[str]:
        """Tasks claimed by more agents than they have slots (a partition not healed yet)."""
        teams = self.team_states()
        return {
            t
            for t, h in self.holders().items()
            if len(h) > (teams[t].slots - teams[t].done if t in teams else 1)
        }

    def agree(self) -> bool:
        """Whether every node heard from reports the same ledger digest."""
        return len(set(self.digests.values())) <= 1

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": {
                node: {
                    "open_tasks": self.open_tasks[node],
                    "digest": self.digests[node].hex(),
                    "claims": len(self.claims[node]),
                }
                for node in sorted(self.digests)
            },
            "agree": self.agree(),
            "tasks": {t: [list(h) for h in hs] for t, hs in self.holders().items()},
            "teams": {
                t: {
                    "epoch": s.epoch,
                    "slots": s.slots,
                    "filled": s.filled,
                    "done": s.done,
                    "vacant": s.vacant,
                    "members": [
                        [*h, self.roles().get((t, h[0], h[1], h[2]), 0)]
                        for h in self.holders().get(t, [])
                    ],
                }
                for t, s in self.team_states().items()
            },
        }


def watch_claims(
    client: FleetClient,
    seconds: float,
    *,
    view: TaskView | None = None,
    until: Callable[[TaskView], bool] | None = None,
) -> TaskView:
    """Listen for ``seconds`` (or until ``until(view)``) and collect what the nodes say."""
    view = view or TaskView()
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        for msg in client.poll(min(left, 0.1)):
            view.take(msg.envelope.node, msg.envelope.body)
        if until is not None and until(view):
            break
    return view


def format_claims(view: TaskView, only: Iterable[str] | None = None) -> str:
    """The ``tasks list`` view: one line per node, then one per claimed task."""
    lines = [f"{'NODE':<20} {'OPEN':>5} {'HOLDING':>7}  DIGEST"]
    for node in sorted(view.digests):
        lines.append(
            f"{node:<20} {view.open_tasks[node]:>5} {len(view.claims[node]):>7}  "
            f"{view.digests[node].hex()[:16]}"
        )
    if not view.digests:
        lines.append("(no node reported its tasks)")
    elif view.agree():
        lines.append(f"ledgers agree ({len(view.digests)} node(s), one digest)")
    else:
        lines.append(f"ledgers DIFFER: {len(set(view.digests.values()))} digests")
    lines.append(f"{'TASK':<24} {'EPOCH':>5}  {'NODE':<20} {'GROUP':<16} {'AGENT':>6}")
    wanted = None if only is None else set(only)
    teams = view.team_states()
    roles = view.roles()
    duplicates = view.duplicates()
    for task, holders in view.holders().items():
        if wanted is not None and task not in wanted:
            continue
        flag = "  DUPLICATE" if task in duplicates else ""
        for node, group, agent, epoch in holders:
            role = f"  role {roles[(task, node, group, agent)]}" if task in teams else ""
            lines.append(f"{task:<24} {epoch:>5}  {node:<20} {group:<16} {agent:>6}{role}{flag}")
    if teams:
        lines.append(f"{'TEAM':<24} {'EPOCH':>5}  {'SLOTS':>5} {'FILLED':>6} {'DONE':>4} VACANT")
        for task, state in teams.items():
            if wanted is not None and task not in wanted:
                continue
            lines.append(
                f"{task:<24} {state.epoch:>5}  {state.slots:>5} {state.filled:>6} "
                f"{state.done:>4} {state.vacant}"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ CLI
def _task_goal(text: str) -> tuple[str, int]:
    task, sep, goal = text.partition("=")
    if not sep or _NAME_RE.fullmatch(task) is None or not goal.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r}: write tasks as ID=GOAL (ID: 1-64 of A-Z a-z 0-9 _ . -; GOAL: a state index)"
        )
    return task, int(goal)


def _role(text: str) -> RoleArg:
    parts = text.split(":")
    ok = 2 <= len(parts) <= 3 and _NAME_RE.fullmatch(parts[0]) is not None
    ok = ok and all(p.isdigit() for p in parts[1:]) and int(parts[1]) >= 1
    if not ok:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write a role as CAPABILITY:COUNT[:GOAL] (COUNT >= 1 agents; GOAL: a "
            "state index, the task's own when left out)"
        )
    return RoleArg(parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None)


def _sizes(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    if not lo.isdigit() or (sep and not hi.isdigit()) or int(lo) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: write team sizes as N or LO-HI (>= 1)")
    low, high = int(lo), int(hi) if sep else int(lo)
    if high < low:
        raise argparse.ArgumentTypeError(f"{text!r}: the largest size comes last")
    return low, high


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``tasks`` arguments and its subcommands."""
    add_broker_arguments(
        parser, "this hub's name: the tasks' announcer (with a broker ACL: its broker identity)"
    )
    sub = parser.add_subparsers(dest="tasks_command", required=True, metavar="SUBCOMMAND")

    ann = sub.add_parser("announce", help="announce tasks to the fleet's agents")
    ann.add_argument("tasks", nargs="*", type=_task_goal, help="ID=GOAL, one per task")
    ann.add_argument(
        "--key", required=True, type=Path, help="hub private key (NAME.key): signs the tasks"
    )
    ann.add_argument("--capability", required=True, help="groups with this capability bid")
    ann.add_argument("--goal-factor", type=int, default=0, help="factor of the goal states")
    ann.add_argument("--count", type=int, default=0, help="also N tasks with random goals")
    ann.add_argument("--goal-states", type=int, default=0, help="random goals in 0 ... S-1")
    ann.add_argument("--prefix", default="t", help="id prefix of the random tasks")
    ann.add_argument("--seed", type=int, default=0, help="seed of the random goals")
    ann.add_argument(
        "--team", type=int, default=1, help="K agents of --capability per task (a team task)"
    )
    ann.add_argument(
        "--role",
        action="append",
        default=[],
        type=_role,
        metavar="CAP:COUNT[:GOAL]",
        help="a team task's further role: COUNT agents of CAP to GOAL (repeatable)",
    )
    ann.add_argument(
        "--team-sizes",
        type=_sizes,
        default=None,
        metavar="LO-HI",
        help="--count tasks are teams of LO ... HI agents (random), in up to --max-roles roles",
    )
    ann.add_argument(
        "--max-roles", type=int, default=1, help="roles of a --team-sizes task (random goals)"
    )
    ann.add_argument("--epoch", type=int, default=0, help="auction round (re-announce: +1)")
    ann.add_argument("--deadline-in", type=float, default=0.0, help="deadline, s from now")
    ann.add_argument(
        "--wait", type=float, default=0.0, help="then wait up to S s for every task's holder"
    )
    ann.add_argument("--json", action="store_true", help="print JSON")

    lst = sub.add_parser("list", help="what the nodes hold, and whether their ledgers agree")
    lst.add_argument("--wait", type=float, default=2.5, help="seconds to listen (>= 1 state)")
    lst.add_argument("--json", action="store_true", help="print JSON")


def _client(args: argparse.Namespace) -> FleetClient:
    if getattr(args, "key", None) is None:
        return connect(args)
    from edge_agent_host.keys import load_signing_key  # noqa: PLC0415

    return connect(args, load_signing_key(args.key))


def specs_of(args: argparse.Namespace) -> list[TaskSpec]:
    """The specs ``tasks announce ARGS`` announces (:class:`InputError` for a bad one)."""
    common: dict[str, Any] = {
        "capability": args.capability,
        "announced_by": args.hub_id,
        "goal_factor": args.goal_factor,
        "epoch": args.epoch,
        "deadline": time.time() + args.deadline_in if args.deadline_in > 0 else 0.0,
    }
    if args.team < 1:
        raise InputError(f"--team {args.team}: a team has at least one agent")
    team = {"team": args.team, "roles": args.role}
    specs = make_specs(dict(args.tasks), **common, **team)
    if args.count and args.team_sizes is not None:
        specs += random_team_specs(
            args.count,
            args.goal_states,
            sizes=args.team_sizes,
            max_roles=args.max_roles,
            seed=args.seed,
            prefix=args.prefix,
            **common,
        )
    elif args.count:
        specs += random_specs(
            args.count, args.goal_states, seed=args.seed, prefix=args.prefix, **common, **team
        )
    if not specs:
        raise InputError("no task: give ID=GOAL arguments or --count N --goal-states S")
    names = [s.task for s in specs]
    if len(set(names)) != len(names):
        raise InputError("a task id is given twice")
    return specs


def _run_announce(args: argparse.Namespace) -> int:
    specs = specs_of(args)
    client = _client(args)
    try:
        messages = announce(client, specs)
        wanted = {(s.task, s.epoch): s.size for s in specs}
        if args.wait <= 0:
            if not client.wait_acknowledged(_ACK_TIMEOUT_S):
                raise FleetError(
                    f"the broker did not acknowledge the announcement in {_ACK_TIMEOUT_S:g} s"
                )
            print(f"announced {len(specs)} task(s) in {messages} message(s)")
            return 0

        view = watch_claims(client, args.wait, until=lambda v: not _unclaimed(v, wanted))
    finally:
        client.close()
    names = [s.task for s in specs]
    if args.json:
        print(json.dumps(view.to_json(), sort_keys=True))
    else:
        print(format_claims(view, only=names))
    missing = _unclaimed(view, wanted)
    if missing:
        print(
            f"{len(missing)} of {len(specs)} without every holder after {args.wait:g} s",
            file=sys.stderr,
        )
        return 1
    return 0


def _unclaimed(view: TaskView, wanted: Mapping[tuple[str, int], int]) -> set[tuple[str, int]]:
    """The rounds of ``wanted`` (round -> agents it needs) fewer agents claim than it needs."""
    held: dict[tuple[str, int], int] = {}
    for task, holders in view.holders().items():
        for h in holders:
            held[(task, h[3])] = held.get((task, h[3]), 0) + 1
    return {r for r, size in wanted.items() if held.get(r, 0) < size}


def _run_list(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        view = watch_claims(client, args.wait)
    finally:
        client.close()
    print(json.dumps(view.to_json(), sort_keys=True) if args.json else format_claims(view))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``edge-agent-host tasks SUBCOMMAND``."""
    runners: dict[str, Callable[[argparse.Namespace], int]] = {
        "announce": _run_announce,
        "list": _run_list,
    }
    try:
        return runners[args.tasks_command](args)
    except (FleetError, ProtocolError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
