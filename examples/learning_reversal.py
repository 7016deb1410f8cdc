"""Reward rate over time on the reversal T-maze: a frozen model, learning, learning with forgetting.

Makes the figure of ``docs/learning.md`` (``docs/learning-reversal.svg``) and prints what it
measured as JSON lines. ``N`` agents of one group walk :class:`~edge_agent.sim.tmaze_reversal.
ReversalTMazeEnv` (trials of 3 ticks; the rewarded arm swaps every ``--reverse-every`` trials),
three times with the same seed:

* ``frozen``: an :class:`~edge_agent.core.agents.AifAgentGroup` on the model (it believes the cue
  forever);
* ``learning``: the same group built with ``learning=``, learning ``pA`` of the reward
  modality (shared scope: all agents teach one set of counts), from weak counts
  (``0.5 * A + 0.25`` on ``A``'s support), ``lr_pA = --lr``, tables refreshed every trial;
* ``forgetting``: the same with ``forgetting = --forgetting`` per update.

All three choose actions stochastically (``action_selection = "stochastic"``, alpha 16). The
reward rate is the net reward per agent-tick of each trial: (rewards - losses) / (agents * 3),
so following the cue pays about +0.32, going against it -0.32, and staying out of the arms 0.
After each reversal, ``ticks_to_relearn`` counts the ticks until a trial has won back half of
what the reversal cost (:func:`ticks_to_relearn`; ``null`` when no trial of the phase does).
The figure is a plain SVG written here (no plotting library needed).

    python examples/learning_reversal.py [--out docs/learning-reversal.svg] [--agents 200]
        [--trials 120] [--reverse-every 30] [--lr 0.01] [--forgetting 0.02] [--smoke]

``--smoke``: 20 agents, 12 trials, reversal every 4: the code path, for the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.sim.tmaze import LOSS, REWARD, REWARD_MODALITY
from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv, tmaze_reversal_model

TRIAL_LEN = 3
CONDITIONS = ("frozen", "learning", "forgetting")
COLOURS = {"frozen": "#888888", "learning": "#1f77b4", "forgetting": "#d62728"}
#: Trials before a reversal whose mean reward rate is the level to get back to (half of it).
BEFORE = 5
#: Net reward per agent-tick below that level that still counts as won back (sampling noise).
TOLERANCE = 0.02


def reward_rates(
    condition: str, *, agents: int, trials: int, reverse_every: int, lr: float,
    forgetting: float, seed: int = 1,
) -> np.ndarray:
    """``(trials,)``: the share of agent-ticks of each trial that observed a reward."""
    model = tmaze_reversal_model()
    settings = AifSettings(action_selection="stochastic")
    if condition == "frozen":
        group: AifAgentGroup = AifAgentGroup(
            model, agents, precision="int8", seed=seed, settings=settings
        )
    else:
        pA1 = model.A[REWARD_MODALITY] * 0.5 + 0.25 * (model.A[REWARD_MODALITY] > 0)
        learn = LearningSettings(
            lr_pA=lr, forgetting=forgetting if condition == "forgetting" else 0.0
        )
        spec = LearningSpec(pA={REWARD_MODALITY: pA1}, settings=learn,
                            refresh_every=TRIAL_LEN)
        group = AifAgentGroup(
            model, agents, learning=spec, precision="int8", seed=seed, settings=settings
        )
    env = ReversalTMazeEnv(agents, seed=seed, reverse_every=reverse_every, trial_len=TRIAL_LEN)
    obs = env.reset()
    rewards = np.zeros(trials * TRIAL_LEN)
    for tick in range(trials * TRIAL_LEN):
        if tick and env.episode_start.any():
            group.reset(env.episode_start)
        outcome = obs[:, REWARD_MODALITY]
        rewards[tick] = (np.count_nonzero(outcome == REWARD)
                         - np.count_nonzero(outcome == LOSS)) / agents
        obs = env.step(group.step(obs))
    out: np.ndarray = rewards.reshape(trials, TRIAL_LEN).sum(axis=1) / TRIAL_LEN
    return out


def ticks_to_relearn(rates: np.ndarray, reverse_every: int) -> list[int | None]:
    """Per reversal: ticks until a trial has won back half of what the reversal cost, i.e. its
    rate is at least ``(before + first) / 2 - TOLERANCE`` (``before``: the mean of the last
    ``BEFORE`` trials before the reversal; ``first``: the first trial after it); ``None`` if no
    trial of the phase does."""
    out: list[int | None] = []
    for start in range(reverse_every, len(rates), reverse_every):
        before = float(rates[max(0, start - BEFORE):start].mean())
        after = rates[start:start + reverse_every]
        level = (before + float(after[0])) / 2 - TOLERANCE
        back = np.flatnonzero(after[1:] >= level)
        out.append(None if back.size == 0 else int(back[0] + 2) * TRIAL_LEN)
    return out


def svg(series: dict[str, np.ndarray], reverse_every: int, title: str) -> str:
    """A line chart of the reward rate per trial, reversals as dashed lines."""
    width, height, left, right, top, bottom = 720, 360, 60, 150, 40, 50
    trials = len(next(iter(series.values())))
    top_rate = max(0.05, *(float(np.abs(s).max()) for s in series.values()))
    y_max = float(np.ceil(top_rate * 10) / 10)  # the axis runs from -y_max to y_max

    def x(t: float) -> float:
        return left + (width - left - right) * t / max(1, trials - 1)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (y_max - v) / (2 * y_max)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for tick in np.linspace(-y_max, y_max, 9):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}" stroke="#eeeeee"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
                     f'{tick:.2f}</text>')
    for start in range(reverse_every, trials, reverse_every):
        parts.append(f'<line x1="{x(start):.1f}" x2="{x(start):.1f}" y1="{top}" '
                     f'y2="{height - bottom}" stroke="#999999" stroke-dasharray="4 3"/>')
    for t in range(0, trials, max(1, trials // 6)):
        parts.append(f'<text x="{x(t):.1f}" y="{height - bottom + 16}" '
                     f'text-anchor="middle">{t}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 12}" '
                 'text-anchor="middle">trial (dashed: the rewarded arm swaps)</text>')
    parts.append(f'<text x="16" y="{(top + height - bottom) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 16 {(top + height - bottom) / 2})">'
                 'net reward per agent-tick</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{width - left - right}" '
                 f'height="{height - top - bottom}" fill="none" stroke="#333333"/>')
    for i, (name, rates) in enumerate(series.items()):
        points = " ".join(f"{x(t):.1f},{y(float(v)):.1f}" for t, v in enumerate(rates))
        parts.append(f'<polyline class="series" data-name="{name}" fill="none" '
                     f'stroke="{COLOURS[name]}" stroke-width="1.8" points="{points}"/>')
        ly = top + 16 + 20 * i
        parts.append(f'<line x1="{width - right + 12}" x2="{width - right + 36}" y1="{ly}" '
                     f'y2="{ly}" stroke="{COLOURS[name]}" stroke-width="2"/>')
        parts.append(f'<text x="{width - right + 42}" y="{ly + 4}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    series = {
        name: reward_rates(name, agents=args.agents, trials=args.trials,
                           reverse_every=args.reverse_every, lr=args.lr,
                           forgetting=args.forgetting)
        for name in CONDITIONS
    }
    title = (f"Reversal T-maze, {args.agents} agents: lr_pA {args.lr:g}, "
             f"forgetting {args.forgetting:g}")
    Path(args.out).write_text(svg(series, args.reverse_every, title), encoding="utf-8")
    records = {}
    for name, rates in series.items():
        records[name] = {
            "bench": "learning-reversal", "condition": name, "agents": args.agents,
            "trials": args.trials, "reverse_every": args.reverse_every,
            "mean_reward_rate": round(float(rates.mean()), 4),
            "ticks_to_relearn": ticks_to_relearn(rates, args.reverse_every),
        }
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", default="docs/learning-reversal.svg", help="the SVG to write")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--trials", type=int, default=120)
    parser.add_argument("--reverse-every", type=int, default=30, help="trials per phase")
    parser.add_argument("--lr", type=float, default=0.01, help="lr_pA")
    parser.add_argument("--forgetting", type=float, default=0.02)
    parser.add_argument("--smoke", action="store_true", help="tiny run, for the tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.agents, args.trials, args.reverse_every = 20, 12, 4
    for record in run(args).values():
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
