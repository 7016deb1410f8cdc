"""Convert an Active Inference model to an int8 (``logu8-v1``) bundle and measure what it costs.

Inputs:

* ``.npz`` in pymdp's key layout (``A0..``, ``B0..``, ``C0..``, ``D0..``, ``E``), read by
  :func:`edge_agent.aif.model.load_npz`, with optional Dirichlet counts ``pA0..``, ``pB0..``,
  ``pD0..`` for agents that learn (carried into the bundle, see below);
* ``.json``: one object with keys ``A`` and ``B`` (required), ``C``, ``D`` and ``E`` (optional).
  ``A``, ``B``, ``C`` and ``D`` are **lists with one nested-list array per modality / factor**
  (``A[m]`` has shape ``(O_m, S_0, ..., S_{F-1})``, ``B[f]`` ``(S_f, S_f, U_f)``, ``C[m]``
  ``(O_m,)``, ``D[f]`` ``(S_f,)``); ``E`` is one flat list over policies. Any other key is an
  error. Example: ``{"A": [[[0.9, 0.1], [0.1, 0.9]]], "B": [[[[1], [0]], [[0], [1]]]]}``;
* a pymdp ``Agent`` object (0.0.x numpy or 1.x JAX) through :func:`model_from_pymdp` and
  :func:`settings_from_pymdp` (duck-typed: reads ``.A``, ``.B``, ``.C``, ``.D``, ``.E`` and the
  agent's settings; pymdp itself is not imported); its ``.pA``/``.pB``/``.pD`` are read by
  :func:`counts_from_pymdp`.

Dirichlet counts are checked against the tables they parameterise
(:func:`edge_agent.aif.learning_counts.check_counts`: shape, NaN, negative, zero where the table
is not) and stored in float64 beside the int8 tables (``aif/pA0.npy`` ..., logical names
``pA0`` ...); :meth:`edge_agent.bundle.loader.Bundle.aif_counts` hands them to a learning group.

The report compares the float64 agents with the int8 agents over simulated rollouts: ``N`` agents
for ``T`` steps in a world that *is* the float model (states from ``D`` and ``B``, observations
from ``A``: :class:`edge_agent.sim.BatchEnv`). Both groups see the same observations; the int8
agents commit the float agents' actions, so their beliefs stay comparable step by step. Reported:
belief KL ``KL(q_float || q_int8)`` summed over factors (mean, median, max over agent-steps), the
fraction of agent-steps whose own int8 action equals the float one or is optimal under the float
posterior within ``TIE_TOLERANCE`` (tie-aware agreement; the raw fraction of equal actions beside
it), the fraction of steps with tied actions, and the largest absolute difference of the policy
posteriors ``q_pi``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.aif import agreement
from edge_agent.aif.learning_counts import check_counts
from edge_agent.aif.model import Counts, GenerativeModel, load_npz
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.quant import SCHEME, QuantizedModel, quantize_model
from edge_agent.aif.settings import AifSettings, settings_from_json, settings_to_json
from edge_agent.bundle.loader import AifSpec
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import InputError, ModelError
from edge_agent.sim import BatchEnv
from edge_agent_host.converters.common import (
    Converter,
    ConvertOptions,
    add_common_options,
    fraction,
    positive_int,
)
from edge_agent_host.output import check_output, write_output
from edge_agent_host.report import Check, ConversionReport, progress

logger = logging.getLogger(__name__)

__all__ = [
    "AIF_ARRAY_DIR",
    "CONVERTER",
    "AifOptions",
    "AifThresholds",
    "add_aif_options",
    "aif_bundle_arrays",
    "aif_options",
    "aif_settings",
    "aif_thresholds",
    "compare_rollouts",
    "convert_aif",
    "convert_pymdp",
    "counts_from_pymdp",
    "load_aif_model",
    "load_json_model",
    "model_from_pymdp",
    "settings_from_pymdp",
]

#: Payload directory of the int8 arrays inside a bundle.
AIF_ARRAY_DIR = "aif"
_JSON_KEYS = ("A", "B", "C", "D", "E")
_KL_EPS = 1e-16
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


# -- reading models --------------------------------------------------------------------------------
def _array_list(source: str, key: str, value: object) -> list[np.ndarray]:
    if not isinstance(value, list) or not value:
        raise ModelError(f"{source}: {key} must be a non-empty list with one array per entry")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(np.asarray(item, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise ModelError(f"{source}: {key}[{i}] is not a rectangular numeric array") from err
    return out


def load_json_model(path: str | Path) -> GenerativeModel:
    """A model from the JSON layout of the module docstring; ModelError naming what is wrong."""
    source = str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelError(f"{source}: no such model file") from err
    except json.JSONDecodeError as err:
        raise ModelError(f"{source}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from err
    if not isinstance(data, dict):
        raise ModelError(f"{source}: expected a JSON object with keys A, B, C, D, E")
    unknown = sorted(set(data) - set(_JSON_KEYS))
    if unknown:
        raise ModelError(f"{source}: unexpected key(s) {unknown} (allowed: A, B, C, D, E)")
    for key in ("A", "B"):
        if key not in data:
            raise ModelError(f"{source}: missing key {key!r}")
    A = _array_list(source, "A", data["A"])
    B = _array_list(source, "B", data["B"])
    C = _array_list(source, "C", data["C"]) if data.get("C") is not None else None
    D = _array_list(source, "D", data["D"]) if data.get("D") is not None else None
    E = None
    if data.get("E") is not None:
        try:
            E = np.asarray(data["E"], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ModelError(f"{source}: E is not a flat numeric list") from err
    try:
        return GenerativeModel.from_arrays(A, B, C, D, E)
    except ModelError as err:
        raise ModelError(f"{source}: {err}") from err


def load_aif_model(path: str | Path, *, counts: Counts | None = None) -> GenerativeModel:
    """Read a model from ``.npz`` (pymdp keys) or ``.json`` (by suffix); a ``.npz``'s Dirichlet
    counts (``pA0``..) go into ``counts`` when given (else they are refused)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return load_npz(p, counts=counts)
    if suffix == ".json":
        return load_json_model(p)
    raise ModelError(f"{p}: unknown model format {suffix!r}; use .npz (pymdp keys) or .json")


#: JAX computes in float32 by default, so a pymdp 1.x table's columns sum to 1 only to about
#: 1e-7 per entry, more than ``NORM_TOL`` for a few hundred outcomes. Tables read in a lower
#: precision than float64 whose sums are this close to 1 are renormalised in float64 first.
LOW_PRECISION_NORM_TOL = 1e-4


def _items(value: object) -> list[Any]:
    """One table per modality/factor: the items of a list or object array, else ``[value]``."""
    if isinstance(value, list | tuple) or (isinstance(value, np.ndarray) and value.dtype == object):
        return list(value)
    return [value]


def _object_list(agent: object, attr: str) -> list[np.ndarray] | None:
    """``agent.<attr>`` as float64 arrays: an object array or list of arrays (one per modality or
    factor), or one array (numpy or JAX, anything ``np.asarray`` reads: pymdp 1.x's ``E``)."""
    value = getattr(agent, attr, None)
    if value is None:
        return None
    try:
        arrays = [np.asarray(item) for item in _items(value)]
        if any(not np.issubdtype(a.dtype, np.number) for a in arrays):
            raise TypeError(attr)
    except (TypeError, ValueError) as err:
        raise ModelError(f"pymdp agent: .{attr} is not a list of numeric arrays") from err
    return [a.astype(np.float64) for a in arrays]


def _low_precision(agent: object, attr: str) -> bool:
    """Whether ``agent.<attr>`` holds floats narrower than float64 (JAX's default float32)."""
    value = getattr(agent, attr, None)
    if value is None:
        return False
    dtypes = [np.asarray(item).dtype for item in _items(value)]
    return any(np.issubdtype(d, np.floating) and d.itemsize < 8 for d in dtypes)


def _renormalised(agent: object, attr: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Tables read in float32 renormalised along axis 0 in float64 when their sums are within
    ``LOW_PRECISION_NORM_TOL`` of 1 (others are left for validation to refuse)."""
    if not _low_precision(agent, attr):
        return arrays
    out = []
    for a in arrays:
        sums = a.sum(axis=0, keepdims=True)
        out.append(a / sums if np.all(np.abs(sums - 1.0) <= LOW_PRECISION_NORM_TOL) else a)
    return out


def _pymdp_batch(agent: object) -> int | None:
    """pymdp 1.x (JAX) agents carry a leading batch axis on every array and a ``batch_size``;
    0.0.x agents have neither."""
    size = getattr(agent, "batch_size", None)
    return None if size is None else int(size)


def _one_of_batch(arrays: list[np.ndarray], attr: str, batch: int) -> list[np.ndarray]:
    """The first element of each batched array; every element of the batch must be the same
    model (edge-agent runs many agents of one model as one group)."""
    out = []
    for index, a in enumerate(arrays):
        if a.ndim == 0 or a.shape[0] != batch:
            raise ModelError(
                f"pymdp agent: .{attr}[{index}] has shape {a.shape}, expected a leading batch "
                f"axis of {batch}"
            )
        if batch > 1 and not np.allclose(a, a[:1]):
            raise ModelError(
                f"pymdp agent: .{attr}[{index}] differs across its batch of {batch}: convert "
                "one model at a time (a bundle holds one model that many agents run)"
            )
        out.append(a[0])
    return out


def _expand_dependencies(
    A: list[np.ndarray], deps: object, num_states: list[int]
) -> list[np.ndarray]:
    """pymdp 1.x ``A_dependencies``: ``A[m]`` spans only the factors ``deps[m]``; edge-agent's
    ``A[m]`` spans every factor, so the table is repeated along the factors it ignores."""
    if deps is None:
        return A
    out = []
    for m, (a, factors) in enumerate(zip(A, list(deps), strict=True)):  # type: ignore[call-overload]
        fs = [int(f) for f in factors]
        if a.shape[1:] != tuple(num_states[f] for f in fs):
            raise ModelError(
                f"pymdp agent: A[{m}] has shape {a.shape}, A_dependencies[{m}] = {fs} needs "
                f"(O, {', '.join(str(num_states[f]) for f in fs)})"
            )
        order = sorted(range(len(fs)), key=lambda i: fs[i])
        sorted_a = np.transpose(a, (0, *(1 + i for i in order)))
        shape = [a.shape[0]] + [n if f in fs else 1 for f, n in enumerate(num_states)]
        full = np.broadcast_to(sorted_a.reshape(shape), (a.shape[0], *num_states))
        out.append(np.ascontiguousarray(full))
    return out


def model_from_pymdp(agent: object) -> GenerativeModel:
    """The generative model of a pymdp ``Agent``, read from ``.A`` ... ``.E`` (duck-typed: pymdp
    is not imported).

    pymdp 0.0.x (numpy): ``.A``/``.B`` (required), ``.C``/``.D`` (optional) are object arrays or
    lists of arrays, ``.E`` a vector over policies. pymdp 1.x (JAX): the same lists of arrays with
    a leading batch axis (``.batch_size``; every batch element must be the same model) and
    ``A[m]`` over the factors in ``.A_dependencies[m]``; transitions must depend only on their
    own factor (``.B_dependencies[f] == [f]``). Tables read in float32 (JAX's default) whose
    sums are within ``LOW_PRECISION_NORM_TOL`` of 1 are renormalised in float64. Validated like
    any other model (ModelError on a bad table).
    """
    A = _object_list(agent, "A")
    B = _object_list(agent, "B")
    if A is None or B is None:
        raise ModelError("pymdp agent: needs .A and .B")
    C = _object_list(agent, "C")
    D = _object_list(agent, "D")
    E_list = _object_list(agent, "E")
    batch = _pymdp_batch(agent)
    if batch is not None:
        A, B = _one_of_batch(A, "A", batch), _one_of_batch(B, "B", batch)
        C = None if C is None else _one_of_batch(C, "C", batch)
        D = None if D is None else _one_of_batch(D, "D", batch)
        E_list = None if E_list is None else _one_of_batch(
            [np.concatenate([e.reshape(batch, -1) for e in E_list], axis=1)], "E", batch
        )
        b_deps = getattr(agent, "B_dependencies", None)
        if b_deps is not None and [list(map(int, d)) for d in b_deps] != [
            [f] for f in range(len(B))
        ]:
            raise ModelError(
                f"pymdp agent: B_dependencies {b_deps} couple factors; edge-agent's transitions "
                "depend on their own factor only"
            )
        A = _expand_dependencies(A, getattr(agent, "A_dependencies", None),
                                 [b.shape[0] for b in B])
    A, B = _renormalised(agent, "A", A), _renormalised(agent, "B", B)
    D = None if D is None else _renormalised(agent, "D", D)
    E = None if E_list is None else np.concatenate([e.ravel() for e in E_list])
    if E is not None:
        E = _renormalised(agent, "E", [E])[0]
    return GenerativeModel.from_arrays(A, B, C, D, E)


def _learned(agent: object, attr: str, count: int) -> list[int]:
    """pymdp 0.0.x's ``modalities_to_learn`` / ``factors_to_learn``: ``"all"`` or indices."""
    value = getattr(agent, attr, "all")
    if value is None or (isinstance(value, str) and value == "all"):
        return list(range(count))
    return [int(i) for i in _items(value)]


def counts_from_pymdp(agent: object, model: GenerativeModel) -> Counts:
    """The Dirichlet counts a pymdp ``Agent`` learns with (``.pA``, ``.pB``, ``.pD``), by kind
    and modality/factor, checked against ``model`` (:func:`model_from_pymdp` of the same agent).

    pymdp 0.0.x: the modalities in ``.modalities_to_learn`` and the factors in
    ``.factors_to_learn`` (``"all"``: every one); ``pD`` for every factor. pymdp 1.x: every
    table, one of the batch (all must agree), ``pA[m]`` repeated along the factors outside
    ``A_dependencies[m]`` like ``A[m]`` (each copy then learns on its own). Empty when the
    agent learns nothing."""
    counts: Counts = {}
    batch = _pymdp_batch(agent)
    learned = {
        "A": _learned(agent, "modalities_to_learn", model.num_modalities),
        "B": _learned(agent, "factors_to_learn", model.num_factors),
        "D": list(range(model.num_factors)),
    }
    tables = {"A": model.A, "B": model.B, "D": model.D}
    for kind in ("A", "B", "D"):
        arrays = _object_list(agent, f"p{kind}")
        if arrays is None:
            continue
        if batch is not None:
            arrays = _one_of_batch(arrays, f"p{kind}", batch)
            if kind == "A":
                arrays = _expand_dependencies(
                    arrays, getattr(agent, "A_dependencies", None), list(model.num_states)
                )
        if len(arrays) != len(tables[kind]):
            raise ModelError(
                f"pymdp agent: .p{kind} has {len(arrays)} tables, the model has "
                f"{len(tables[kind])} {kind}"
            )
        counts[kind] = {
            i: check_counts(f"{kind}{i}", arrays[i], tables[kind][i]) for i in learned[kind]
        }
    return counts


def _scalar(value: object, attr: str) -> Any:
    """A setting as a Python scalar: numpy/JAX scalars and batched arrays whose elements agree."""
    if isinstance(value, str | bool | int | float):
        return value
    array = np.asarray(value)
    if array.size == 0 or not np.all(array == array.flat[0]):
        raise ModelError(f"pymdp agent: .{attr} = {value!r} is not one value for every agent")
    return array.flat[0].item()


def settings_from_pymdp(agent: object) -> AifSettings:
    """The :class:`AifSettings` of a pymdp ``Agent`` (attributes it lacks keep pymdp's defaults)."""
    names = {
        "policy_len": "policy_len",
        "gamma": "gamma",
        "alpha": "alpha",
        "use_utility": "use_utility",
        "use_states_info_gain": "use_states_info_gain",
        "action_selection": "action_selection",
        "sampling_mode": "sampling_mode",
    }
    values: dict[str, Any] = {}
    for attr, field_name in names.items():
        value = getattr(agent, attr, None)
        if value is not None:
            values[field_name] = _scalar(value, attr)
    fac = getattr(agent, "control_fac_idx", None)
    if fac is not None:
        values["control_fac_idx"] = tuple(int(f) for f in fac)
    if getattr(agent, "num_iter", None) is not None:  # pymdp 1.x keeps it on the agent
        values["num_iter"] = int(_scalar(agent.num_iter, "num_iter"))  # type: ignore[attr-defined]
    algo = getattr(agent, "inference_algo", None)
    if algo is not None and str(algo).lower() not in ("fpi", "vanilla_fpi", "vanilla"):
        raise ModelError(
            f"pymdp agent: inference_algo {algo!r}; edge-agent runs fixed-point iteration (fpi)"
        )
    inference = getattr(agent, "inference_params", None)
    if isinstance(inference, Mapping):
        if "num_iter" in inference:
            values["num_iter"] = int(inference["num_iter"])
        if "dF_tol" in inference:
            values["dF_tol"] = float(inference["dF_tol"])
    if _pymdp_batch(agent) is not None:  # pymdp 1.x runs exactly num_iter updates, no dF stop
        values["dF_tol"] = 0.0
    try:
        settings = settings_from_json(values)
    except ValueError as err:
        raise ModelError(f"pymdp agent: settings not supported: {err}") from err
    _refuse_unsupported_pymdp(agent, settings)
    return settings


def _refuse_unsupported_pymdp(agent: object, settings: AifSettings) -> None:
    """One line for each thing a pymdp agent computes that edge-agent does not: inductive
    planning, parameter information gain, actions shared between factors, its own policy list."""
    if getattr(agent, "use_inductive", False):
        raise ModelError("pymdp agent: use_inductive is not supported (G is utility + state "
                         "information gain here)")
    if getattr(agent, "use_param_info_gain", False) and (
        getattr(agent, "pA", None) is not None or getattr(agent, "pB", None) is not None
    ):
        raise ModelError("pymdp agent: use_param_info_gain with pA/pB is not supported (no "
                         "parameter learning on the device)")
    if getattr(agent, "action_maps", None) is not None:
        raise ModelError("pymdp agent: B_action_dependencies (actions shared between factors) "
                         "are not supported")
    policies, B = getattr(agent, "policies", None), getattr(agent, "B", None)
    if policies is None or B is None:
        return
    given = np.asarray(getattr(policies, "policy_arr", policies))  # 1.x: control.Policies
    num_controls = [int(np.shape(b)[-1]) for b in _items(B)]
    expected = construct_policies(num_controls, settings.policy_len, settings.control_fac_idx)
    if given.shape != expected.shape or not np.array_equal(given, expected):
        raise ModelError(
            f"pymdp agent: .policies {given.shape} are not every combination of actions over "
            f"policy_len {settings.policy_len} (expected {expected.shape} in pymdp's order); "
            "edge-agent enumerates its own policies"
        )


# -- measuring -------------------------------------------------------------------------------------
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
    int8_group = AifAgentGroup(
        quantized, n_agents, settings=settings, precision="int8", seed=seed
    )
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
        shortfall[t] = agreement.action_shortfall(
            float_group.q_pi, onehot, own_actions, mode=mode
        )
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


def aif_bundle_arrays(quantized: QuantizedModel) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(payload path -> array, logical name -> payload path)`` for a bundle's AifSpec.

    Logical names are :meth:`QuantizedModel.to_arrays` keys, so a device rebuilds the model with
    ``QuantizedModel.from_arrays(bundle.aif_arrays())``.
    """
    arrays: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    for logical, array in quantized.to_arrays().items():
        rel = f"{AIF_ARRAY_DIR}/{logical}.npy"
        arrays[rel] = np.asarray(array)
        names[logical] = rel
    return arrays, names


def aif_spec(quantized: QuantizedModel, settings: AifSettings, names: dict[str, str]) -> AifSpec:
    return AifSpec(
        num_obs=quantized.num_obs,
        num_states=quantized.num_states,
        num_controls=quantized.num_controls,
        quant_scheme=SCHEME,
        settings=settings_to_json(settings),
        arrays=names,
    )


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
        model, quantized, settings, n_agents=rollouts, steps=steps, seed=seed,
        tie_tol=tie_tol, show_progress=show_progress,
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
        ("model size (bytes)", f"{float_bytes:,}", f"{int8_bytes:,}",
         f"{100 * int8_bytes / max(1, float_bytes):.1f} %"),
        ("rollouts", f"{rollouts_data['agents']} agents x {rollouts_data['steps']} steps"),
        ("belief KL mean", f"{kl['mean']:.3g}"),
        ("belief KL median / p99", f"{kl['median']:.3g} / {kl['p99']:.3g}"),
        ("belief KL max", f"{kl['max']:.3g}"),
        ("action agreement", f"{100 * rollouts_data['action_agreement']:.2f} % (tie-aware, "
         f"tolerance {rollouts_data['tie_tolerance']:g})"),
        ("action agreement, exact", f"{100 * rollouts_data['action_agreement_exact']:.2f} % "
         f"({100 * rollouts_data['tied_steps']:.1f} % of steps have tied actions)"),
        ("q_pi max abs diff", f"{rollouts_data['q_pi_max_abs_diff']:.3g}"),
        ("largest log error bound", f"{log_bound:.3g} (A, B, D, E)"),
    ]
    return data, rows


def aif_checks(data: Mapping[str, Any], thresholds: AifThresholds) -> list[Check]:
    rollouts = data["rollouts"]
    return [
        Check("belief KL mean", rollouts["belief_kl"]["mean"], thresholds.max_kl, "max",
              "--max-kl"),
        Check("action agreement", rollouts["action_agreement"], thresholds.min_action_agreement,
              "min", "--min-action-agreement"),
    ]


def bundle_counts(model: GenerativeModel, counts: Counts) -> dict[str, np.ndarray]:
    """``{"pA1": counts, ...}``: each table's counts checked against ``model`` (one line for
    a wrong shape, NaN, a negative count, a zero where the table is not, a missing table)."""
    tables = {"A": model.A, "B": model.B, "D": model.D}
    out: dict[str, np.ndarray] = {}
    for kind, by_index in counts.items():
        if kind not in tables:
            raise ModelError(f"Dirichlet counts p{kind}: expected pA, pB or pD")
        for i, value in sorted(by_index.items()):
            if not 0 <= i < len(tables[kind]):
                what = "modality" if kind == "A" else "factor"
                raise ModelError(
                    f"p{kind}{i}: counts for {what} {i}, the model has {len(tables[kind])}"
                )
            out[f"p{kind}{i}"] = check_counts(f"{kind}{i}", value, tables[kind][i])
    return out


def convert_aif(options: ConvertOptions, aif: AifOptions | None = None) -> ConversionReport:
    """Quantize a generative model, measure it, and write (and sign) the bundle if the checks
    pass.

    The model is ``aif.model``, or else read from ``options.model`` (``.npz`` or ``.json``:
    :func:`load_aif_model`, a ``.npz``'s Dirichlet counts ``pA0``.. with it); the report names
    ``options.model`` as its source (``model`` when there is none). Returns the report;
    ``report.bundle`` is ``None`` when the checks failed and ``options.force`` is not set (then
    nothing is written).
    """
    aif = aif or AifOptions()
    if aif.model is None:
        if aif.counts is not None:
            raise InputError(
                "AifOptions.counts go with AifOptions.model: a .npz carries its own (pA0..)"
            )
        counts: Counts = {}
        model = load_aif_model(options.input("a .npz or .json model"), counts=counts)
        aif = replace(aif, model=model, counts=counts)
    return _convert_model(options, aif, "model" if options.model is None else str(options.model))


def convert_pymdp(
    agent: object, options: ConvertOptions, aif: AifOptions | None = None
) -> ConversionReport:
    """:func:`convert_aif` for a pymdp ``Agent`` (duck-typed): its model, its settings unless
    ``aif.settings`` is given, its Dirichlet counts unless ``aif.counts`` is given. The report
    names the agent's class as its source."""
    aif = aif or AifOptions()
    settings = aif.settings or settings_from_pymdp(agent)
    model = model_from_pymdp(agent)
    counts = aif.counts if aif.counts is not None else counts_from_pymdp(agent, model)
    return _convert_model(
        options, replace(aif, model=model, settings=settings, counts=counts),
        f"pymdp agent {type(agent).__name__}",
    )


def _convert_model(options: ConvertOptions, aif: AifOptions, source: str) -> ConversionReport:
    """:func:`convert_aif` once the model is in ``aif.model``."""
    if aif.model is None:
        raise ValueError("_convert_model needs aif.model")
    model = aif.model
    check_output(options.out)
    try:
        count_arrays = bundle_counts(model, aif.counts or {})
    except ModelError as err:
        raise ModelError(f"{source}: {err}") from err
    agent_settings = aif.settings or AifSettings()
    limits = aif.thresholds
    quantized = quantize_model(model)
    data, rows = aif_report_data(
        model, quantized, agent_settings, rollouts=aif.rollouts, steps=aif.steps,
        seed=options.seed, show_progress=options.show_progress, tie_tol=limits.tie_tolerance,
    )
    report = ConversionReport(
        kind="aif", source=source, data=data, rows=rows, checks=aif_checks(data, limits)
    )
    if count_arrays:
        report.data["learning"] = {"counts": sorted(count_arrays)}
        report.rows.append(("Dirichlet counts (float64)", ", ".join(sorted(count_arrays))))
    if not report.passed and not options.force:
        return report
    arrays, names = aif_bundle_arrays(quantized)
    for logical, array in count_arrays.items():
        rel = f"{AIF_ARRAY_DIR}/{logical}.npy"
        arrays[rel] = array
        names[logical] = rel
    report.bundle = write_output(
        options.out, name=options.name, version=options.version, kind="aif", arrays=arrays,
        aif=aif_spec(quantized, agent_settings, names),
        quantization=report.manifest_record(), sign_key=options.sign_key,
        signer=options.signer,
    )
    return report


# ``convert aif`` -------------------------------------------------------------------------------


def add_aif_options(parser: argparse.ArgumentParser) -> None:
    """The generative model's options: of ``convert aif``, and of a neural conversion that pairs
    an observation model with a generative model (``--aif``)."""
    group = parser.add_argument_group("Active Inference model")
    group.add_argument("--policy-len", type=positive_int, default=1,
                       help="planning horizon L stored in the bundle's settings (default 1)")
    group.add_argument("--gamma", type=float, default=16.0, help="policy precision (default 16)")
    group.add_argument("--action-selection", choices=("deterministic", "stochastic"),
                       default="deterministic", help="action selection (default deterministic)")
    group.add_argument("--rollouts", type=positive_int, default=200,
                       help="agents simulated for the agreement report (default 200)")
    group.add_argument("--steps", type=positive_int, default=30,
                       help="steps per simulated agent (default 30)")
    group.add_argument("--max-kl", type=float, default=AifThresholds.max_kl,
                       help=f"largest mean belief KL accepted (default {AifThresholds.max_kl})")
    group.add_argument("--min-action-agreement", type=fraction,
                       default=AifThresholds.min_action_agreement,
                       help="smallest fraction of int8 actions that the float64 agents rate "
                       "optimal, ties counted as agreeing "
                       f"(default {AifThresholds.min_action_agreement})")
    group.add_argument("--tie-tolerance", type=fraction, default=AifThresholds.tie_tolerance,
                       help="an int8 action agrees when the float64 posterior gives it at most "
                       "this much less probability than its best action "
                       f"(default {AifThresholds.tie_tolerance})")


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
        max_kl=args.max_kl, min_action_agreement=args.min_action_agreement,
        tie_tolerance=args.tie_tolerance,
    )


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", type=Path,
        help="model: .npz (pymdp keys A0.., B0.., ...; Dirichlet counts pA0.., pB0.., pD0.. "
        "are carried into the bundle for agents that learn) or .json",
    )
    add_common_options(parser)
    add_aif_options(parser)


def aif_options(args: argparse.Namespace, model: GenerativeModel | None = None) -> AifOptions:
    """The :class:`AifOptions` of :func:`add_aif_options`' arguments, with ``model`` (``None``:
    :func:`convert_aif` reads it from the input file)."""
    return AifOptions(
        model=model, settings=aif_settings(args), thresholds=aif_thresholds(args),
        rollouts=args.rollouts, steps=args.steps,
    )


def _convert(args: argparse.Namespace, options: ConvertOptions) -> ConversionReport:
    return convert_aif(options, aif_options(args))


CONVERTER = Converter(
    name="aif",
    help="Active Inference model (.npz, .json) to logu8-v1",
    description="Quantize an Active Inference model (A, B, C, D, E) to logu8-v1, compare "
    "float64 and int8 agents over simulated rollouts, and write the bundle.",
    configure=_configure,
    convert=_convert,
)
