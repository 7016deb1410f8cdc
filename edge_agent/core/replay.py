"""Replay a recorded episode through one agent, to validate a model against a training pipeline.

``REC.npz`` holds ``obs (T, M)``, ``actions (T, F)`` (the action taken after step ``t``; it drives
the prior at ``t + 1``) and optionally ``trial_start (T,)`` (truthy: reset to ``D`` before step
``t``) and ``planned (T,)`` (bool: the steps the agent planned at in a run under a planning
policy). The output holds, per step, ``qs{f} (T, S_f)``, ``q_pi (T, P)``, ``chosen_action (T, F)``
(what the agent would have done) and ``policies (P, L, F)``.

With a :class:`~edge_agent.aif.learning.LearningSpec` the agent learns while it replays, in
pymdp's order (infer, ``pA`` from the outcome, ``pB`` from the transition the recorded action
made, then plan with the refreshed tables); ``pD`` learns at the end of each trial from the
trial's last posterior (``pD_from="first"``: its first, pymdp's ``update_D`` default), and the
output also holds the final counts ``pA{m}``, ``pB{f}``, ``pD{f}``.

With a :class:`~edge_agent.aif.planning.PlanningPolicy` other than every tick the agent plans
as a group under that policy does (docs/planning.md): each step it infers its states, plans
when the policy says so and otherwise acts from its committed plan; the recorded action drives
the prior, the agent's own plan stays its own. The output also holds, per step, ``planned``
and the committed plan after the step: ``plan_policy``, ``plan_left``, ``plan_age``,
``deferred`` (what a snapshot carries); ``q_pi`` of a step without planning is that of the
agent's last planning.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np

from edge_agent.aif import agreement
from edge_agent.aif.learning import LearningSpec
from edge_agent.aif.model import Counts, GenerativeModel, load_npz
from edge_agent.aif.planning import PlanningPolicy
from edge_agent.aif.quant import SCHEME, QuantizedModel
from edge_agent.aif.settings import AifSettings, settings_from_json
from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.manifest import MANIFEST_NAME
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.core.agents import AifAgentGroup, Precision
from edge_agent.errors import InputError

#: What ``replay`` takes, for error messages.
MODEL_USAGE = (
    "replay takes a float .npz model (pymdp keys A0.., B0..) or an Active Inference bundle "
    f"(a directory or .tar with {MANIFEST_NAME})"
)
RECORDING_USAGE = (
    "--recording takes REC.npz: obs (T, M), actions (T, F), optional trial_start (T,) and "
    "planned (T,)"
)


def _is_bundle_like(path: Path) -> bool:
    """A directory or a tar: what a bundle is (whether it holds a manifest is checked later)."""
    return path.is_dir() or (path.is_file() and tarfile.is_tarfile(path))


def load_replay_model(
    path: str | Path, *, trusted_keys: TrustedKeys | None = None, counts: Counts | None = None
) -> tuple[GenerativeModel | QuantizedModel, AifSettings | None, str]:
    """The model to replay: a float ``.npz`` (pymdp keys), or an Active Inference bundle
    (directory or ``.tar``) as a device runs it (int8, with the bundle's settings).

    With ``trusted_keys`` a bundle must carry a valid signature by one of them; without, its
    files are still checked against the manifest's hashes (replay runs on a workstation, on
    bundles the operator chose). Returns the model, the bundle's settings (None for ``.npz``)
    and a one-line description for the report; the Dirichlet counts (``pA0``..) of a ``.npz``
    or a bundle go into ``counts``.
    """
    p = Path(path)
    if p.is_dir() and not (p / MANIFEST_NAME).is_file():
        raise InputError(f"{p}: a directory without {MANIFEST_NAME}, not a bundle; {MODEL_USAGE}")
    if _is_bundle_like(p):
        bundle = load_bundle(
            p, trusted_keys=trusted_keys, require_signature=trusted_keys is not None
        )
        spec = bundle.manifest.aif
        if spec is None:
            raise InputError(
                f"{p} is a {bundle.manifest.kind!r} bundle; replay takes an Active Inference "
                "model: a .npz (pymdp keys A0.., B0..) or a bundle of kind 'aif'"
            )
        if spec.quant_scheme != SCHEME:
            raise InputError(f"{p}: unknown quantization scheme {spec.quant_scheme!r}")
        signed = (
            f"signed by {bundle.key_id}"
            if bundle.signature_verified
            else "signature not checked (--trusted-keys DIR checks it)"
        )
        what = f"bundle {bundle.manifest.name} {bundle.manifest.version}, int8, {signed}"
        model = QuantizedModel.from_arrays(bundle.aif_arrays())
        carried = bundle.aif_counts()
        if carried and counts is not None:
            counts.update(carried)
        return model, settings_from_json(spec.settings), what
    if p.is_file() and not zipfile.is_zipfile(p):  # numpy would call it "pickled data"
        raise InputError(f"{p}: neither a .npz nor a bundle; {MODEL_USAGE}")
    return load_npz(p, counts=counts), None, f"model {p}"


def load_recording(
    path: str | Path, model: GenerativeModel | QuantizedModel
) -> dict[str, np.ndarray]:
    """Read and validate a recording against ``model``; errors name the array and the problem."""
    path = Path(path)
    if _is_bundle_like(path):
        raise InputError(
            f"{path}: a bundle or directory, not a recording (a bundle is the MODEL argument); "
            f"{RECORDING_USAGE}"
        )
    if path.is_file() and not zipfile.is_zipfile(path):  # numpy would call it "pickled data"
        raise InputError(f"{path}: not a .npz recording; {RECORDING_USAGE}")
    try:
        with np.load(path, allow_pickle=False) as data:
            rec = {k: np.asarray(data[k]) for k in data.files}
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such recording") from err
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a plain-array .npz recording ({err})") from err
    for key in ("obs", "actions"):
        if key not in rec:
            raise InputError(f"{path}: missing array {key!r} (has {sorted(rec)})")
    obs, actions = rec["obs"], rec["actions"]
    T = obs.shape[0] if obs.ndim == 2 else -1
    if obs.ndim != 2 or obs.shape[1] != len(model.num_obs):
        raise InputError(f"{path}: obs has shape {obs.shape}, expected (T, {len(model.num_obs)})")
    if actions.shape != (T, len(model.num_states)):
        raise InputError(
            f"{path}: actions has shape {actions.shape}, expected ({T}, {len(model.num_states)})"
        )
    for name, arr in (("obs", obs), ("actions", actions)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"{path}: {name} must be integers, got {arr.dtype}")
    for m, o in enumerate(model.num_obs):
        if obs[:, m].min() < 0 or obs[:, m].max() >= o:
            raise InputError(f"{path}: obs[:, {m}] outside [0, {o})")
    for f, u in enumerate(model.num_controls):
        if actions[:, f].min() < 0 or actions[:, f].max() >= u:
            raise InputError(f"{path}: actions[:, {f}] outside [0, {u})")
    trial_start = rec.get("trial_start")
    if trial_start is None:
        trial_start = np.zeros(T, dtype=bool)
    elif trial_start.shape != (T,):
        raise InputError(f"{path}: trial_start has shape {trial_start.shape}, expected ({T},)")
    out = {"obs": obs, "actions": actions, "trial_start": trial_start.astype(bool)}
    planned = rec.get("planned")
    if planned is not None:
        if planned.shape != (T,) or planned.dtype != np.bool_:
            raise InputError(
                f"{path}: planned has shape {planned.shape} and dtype {planned.dtype}, "
                f"expected ({T},) bool"
            )
        out["planned"] = planned
    return out


def replay(
    model: GenerativeModel | QuantizedModel,
    recording: dict[str, np.ndarray],
    *,
    settings: AifSettings | None = None,
    precision: Precision = "float64",
    learning: LearningSpec | None = None,
    pD_from: str = "last",
    planning: PlanningPolicy | None = None,
) -> dict[str, np.ndarray]:
    """Run one agent through the recording; returns the arrays ``edge-agent replay`` writes.

    Per step ``t``: ``qs{f}`` and ``q_pi``, the agent's own ``chosen_action``, ``tied`` (two or
    more actions equally good to rounding, where argmax picks one on noise) and
    ``recorded_shortfall``: how far below its best the agent's action marginal rates the
    recorded action (0 when the recorded action is optimal, ties included). With ``learning``
    the agent learns as it goes (module doc) and the final counts are returned too. With a
    ``planning`` policy see :func:`replay_planning` (the every-tick policy is this path).
    """
    if pD_from not in ("last", "first"):
        raise InputError(f"pD_from must be 'last' or 'first', got {pD_from!r}")
    planned = recording.get("planned")
    if (planning is None or planning.every_tick) and planned is not None and not planned.all():
        raise InputError(
            f"the recording planned at {int(planned.sum())} of {len(planned)} steps: replay it "
            "with the run's planning policy (--every, --belief-change, ...)"
        )
    if planning is not None and not planning.every_tick:
        if learning is not None:
            raise InputError(
                "replay takes a planning policy or learning (counts in the model), not both "
                "(docs/planning.md, Limits)"
            )
        return replay_planning(
            model, recording, planning, settings=settings, precision=precision
        )
    group = AifAgentGroup(
        model, 1, settings=settings, precision=precision, seed=0, learning=learning
    )
    obs, actions, trial_start = recording["obs"], recording["actions"], recording["trial_start"]
    T = obs.shape[0]
    qs = [np.zeros((T, s)) for s in model.num_states]
    q_pi = np.zeros((T, group.cm.num_policies))
    chosen = np.zeros((T, len(model.num_states)), dtype=np.int64)
    tied = np.zeros(T, dtype=bool)
    shortfall = np.zeros(T)
    onehot = group.cm.tree.first_action_onehot
    mode = group.settings.sampling_mode
    first = 0  # the step the current trial started at
    for t in range(T):
        if t > 0 and trial_start[t]:
            _end_trial(group, qs, first if pD_from == "first" else t - 1)
            first = t
        for f, q in enumerate(group.infer_states(obs[t : t + 1])):
            qs[f][t] = q[0]
        if group.learning is not None:
            group.learn(obs[t : t + 1])
        q_pi[t] = group.infer_policies()[0][0]
        chosen[t] = group.sample_action()[0]
        tied[t] = agreement.count_ties(q_pi[t : t + 1], onehot)[0]
        shortfall[t] = agreement.action_shortfall(
            q_pi[t : t + 1], onehot, actions[t : t + 1], mode=mode
        )[0]
        group.set_action(actions[t : t + 1])
    out: dict[str, np.ndarray] = {f"qs{f}": q for f, q in enumerate(qs)}
    out.update(
        q_pi=q_pi,
        chosen_action=chosen,
        policies=group.cm.tree.policies,
        tied=tied,
        recorded_shortfall=shortfall,
    )
    if group.learning is not None:
        _end_trial(group, qs, first if pD_from == "first" else T - 1)
        for counts in group.learning.learner.counts:
            for slot, index in enumerate(counts.tables):
                out[f"p{counts.kind}{index}"] = counts.counts[slot]
    return out


def replay_planning(
    model: GenerativeModel | QuantizedModel,
    recording: dict[str, np.ndarray],
    planning: PlanningPolicy,
    *,
    settings: AifSettings | None = None,
    precision: Precision = "float64",
) -> dict[str, np.ndarray]:
    """:func:`replay` of one agent under ``planning`` (module doc).

    Besides :func:`replay`'s arrays, per step: ``planned (T,)`` whether the agent planned,
    ``plan_policy``, ``plan_left``, ``plan_age`` and ``deferred`` ``(T,)``, its committed plan
    after the step. A recording that holds ``planned (T,)`` (a run's, whose budget or deadline
    chose who planned) makes the agent plan at exactly those steps; without, it plans when the
    policy says.
    At a step where it planned, ``tied`` and ``recorded_shortfall`` are :func:`replay`'s; at a
    step where it acted from its plan the plan is a point mass on one action: ``tied`` is
    false and ``recorded_shortfall`` is 0 if the recorded action is the plan's, 1 if not.
    Without a recorded ``planned`` a budget (``max_agents``, ``deadline_ms``) never defers a
    lone agent: the first block of a tick always plans.
    """
    group = AifAgentGroup(
        model, 1, settings=settings, precision=precision, seed=0, planning=planning
    )
    obs, actions, trial_start = recording["obs"], recording["actions"], recording["trial_start"]
    T = obs.shape[0]
    qs = [np.zeros((T, s)) for s in model.num_states]
    q_pi = np.zeros((T, group.cm.num_policies))
    chosen = np.zeros((T, len(model.num_states)), dtype=np.int64)
    tied = np.zeros(T, dtype=bool)
    shortfall = np.zeros(T)
    planned = np.zeros(T, dtype=bool)
    plans = {
        name: np.zeros(T, dtype=bool if name == "deferred" else np.int64)
        for name in ("plan_policy", "plan_left", "plan_age", "deferred")
    }
    who_plans = recording.get("planned")
    committed = group.plans
    assert committed is not None  # a planning policy's group
    onehot = group.cm.tree.first_action_onehot
    mode = group.settings.sampling_mode
    for t in range(T):
        if t > 0 and trial_start[t]:
            group.reset()
        if who_plans is None:
            group.step(obs[t : t + 1], record=False)
        else:
            group.step_planned(obs[t : t + 1], who_plans[t : t + 1])
        for f, q in enumerate(group.qs):
            qs[f][t] = q[0]
        q_pi[t] = group.q_pi[0]
        chosen[t] = group.action[0]
        planned[t] = committed.counts["planned"] > 0
        for name, column in plans.items():
            column[t] = getattr(committed, name)[0]
        if planned[t]:
            tied[t] = agreement.count_ties(q_pi[t : t + 1], onehot)[0]
            shortfall[t] = agreement.action_shortfall(
                q_pi[t : t + 1], onehot, actions[t : t + 1], mode=mode
            )[0]
        else:
            shortfall[t] = 0.0 if (actions[t] == chosen[t]).all() else 1.0
        group.drive_prior(actions[t : t + 1])
    out: dict[str, np.ndarray] = {f"qs{f}": q for f, q in enumerate(qs)}
    out.update(
        q_pi=q_pi,
        chosen_action=chosen,
        policies=group.cm.tree.policies,
        tied=tied,
        recorded_shortfall=shortfall,
        planned=planned,
        **plans,
    )
    return out


def _end_trial(group: AifAgentGroup, qs: list[np.ndarray], step: int) -> None:
    """A trial ended: a learning agent learns ``D`` from the posterior of ``step``; then the
    next trial starts from ``D``."""
    if group.learning is not None:
        group.end_trial(posterior=[q[step : step + 1] for q in qs])
    else:
        group.reset()
