"""``edge-agent-host convert aif``: model formats, the rollout report, thresholds, signing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_agent.aif.model import GenerativeModel, save_npz
from edge_agent.aif.quant import SCHEME, QuantizedModel, quantize_model
from edge_agent.aif.reference import ReferenceAgent
from edge_agent.aif.settings import AifSettings, settings_from_json
from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import BundleError, ModelError, SignatureError
from edge_agent.sim import BatchEnv
from edge_agent.sim.gridworld import gridworld_model
from edge_agent.sim.tmaze import tmaze_model
from edge_agent_host.cli import main
from edge_agent_host.converter.aif.measure import aif_report_data, compare_rollouts
from edge_agent_host.converter.aif.options import TIE_TOLERANCE, AifOptions, AifThresholds
from edge_agent_host.converter.aif.source import (
    load_aif_model,
    load_json_model,
    model_from_pymdp,
    settings_from_pymdp,
)
from edge_agent_host.converter.common import ConvertOptions
from edge_agent_host.converter.formats.aif import convert_aif, convert_pymdp
from edge_agent_host.converter.report import ConversionReport, progress, progress_enabled
from edge_agent_host.keys import generate_keypair


def dense_model(seed: int = 0) -> GenerativeModel:
    """A small model with dense, uneven tables: int8 changes its beliefs measurably."""
    rng = np.random.default_rng(seed)

    def dist(*shape: int) -> np.ndarray:
        p = rng.dirichlet(np.ones(shape[0]) * 0.5, size=shape[1:])
        return np.moveaxis(p, -1, 0)

    return GenerativeModel.from_arrays(
        [dist(5, 4)], [dist(4, 4, 3)], [rng.normal(size=5)], [dist(4)]
    )


def model_json(model: GenerativeModel) -> dict[str, object]:
    return {
        "A": [a.tolist() for a in model.A],
        "B": [b.tolist() for b in model.B],
        "C": [c.tolist() for c in model.C],
        "D": [d.tolist() for d in model.D],
    }


def same_model(a: GenerativeModel, b: GenerativeModel) -> bool:
    pairs = zip((*a.A, *a.B, *a.C, *a.D), (*b.A, *b.B, *b.C, *b.D), strict=True)
    return all(np.array_equal(x, y) for x, y in pairs)


# -- reading models --------------------------------------------------------------------------------
def test_json_and_npz_give_the_same_model(tmp_path: Path) -> None:
    model = tmaze_model()
    (tmp_path / "m.json").write_text(json.dumps(model_json(model)))
    save_npz(model, tmp_path / "m.npz")
    assert same_model(load_aif_model(tmp_path / "m.json"), model)
    assert same_model(load_aif_model(tmp_path / "m.npz"), model)
    with pytest.raises(ModelError, match=r"unknown model format '.txt'"):
        load_aif_model(tmp_path / "m.txt")


def test_json_layout_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"A": [[[1.0]]],\n "B": }')
    with pytest.raises(ModelError, match=r"m.json:2:7: invalid JSON"):
        load_json_model(path)
    path.write_text(json.dumps({"A": [[[1.0]]], "B": [[[[1.0]]]], "F": 1}))
    with pytest.raises(ModelError, match=r"unexpected key\(s\) \['F'\]"):
        load_json_model(path)
    path.write_text(json.dumps({"A": [[[1.0]]]}))
    with pytest.raises(ModelError, match=r"missing key 'B'"):
        load_json_model(path)
    path.write_text(json.dumps({"A": [[[0.5, 0.5], [0.5]]], "B": [[[[1.0]]]]}))
    with pytest.raises(ModelError, match=r"A\[0\] is not a rectangular numeric array"):
        load_json_model(path)
    path.write_text(json.dumps({"A": [[[0.7], [0.7]]], "B": [[[1.0]]]}))
    with pytest.raises(ModelError, match=r"A0 is not normalised"):
        load_json_model(path)
    path.write_text(json.dumps({"A": [[0.5, 0.5]], "B": [[[1.0]]], "E": "x"}))
    with pytest.raises(ModelError, match=r"E is not a flat numeric list"):
        load_json_model(path)


def test_pymdp_agents_are_read_by_duck_typing(tmp_path: Path) -> None:
    model = tmaze_model()

    def obj_array(arrays: tuple[np.ndarray, ...]) -> np.ndarray:
        out = np.empty(len(arrays), dtype=object)
        for i, a in enumerate(arrays):
            out[i] = a
        return out

    agent = SimpleNamespace(
        A=obj_array(model.A), B=obj_array(model.B), C=obj_array(model.C), D=obj_array(model.D),
        E=np.full(4, 0.25), policy_len=1, gamma=np.float64(8.0), alpha=16.0, use_utility=True,
        use_states_info_gain=False, action_selection="stochastic", sampling_mode="full",
        control_fac_idx=[0], inference_params={"num_iter": 5, "dF_tol": 0.01},
    )
    read = model_from_pymdp(agent)
    assert same_model(read, model)
    assert read.E is not None
    assert np.allclose(read.E, 0.25)
    settings = settings_from_pymdp(agent)
    assert settings == AifSettings(
        policy_len=1, gamma=8.0, alpha=16.0, use_states_info_gain=False,
        action_selection="stochastic", sampling_mode="full", control_fac_idx=(0,), num_iter=5,
        dF_tol=0.01,
    )
    report = convert_pymdp(
        agent,
        ConvertOptions(out=tmp_path / "pymdp", name="tmaze"),
        AifOptions(rollouts=10, steps=3),
    )
    assert report.source == "pymdp agent SimpleNamespace"
    assert report.bundle is not None
    bundle = load_bundle(tmp_path / "pymdp", trusted_keys=None, require_signature=False)
    assert bundle.manifest.aif is not None
    assert settings_from_json(bundle.manifest.aif.settings) == settings
    with pytest.raises(ModelError, match=r"needs .A and .B"):
        model_from_pymdp(SimpleNamespace(A=agent.A))
    with pytest.raises(ModelError, match=r"settings not supported"):
        settings_from_pymdp(SimpleNamespace(gamma=-1.0))


def test_pymdp_1x_jax_agents_are_read_by_duck_typing(tmp_path: Path) -> None:
    """pymdp 1.x keeps every array with a leading batch axis, ``A[m]`` over only the factors in
    ``A_dependencies[m]``, and its settings as (batched) arrays. A stand-in with exactly that
    layout (pymdp and JAX are not installed here: ``np.asarray`` is what reads a JAX array)."""
    model = tmaze_model()  # location (4) x context (2) states; A[m] over both factors
    batch = 3

    def batched(arrays: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        return [np.broadcast_to(a, (batch, *a.shape)).copy() for a in arrays]

    # Modality 0 (location) depends on the location factor only: keep just that slice.
    A = batched(model.A)
    A[0] = A[0][:, :, :, 0]
    agent = SimpleNamespace(
        A=A, B=batched(model.B), C=batched(model.C), D=batched(model.D),
        E=np.full((batch, 4), 0.25), batch_size=batch,
        A_dependencies=[[0], [0, 1], [0, 1]], B_dependencies=[[0], [1]],
        policy_len=1, gamma=np.full(batch, 8.0), alpha=np.full(batch, 16.0), num_iter=10,
        inference_algo="fpi", use_utility=True, use_states_info_gain=True,
        action_selection="deterministic", sampling_mode="marginal",
    )
    assert np.array_equal(model.A[0][:, :, 0], model.A[0][:, :, 1])  # the dependency is real
    read = model_from_pymdp(agent)
    assert same_model(read, model)
    settings = settings_from_pymdp(agent)
    # pymdp 1.x runs exactly num_iter fixed-point updates: no early stop on dF.
    assert settings == AifSettings(policy_len=1, gamma=8.0, alpha=16.0, num_iter=10, dF_tol=0.0)
    save_npz(read, tmp_path / "tmaze.npz")
    assert same_model(load_aif_model(tmp_path / "tmaze.npz"), model)
    # Refused with one line each: a batch of different models, coupled transitions, other
    # inference algorithms, per-agent settings.
    mixed = SimpleNamespace(**{**vars(agent), "D": [d.copy() for d in agent.D]})
    mixed.D[0][1] = np.roll(mixed.D[0][1], 1)
    with pytest.raises(ModelError, match=r"\.D\[0\] differs across its batch of 3"):
        model_from_pymdp(mixed)
    with pytest.raises(ModelError, match=r"B_dependencies .* couple factors"):
        model_from_pymdp(SimpleNamespace(**{**vars(agent), "B_dependencies": [[0, 1], [1]]}))
    with pytest.raises(ModelError, match=r"inference_algo 'mmp'"):
        settings_from_pymdp(SimpleNamespace(**{**vars(agent), "inference_algo": "mmp"}))
    with pytest.raises(ModelError, match=r"\.gamma = .* not one value"):
        settings_from_pymdp(SimpleNamespace(**{**vars(agent), "gamma": np.array([1.0, 2.0])}))


# -- the report against an independent computation -------------------------------------------------
def reference_rollouts(model: GenerativeModel, n: int, steps: int, seed: int) -> dict[str, float]:
    """The same experiment with the one-agent float64 oracle on the float and decoded tables."""
    decoded = quantize_model(model).dequantize()
    floats = [ReferenceAgent(model) for _ in range(n)]
    int8s = [ReferenceAgent(decoded) for _ in range(n)]
    world = BatchEnv(model, n, seed=seed)
    obs = world.reset().copy()
    kls, agree, tie_aware, q_pi = [], 0, 0, 0.0
    for _ in range(steps):
        actions = np.zeros((n, model.num_factors), dtype=np.int64)
        for i in range(n):
            actions[i] = floats[i].step(obs[i])
            own = int8s[i].step(obs[i])
            kl = 0.0
            for p, q in zip(floats[i].qs, int8s[i].qs, strict=True):
                kl += float(np.sum(p * (np.log(p + 1e-16) - np.log(q + 1e-16))))
            kls.append(max(kl, 0.0))
            agree += int(np.array_equal(own, actions[i]))
            assert floats[i].q_pi is not None
            # Tie-aware: the float agent's action marginal of the int8 action is near its best.
            ok = True
            for f, u in enumerate(model.num_controls):
                marginal = np.zeros(u)
                np.add.at(marginal, floats[i].policies[:, 0, f], floats[i].q_pi)
                ok &= bool(marginal.max() - marginal[own[f]] <= TIE_TOLERANCE * marginal.sum())
            tie_aware += int(ok)
            assert int8s[i].q_pi is not None
            q_pi = max(q_pi, float(np.abs(floats[i].q_pi - int8s[i].q_pi).max()))
            int8s[i].action = actions[i].copy()  # the int8 agent follows the float agent
        obs = world.step(actions).copy()
    return {"kl_mean": float(np.mean(kls)), "kl_max": float(np.max(kls)),
            "agreement": agree / (n * steps), "tie_aware": tie_aware / (n * steps), "q_pi": q_pi}


def test_rollout_numbers_match_an_independent_float64_computation() -> None:
    model = dense_model(1)
    report = compare_rollouts(model, quantize_model(model), AifSettings(), n_agents=12, steps=8,
                              seed=3)
    ref = reference_rollouts(model, 12, 8, seed=3)
    assert report["agent_steps"] == 96
    assert report["belief_kl"]["mean"] > 1e-7  # int8 measurably changes these beliefs
    assert report["belief_kl"]["mean"] == pytest.approx(ref["kl_mean"], rel=0.02)
    assert report["belief_kl"]["max"] == pytest.approx(ref["kl_max"], rel=0.02)
    assert report["action_agreement_exact"] == pytest.approx(ref["agreement"])
    assert report["action_agreement"] == pytest.approx(ref["tie_aware"])
    assert report["q_pi_max_abs_diff"] == pytest.approx(ref["q_pi"], rel=0.02, abs=1e-6)
    assert report["belief_kl"]["median"] <= report["belief_kl"]["p99"] <= report["belief_kl"]["max"]


def test_identical_models_agree_exactly() -> None:
    model = tmaze_model()
    report = compare_rollouts(model, quantize_model(model), AifSettings(policy_len=2),
                              n_agents=50, steps=6)
    assert report["action_agreement"] == 1.0
    assert report["belief_kl"]["max"] < 1e-9


# -- converting ------------------------------------------------------------------------------------
def test_convert_writes_a_bundle_the_device_loads(tmp_path: Path) -> None:
    model = dense_model(2)
    settings = AifSettings(policy_len=2, gamma=8.0)
    report = convert_aif(
        ConvertOptions(model=Path("dense.npz"), out=tmp_path / "m.tar", name="dense"),
        AifOptions(model=model, settings=settings, rollouts=20, steps=5),
    )
    assert report.passed
    assert report.bundle is not None
    bundle = load_bundle(tmp_path / "m.tar", trusted_keys=None, require_signature=False)
    spec = bundle.manifest.aif
    assert bundle.manifest.kind == "aif"
    assert spec is not None
    assert spec.quant_scheme == SCHEME
    assert AifSettings(**spec.settings) == settings
    loaded = QuantizedModel.from_arrays(bundle.aif_arrays())
    expected = quantize_model(model).to_arrays()
    assert set(loaded.to_arrays()) == set(expected)
    for name, array in loaded.to_arrays().items():
        np.testing.assert_array_equal(array, expected[name])
    # The device runs it; the recorded report is the one printed.
    group = AifAgentGroup(loaded, 4, settings=settings)
    assert group.step(np.zeros((4, 1), dtype=np.int64)).shape == (4, 1)
    recorded = bundle.manifest.quantization
    assert recorded["rollouts"] == report.data["rollouts"]
    assert recorded["size"]["int8_bytes"] == quantize_model(model).nbytes
    assert recorded["size"]["float64_bytes"] == sum(
        a.nbytes for a in (*model.A, *model.B, *model.C, *model.D)
    )
    assert report.bundle["nbytes"] == bundle.nbytes
    assert "latency_ms" not in recorded


def test_a_failed_check_writes_nothing_unless_forced(tmp_path: Path) -> None:
    model = dense_model(3)
    strict = AifThresholds(max_kl=0.0, min_action_agreement=0.5)
    report = convert_aif(
        ConvertOptions(out=tmp_path / "a", name="dense"),
        AifOptions(model=model, rollouts=10, steps=4, thresholds=strict),
    )
    assert not report.passed
    assert report.bundle is None
    assert not (tmp_path / "a").exists()
    failed = [c for c in report.checks if not c.passed]
    assert [c.option for c in failed] == ["--max-kl"]
    assert "FAILED" in report.render()
    assert "use --force" in report.render()
    forced = convert_aif(
        ConvertOptions(out=tmp_path / "a", name="dense", force=True),
        AifOptions(model=model, rollouts=10, steps=4, thresholds=strict),
    )
    assert forced.bundle is not None
    assert (tmp_path / "a" / "manifest.json").exists()


def test_cli_convert_signs_and_reports_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = generate_keypair(tmp_path / "keys", "release")
    path = tmp_path / "m.json"
    path.write_text(json.dumps(model_json(tmaze_model())))
    out = tmp_path / "tmaze.tar.gz"
    code = main(["convert", "aif", str(path), "--out", str(out), "--policy-len", "2",
                 "--rollouts", "30", "--steps", "6", "--sign", str(keys.private_path),
                 "--signer", "ci", "--json", "--quiet"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert printed["passed"] is True
    assert printed["kind"] == "aif"
    assert printed["bundle"]["key_id"] == keys.key_id
    assert printed["bundle"]["signer"] == "ci"
    assert printed["rollouts"]["agents"] == 30
    assert printed["rollouts"]["steps"] == 6
    bundle = load_bundle(out, trusted_keys=TrustedKeys.from_dir(tmp_path / "keys"))
    assert bundle.signature_verified
    assert bundle.key_id == keys.key_id
    assert bundle.manifest.name == "m"
    assert bundle.sha256 == printed["bundle"]["sha256"]
    other = generate_keypair(tmp_path / "other", "other")
    with pytest.raises(SignatureError, match=r"untrusted key"):
        load_bundle(out, trusted_keys=TrustedKeys([load_public(other.public_path)]))
    assert main(["verify", str(out), "--trusted", str(tmp_path / "keys")]) == 0


def load_public(path: Path):  # type: ignore[no-untyped-def]
    from edge_agent.bundle.signing import load_public_key

    return load_public_key(path)


def test_cli_threshold_failure_exits_1_with_the_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dense.npz"
    save_npz(dense_model(4), path)
    code = main(["convert", "aif", str(path), "--out", str(tmp_path / "b"), "--max-kl", "0",
                 "--rollouts", "10", "--steps", "3"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "belief KL mean" in printed
    assert "required <= 0, --max-kl): FAILED" in printed
    assert not (tmp_path / "b").exists()
    code = main(["convert", "aif", str(path), "--out", str(tmp_path / "b"), "--max-kl", "0",
                 "--rollouts", "10", "--steps", "3", "--force"])
    assert code == 0
    assert (tmp_path / "b" / "manifest.json").exists()


def test_cli_refuses_bad_settings_and_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"A": [[[0.7], [0.7]]], "B": [[[1.0]]]}))
    assert main(["convert", "aif", str(path), "--out", str(tmp_path / "x")]) == 1
    assert "A0 is not normalised" in capsys.readouterr().err
    save_npz(tmaze_model(), tmp_path / "t.npz")
    assert main(["convert", "aif", str(tmp_path / "t.npz"), "--out", str(tmp_path / "y"),
                 "--gamma", "-1"]) == 1
    assert "invalid agent settings: gamma" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        main(["convert", "aif", str(tmp_path / "t.npz"), "--out", str(tmp_path / "z"),
              "--name", "Bad Name"])
    assert err.value.code == 2


def test_progress_bars_only_for_a_tty(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert progress_enabled(quiet=False) is False  # pytest's stderr is not a terminal
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert progress_enabled(quiet=False) is True
    assert progress_enabled(quiet=True) is False
    assert list(progress(range(3), total=3, desc="x", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    assert list(progress(range(3), total=3, desc="rollouts", enabled=True)) == [0, 1, 2]
    assert "rollouts" in capsys.readouterr().err


def test_an_occupied_output_fails_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "b.tar").write_bytes(b"")
    for out in (tmp_path / "full", tmp_path / "b.tar"):
        with pytest.raises(BundleError, match=r"(already exists|not an empty directory)"):
            convert_aif(
                ConvertOptions(out=out, name="t"),
                AifOptions(model=tmaze_model(), rollouts=1_000_000, steps=1_000),
            )


# -- ties are not disagreements --------------------------------------------------------------------
def noisy_grid(size: int, noise: float) -> GenerativeModel:
    """The grid world with a noisy position sensor: symmetric moves tie in most steps."""
    grid = gridworld_model(size, size)
    S = size * size
    A = grid.A[0] * (1.0 - noise) + noise / S
    return GenerativeModel.from_arrays([A], list(grid.B), list(grid.C), list(grid.D))


@pytest.mark.parametrize(
    ("model", "policy_len"),
    [(gridworld_model(10, 10), 1), (noisy_grid(3, 0.2), 1), (noisy_grid(3, 0.2), 2)],
    ids=["grid10-L1", "noisy3-L1", "noisy3-L2"],
)
def test_symmetric_models_pass_the_gate_with_ties_reported(
    tmp_path: Path, model: GenerativeModel, policy_len: int
) -> None:
    """The README's grid and a noisy 3x3 grid: int8 beliefs equal the float ones to rounding, and
    argmax breaks exact ties on noise. Tie-aware agreement is 100 %, the raw figure is not."""
    report = convert_aif(
        ConvertOptions(out=tmp_path / "b", name="grid"),
        AifOptions(
            model=model, rollouts=100, steps=20, settings=AifSettings(policy_len=policy_len),
        ),
    )
    rollouts = report.data["rollouts"]
    assert report.passed, report.render()
    assert rollouts["action_agreement"] == 1.0
    assert rollouts["action_agreement_exact"] < 0.95  # what the gate refused before
    assert rollouts["tied_steps"] > 0.5
    assert rollouts["action_shortfall"]["max"] < TIE_TOLERANCE / 5
    text = report.render()
    assert "tie-aware" in text
    assert "have tied actions" in text


def test_agreement_rows_do_not_widen_the_value_columns() -> None:
    """The agreement rows (a figure and what it means) start at the first value column; the
    float64 / int8 columns keep the width of their numbers (the docs' example table)."""
    model = tmaze_model()
    report = ConversionReport(kind="aif", source="t", data={}, rows=aif_report_data(
        model, quantize_model(model), AifSettings(), rollouts=20, steps=4, seed=0,
        show_progress=False)[1])
    lines = report.render().splitlines()
    label_width = len("action agreement, exact")
    header = lines[1]
    row = next(line for line in lines if line.startswith("  action agreement  "))
    assert row[2 + label_width + 2:] == "100.00 % (tie-aware, tolerance 0.01)"
    assert header.rstrip().endswith("float64  int8  int8/float")
    exact = next(line for line in lines if line.startswith("  action agreement, exact"))
    assert len(header) < len(exact)  # the header is not pushed right by the long rows
    size = next(line for line in lines if line.startswith("  model size"))
    assert size.index("1,240") + len("1,240") == header.index("float64") + len("float64")


def preference_flip_model() -> GenerativeModel:
    """One factor of three places reached by three actions, observed exactly. The preferences
    ``C = [0, 0.4, -127]`` are stored as int8 with ``scale = 127 / 127 = 1``: 0.4 rounds to 0,
    so int8 agents see places 0 and 1 as equally good and take the first, while the float agents
    clearly prefer place 1 (``exp(16 * 0.4)`` to one). A real change of behaviour."""
    B = np.zeros((3, 3, 3))
    for u in range(3):
        B[u, :, u] = 1.0
    return GenerativeModel.from_arrays(
        [np.eye(3)], [B], [np.array([0.0, 0.4, -127.0])], [np.full(3, 1.0 / 3.0)]
    )


def test_a_model_whose_int8_tables_change_behaviour_still_fails(tmp_path: Path) -> None:
    model = preference_flip_model()
    report = convert_aif(
        ConvertOptions(out=tmp_path / "b", name="flip"),
        AifOptions(model=model, rollouts=50, steps=10),
    )
    rollouts = report.data["rollouts"]
    assert not report.passed
    assert report.bundle is None
    assert not (tmp_path / "b").exists()
    assert rollouts["action_agreement"] < 0.5
    assert rollouts["action_shortfall"]["max"] > 0.5
    failed = [c.option for c in report.checks if not c.passed]
    assert failed == ["--min-action-agreement"]
    text = report.render()
    assert "action agreement 0 (required >= 0.95, --min-action-agreement): FAILED" in text
    assert "no bundle written: accuracy checks failed" in text
    # Its beliefs are not the problem (A, B, D are exact): the preferences are.
    assert rollouts["belief_kl"]["max"] < 1e-12


def test_sampled_actions_agree_when_equal(tmp_path: Path) -> None:
    """Stochastic selection: both groups draw the same random numbers, so an int8 agent that
    samples the float agent's action agrees, even where that action is not the most probable."""
    report = convert_aif(
        ConvertOptions(out=tmp_path / "b", name="grid"),
        AifOptions(
            model=gridworld_model(10, 10), rollouts=100, steps=20,
            settings=AifSettings(action_selection="stochastic"),
        ),
    )
    rollouts = report.data["rollouts"]
    assert rollouts["action_agreement_exact"] == 1.0
    assert rollouts["action_agreement"] == 1.0
    assert rollouts["action_shortfall"]["max"] == 0.0
    assert report.passed


def test_cli_tie_tolerance_sets_what_counts_as_a_tie(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--tie-tolerance 0`` counts only the float agents' own argmax as agreeing: on the grid,
    whose int8 posteriors break ties differently by 1e-9, the gate then refuses; the default
    passes the same model, and the JSON records the tolerance."""
    path = tmp_path / "grid.npz"
    save_npz(gridworld_model(10, 10), path)
    common = ["--rollouts", "100", "--steps", "20", "--json", "--quiet"]
    code = main(["convert", "aif", str(path), "--out", str(tmp_path / "strict"),
                 "--tie-tolerance", "0", *common])
    strict = json.loads(capsys.readouterr().out)
    assert code == 1
    assert strict["rollouts"]["tie_tolerance"] == 0.0
    assert strict["rollouts"]["action_agreement"] < 0.95
    assert not (tmp_path / "strict").exists()
    code = main(["convert", "aif", str(path), "--out", str(tmp_path / "default"), *common])
    default = json.loads(capsys.readouterr().out)
    assert code == 0
    assert default["rollouts"]["tie_tolerance"] == TIE_TOLERANCE
    assert default["rollouts"]["action_agreement"] == 1.0
    assert default["rollouts"]["action_agreement_exact"] == strict["rollouts"][
        "action_agreement_exact"]
    with pytest.raises(SystemExit) as err:
        main(["convert", "aif", str(path), "--out", str(tmp_path / "x"), "--tie-tolerance", "-1"])
    assert err.value.code == 2
