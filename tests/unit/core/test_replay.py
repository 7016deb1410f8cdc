"""``edge-agent replay``: a recorded episode through one agent, checked against the oracle; with
Dirichlet counts in the model the agent learns as pymdp 0.0.7.1's learning agent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif import agreement
from edge_agent.aif.model import GenerativeModel, load_npz, save_npz
from edge_agent.aif.planning import PlanningPolicy
from edge_agent.aif.reference import ReferenceAgent
from edge_agent.aif.settings import AifSettings
from edge_agent.cli import main
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.sim.gridworld import GridWorldEnv, gridworld_model
from edge_agent.sim.registry import make_env
from tests.support.pymdp_learning_golden import (
    BELIEF_TOL,
    COUNTS_TOL,
    SCENARIOS,
    golden,
    indexed,
)


def make_model(rng: np.random.Generator) -> GenerativeModel:
    A = [np.moveaxis(rng.dirichlet(np.ones(4), size=(3, 2)), -1, 0), np.full((2, 3, 2), 0.5)]
    B = [np.moveaxis(rng.dirichlet(np.ones(3), size=(3, 2)), -1, 0), np.eye(2)[:, :, None]]
    return GenerativeModel.from_arrays(A, B, [rng.normal(size=4), np.zeros(2)], None)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, GenerativeModel, dict[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    model = make_model(rng)
    model_path = tmp_path / "model.npz"
    save_npz(model, model_path)
    T = 12
    rec = {
        "obs": np.stack([rng.integers(0, 4, T), rng.integers(0, 2, T)], axis=1),
        "actions": np.stack([rng.integers(0, 2, T), np.zeros(T, dtype=int)], axis=1),
        "trial_start": np.isin(np.arange(T), [0, 5]),
    }
    rec_path = tmp_path / "rec.npz"
    np.savez(rec_path, **rec)
    return model_path, rec_path, model, rec


@pytest.mark.parametrize("policy_len", [1, 2])
def test_replay_matches_reference_driven_by_recorded_actions(
    files: tuple[Path, Path, GenerativeModel, dict[str, np.ndarray]],
    tmp_path: Path,
    policy_len: int,
) -> None:
    model_path, rec_path, _, rec = files
    out_path = tmp_path / "out.npz"
    code = main(
        [
            "replay",
            str(model_path),
            "--recording",
            str(rec_path),
            "--out",
            str(out_path),
            "--policy-len",
            str(policy_len),
        ]
    )
    assert code == 0
    out = np.load(out_path, allow_pickle=False)
    ref = ReferenceAgent(load_npz(model_path), AifSettings(policy_len=policy_len))
    np.testing.assert_array_equal(out["policies"], ref.policies)
    for t in range(len(rec["obs"])):
        if t > 0 and rec["trial_start"][t]:
            ref.reset()
        qs = ref.infer_states(rec["obs"][t])
        q_pi, _ = ref.infer_policies()
        chosen = ref.sample_action()
        for f, q in enumerate(qs):
            np.testing.assert_allclose(out[f"qs{f}"][t], q, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(out["q_pi"][t], q_pi, rtol=1e-9, atol=1e-12)
        # The replay's choice is optimal under the reference posterior and vice versa.
        onehot = [np.eye(u)[ref.policies[:, 0, f]] for f, u in enumerate(ref.model.num_controls)]
        got = out["chosen_action"][t][None]
        assert agreement.actions_agree(q_pi[None], onehot, got, tol=1e-9).all()
        assert agreement.actions_agree(out["q_pi"][t][None], onehot, chosen[None], tol=1e-9).all()
        ref.action = rec["actions"][t].astype(np.int64)  # the recorded action drives the prior


def test_replay_int8_is_close_to_float(
    files: tuple[Path, Path, GenerativeModel, dict[str, np.ndarray]],
    tmp_path: Path,
) -> None:
    model_path, rec_path, _, _ = files
    for precision in ("float64", "int8"):
        assert (
            main(
                [
                    "replay",
                    str(model_path),
                    "--recording",
                    str(rec_path),
                    "--out",
                    str(tmp_path / f"{precision}.npz"),
                    "--precision",
                    precision,
                ]
            )
            == 0
        )
    f64 = np.load(tmp_path / "float64.npz")
    i8 = np.load(tmp_path / "int8.npz")
    assert np.abs(f64["qs0"] - i8["qs0"]).max() < 0.02
    assert np.abs(f64["q_pi"] - i8["q_pi"]).max() < 0.05


def test_bad_recordings_are_refused_with_the_reason(
    files: tuple[Path, Path, GenerativeModel, dict[str, np.ndarray]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_path, _, _, rec = files
    cases = {
        "missing": ({"obs": rec["obs"]}, "missing array 'actions'"),
        "shape": ({**rec, "obs": rec["obs"][:, :1]}, "obs has shape (12, 1), expected (T, 2)"),
        "range": ({**rec, "obs": rec["obs"] + 10}, "obs[:, 0] outside [0, 4)"),
        "action": ({**rec, "actions": rec["actions"] + 5}, "actions[:, 0] outside [0, 2)"),
        "float": ({**rec, "obs": rec["obs"].astype(float)}, "obs must be integers"),
    }
    for name, (arrays, message) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        code = main(
            ["replay", str(model_path), "--recording", str(path), "--out", str(tmp_path / "o.npz")]
        )
        assert code == 2, name
        assert message in capsys.readouterr().err, name
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, obs=np.array([{"a": 1}], dtype=object), actions=rec["actions"])
    assert (
        main(
            [
                "replay",
                str(model_path),
                "--recording",
                str(pickled),
                "--out",
                str(tmp_path / "o.npz"),
            ]
        )
        == 2
    )
    assert "not a plain-array" in capsys.readouterr().err


def test_replay_reports_ties_on_a_symmetric_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On the grid two moves often tie: replay marks those steps, counts a recorded action that
    is one of the tied optima as optimal, and a recorded action the agent rates badly as not."""
    model = gridworld_model(4, 4)
    model_path = tmp_path / "grid.npz"
    save_npz(model, model_path)
    env = GridWorldEnv(1, height=4, width=4, seed=3)
    obs = [env.reset()[0].copy()]
    T = 12
    group = AifAgentGroup(model, 1, precision="float64")
    taken = []
    for t in range(T):
        a = group.step(obs[-1][None]).copy()
        if t == T - 1:
            a[0, 0] = int(np.argmin(group.q_pi[0]))  # a move the agent rates worst
        taken.append(a[0])
        obs.append(env.step(a)[0].copy())
    rec = {"obs": np.array(obs[:T]), "actions": np.array(taken),
           "trial_start": np.zeros(T, dtype=bool)}
    np.savez(tmp_path / "rec.npz", **rec)
    assert main(["replay", str(model_path), "--recording", str(tmp_path / "rec.npz"),
                 "--out", str(tmp_path / "out.npz")]) == 0
    out = np.load(tmp_path / "out.npz")
    onehot = [np.eye(5)[out["policies"][:, 0, 0]]]
    expected_ties = agreement.count_ties(out["q_pi"], onehot)
    np.testing.assert_array_equal(out["tied"], expected_ties)
    assert 0 < int(out["tied"].sum()) < T
    assert (out["recorded_shortfall"][:-1] <= agreement.ROUNDING_TOL).all()
    assert out["recorded_shortfall"][-1] > 0.01
    text = capsys.readouterr().out
    assert f"optimal for the agent at {T - 1} of {T} steps" in text
    assert f"{int(out['tied'].sum())} of {T} steps had tied actions" in text


def test_replay_counts_the_other_tied_move_as_optimal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recording made by an implementation that breaks ties the other way (pymdp's argmax on
    its own rounding noise): at every tied step the recorded move is the last of the equally
    good ones, not the agent's first. Replay says the recorded action was optimal at every
    step, and that the agent's own argmax differs exactly at the tied steps (the agent on
    numpy, as replay's: the compiled tick may break a tie of the recording the other way)."""
    monkeypatch.setenv(NATIVE_ENV, "0")
    model = gridworld_model(5, 5)
    model_path = tmp_path / "grid.npz"
    save_npz(model, model_path)
    env = GridWorldEnv(1, height=5, width=5, seed=1)
    obs = [env.reset()[0].copy()]
    T = 16
    group = AifAgentGroup(model, 1, precision="float64")
    onehot = group.cm.tree.first_action_onehot
    taken, switched = [], []
    for _ in range(T):
        own = group.step(obs[-1][None]).copy()
        marginal = agreement.action_marginals(group.q_pi, onehot)[0][0]
        optima = np.flatnonzero(marginal >= marginal.max() - 1e-9)
        a = np.array([[optima[-1]]])  # the other end of the tie
        group.set_action(a)
        taken.append(a[0])
        switched.append(bool(a[0, 0] != own[0, 0]))
        obs.append(env.step(a)[0].copy())
    assert 0 < sum(switched) < T  # the episode has ties broken the other way, and plain steps
    np.savez(tmp_path / "rec.npz", obs=np.array(obs[:T]), actions=np.array(taken))
    assert main(["replay", str(model_path), "--recording", str(tmp_path / "rec.npz"),
                 "--out", str(tmp_path / "out.npz")]) == 0
    out = np.load(tmp_path / "out.npz")
    same = (out["chosen_action"] == np.array(taken)).all(axis=1)
    np.testing.assert_array_equal(~same, switched)
    assert out["tied"][~same].all()
    assert (out["recorded_shortfall"] <= agreement.ROUNDING_TOL).all()
    text = capsys.readouterr().out
    assert (f"optimal for the agent at {T} of {T} steps (ties count; the agent's own argmax "
            f"equals it at {T - sum(switched)})") in text
    assert f"{int(out['tied'].sum())} of {T} steps had tied actions" in text


def test_replay_takes_a_bundle_as_the_device_runs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``replay`` on a bundle .tar once said it 'contains pickled (object) data': it now runs the
    bundle's int8 model with the bundle's settings, and checks its signature when asked."""
    from edge_agent_host.converter.aif.options import AifOptions
    from edge_agent_host.converter.common import ConvertOptions
    from edge_agent_host.converter.formats.aif import convert_aif
    from edge_agent_host.keys import generate_keypair, load_signing_key

    model = gridworld_model(4, 4)
    keys = tmp_path / "keys"
    pair = generate_keypair(keys, "fleet")
    report = convert_aif(
        ConvertOptions(
            out=tmp_path / "grid.tar", name="grid",
            sign_key=load_signing_key(pair.private_path),
        ),
        AifOptions(model=model, rollouts=10, steps=5, settings=AifSettings(policy_len=2)),
    )
    assert report.bundle is not None
    unsigned = convert_aif(
        ConvertOptions(out=tmp_path / "plain.tar", name="plain"),
        AifOptions(model=model, rollouts=10, steps=5),
    )
    assert unsigned.bundle is not None
    env = GridWorldEnv(1, height=4, width=4, seed=1)
    obs = np.array([env.reset()[0]] * 6)
    rec = {"obs": obs, "actions": np.zeros((6, 1), dtype=np.int64)}
    np.savez(tmp_path / "rec.npz", **rec)
    args = ["--recording", str(tmp_path / "rec.npz"), "--out", str(tmp_path / "out.npz")]
    assert main(["replay", str(tmp_path / "grid.tar"), *args, "--trusted-keys", str(keys)]) == 0
    text = capsys.readouterr().out
    assert f"replayed bundle grid 1.0.0, int8, signed by {pair.key_id}" in text
    assert "policy_len 2" in text
    out = np.load(tmp_path / "out.npz")
    assert out["policies"].shape[1] == 2  # the bundle's settings
    assert main(["replay", str(tmp_path / "plain.tar"), *args]) == 0
    assert "signature not checked" in capsys.readouterr().out
    assert main(["replay", str(tmp_path / "plain.tar"), *args, "--trusted-keys", str(keys)]) == 2
    assert "signature" in capsys.readouterr().err


def test_replay_says_what_it_takes_instead_of_pickled_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """numpy calls any file that is not .npz 'pickled (object) data'; replay names what the
    file is and what it takes, as the model and as the recording, in one line each."""
    from edge_agent_host.converter.aif.options import AifOptions
    from edge_agent_host.converter.common import ConvertOptions
    from edge_agent_host.converter.formats.aif import convert_aif

    bundle = tmp_path / "grid.tar"
    assert convert_aif(
        ConvertOptions(out=bundle, name="grid"),
        AifOptions(model=gridworld_model(4, 4), rollouts=10, steps=5),
    ).bundle is not None
    model = tmp_path / "model.npz"
    save_npz(gridworld_model(4, 4), model)
    env = GridWorldEnv(1, height=4, width=4, seed=1)
    rec = tmp_path / "rec.npz"
    np.savez(rec, obs=np.array([env.reset()[0]] * 3), actions=np.zeros((3, 1), dtype=np.int64))
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    (tmp_path / "empty").mkdir()
    out = ["--out", str(tmp_path / "out.npz")]
    cases = {
        (text, rec): f"{text}: neither a .npz nor a bundle; replay takes a float .npz model",
        (tmp_path / "empty", rec): f"{tmp_path / 'empty'}: a directory without manifest.json, "
        "not a bundle",
        (model, bundle): f"{bundle}: a bundle or directory, not a recording (a bundle is the "
        "MODEL argument); --recording takes REC.npz",
        (model, text): f"{text}: not a .npz recording; --recording takes REC.npz",
    }
    for (model_arg, rec_arg), message in cases.items():
        assert main(["replay", str(model_arg), "--recording", str(rec_arg), *out]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"edge-agent replay: {message}"), err
        assert err.count("\n") == 1, err
        assert "pickle" not in err
    assert main(["replay", str(bundle), "--recording", str(rec), *out]) == 0
    assert "replayed bundle grid" in capsys.readouterr().out


# ------------------------------------------------------------------------------ planning policies
def _record_under_policy(
    world: str, policy_len: int, policy: PlanningPolicy, n: int, steps: int
) -> tuple[GenerativeModel, dict[str, np.ndarray]]:
    """A group of ``n`` int8 agents stepped through its world under ``policy``: per step and
    agent its outcomes, actions, trial starts, the q_pi it held and its committed plans."""
    env = make_env(world, n, seed=7)
    group = AifAgentGroup(
        env.model, n, settings=AifSettings(policy_len=policy_len), planning=policy, block_size=4
    )
    keys = ("obs", "actions", "trial_start", "q_pi", "planned", "plan_policy", "plan_left",
            "plan_age", "deferred")
    rows: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    obs = env.reset()
    for t in range(steps):
        start = env.episode_start.copy() if t else np.zeros(n, dtype=bool)
        if start.any():
            group.reset(start)
        rows["obs"].append(obs.copy())
        rows["trial_start"].append(start)
        actions = group.step(obs).copy()
        rows["actions"].append(actions)
        rows["q_pi"].append(group.q_pi.copy())
        rows["planned"].append(group.plans.plan_age == 0)
        for k in ("plan_policy", "plan_left", "plan_age", "deferred"):
            rows[k].append(getattr(group.plans, k).copy())
        obs = env.step(actions)
    return env.model, {k: np.stack(v, axis=1) for k, v in rows.items()}  # (n, T, ...)


@pytest.mark.parametrize(
    ("world", "policy_len", "flags"),
    [
        ("grid10", 2, {"every": 3, "belief_change": 0.3}),
        ("grid10", 1, {"every": 2}),
        ("tmaze", 1, {"every": 4, "belief_change": 0.1}),
        ("explorer", 3, {"every": 8, "belief_change": 0.3, "max_agents": 2}),
        ("grid10", 2, {"every": 3, "surprise": 0.5}),
        ("explorer", 1, {"every": 4, "surprise": 1.0}),
    ],
)
def test_a_run_under_a_policy_replays_to_its_actions_and_committed_plans(
    tmp_path: Path, world: str, policy_len: int, flags: dict[str, float]
) -> None:
    """Each agent of a run under a planning policy, replayed alone with the same policy
    (``--every``.. as [groups.planning]): it plans at the same steps, its committed plans are
    the run's (as a snapshot carries them), and its actions are the run's, compared as actions
    optimal under the other's posterior where a tie leaves the choice to rounding. Under a
    budget, which agents the group served is the run's choice: the recording carries it
    (``planned``), and the lone agent plans exactly then."""
    n, steps = 6, 30
    policy = PlanningPolicy(**flags)  # type: ignore[arg-type]
    model, run = _record_under_policy(world, policy_len, policy, n, steps)
    model_path = tmp_path / "model.npz"
    save_npz(model, model_path)
    options = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    for agent in range(n):
        rec = tmp_path / f"rec{agent}.npz"
        budget = {"planned": run["planned"][agent]} if policy.budgeted else {}
        np.savez(rec, obs=run["obs"][agent], actions=run["actions"][agent],
                 trial_start=run["trial_start"][agent], **budget)
        out_path = tmp_path / f"out{agent}.npz"
        assert main(["replay", str(model_path), "--recording", str(rec), "--out", str(out_path),
                     "--policy-len", str(policy_len), "--precision", "int8", *options]) == 0
        out = np.load(out_path)
        np.testing.assert_array_equal(out["planned"], run["planned"][agent])
        np.testing.assert_array_equal(out["plan_left"], run["plan_left"][agent])
        np.testing.assert_array_equal(out["plan_age"], run["plan_age"][agent])
        np.testing.assert_array_equal(out["deferred"], run["deferred"][agent])
        onehot = [np.eye(u)[out["policies"][:, 0, f]] for f, u in enumerate(model.num_controls)]
        planned = out["planned"]
        assert 0 < planned.sum() < steps  # the policy chose when to plan
        assert planned[0] or policy.budgeted  # a first plan, unless the budget put it off
        # Where it planned: each side's action is optimal under the other's posterior, and so
        # is each side's committed policy.
        rec_q, own_q = run["q_pi"][agent][planned], out["q_pi"][planned]
        assert agreement.actions_agree(rec_q, onehot, out["chosen_action"][planned]).all()
        assert agreement.actions_agree(own_q, onehot, run["actions"][agent][planned]).all()
        for q, p in ((rec_q, out["plan_policy"][planned]),
                     (own_q, run["plan_policy"][agent][planned])):
            best = q.max(axis=1) - agreement.ROUNDING_TOL
            assert (q[np.arange(len(p)), p] >= best).all()
        # The same committed plan gives the same actions until the next planning.
        same_plan = out["plan_policy"] == run["plan_policy"][agent]
        same_action = (out["chosen_action"] == run["actions"][agent]).all(axis=1)
        assert same_action[same_plan & ~planned].all()
        agreed = out["recorded_shortfall"] <= agreement.ROUNDING_TOL
        assert (agreed == (same_action | planned)).all()
    assert run["deferred"].any() == policy.budgeted  # the budget did put agents off


def test_replay_without_planning_flags_writes_what_it_wrote_before(
    files: tuple[Path, Path, GenerativeModel, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    """The every-tick default is the replay of before: the same arrays, bit for bit, whether
    the policy is left out or given as ``--every 1``."""
    model_path, rec_path, _, _ = files
    common = ["replay", str(model_path), "--recording", str(rec_path), "--policy-len", "2"]
    assert main([*common, "--out", str(tmp_path / "plain.npz")]) == 0
    assert main([*common, "--out", str(tmp_path / "every1.npz"), "--every", "1"]) == 0
    plain, every1 = np.load(tmp_path / "plain.npz"), np.load(tmp_path / "every1.npz")
    assert sorted(plain.files) == sorted(
        ["qs0", "qs1", "q_pi", "chosen_action", "policies", "tied", "recorded_shortfall"]
    )
    assert sorted(every1.files) == sorted(plain.files)
    for k in plain.files:
        np.testing.assert_array_equal(plain[k], every1[k], err_msg=k)


def test_replay_refuses_a_bad_policy_in_one_line_naming_the_flag(
    files: tuple[Path, Path, GenerativeModel, dict[str, np.ndarray]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_path, rec_path, _, _ = files
    common = ["replay", str(model_path), "--recording", str(rec_path), "--out",
              str(tmp_path / "o.npz")]
    cases = {
        ("--belief-change", "0.2"): "edge-agent replay: --belief-change: needs every = 0 or "
        "every > 1",
        ("--every", "0"): "edge-agent replay: --every: 0 (never for age) needs belief_change",
        ("--deadline-ms", "0"): "edge-agent replay: --deadline-ms: must be > 0",
    }
    for args, message in cases.items():
        assert main([*common, *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith(message), err
        assert err.count("\n") == 1, err
    assert not (tmp_path / "o.npz").exists()
    # A run's planned steps without its policy: the every-tick agent would plan at all.
    rec = dict(np.load(rec_path))
    steps = len(rec["obs"])
    np.savez(tmp_path / "planned.npz", **rec, planned=np.arange(steps) % 2 == 0)
    assert main([*common[:3], str(tmp_path / "planned.npz"), *common[4:]]) == 2
    assert capsys.readouterr().err == (
        f"edge-agent replay: the recording planned at {(steps + 1) // 2} of {steps} steps: "
        "replay it with the run's planning policy (--every, --belief-change, ...)\n"
    )
    np.savez(tmp_path / "planned.npz", **rec, planned=np.ones(steps, dtype=np.int8))
    assert main([*common[:3], str(tmp_path / "planned.npz"), *common[4:], "--every", "2"]) == 2
    assert f"planned has shape ({steps},) and dtype int8, expected ({steps},) bool" in (
        capsys.readouterr().err
    )


def test_replay_takes_a_policy_or_learning_not_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = Path(__file__).resolve().parents[3] / "examples"
    code = main(["replay", str(examples / "tmaze-learning.npz"), "--recording",
                 str(examples / "tmaze-reversal-episode.npz"), "--out", str(tmp_path / "o.npz"),
                 "--every", "2", "--belief-change", "0.1"])
    assert code == 2
    assert capsys.readouterr().err == (
        "edge-agent replay: replay takes a planning policy or learning (counts in the model), "
        "not both (docs/planning.md, Limits)\n"
    )


def golden_files(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """The scenario as a user has it: a model file with pymdp's keys (pA0.. included) and a
    recording of pymdp's own observations, actions and trial starts."""
    g = golden()
    keep = ("A", "B", "C", "D", "pA", "pB", "pD")
    model = {
        leaf: g[key] for key in g if key.startswith(f"{name}/")
        for leaf in [key.split("/", 1)[1]]
        if leaf.rstrip("0123456789") in keep
    }
    np.savez(tmp_path / "model.npz", **model)
    np.savez(tmp_path / "rec.npz", obs=g[f"{name}/obs"], actions=g[f"{name}/action"],
             trial_start=g[f"{name}/trial_start"])
    return tmp_path / "model.npz", tmp_path / "rec.npz"


def rate_flags(name: str) -> list[str]:
    g = golden()
    return [arg for key in ("lr_pA", "lr_pB", "lr_pD")
            for arg in (f"--{key.replace('_', '-')}", str(float(g[f"{name}/{key}"])))]


@pytest.mark.parametrize("name", SCENARIOS)
def test_replay_learns_as_pymdp(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model, rec = golden_files(tmp_path, name)
    out = tmp_path / "out.npz"
    novelty = ["--param-info-gain"] if golden()[f"{name}/use_param_info_gain"] else []
    assert main(["replay", str(model), "--recording", str(rec), "--out", str(out),
                 *rate_flags(name), *novelty]) == 0
    assert "learned p" in capsys.readouterr().out
    g = golden()
    with np.load(out) as got:
        np.testing.assert_allclose(got["q_pi"], g[f"{name}/q_pi"], **BELIEF_TOL)
        for f, qs in indexed(name, "qs").items():
            np.testing.assert_allclose(got[f"qs{f}"], qs, **BELIEF_TOL)
        for key in ("pA", "pB", "pD"):
            for i, want in indexed(name, f"final_{key}").items():
                np.testing.assert_allclose(got[f"{key}{i}"], want, **COUNTS_TOL)


def test_replay_int8_learns_within_the_stated_bound(tmp_path: Path) -> None:
    """int8 tables give float32 posteriors from quantized likelihoods: what they learn differs
    from the float64 path's by at most 0.5 % of the learned mass, L1 (0.07 % measured;
    docs/learning.md states the bound)."""
    name = "learn_single"
    model, rec = golden_files(tmp_path, name)
    outs = {}
    for precision in ("float64", "int8"):
        outs[precision] = tmp_path / f"{precision}.npz"
        assert main(["replay", str(model), "--recording", str(rec), "--out",
                     str(outs[precision]), "--precision", precision, *rate_flags(name)]) == 0
    with np.load(outs["float64"]) as exact, np.load(outs["int8"]) as int8:
        for key in ("pA0", "pA1", "pB0", "pD0"):
            with np.load(model) as prior:
                learned = np.abs(exact[key] - prior[key]).sum()
            assert np.abs(int8[key] - exact[key]).sum() <= 0.005 * learned, key


def test_forgetting_pulls_the_counts_back_toward_the_prior(tmp_path: Path) -> None:
    name = "learn_single"
    model, rec = golden_files(tmp_path, name)
    spread = {}
    for forgetting in ("0", "0.5"):
        out = tmp_path / f"f{forgetting}.npz"
        assert main(["replay", str(model), "--recording", str(rec), "--out", str(out),
                     "--forgetting", forgetting]) == 0
        with np.load(out) as got, np.load(model) as prior:
            spread[forgetting] = float(np.abs(got["pA0"] - prior["pA0"]).sum())
    # Every update keeps half of what was learned: the learned mass is bounded by ~2 updates.
    assert spread["0.5"] < 0.5 * spread["0"]
    assert spread["0.5"] > 0


def test_replay_learning_options_and_counts_are_checked_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "learn_single"
    model, rec = golden_files(tmp_path, name)
    out = str(tmp_path / "o.npz")
    plain = tmp_path / "plain.npz"
    with np.load(model) as arrays:
        np.savez(plain, **{k: arrays[k] for k in arrays.files if not k.startswith("p")})
        bad = dict(arrays)
    cases = [
        ([str(plain), "--forgetting", "0.2"], "has no Dirichlet counts"),
        ([str(model), "--forgetting", "1.5"], "forgetting = 1.5"),
        ([str(model), "--lr-pA", "-1"], "lr_pA = -1.0"),
        ([str(plain), "--param-info-gain"], "has no Dirichlet counts"),
    ]
    for pA0, message in ((-bad["pA0"], "negative counts"), (bad["pA0"][:2], "has shape")):
        path = tmp_path / f"bad{len(cases)}.npz"
        np.savez(path, **{**bad, "pA0": pA0})
        cases.append(([str(path)], message))
    for args, message in cases:
        assert main(["replay", args[0], "--recording", str(rec), "--out", out, *args[1:]]) == 2
        err = capsys.readouterr().err
        assert message in err, (args, err)
        assert "Traceback" not in err
        assert err.count("\n") == 1, err
