"""``edge-agent-hub learn``: what the fleet's nodes learned, and the rounds that merge it
(docs/fleet-learning.md "On the hub").

::

    edge-agent-hub learn status [--config FILE] [--json]
    edge-agent-hub learn build LINE [--config FILE] [--forgetting F]
        [--max-share S] [--mad-k K] [--rollouts N] [--steps N] [--max-kl X]
        [--min-action-agreement X] [--out FILE] [--json]
    edge-agent-hub learn publish LINE [--round ID] --group G [rollout start's options]

``status``: per model line, the deltas accepted and refused by reason, the experience, the
nodes, what waits for the next round and the last round. ``build``: the next round of the line
(:func:`~edge_agent_host.hub.learning.round.build_round`), signed with the learning key
(``[learning] key_file``: a bundle key, never the hub's command key), its bundle also written
to ``--out``; exit 0 built, 1 refused by the
converter's int8 gate, 2 nothing to build (one line: no bundle of that name, a line that does
not learn, no accepted experience), 3 the line's round is being built elsewhere (one line:
another replica's policy or another ``learn build`` holds the line's lease, which a build by
hand takes too, for ``[learning] lease_s`` at most). ``publish``: a staged rollout of a built
round's bundle (the line's newest by default) with every option of ``rollout start`` (waves,
soak, the behaviour gate's ``--criterion``:
:func:`~.rollout.add_start_options`); the round records the rollout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_agent.errors import EdgeAgentError
from edge_agent.fsutil import write_atomic
from edge_agent_host.fleet.transfer import DeployPlan
from edge_agent_host.hub.cli.access import open_database
from edge_agent_host.hub.cli.rollout import add_output_options, rollback_plan, start_plan
from edge_agent_host.hub.config.hub_toml import (
    LEARNING_KEY_MISSING,
    HubConfigFile,
    key_id_of,
    learning_key_problems,
    load_hub_config,
)
from edge_agent_host.hub.config.rollout_options import add_start_options
from edge_agent_host.hub.learning.catch_up_store import RESULTS as CATCH_UP_RESULTS
from edge_agent_host.hub.learning.catch_up_store import CatchUpStore
from edge_agent_host.hub.learning.merge import MergeSettings
from edge_agent_host.hub.learning.store import LearningStore, LeaseHeldError, LeaseLostError
from edge_agent_host.hub.rollouts.plan import untrusted_line
from edge_agent_host.hub.storage.database import HubDatabase

__all__ = ["add_parser", "node_line", "run", "status_lines"]


def add_parser(sub: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    learn: argparse.ArgumentParser = sub.add_parser(
        "learn",
        help="what the nodes learned, merged into new model versions (status, build, publish)",
    )
    steps = learn.add_subparsers(dest="learn_command", required=True, metavar="ACTION")
    status = steps.add_parser("status", help="per model line: deltas, refusals, rounds")
    with_config(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    build = steps.add_parser(
        "build",
        help="merge a line's pending deltas into a new signed bundle version",
        description="Merge a model line's pending deltas into a new signed bundle version, "
        "holding the line's lease meanwhile. Exit 0 built, 1 refused by the converter's int8 "
        "gate, 2 nothing to build, 3 another replica's round or another learn build holds "
        "the line's lease.",
    )
    with_config(build)
    build.add_argument("line", help="the model line (the bundle name)")
    defaults = MergeSettings()
    build.add_argument(
        "--forgetting",
        type=float,
        default=defaults.forgetting,
        help=f"factor on what earlier rounds merged (default {defaults.forgetting:g})",
    )
    build.add_argument(
        "--max-share",
        type=float,
        default=defaults.max_share,
        help=f"a node's largest share of a column's increment (default {defaults.max_share:g})",
    )
    build.add_argument(
        "--mad-k",
        type=float,
        default=defaults.mad_k,
        help=f"refuse a node scored this many MADs below the median (default {defaults.mad_k:g})",
    )
    build.add_argument("--rollouts", type=int, default=200, help="gate: simulated agents")
    build.add_argument("--steps", type=int, default=30, help="gate: steps per agent")
    # The gate's thresholds default to the converter's (AifThresholds; None here: the
    # converter is imported only by a build).
    build.add_argument(
        "--max-kl", type=float,
        help="gate: largest mean belief KL, float against int8 (default: the converter's, 0.01)",
    )  # fmt: skip
    build.add_argument(
        "--min-action-agreement", type=float,
        help="gate: least action agreement (default: the converter's, 0.95)",
    )  # fmt: skip
    build.add_argument("--out", type=Path, help="also write the round's signed bundle here")
    build.add_argument("--json", action="store_true", help="print the round as JSON")
    publish = steps.add_parser(
        "publish", help="a staged rollout of a built round's bundle (rollout start's options)"
    )
    with_config(publish)
    publish.add_argument("line", help="the model line (the bundle name)")
    publish.add_argument("--round", type=int, help="the round's id (default: the newest built)")
    add_start_options(publish)
    add_output_options(publish)


def run(args: argparse.Namespace) -> int:
    # The files named on the command line first, then the config (as every command does).
    problem = _out_problem(args.out) if getattr(args, "out", None) is not None else None
    if problem is not None:
        print(f"edge-agent-hub learn build: {problem}", file=sys.stderr)
        return 2
    rollback = rollback_plan(args) if args.learn_command == "publish" else None
    source = load_hub_config(args.config)
    if args.learn_command == "status":
        key = _learning_key_id(source)
        db = open_database(source)
        try:
            store = LearningStore(db)
            rows = store.status()
            catch_ups = CatchUpStore(db)
            attempts, fleet_versions = catch_ups.by_line(), catch_ups.current_versions()
            silent_after_s = source.config.hub.silent_after_s
            for row in rows:
                row["catch_ups"] = attempts.get(row["line"], dict.fromkeys(CATCH_UP_RESULTS, 0))
                row["fleet_version"] = fleet_versions.get(row["line"])
                row["learning_key"] = key
                row["not_trusting"] = (
                    {} if key is None
                    else store.not_trusting(row["line"], key, silent_after_s=silent_after_s)
                )  # fmt: skip
        finally:
            db.close()
        if args.json:
            print(json.dumps(rows, sort_keys=True))
        else:
            print("\n".join(status_lines(rows)) if rows else "no learning deltas heard")
        return 0
    if args.learn_command == "publish":
        return _publish(args, source, rollback)
    return _build(args, source)


def _learning_key_id(source: HubConfigFile) -> str | None:
    """The id of ``[learning] key_file``'s key (None: not set, or not a key it can read)."""
    path = source.config.learning.key_file
    if path is None:
        return None
    try:
        return key_id_of(path)
    except (OSError, EdgeAgentError):
        return None


def _publish(args: argparse.Namespace, source: HubConfigFile, rollback: DeployPlan | None) -> int:
    db = open_database(source)
    try:
        found = LearningStore(db).latest_round(args.line, round_id=args.round)
    finally:
        db.close()
    if found is None or found["bundle"] is None:
        which = "no built round" if args.round is None else f"no built round {args.round}"
        print(
            f"edge-agent-hub learn publish: model line {args.line!r} has {which} "
            "(edge-agent-hub learn status)",
            file=sys.stderr,
        )
        return 2
    plan = DeployPlan.from_bytes(found["bundle"], args.chunk_size, where=f"round {found['id']}")

    def published(db: HubDatabase, rollout_id: str) -> None:
        LearningStore(db).set_rollout(found["id"], rollout_id)

    return start_plan(args, plan, "learn publish", rollback=rollback, on_stored=published)


def _out_problem(out: Path) -> str | None:
    """Why ``--out`` cannot take the round's bundle, before any work (None: it can)."""
    where = out.absolute().parent
    if out.is_dir():
        return f"{out}: is a directory; name the bundle file to write"
    if not where.is_dir():
        return f"{out}: cannot write it: {where}: no such directory"
    if not os.access(where, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        return f"{out}: cannot write it: Permission denied"
    return None


def _build(args: argparse.Namespace, source: HubConfigFile) -> int:
    # The converter (and cryptography) only for a build: the other hub commands start light.
    from edge_agent_host.converter.aif.options import AifThresholds  # noqa: PLC0415
    from edge_agent_host.hub.learning.round import (  # noqa: PLC0415
        LearnInputError,
        RoundSettings,
        build_round,
    )
    from edge_agent_host.keys import load_signing_key  # noqa: PLC0415

    key_file = source.config.learning.key_file
    if key_file is None:
        print(f"edge-agent-hub learn build: {LEARNING_KEY_MISSING}", file=sys.stderr)
        return 2
    if problems := learning_key_problems(source.config):
        raise source.error(problems)
    asked = {"max_kl": args.max_kl, "min_action_agreement": args.min_action_agreement}
    gate = {k: v for k, v in asked.items() if v is not None}
    try:
        settings = RoundSettings(
            merge=MergeSettings(
                forgetting=args.forgetting, max_share=args.max_share, mad_k=args.mad_k
            ),
            rollouts=args.rollouts,
            steps=args.steps,
            thresholds=replace(AifThresholds(), **gate),
        )
    except ValueError as err:
        print(f"edge-agent-hub learn build: {err}", file=sys.stderr)
        return 2
    key = load_signing_key(key_file)
    # A build by hand holds the line's lease as a replica's policy does (its own owner name:
    # never the policy's lease of the same replica).
    owner = f"{source.config.hub.effective_id()} learn build {os.getpid()}"
    db = open_database(source, write=True)
    try:
        store = LearningStore(db)
        try:
            with store.leased(args.line, owner, now=time.time(),
                              lease_s=source.config.learning.lease_s):  # fmt: skip
                summary = build_round(store, args.line, key, signer="edge-agent-hub",
                                      settings=settings, owner=owner)  # fmt: skip
        except LearnInputError as err:
            print(f"edge-agent-hub learn build: {err}", file=sys.stderr)
            return 2
        except LeaseHeldError as err:
            print(f"edge-agent-hub learn build: model line {err}", file=sys.stderr)
            return 3
        except LeaseLostError as err:
            print(f"edge-agent-hub learn build: {err}", file=sys.stderr)
            return 3
        built = store.latest_round(args.line, round_id=summary["round"])
    finally:
        db.close()
    if args.out is not None and built is not None and built["bundle"] is not None:
        write_atomic(args.out, built["bundle"])
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(round_line(summary))
        if summary["state"] != "built":
            for check in summary["gate"]:
                print(f"  {check}")
    return 0 if summary["state"] == "built" else 1


def round_line(s: Mapping[str, Any]) -> str:
    """One round: what it built from whom, and what it refused or capped."""
    verdict = (
        f"built {s['line']}@{s['version']} {str(s['bundle_sha256'])[:12]}"
        if s["state"] == "built"
        else f"REFUSED by the int8 gate: {s['line']}@{s['version']}"
    )
    return (
        f"round {s['round']}: {verdict} from {s['parent']}: {s['deltas']} deltas of "
        f"{len(s['nodes'])} nodes, {s['experience']} agent-ticks merged; "
        f"{len(s['outliers'])} nodes refused (outlier), {len(s['capped'])} capped"
    )


def node_line(n: Mapping[str, Any]) -> str:
    """One node's deltas of a line: accepted, merged into which rounds, what waits, what was
    refused."""
    merged = ", ".join(f"round {k} {v}" for k, v in sorted(n["merged"].items(), key=_round_key))
    words = [f"{n['node']}: {n['accepted']} accepted ({n['experience']} agent-ticks)"]
    words.append(f"merged: {merged}" if merged else "merged: none")
    words.append(f"{n['waiting']} waiting")
    if n["replaced"]:
        words.append(f"{n['replaced']} on a version since replaced (never merged)")
    if n["refused"]:
        words.append("refused " + ", ".join(f"{k} {v}" for k, v in sorted(n["refused"].items())))
    return "; ".join(words)


def _round_key(item: tuple[str, int]) -> int:
    return int(item[0])


def _rollout_words(rollout: Mapping[str, Any] | None, version: str | None) -> str:
    """How a round's rollout stands, for its ``learn status`` line: nothing without one; why it
    halted, and the version the line stays on, when it halted or was rolled back."""
    if rollout is None:
        return ""
    words = f"; rollout {rollout['id']} {rollout['state']}"
    if "why" in rollout:
        words += f": {rollout['why']}; the line stays on {version}"
    return words


def status_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``learn status``'s lines, one paragraph per model line."""
    out: list[str] = []
    for r in rows:
        refused = ", ".join(f"{k} {v}" for k, v in sorted(r["refused"].items())) or "none"
        out.append(
            f"{r['line']}: {r['accepted']} deltas accepted ({r['experience']} agent-ticks, "
            f"{r['nodes']} nodes), refused: {refused}; {r['capped']} capped"
        )
        for u in r.get("unknown_models") or []:
            what = "the hub holds it now: deltas on it are accepted" if u["held"] else u["fix"]
            out.append(
                f"  unknown_model: {u['deltas']} deltas of group {u['group']} against "
                f"{u['model']} ({u['sha256'][:12]}): {what}"
            )
        if r.get("not_trusting"):
            key = r["learning_key"]
            where = f"the learning key {key} ([learning] key_file)"
            out.append(f"  rounds not built: {untrusted_line(r['not_trusting'], key, where)}")
        if r.get("version") is not None:
            out.append(
                f"  version {r['version']} ({str(r['current_sha256'])[:12]}): what the nodes "
                "run and learn on"
            )
        w = r["waiting"]
        out.append(f"  waiting for a round: {w['deltas']} deltas, {w['experience']} agent-ticks")
        last = r["last_round"]
        if last is None:
            out.append("  no round yet")
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["created"]))
            out.append(
                f"  last round {last['id']} {stamp}: {last['state']} {r['line']}@"
                f"{last['version']} ({last['nodes']} nodes, {last['experience']} agent-ticks)"
                + _rollout_words(last.get("rollout"), r.get("version"))
            )
        for n in r.get("per_node") or []:
            out.append(f"  {node_line(n)}")
        fleet, attempts = r.get("fleet_version"), r.get("catch_ups") or {}
        if fleet is not None:
            done = ", ".join(f"{attempts.get(k, 0)} {k}" for k in CATCH_UP_RESULTS)
            out.append(
                f"  fleet version {fleet['sha256'][:12]} (round {fleet['round']}, rollout "
                f"{fleet['rollout']} done); catch-up deployments: {done}"
            )
    return out
