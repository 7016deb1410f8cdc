"""``edge-agent replay``: a recorded episode through one agent, as a group would run it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Final

__all__ = ["add", "cmd_replay"]


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a recorded episode through one agent",
        description="Replay REC.npz (obs (T, M), actions (T, F), optional trial_start (T,) "
        "and planned (T,)) "
        "through one agent on MODEL.npz (pymdp keys A0.., B0.., C0.., D0.., E) and write per "
        "step qs{f}, q_pi, chosen_action, tied, recorded_shortfall and the policies to OUT.npz.",
    )
    p.add_argument(
        "model",
        type=Path,
        help="the model: a float .npz (pymdp keys A0.., B0.., ...) or an Active "
        "Inference bundle (directory or .tar, run in int8 with its own settings)",
    )
    p.add_argument(
        "--trusted-keys",
        type=Path,
        default=None,
        metavar="DIR",
        help="require a bundle to be signed by one of these keys",
    )
    p.add_argument(
        "--recording",
        type=Path,
        required=True,
        help="REC.npz: obs (T, M), actions (T, F), optional trial_start (T,) and planned (T,) "
        "(the steps a run under a planning policy planned at; the agent plans at those)",
    )
    p.add_argument("--out", type=Path, required=True, help="OUT.npz to write, one row per step")
    p.add_argument(
        "--policy-len",
        type=int,
        default=None,
        help="planning horizon (default: the bundle's, 1 for a .npz)",
    )
    p.add_argument(
        "--precision",
        choices=("float64", "int8"),
        default="float64",
        help="a .npz's tables: float64 as given, or int8 as on a device (a bundle "
        "always runs int8)",
    )
    plan = p.add_argument_group(
        "planning",
        "the agent plans as a group under [groups.planning] does (same keys; docs/planning.md) "
        "and OUT.npz also holds, per step, planned, plan_policy, plan_left, plan_age and "
        "deferred; default: every tick, as before",
    )
    plan.add_argument(
        "--every",
        type=int,
        default=None,
        metavar="K",
        help="plan when the plan is K ticks old (1: every tick; 0: never for its age alone)",
    )
    plan.add_argument(
        "--belief-change",
        type=float,
        default=None,
        metavar="X",
        help="plan when the beliefs moved this much (total variation, 0 < X <= 1)",
    )
    plan.add_argument(
        "--surprise",
        type=float,
        default=None,
        metavar="NATS",
        help="plan when the observation's surprise -ln p(o) under the prior predictive reaches "
        "NATS (instead of --belief-change)",
    )
    plan.add_argument(
        "--max-agents",
        type=int,
        default=None,
        metavar="N",
        help="at most N agents plan a tick (one agent alone is never put off: a run's "
        "budget choice comes as the recording's planned)",
    )
    plan.add_argument(
        "--deadline-ms",
        type=float,
        default=None,
        metavar="MS",
        help="no new block of planning MS ms into a tick (the first block, one agent here, "
        "always plans: a run's choice comes as the recording's planned)",
    )
    learn = p.add_argument_group(
        "learning",
        "a .npz with Dirichlet counts pA0.., pB0.., pD0.. (pymdp's keys) learns those tables "
        "while it replays and writes the final pA{m}, pB{f}, pD{f} (docs/learning.md)",
    )
    for table in ("pA", "pB", "pD"):
        learn.add_argument(
            f"--lr-{table}",
            type=float,
            default=1.0,
            metavar="RATE",
            help=f"learning rate of {table} (pymdp's lr_{table}; default 1.0)",
        )
    learn.add_argument(
        "--forgetting",
        type=float,
        default=0.0,
        metavar="F",
        help="share of the learned difference from the prior counts lost at each update, "
        "0 <= F < 1 (default 0: pymdp, no forgetting)",
    )
    learn.add_argument(
        "--pD-from",
        choices=("last", "first"),
        default="last",
        dest="pD_from",
        help="the posterior of a trial pD learns from at its end (default: its last; 'first' "
        "is pymdp's update_D default)",
    )
    learn.add_argument(
        "--param-info-gain",
        action="store_true",
        help="add the parameter information gain of pA and pB to the expected free energy "
        "(pymdp's use_param_info_gain)",
    )


def _replay_learning(args: argparse.Namespace, counts: dict[str, dict[int, Any]]) -> Any:
    """The LearningSpec a replay runs with, or None: counts in the model file turn it on."""
    from edge_agent.aif.learning import LearningSettings, LearningSpec
    from edge_agent.errors import InputError

    options = [
        name
        for name, default in (("lr_pA", 1.0), ("lr_pB", 1.0), ("lr_pD", 1.0), ("forgetting", 0.0))
        if getattr(args, name) != default
    ] + (["param_info_gain"] if args.param_info_gain else [])
    if not counts:
        if options:
            flags = ", ".join("--" + o.replace("_", "-") for o in options)
            raise InputError(
                f"{flags}: {args.model} has no Dirichlet counts (pA0.., pB0.., pD0..) to learn"
            )
        return None
    settings = LearningSettings(
        lr_pA=args.lr_pA, lr_pB=args.lr_pB, lr_pD=args.lr_pD, forgetting=args.forgetting
    )
    return LearningSpec(
        pA=counts.get("A", {}),
        pB=counts.get("B", {}),
        pD=counts.get("D", {}),
        settings=settings,
        param_info_gain=args.param_info_gain,
    )


#: ``edge-agent replay``'s planning options: flag -> [groups.planning] key.
_PLANNING_FLAGS: Final = {
    "--every": "every",
    "--belief-change": "belief_change",
    "--surprise": "surprise",
    "--max-agents": "max_agents",
    "--deadline-ms": "deadline_ms",
}


def _replay_planning(args: argparse.Namespace) -> Any:
    """The PlanningPolicy a replay runs with (the every-tick one without planning flags)."""
    from edge_agent.aif.planning import PlanningPolicy
    from edge_agent.errors import InputError
    from edge_agent.records import RecordError

    fields = {
        key: getattr(args, key)
        for key in _PLANNING_FLAGS.values()
        if getattr(args, key) is not None
    }
    try:
        return PlanningPolicy(**fields)
    except RecordError as err:
        flags = {key: flag for flag, key in _PLANNING_FLAGS.items()}
        raise InputError(
            "; ".join(f"{flags[str(loc[0])]}: {message}" for loc, message in err.problems)
        ) from err


def cmd_replay(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from edge_agent.aif.agreement import ROUNDING_TOL
    from edge_agent.aif.quant import QuantizedModel
    from edge_agent.aif.settings import AifSettings
    from edge_agent.bundle.signing import TrustedKeys
    from edge_agent.core.agents import Precision
    from edge_agent.core.replay import load_recording, load_replay_model, replay

    keys = TrustedKeys.from_dir(args.trusted_keys) if args.trusted_keys else None
    counts: dict[str, dict[int, Any]] = {}
    model, settings, what = load_replay_model(args.model, trusted_keys=keys, counts=counts)
    learning = _replay_learning(args, counts)
    planning = _replay_planning(args)
    if args.policy_len is not None or settings is None:
        base = settings if settings is not None else AifSettings()
        settings = dataclasses.replace(base, policy_len=args.policy_len or 1)
    rec = load_recording(args.recording, model)
    precision: Precision = "int8" if isinstance(model, QuantizedModel) else args.precision
    out = replay(
        model,
        rec,
        settings=settings,
        precision=precision,
        learning=learning,
        pD_from=args.pD_from,
        planning=planning,
    )
    np.savez(args.out, **out)  # type: ignore[arg-type]
    print(f"replayed {what}, policy_len {settings.policy_len}")
    if not planning.every_tick:
        print(
            f"planning {planning.describe()}: planned at {int(out['planned'].sum())} of "
            f"{len(out['planned'])} steps (per step in {args.out}: planned, plan_policy, "
            "plan_left, plan_age, deferred)"
        )
    if learning is not None:
        learned = ", ".join(f"p{kind}{i}" for kind in "ABD" for i in sorted(counts.get(kind, {})))
        print(f"learned {learned} (final counts in {args.out})")
    steps = len(rec["obs"])
    same = int((out["chosen_action"] == rec["actions"]).all(axis=1).sum())
    optimal = int(np.count_nonzero(out["recorded_shortfall"] <= ROUNDING_TOL))
    print(
        f"replayed {steps} steps -> {args.out}\n"
        f"  the recorded action was optimal for the agent at {optimal} of {steps} steps "
        f"(ties count; the agent's own argmax equals it at {same})\n"
        f"  {int(out['tied'].sum())} of {steps} steps had tied actions "
        "(two or more equally good: argmax picks one on rounding noise)"
    )
    return 0
