"""Our Active Inference agents against golden outputs of pymdp 0.0.7.1's numpy ``Agent``.

``tests/data/pymdp_golden.npz`` was written by ``tests/data/make_pymdp_golden.py`` from a real
pymdp (see that script for the scenarios and the key layout). Each scenario gives a model, the
observations fed in at each step, and what pymdp's ``infer_states``, ``infer_policies`` and
``sample_action`` returned. Our float64 reference agent must reproduce it to rounding; the
batched group, run as identical copies side by side, must reproduce it in every row.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif import agreement
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.reference import ReferenceAgent
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "pymdp_golden.npz"
SCENARIOS = ("single", "single_l2", "multi", "multi_l2", "uncontrolled", "tmaze")
#: Scenarios that give pymdp a policy prior E (the others use its uniform default).
WITH_E = ("uncontrolled",)
#: Identical agents run side by side in the batched test.
N_COPIES = 3

REF_TOL = {"rtol": 1e-9, "atol": 1e-12}
GROUP_TOL = {"rtol": 1e-7, "atol": 1e-10}


@functools.cache
def golden_arrays() -> dict[str, np.ndarray]:
    """Every array of the golden file, read once (plain arrays: no pickle)."""
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def count_indexed(name: str, letter: str) -> int:
    """How many ``{name}/{letter}0``, ``{name}/{letter}1``, ... keys exist, from 0 upward."""
    arrays = golden_arrays()
    n = 0
    while f"{name}/{letter}{n}" in arrays:
        n += 1
    return n


@dataclass(frozen=True)
class Golden:
    """One scenario: the model, the settings pymdp ran with, and pymdp's outputs per step."""

    name: str
    model: GenerativeModel
    settings: AifSettings
    policies: np.ndarray  # (P, L, F) int, pymdp's enumeration order
    obs: np.ndarray  # (T, M) int, observation per step
    prior: tuple[np.ndarray, ...]  # F arrays (T, S_f): empirical prior used by infer_states
    qs: tuple[np.ndarray, ...]  # F arrays (T, S_f): posterior over states after infer_states
    q_pi: np.ndarray  # (T, P): posterior over policies
    G: np.ndarray  # (T, P): negative expected free energy per policy
    action: np.ndarray  # (T, F) int: action from sample_action
    margin: np.ndarray  # (T, F): best minus second-best action marginal

    @property
    def num_steps(self) -> int:
        return int(self.obs.shape[0])


def load_scenario(name: str) -> Golden:
    """Rebuild a scenario's model and settings from the golden file."""
    arrays = golden_arrays()

    def get(key: str) -> np.ndarray:
        return arrays[f"{name}/{key}"]

    n_mod, n_fac = count_indexed(name, "A"), count_indexed(name, "B")
    model = GenerativeModel.from_arrays(
        A=[get(f"A{m}") for m in range(n_mod)],
        B=[get(f"B{f}") for f in range(n_fac)],
        C=[get(f"C{m}") for m in range(n_mod)],
        D=[get(f"D{f}") for f in range(n_fac)],
        E=arrays.get(f"{name}/E"),
    )
    # Every other setting keeps its default, which test_settings_defaults_match_pymdp pins.
    settings = AifSettings(
        policy_len=int(get("policy_len")),
        control_fac_idx=tuple(int(f) for f in get("control_fac_idx")),
    )
    return Golden(
        name=name,
        model=model,
        settings=settings,
        policies=get("policies"),
        obs=get("obs"),
        prior=tuple(get(f"prior{f}") for f in range(n_fac)),
        qs=tuple(get(f"qs{f}") for f in range(n_fac)),
        q_pi=get("q_pi"),
        G=get("G"),
        action=get("action"),
        margin=get("margin"),
    )


def test_golden_file_loads_without_pickle_and_has_documented_keys() -> None:
    with np.load(GOLDEN, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}  # an object array would raise here
    assert all(a.dtype != object for a in arrays.values())
    assert GOLDEN.stat().st_size < 2_000_000

    prefixes = {key.split("/", 1)[0] for key in arrays}
    assert prefixes == {"meta", *SCENARIOS}

    for name in SCENARIOS:
        n_mod, n_fac = count_indexed(name, "A"), count_indexed(name, "B")
        assert n_mod >= 1
        assert n_fac >= 1
        expected = {
            *(f"{name}/{k}{m}" for k in "AC" for m in range(n_mod)),
            *(f"{name}/{k}{f}" for k in ("B", "D", "prior", "qs") for f in range(n_fac)),
            *(f"{name}/{k}" for k in ("policy_len", "control_fac_idx", "policies", "obs")),
            *(f"{name}/{k}" for k in ("q_pi", "G", "action", "margin", "fpi_iters")),
        }
        if name in WITH_E:
            expected.add(f"{name}/E")
        assert {key for key in arrays if key.startswith(f"{name}/")} == expected

        def get(key: str, name: str = name) -> np.ndarray:
            return arrays[f"{name}/{key}"]

        num_states = tuple(get(f"B{f}").shape[0] for f in range(n_fac))
        num_controls = tuple(get(f"B{f}").shape[2] for f in range(n_fac))
        num_obs = tuple(get(f"A{m}").shape[0] for m in range(n_mod))
        T = get("obs").shape[0]
        L = int(get("policy_len"))
        P = get("policies").shape[0]
        assert get("policy_len").shape == ()
        assert get("policies").shape == (P, L, n_fac)
        assert int(np.prod([num_controls[f] for f in get("control_fac_idx")])) ** L == P
        assert get("obs").shape == (T, n_mod)
        assert (get("obs") < np.array(num_obs)).all()
        assert (get("obs") >= 0).all()
        for m in range(n_mod):
            assert get(f"A{m}").shape == (num_obs[m], *num_states)
            assert get(f"C{m}").shape == (num_obs[m],)
        for f in range(n_fac):
            assert get(f"B{f}").shape == (num_states[f], num_states[f], num_controls[f])
            assert get(f"D{f}").shape == (num_states[f],)
            assert get(f"prior{f}").shape == (T, num_states[f])
            assert get(f"qs{f}").shape == (T, num_states[f])
        for key in ("q_pi", "G"):
            assert get(key).shape == (T, P)
        assert get("action").shape == (T, n_fac)
        assert get("margin").shape == (T, n_fac)
        assert get("fpi_iters").shape == (T,)
        for key in ("policy_len", "control_fac_idx", "policies", "obs", "action", "fpi_iters"):
            assert np.issubdtype(get(key).dtype, np.integer), key
        if name in WITH_E:
            assert get("E").shape == (P,)
        # The script refused near-ties (margins <= 1e-6): with posteriors equal to 1e-7 here, the
        # tie-aware action checks below (tol 1e-9) then accept pymdp's action and no other.
        assert (get("margin") > 1e-6).all()


def test_settings_defaults_match_pymdp() -> None:
    """The defaults the golden tests rely on are the settings pymdp's Agent ran with."""
    arrays = golden_arrays()
    assert str(arrays["meta/pymdp_version"]) == "0.0.7.1"
    settings = AifSettings()
    assert settings.gamma == float(arrays["meta/gamma"])
    assert settings.alpha == float(arrays["meta/alpha"])
    assert settings.num_iter == int(arrays["meta/num_iter"])
    assert settings.dF_tol == float(arrays["meta/dF_tol"])
    assert settings.use_utility == bool(arrays["meta/use_utility"])
    assert settings.use_states_info_gain == bool(arrays["meta/use_states_info_gain"])
    assert settings.action_selection == str(arrays["meta/action_selection"])
    assert settings.sampling_mode == str(arrays["meta/sampling_mode"])


@pytest.mark.parametrize("name", SCENARIOS)
def test_golden_follows_pymdp_update_rules(name: str) -> None:
    """The recorded steps obey the rules our agents implement, checked with plain numpy.

    Prior: ``D`` at step 0, then ``B[f][:, :, a_f] @ qs_f`` of the previous step. Policy
    posterior: ``softmax(gamma * G + ln(E + 1e-16))``. Action: per factor, the argmax of the
    action marginal, the summed ``q_pi`` of the policies whose first step takes that action.
    """
    g = load_scenario(name)
    gamma = float(golden_arrays()["meta/gamma"])
    P = len(g.policies)
    E = g.model.E if g.model.E is not None else np.full(P, 1.0 / P)
    for t in range(g.num_steps):
        for f, B_f in enumerate(g.model.B):
            expected_prior = (
                g.model.D[f] if t == 0 else B_f[:, :, g.action[t - 1, f]] @ g.qs[f][t - 1]
            )
            np.testing.assert_allclose(g.prior[f][t], expected_prior, rtol=1e-12, atol=0)
        logits = gamma * g.G[t] + np.log(E + 1e-16)
        q_pi = np.exp(logits - logits.max())
        np.testing.assert_allclose(g.q_pi[t], q_pi / q_pi.sum(), rtol=1e-10, atol=0)
        for f, num_controls in enumerate(g.model.num_controls):
            marginal = np.zeros(num_controls)
            np.add.at(marginal, g.policies[:, 0, f], g.q_pi[t])
            marginal /= marginal.sum()
            # Our sum of pymdp's q_pi, in another order: its action is our best to rounding.
            chosen = g.action[t, f : f + 1]
            assert agreement.choice_agrees(marginal[None], chosen, tol=1e-12).all(), (t, f)
            top = np.sort(marginal)[::-1]
            expected_margin = top[0] - top[1] if num_controls > 1 else np.inf
            np.testing.assert_allclose(g.margin[t, f], expected_margin, rtol=1e-9)


def first_action_onehot(g: Golden) -> list[np.ndarray]:
    """``(P, U_f)`` per factor: which first action each recorded policy takes."""
    return [np.eye(u)[g.policies[:, 0, f]] for f, u in enumerate(g.model.num_controls)]


@pytest.mark.parametrize("name", SCENARIOS)
def test_reference_agent_matches_pymdp(name: str) -> None:
    g = load_scenario(name)
    ref = ReferenceAgent(g.model, g.settings)
    np.testing.assert_array_equal(ref.policies, g.policies)
    for t in range(g.num_steps):
        where = f"{name} step {t}"
        qs = ref.infer_states([int(o) for o in g.obs[t]])
        assert len(qs) == len(g.qs)
        for f, qs_f in enumerate(qs):
            np.testing.assert_allclose(qs_f, g.qs[f][t], **REF_TOL, err_msg=f"{where}: qs{f}")
        q_pi, G = ref.infer_policies()
        np.testing.assert_allclose(q_pi, g.q_pi[t], **REF_TOL, err_msg=f"{where}: q_pi")
        np.testing.assert_allclose(G, g.G[t], **REF_TOL, err_msg=f"{where}: G")
        action = ref.sample_action()
        assert np.issubdtype(action.dtype, np.integer), f"{where}: action dtype {action.dtype}"
        # pymdp's action is optimal under our posterior and ours under pymdp's (to rounding).
        onehot = first_action_onehot(g)
        assert agreement.actions_agree(q_pi[None], onehot, g.action[t][None], tol=1e-9), where
        assert agreement.actions_agree(g.q_pi[t][None], onehot, action[None], tol=1e-9), where


@pytest.mark.parametrize("name", SCENARIOS)
def test_agent_group_matches_pymdp(name: str) -> None:
    g = load_scenario(name)
    group = AifAgentGroup(
        g.model, n_agents=N_COPIES, settings=g.settings, precision="float64", seed=0
    )

    def rows(x: np.ndarray) -> np.ndarray:
        return np.tile(x, (N_COPIES, 1))

    for t in range(g.num_steps):
        where = f"{name} step {t}"
        qs = group.infer_states(rows(g.obs[t]))
        assert len(qs) == len(g.qs)
        for f, qs_f in enumerate(qs):
            np.testing.assert_allclose(
                qs_f, rows(g.qs[f][t]), **GROUP_TOL, err_msg=f"{where}: qs{f}"
            )
        q_pi, G = group.infer_policies()
        np.testing.assert_allclose(q_pi, rows(g.q_pi[t]), **GROUP_TOL, err_msg=f"{where}: q_pi")
        np.testing.assert_allclose(G, rows(g.G[t]), **GROUP_TOL, err_msg=f"{where}: G")
        actions = group.sample_action()
        assert np.issubdtype(actions.dtype, np.integer), f"{where}: action dtype {actions.dtype}"
        onehot = first_action_onehot(g)
        ok = agreement.actions_agree(q_pi, onehot, rows(g.action[t]), tol=1e-9)
        assert ok.all(), f"{where}: pymdp's action is not optimal under the group's posterior"
        ok = agreement.actions_agree(rows(g.q_pi[t]), onehot, actions, tol=1e-9)
        assert ok.all(), f"{where}: the group's action is not optimal under pymdp's posterior"
