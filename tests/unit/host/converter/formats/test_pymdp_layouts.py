"""From a pymdp ``Agent`` to the ``.npz`` and the bundle, with stand-ins of exactly pymdp's layout.

pymdp is not installed by the test suite (1.x needs JAX). The stand-ins carry the attributes that
``pymdp.agent.Agent.__init__`` sets, as it sets them: in 0.0.7.1 object arrays of float64 tables,
``E`` a vector, ``policies`` a list of ``(L, F)`` arrays, ``inference_algo = "VANILLA"`` with
``inference_params``; in 1.0.x lists of JAX arrays (float32, a leading batch axis, ``A[m]`` over
``A_dependencies[m]``), ``E`` one ``(batch, P)`` array, ``gamma`` and ``alpha`` broadcast to
``(batch,)``, ``policies`` a ``control.Policies`` with ``policy_arr``. ``JaxArray`` is what the
converter sees of a ``jax.Array``: not an ``np.ndarray``, read through ``__array__``, iterating
over its first axis. The 1.x fixed-point iteration is transcribed from pymdp 1.0.2
(``pymdp/algos.py: run_factorized_fpi``) to check the settings the converter derives.

The documented snippets of docs/host-tool.md "Making the model file" run here verbatim, and the
``.npz`` they write is converted by the real ``edge-agent-host`` process.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge_agent.aif.model import GenerativeModel, load_npz
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import ModelError
from edge_agent.sim.tmaze import tmaze_model
from edge_agent_host.converter.aif.source import model_from_pymdp, settings_from_pymdp

ROOT = Path(__file__).resolve().parents[5]


class JaxArray:
    """What the converter sees of a ``jax.Array`` (float32 by default, as JAX computes)."""

    def __init__(self, value: Any, dtype: Any = np.float32) -> None:
        self._value = np.array(value, dtype=dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._value.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._value.dtype

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self._value if dtype is None else self._value.astype(dtype)

    def __iter__(self) -> Iterator[JaxArray]:
        return (JaxArray(row, self._value.dtype) for row in self._value)

    def __len__(self) -> int:
        return len(self._value)


def obj_array(arrays: list[np.ndarray] | tuple[np.ndarray, ...]) -> np.ndarray:
    """pymdp 0.0.7's ``utils.to_obj_array``: a 1-D object array of tables."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def pymdp_007_agent(model: GenerativeModel, **overrides: Any) -> SimpleNamespace:
    """The attributes pymdp 0.0.7.1's ``Agent(A, B, C, D)`` sets (default arguments)."""
    num_controls = [b.shape[2] for b in model.B]
    control_fac_idx = [f for f, u in enumerate(num_controls) if u > 1]
    policies = construct_policies(num_controls, 1, control_fac_idx)
    attrs: dict[str, Any] = {
        "A": obj_array(model.A), "B": obj_array(model.B), "C": obj_array(model.C),
        "D": obj_array(model.D), "E": np.ones(len(policies)) / len(policies),
        "pA": None, "pB": None, "pD": None,
        "num_obs": [a.shape[0] for a in model.A], "num_states": [b.shape[0] for b in model.B],
        "num_controls": num_controls, "control_fac_idx": control_fac_idx,
        "policies": list(policies), "policy_len": 1, "gamma": 16.0, "alpha": 16.0,
        "use_utility": True, "use_states_info_gain": True, "use_param_info_gain": False,
        "action_selection": "deterministic", "sampling_mode": "marginal",
        "inference_algo": "VANILLA", "inference_horizon": 1,
        "inference_params": {"num_iter": 10, "dF": 1.0, "dF_tol": 0.001},
    }
    attrs.update(overrides)
    return SimpleNamespace(**attrs)


def pymdp_1x_agent(
    A: list[np.ndarray], A_dependencies: list[list[int]], model: GenerativeModel, batch: int,
    **overrides: Any,
) -> SimpleNamespace:
    """The attributes pymdp 1.0.x's ``Agent(A, B, C, D, A_dependencies=..., batch_size=batch)``
    sets: every table a float32 JAX array with a leading batch axis."""
    def batched(arrays: list[np.ndarray] | tuple[np.ndarray, ...]) -> list[JaxArray]:
        return [JaxArray(np.broadcast_to(a, (batch, *a.shape))) for a in arrays]

    num_controls = [b.shape[2] for b in model.B]
    control_fac_idx = [f for f, u in enumerate(num_controls) if u > 1]
    policies = construct_policies(num_controls, 1, control_fac_idx)
    attrs: dict[str, Any] = {
        "A": batched(A), "B": batched(model.B), "C": batched(model.C), "D": batched(model.D),
        "E": JaxArray(np.ones((batch, len(policies))) / len(policies)), "pA": None, "pB": None,
        "H": None, "I": [JaxArray(np.zeros((batch, 1, b.shape[0]))) for b in model.B],
        "A_dependencies": A_dependencies, "B_dependencies": [[f] for f in range(len(model.B))],
        "B_action_dependencies": [[f] for f in range(len(model.B))], "action_maps": None,
        "num_modalities": len(A), "num_factors": len(model.B),
        "num_obs": [a.shape[0] for a in A], "num_states": [b.shape[0] for b in model.B],
        "num_controls": num_controls, "control_fac_idx": control_fac_idx,
        "policies": SimpleNamespace(policy_arr=JaxArray(policies, np.int32),
                                    num_policies=len(policies), horizon=1),
        "policy_len": 1, "gamma": JaxArray(np.full(batch, 1.0)),
        "alpha": JaxArray(np.full(batch, 1.0)), "use_utility": True,
        "use_states_info_gain": True, "use_param_info_gain": False, "use_inductive": False,
        "action_selection": "deterministic", "sampling_mode": "full", "inference_algo": "fpi",
        "inference_horizon": None, "num_iter": 16, "batch_size": batch,
        "learn_A": False, "learn_B": False, "learn_C": False, "learn_D": False, "learn_E": False,
    }
    attrs.update(overrides)
    return SimpleNamespace(**attrs)


def dirichlet(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Dense columns (no zeros), normalised along axis 0."""
    x = rng.gamma(1.0, size=shape) + 0.05
    return x / x.sum(axis=0, keepdims=True)


def two_factor_model(seed: int = 0) -> tuple[GenerativeModel, list[np.ndarray], list[list[int]]]:
    """Factors S = (3, 4), U = (2, 3); modality 0 (O=4) sees factor 0 only, modality 1 (O=5)
    both. Returns the model (every A over both factors), pymdp 1.x's sparse A and its deps."""
    rng = np.random.default_rng(seed)
    A0 = dirichlet(rng, (4, 3))
    A1 = dirichlet(rng, (5, 3, 4))
    B = [dirichlet(rng, (3, 3, 2)), dirichlet(rng, (4, 4, 3))]
    full_A0 = np.repeat(A0[:, :, None], 4, axis=2)
    C = [rng.normal(0, 2, 4), rng.normal(0, 2, 5)]
    D = [dirichlet(rng, (3,)), dirichlet(rng, (4,))]
    model = GenerativeModel.from_arrays([full_A0, A1], B, C, D)
    return model, [A0, A1], [[0], [0, 1]]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def pymdp_1x_fpi(
    A: list[np.ndarray], deps: list[list[int]], obs: list[int], prior: list[np.ndarray],
    num_iter: int,
) -> list[np.ndarray]:
    """pymdp 1.0.2 ``run_factorized_fpi`` for one agent: from log q = 0, ``num_iter`` parallel
    updates ``log q_f = sum_m E_{q, other deps of m}[ln A_m[o_m]] + ln prior_f``, no dF stop."""
    eps = np.finfo(np.float64).eps
    ll = [np.log(np.clip(a[o], eps, None)) for a, o in zip(A, obs, strict=True)]
    log_prior = [np.log(np.clip(p, eps, None)) for p in prior]
    log_q = [np.zeros_like(p) for p in prior]
    for _ in range(num_iter):
        q = [softmax(lq) for lq in log_q]
        marginal = [np.zeros_like(p) for p in prior]
        for ll_m, dep in zip(ll, deps, strict=True):
            for axis, f in enumerate(dep):
                t = ll_m  # (S_dep[0], S_dep[1], ...): contract every other dependency, last first
                for other in sorted((i for i in range(len(dep)) if i != axis), reverse=True):
                    t = np.tensordot(t, q[dep[other]], axes=([other], [0]))
                marginal[f] += t
        log_q = [m + lp for m, lp in zip(marginal, log_prior, strict=True)]
    return [softmax(lq) for lq in log_q]


# -- pymdp 0.0.7 -----------------------------------------------------------------------------------
def test_pymdp_007_agent_gives_its_model_and_settings() -> None:
    model = tmaze_model()
    agent = pymdp_007_agent(model)
    read = model_from_pymdp(agent)
    for a, b in zip((*read.A, *read.B, *read.C, *read.D), (*model.A, *model.B, *model.C, *model.D),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert read.E is not None
    np.testing.assert_allclose(read.E, 0.25)
    assert settings_from_pymdp(agent) == AifSettings(control_fac_idx=(0,))  # pymdp's defaults


def test_pymdp_007_refuses_what_edge_agent_does_not_compute() -> None:
    model = tmaze_model()
    own_policies = list(construct_policies([4, 1], 1)[:3])  # a user-given subset
    with pytest.raises(ModelError, match=r"\.policies \(3, 1, 2\) are not every combination"):
        settings_from_pymdp(pymdp_007_agent(model, policies=own_policies))
    with pytest.raises(ModelError, match=r"use_param_info_gain with pA/pB"):
        settings_from_pymdp(pymdp_007_agent(
            model, use_param_info_gain=True, pA=obj_array([a * 10 for a in model.A])))
    # Without pA, pymdp 0.0.7 adds no parameter information gain either.
    settings_from_pymdp(pymdp_007_agent(model, use_param_info_gain=True))
    with pytest.raises(ModelError, match=r"inference_algo 'MMP'"):
        settings_from_pymdp(pymdp_007_agent(model, inference_algo="MMP"))


# -- pymdp 1.x -------------------------------------------------------------------------------------
def test_pymdp_1x_agent_of_jax_arrays_gives_its_model() -> None:
    model, sparse_A, deps = two_factor_model()
    agent = pymdp_1x_agent(sparse_A, deps, model, batch=4)
    assert not isinstance(agent.E, np.ndarray)  # a JAX array iterates over its batch rows
    read = model_from_pymdp(agent)
    for a, b in zip((*read.A, *read.B, *read.D), (*model.A, *model.B, *model.D), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)  # float32 tables
    for a in (*read.A, *read.B):
        np.testing.assert_allclose(a.sum(axis=0), 1.0, rtol=0, atol=1e-15)  # renormalised
    for c, c_model in zip(read.C, model.C, strict=True):
        np.testing.assert_array_equal(c, c_model.astype(np.float32))  # preferences as they are
    assert read.E is not None
    assert read.E.shape == (6,)
    np.testing.assert_allclose(read.E, 1 / 6, atol=1e-15)


def test_pymdp_1x_settings_reproduce_its_fixed_point_iteration() -> None:
    """The derived settings (num_iter, dF_tol = 0) give pymdp 1.x's posterior, which runs exactly
    num_iter updates; pymdp 0.0.7's early stop at dF < 1e-3 does not."""
    model, sparse_A, deps = two_factor_model()
    agent = pymdp_1x_agent(sparse_A, deps, model, batch=2, num_iter=6, gamma=JaxArray([4.0, 4.0]))
    settings = settings_from_pymdp(agent)
    assert settings == AifSettings(gamma=4.0, alpha=1.0, num_iter=6, dF_tol=0.0,
                                   sampling_mode="full", control_fac_idx=(0, 1))
    obs = np.array([[2, 1], [0, 4], [3, 0]])
    expected = [pymdp_1x_fpi(sparse_A, deps, list(o), list(model.D), 6) for o in obs]
    worst = {}
    for name, s in (("1.x settings", settings), ("dF_tol 1e-3", dataclasses.replace(
            settings, dF_tol=1e-3))):
        group = AifAgentGroup(model, len(obs), settings=s, precision="float64")
        group.step(obs)
        worst[name] = max(
            float(np.abs(group.qs[f][i] - expected[i][f]).max())
            for i in range(len(obs)) for f in range(2)
        )
    assert worst["1.x settings"] < 1e-12, worst
    assert worst["dF_tol 1e-3"] > 1e-9, worst  # the check can tell the two apart


def test_pymdp_1x_float32_tables_are_renormalised_not_forgiven() -> None:
    """JAX's float32 columns of 1,000 outcomes sum to 1 only to about 1e-6, here more than the
    1e-6 that validation allows; a table that is really not normalised is still refused."""
    rng = np.random.default_rng(1)
    A = rng.random((1000, 32), dtype=np.float32)
    A /= A.sum(axis=0, keepdims=True)
    assert np.abs(A.astype(np.float64).sum(axis=0) - 1).max() > 1e-6
    A64 = A.astype(np.float64) / A.astype(np.float64).sum(axis=0, keepdims=True)
    model = GenerativeModel.from_arrays([A64], [np.eye(32)[:, :, None]], [np.zeros(1000)])
    agent = pymdp_1x_agent([A], [[0]], model, batch=1)
    read = model_from_pymdp(agent)
    np.testing.assert_allclose(read.A[0].sum(axis=0), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(read.A[0], A, rtol=1e-5)
    bad = A * np.float32(1.01)
    with pytest.raises(ModelError, match=r"A0 is not normalised: column \(0,\) sums to 1.01"):
        model_from_pymdp(pymdp_1x_agent([bad], [[0]], model, batch=1))


def test_pymdp_1x_refuses_what_edge_agent_does_not_compute() -> None:
    model, sparse_A, deps = two_factor_model()
    for overrides, message in (
        ({"use_inductive": True}, r"use_inductive is not supported"),
        ({"action_maps": [{"multi_dependency": [0]}]}, r"B_action_dependencies"),
        ({"use_param_info_gain": True, "pA": [JaxArray(a) for a in sparse_A]},
         r"use_param_info_gain with pA/pB"),
        ({"inference_algo": "vmp"}, r"inference_algo 'vmp'"),
        ({"policy_len": 2}, r"\.policies \(6, 1, 2\) are not every combination .* policy_len 2"),
    ):
        with pytest.raises(ModelError, match=message):
            settings_from_pymdp(pymdp_1x_agent(sparse_A, deps, model, batch=2, **overrides))


# -- the documented way to the .npz ----------------------------------------------------------------
def making_the_model_file_snippets() -> list[str]:
    text = (ROOT / "docs" / "host-tool.md").read_text()
    section = re.split(r"\n#{1,4} ", text.split("### Making the model file", 1)[1], maxsplit=1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(snippets) == 2, "expected the plain-arrays and the pymdp snippets"
    return snippets


def run_host_tool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "edge-agent-host"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the host tool (pip install -e '.[host]')")
    return subprocess.run([str(exe), *args, "--quiet"], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ})


def test_documented_snippets_make_npz_files_the_host_tool_converts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, from_agent = making_the_model_file_snippets()
    model, sparse_A, deps = two_factor_model()
    # From plain arrays: A0, A1 (O_m, S_0, S_1), B0 (S, S, U), C0, C1, D0 -- a one-factor model.
    rng = np.random.default_rng(2)
    arrays = {"A0": dirichlet(rng, (4, 3)), "A1": dirichlet(rng, (2, 3)),
              "B0": dirichlet(rng, (3, 3, 2)), "C0": rng.normal(0, 1, 4),
              "C1": rng.normal(0, 1, 2), "D0": dirichlet(rng, (3,))}
    monkeypatch.chdir(tmp_path)  # the snippets write relative to the working directory
    exec(plain, dict(arrays))  # the documented snippet, verbatim
    written = load_npz(tmp_path / "model.npz")
    np.testing.assert_array_equal(written.A[1], arrays["A1"])
    result = run_host_tool("convert", "aif", "model.npz", "--out", "plain.tar",
                           "--rollouts", "20", "--steps", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (tmp_path / "model.npz").unlink()
    agent = pymdp_1x_agent(sparse_A, deps, model, batch=3, num_iter=6, policy_len=1)
    exec(from_agent, {"agent": agent})
    written = load_npz(tmp_path / "model.npz")
    np.testing.assert_allclose(written.A[0], model.A[0], atol=1e-7)
    assert (tmp_path / "out" / "agent.tar").is_file()
    result = run_host_tool("convert", "aif", "model.npz", "--out", "agent-npz.tar",
                           "--rollouts", "20", "--steps", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
