"""Agent settings with pymdp's defaults, so that switching from pymdp changes nothing but speed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AifSettings(BaseModel):
    """How an Active Inference agent infers and acts (pymdp ``Agent`` defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy_len: int = Field(1, ge=1, le=8, description="Planning horizon L: steps per policy.")
    gamma: float = Field(
        16.0, gt=0, le=1e4, description="Policy precision: q_pi = softmax(gamma*G + ln E)."
    )
    alpha: float = Field(
        16.0, gt=0, le=1e4, description="Action precision for stochastic action selection."
    )
    use_utility: bool = Field(True, description="Include expected utility (pragmatic value) in G.")
    use_states_info_gain: bool = Field(
        True, description="Include state information gain (epistemic value) in G."
    )
    num_iter: int = Field(
        10, ge=1, le=100, description="Maximum fixed-point iterations for multi-factor inference."
    )
    dF_tol: float = Field(
        1e-3, ge=0, description="Stop iterating once the free energy changes by less than this."
    )
    action_selection: Literal["deterministic", "stochastic"] = Field(
        "deterministic",
        description="Take the most probable action, or sample it with precision alpha.",
    )
    sampling_mode: Literal["marginal", "full"] = Field(
        "marginal",
        description="Select each factor's action from the action marginals, or one whole policy.",
    )
    control_fac_idx: tuple[int, ...] | None = Field(
        None, description="Controllable factors; default: those whose B has more than one action."
    )
