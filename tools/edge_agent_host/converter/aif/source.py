"""Reading an Active Inference model: a ``.npz`` in pymdp's key layout (with its Dirichlet
counts), a ``.json`` object of nested lists, or a pymdp ``Agent`` object (0.0.x numpy or 1.x JAX,
duck-typed: pymdp itself is not imported) with its settings and counts. Formats and conventions:
the docstring of :mod:`edge_agent_host.converter.formats.aif`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.aif.learning_counts import check_counts
from edge_agent.aif.model import Counts, GenerativeModel, load_npz
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.settings import AifSettings, settings_from_json
from edge_agent.errors import ModelError

__all__ = [
    "counts_from_pymdp",
    "load_aif_model",
    "load_json_model",
    "model_from_pymdp",
    "settings_from_pymdp",
]

_JSON_KEYS = ("A", "B", "C", "D", "E")


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
        E_list = (
            None
            if E_list is None
            else _one_of_batch(
                [np.concatenate([e.reshape(batch, -1) for e in E_list], axis=1)], "E", batch
            )
        )
        b_deps = getattr(agent, "B_dependencies", None)
        if b_deps is not None and [list(map(int, d)) for d in b_deps] != [
            [f] for f in range(len(B))
        ]:
            raise ModelError(
                f"pymdp agent: B_dependencies {b_deps} couple factors; edge-agent's transitions "
                "depend on their own factor only"
            )
        A = _expand_dependencies(A, getattr(agent, "A_dependencies", None), [b.shape[0] for b in B])
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
        raise ModelError(
            "pymdp agent: use_inductive is not supported (G is utility + state "
            "information gain here)"
        )
    if getattr(agent, "use_param_info_gain", False) and (
        getattr(agent, "pA", None) is not None or getattr(agent, "pB", None) is not None
    ):
        raise ModelError(
            "pymdp agent: use_param_info_gain with pA/pB is not supported (no "
            "parameter learning on the device)"
        )
    if getattr(agent, "action_maps", None) is not None:
        raise ModelError(
            "pymdp agent: B_action_dependencies (actions shared between factors) are not supported"
        )
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
