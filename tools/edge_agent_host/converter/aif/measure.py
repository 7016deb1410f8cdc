"""What int8 costs an Active Inference model: float64 and int8 agents compared over simulated
rollouts (belief KL, tie-aware action agreement, policy posteriors), the sizes and error bounds,
as a report's data, table rows and checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edge_agent.aif import agreement
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import SCHEME, QuantizedModel
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import InputError
from edge_agent.sim import BatchEnv
from edge_agent_host.converter.aif.options import TIE_TOLERANCE, AifThresholds
from edge_agent_host.converter.report import Check, progress

__all__ = ["aif_checks", "aif_report_data", "compare_rollouts", "model_nbytes"]

_KL_EPS = 1e-16


def _kl_rows(p: list[np.ndarray], q: list[np.ndarray], out: np.ndarray) -> None:
    """``out[i] = sum_f KL(p_f[i] || q_f[i])`` for beliefs ``(N, S_f)``."""
    out.fill(0.0)
    for pf, qf in zip(p, q, strict=True):
        pf64 = np.asarray(pf, dtype=np.float64)
        qf64 = np.asarray(qf, dtype=np.float64)
        out += np.sum(pf64 * (np.log(pf64 + _KL_EPS) - np.log(qf64 + _KL_EPS)), axis=1)
    np.maximum(out, 0.0, out=out)


def compare_rollouts(
    model: GenerativeModel,
    quantized: QuantizedModel,
    settings: AifSettings,
    *,
    n_agents: int,
    steps: int,
    seed: int = 0,
    tie_tol: float = TIE_TOLERANCE,
    show_progress: bool = False,
) -> dict[str, Any]:
    """float64 vs int8 agents over ``n_agents`` x ``steps`` simulated steps (module docstring).

    Returns ``belief_kl`` (``mean``, ``median``, ``p99``, ``max``), ``action_agreement`` (the
    int8 action equals the float one, or is optimal within ``tie_tol`` under the float
    posterior: :func:`edge_agent.aif.agreement.action_shortfall` with the settings'
    ``sampling_mode``), the raw ``action_agreement_exact``, ``tied_steps`` (the float posterior
    has two or more actions equal to rounding, :func:`~edge_agent.aif.agreement.count_ties`),
    ``action_shortfall`` (``p99``, ``max``; 0 where the actions are equal),
    ``q_pi_max_abs_diff``, ``agent_steps``.
    """
    if n_agents < 1 or steps < 1:
        raise InputError(f"rollouts need n_agents >= 1 and steps >= 1, got {n_agents}, {steps}")
    float_group = AifAgentGroup(model, n_agents, settings=settings, precision="float64", seed=seed)
    int8_group = AifAgentGroup(quantized, n_agents, settings=settings, precision="int8", seed=seed)
    world = BatchEnv(model, n_agents, seed=seed)
    obs = world.reset()
    kl = np.zeros((steps, n_agents), dtype=np.float64)
    shortfall = np.zeros((steps, n_agents), dtype=np.float64)
    exact = ties = 0
    q_pi_diff = 0.0
    onehot = float_group.cm.tree.first_action_onehot
    mode = settings.sampling_mode
    for t in progress(range(steps), total=steps, desc="rollouts", enabled=show_progress):
        float_actions = float_group.step(obs).copy()
        own_actions = int8_group.step(obs).copy()
        _kl_rows(float_group.qs, int8_group.qs, kl[t])
        # How far below its best the float posterior rates the int8 agent's own action; 0 where
        # the two agents took the same action (under stochastic selection both groups draw the
        # same random numbers, so equal sampled actions agree whatever their probability).
        same = np.all(own_actions == float_actions, axis=1)
        shortfall[t] = agreement.action_shortfall(float_group.q_pi, onehot, own_actions, mode=mode)
        shortfall[t, same] = 0.0
        exact += int(np.count_nonzero(same))
        ties += int(np.count_nonzero(agreement.count_ties(float_group.q_pi, onehot)))
        diff = np.abs(float_group.q_pi - int8_group.q_pi.astype(np.float64))
        q_pi_diff = max(q_pi_diff, float(diff.max()))
        int8_group.set_action(float_actions)
        obs = world.step(float_actions)
    total = steps * n_agents
    flat = kl.ravel()
    return {
        "agents": n_agents,
        "steps": steps,
        "agent_steps": total,
        "belief_kl": {
            "mean": float(flat.mean()),
            "median": float(np.median(flat)),
            "p99": float(np.quantile(flat, 0.99)),
            "max": float(flat.max()),
        },
        "action_agreement": float(np.mean(shortfall <= tie_tol)),
        "action_agreement_exact": exact / total,
        "tie_tolerance": tie_tol,
        "tied_steps": ties / total,
        "action_shortfall": {
            "p99": float(np.quantile(shortfall, 0.99)),
            "max": float(shortfall.max()),
        },
        "q_pi_max_abs_diff": q_pi_diff,
    }


def model_nbytes(model: GenerativeModel) -> int:
    """Bytes of the float64 tables (A, B, C, D, E) as loaded."""
    arrays = [*model.A, *model.B, *model.C, *model.D]
    if model.E is not None:
        arrays.append(model.E)
    return int(sum(a.nbytes for a in arrays))


def aif_report_data(
    model: GenerativeModel,
    quantized: QuantizedModel,
    settings: AifSettings,
    *,
    rollouts: int,
    steps: int,
    seed: int,
    show_progress: bool,
    tie_tol: float = TIE_TOLERANCE,
) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    """The AIF part of a report: sizes, error bounds and rollout agreement, plus table rows."""
    float_bytes = model_nbytes(model)
    int8_bytes = quantized.nbytes
    rollouts_data = compare_rollouts(
        model,
        quantized,
        settings,
        n_agents=rollouts,
        steps=steps,
        seed=seed,
        tie_tol=tie_tol,
        show_progress=show_progress,
    )
    bounds = quantized.error_bounds()
    data = {
        "scheme": SCHEME,
        "model": {
            "num_obs": list(model.num_obs),
            "num_states": list(model.num_states),
            "num_controls": list(model.num_controls),
            "policy_len": settings.policy_len,
        },
        "size": {
            "float64_bytes": float_bytes,
            "int8_bytes": int8_bytes,
            "ratio": int8_bytes / float_bytes if float_bytes else 0.0,
        },
        "error_bounds": bounds,
        "rollouts": rollouts_data,
    }
    kl = rollouts_data["belief_kl"]
    log_bound = max((v for k, v in bounds.items() if not k.startswith("C")), default=0.0)
    rows: list[tuple[str, ...]] = [
        ("", "float64", "int8", "int8/float"),
        (
            "model size (bytes)",
            f"{float_bytes:,}",
            f"{int8_bytes:,}",
            f"{100 * int8_bytes / max(1, float_bytes):.1f} %",
        ),
        ("rollouts", f"{rollouts_data['agents']} agents x {rollouts_data['steps']} steps"),
        ("belief KL mean", f"{kl['mean']:.3g}"),
        ("belief KL median / p99", f"{kl['median']:.3g} / {kl['p99']:.3g}"),
        ("belief KL max", f"{kl['max']:.3g}"),
        (
            "action agreement",
            f"{100 * rollouts_data['action_agreement']:.2f} % (tie-aware, "
            f"tolerance {rollouts_data['tie_tolerance']:g})",
        ),
        (
            "action agreement, exact",
            f"{100 * rollouts_data['action_agreement_exact']:.2f} % "
            f"({100 * rollouts_data['tied_steps']:.1f} % of steps have tied actions)",
        ),
        ("q_pi max abs diff", f"{rollouts_data['q_pi_max_abs_diff']:.3g}"),
        ("largest log error bound", f"{log_bound:.3g} (A, B, D, E)"),
    ]
    return data, rows


def aif_checks(data: Mapping[str, Any], thresholds: AifThresholds) -> list[Check]:
    rollouts = data["rollouts"]
    return [
        Check(
            "belief KL mean", rollouts["belief_kl"]["mean"], thresholds.max_kl, "max", "--max-kl"
        ),
        Check(
            "action agreement",
            rollouts["action_agreement"],
            thresholds.min_action_agreement,
            "min",
            "--min-action-agreement",
        ),
    ]
