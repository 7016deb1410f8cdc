"""Agent settings with pymdp's defaults, so that switching from pymdp changes nothing but speed.

In the daemon's config, :class:`AifSettings` is a group's ``[groups.settings]`` table and
:class:`BeliefHistory` its ``history_beliefs`` key, both the Active Inference kinds' own
(:mod:`edge_agent.config.group_tables` lists them); a group without them runs the defaults.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from edge_agent.records import Record, Rule, ValueRecord

MAX_POLICY_LEN: Final = 8
"""The longest planning horizon a group may have (``policy_len``)."""


class AifSettings(Record):
    """How an Active Inference agent infers and acts (pymdp ``Agent`` defaults)."""

    policy_len: Annotated[
        int, Rule(ge=1, le=MAX_POLICY_LEN, description="Planning horizon L: steps per policy.")
    ] = 1
    gamma: Annotated[
        float, Rule(gt=0, le=1e4, description="Policy precision: q_pi = softmax(gamma*G + ln E).")
    ] = 16.0
    alpha: Annotated[
        float, Rule(gt=0, le=1e4, description="Action precision for stochastic action selection.")
    ] = 16.0
    use_utility: Annotated[
        bool, Rule(description="Include expected utility (pragmatic value) in G.")
    ] = True
    use_states_info_gain: Annotated[
        bool, Rule(description="Include state information gain (epistemic value) in G.")
    ] = True
    num_iter: Annotated[
        int,
        Rule(
            ge=1, le=100, description="Maximum fixed-point iterations for multi-factor inference."
        ),
    ] = 10
    dF_tol: Annotated[
        float,
        Rule(ge=0, description="Stop iterating once the free energy changes by less than this."),
    ] = 1e-3
    action_selection: Annotated[
        Literal["deterministic", "stochastic"],
        Rule(description="Take the most probable action, or sample it with precision alpha."),
    ] = "deterministic"
    sampling_mode: Annotated[
        Literal["marginal", "full"],
        Rule(
            description="Select each factor's action from the action marginals, "
            "or one whole policy."
        ),
    ] = "marginal"
    control_fac_idx: Annotated[
        tuple[int, ...] | None,
        Rule(description="Controllable factors; default: those whose B has more than one action."),
    ] = None


class BeliefHistory(ValueRecord):
    """What the history keeps of an Active Inference agent's beliefs each step."""

    value: Annotated[
        Literal["map", "full"],
        Rule(
            description="What the history keeps of an Active Inference agent's beliefs each step: "
            "'map', per factor the most probable state and its probability (2-3 bytes); 'full', "
            "every state's probability (one byte per state)."
        ),
    ] = "map"


def settings_from_json(values: Mapping[str, object]) -> AifSettings:
    """AifSettings from values read from a file (a bundle's manifest): validated by pydantic,
    strictly, with unknown keys refused. Raises ValueError naming each bad field."""
    from pydantic import TypeAdapter, ValidationError  # noqa: PLC0415 - input from files only

    try:
        return TypeAdapter(AifSettings).validate_json(json.dumps(dict(values)), strict=True)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<settings>'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise ValueError(problems) from err


def settings_to_json(settings: AifSettings) -> dict[str, Any]:
    """The settings as JSON values (what a bundle's manifest stores)."""
    out = dataclasses.asdict(settings)
    if settings.control_fac_idx is not None:
        out["control_fac_idx"] = list(settings.control_fac_idx)
    return out
