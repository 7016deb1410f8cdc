"""What an Active Inference conversion is asked for: the generative model, the agents' settings,
Dirichlet counts, the simulated rollouts of the report and the accuracy they must reach
(:class:`AifOptions`, :class:`AifThresholds`), and the command-line options that set them (of
``convert aif``, and of a neural conversion that pairs an observation model with a generative
model: ``--aif``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from edge_agent.aif.model import Counts, GenerativeModel
from edge_agent.aif.settings import AifSettings
from edge_agent.errors import InputError
from edge_agent_host.converter.common import fraction, positive_int

__all__ = [
    "TIE_TOLERANCE",
    "AifOptions",
    "AifThresholds",
    "add_aif_options",
    "aif_options",
    "aif_settings",
    "aif_thresholds",
]

#: An int8 action agrees when the float posterior rates it within this much (probability of the
#: action marginal) of its best: ties broken by rounding agree, a changed behaviour does not
#: (docs/host-tool.md, "Action agreement").
TIE_TOLERANCE = 0.01


@dataclass(frozen=True)
class AifThresholds:
    """Accuracy a conversion must reach: mean belief KL and action agreement."""

    max_kl: float = 0.01
    min_action_agreement: float = 0.95
    #: An int8 action agrees when the float posterior rates it within this of its best.
    tie_tolerance: float = TIE_TOLERANCE


@dataclass(frozen=True)
class AifOptions:
    """The Active Inference format's own options record: of ``convert aif``
    (:func:`convert_aif`), and the generative model a neural conversion pairs with its
    observation model (``NeuralOptions.aif``: an ``aif+perception`` bundle).

    ``model``: the generative model (``None``: :func:`convert_aif` reads it from
    ``ConvertOptions.model``); ``settings``: the agents' (``None``: the defaults, or a pymdp
    agent's own); ``counts``: Dirichlet counts by kind and modality/factor (``{"A": {1: pA1}}``)
    for agents that learn, checked against ``model`` and carried in float64 (``aif/pA1.npy``;
    ``convert aif`` only); ``rollouts`` agents are simulated for ``steps`` steps for the report,
    which must meet ``thresholds``.
    """

    model: GenerativeModel | None = None
    settings: AifSettings | None = None
    counts: Counts | None = None
    rollouts: int = 200
    steps: int = 30
    thresholds: AifThresholds = field(default_factory=AifThresholds)


def add_aif_options(parser: argparse.ArgumentParser) -> None:
    """The generative model's options: of ``convert aif``, and of a neural conversion that pairs
    an observation model with a generative model (``--aif``)."""
    group = parser.add_argument_group("Active Inference model")
    group.add_argument(
        "--policy-len",
        type=positive_int,
        default=1,
        help="planning horizon L stored in the bundle's settings (default 1)",
    )
    group.add_argument("--gamma", type=float, default=16.0, help="policy precision (default 16)")
    group.add_argument(
        "--action-selection",
        choices=("deterministic", "stochastic"),
        default="deterministic",
        help="action selection (default deterministic)",
    )
    group.add_argument(
        "--rollouts",
        type=positive_int,
        default=200,
        help="agents simulated for the agreement report (default 200)",
    )
    group.add_argument(
        "--steps", type=positive_int, default=30, help="steps per simulated agent (default 30)"
    )
    group.add_argument(
        "--max-kl",
        type=float,
        default=AifThresholds.max_kl,
        help=f"largest mean belief KL accepted (default {AifThresholds.max_kl})",
    )
    group.add_argument(
        "--min-action-agreement",
        type=fraction,
        default=AifThresholds.min_action_agreement,
        help="smallest fraction of int8 actions that the float64 agents rate "
        "optimal, ties counted as agreeing "
        f"(default {AifThresholds.min_action_agreement})",
    )
    group.add_argument(
        "--tie-tolerance",
        type=fraction,
        default=AifThresholds.tie_tolerance,
        help="an int8 action agrees when the float64 posterior gives it at most "
        "this much less probability than its best action "
        f"(default {AifThresholds.tie_tolerance})",
    )


def aif_settings(args: argparse.Namespace) -> AifSettings:
    """The agent settings of :func:`add_aif_options`' arguments."""
    try:
        return AifSettings(
            policy_len=args.policy_len, gamma=args.gamma, action_selection=args.action_selection
        )
    except ValueError as err:  # RecordError: "field: problem; ..."
        raise InputError(f"invalid agent settings: {err}") from err


def aif_thresholds(args: argparse.Namespace) -> AifThresholds:
    """The thresholds of :func:`add_aif_options`' arguments."""
    return AifThresholds(
        max_kl=args.max_kl,
        min_action_agreement=args.min_action_agreement,
        tie_tolerance=args.tie_tolerance,
    )


def aif_options(args: argparse.Namespace, model: GenerativeModel | None = None) -> AifOptions:
    """The :class:`AifOptions` of :func:`add_aif_options`' arguments, with ``model`` (``None``:
    :func:`convert_aif` reads it from the input file)."""
    return AifOptions(
        model=model,
        settings=aif_settings(args),
        thresholds=aif_thresholds(args),
        rollouts=args.rollouts,
        steps=args.steps,
    )
