"""The shipped example models are what ``examples/make_examples.py`` makes, and they load."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx

from edge_agent.aif.model import load_npz
from edge_agent.core.replay import load_recording, replay
from edge_agent.sim.gridworld import gridworld_model
from edge_agent.sim.tmaze import tmaze_model

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_examples_are_reproduced_by_their_script(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".npz", ".onnx"))
    for name in made:
        if name == "grid10-episode.npz":
            same_episode_up_to_ties(tmp_path / name, EXAMPLES / name)
        elif name.endswith(".npz"):
            with np.load(tmp_path / name) as new, np.load(EXAMPLES / name) as old:
                assert sorted(new.files) == sorted(old.files), name
                for key in new.files:
                    np.testing.assert_array_equal(new[key], old[key], err_msg=f"{name}:{key}")
        else:
            assert onnx.load(tmp_path / name) == onnx.load(EXAMPLES / name), name


def same_episode_up_to_ties(new_path: Path, old_path: Path) -> None:
    """The recorded episode depends on how argmax breaks exact ties between equally good
    policies, which differs between CPUs and BLAS kernels: both episodes must be ones the agent
    could have walked (every action optimal under its own posterior, to rounding), and equal up
    to the first step where the agent had a tie."""
    model = gridworld_model(10, 10)
    first_tie = None
    for path in (new_path, old_path):
        recording = load_recording(path, model)
        result = replay(model, recording)
        np.testing.assert_allclose(result["recorded_shortfall"], 0.0, atol=1e-9, err_msg=str(path))
        ties = np.flatnonzero(result["tied"])
        here = int(ties[0]) if ties.size else len(result["tied"])
        first_tie = here if first_tie is None else min(first_tie, here)
    with np.load(new_path) as new, np.load(old_path) as old:
        assert sorted(new.files) == sorted(old.files)
        for key in new.files:
            assert new[key].shape == old[key].shape, key
            stop = first_tie + 1 if key == "obs" else first_tie  # obs[t] comes before the tie
            np.testing.assert_array_equal(new[key][:stop], old[key][:stop], err_msg=key)


def test_example_models_are_the_builtin_worlds() -> None:
    for name, model in (("grid10.npz", gridworld_model(10, 10)), ("tmaze.npz", tmaze_model())):
        loaded = load_npz(EXAMPLES / name)
        for a, b in zip((*loaded.A, *loaded.B, *loaded.C, *loaded.D),
                        (*model.A, *model.B, *model.C, *model.D), strict=True):
            np.testing.assert_array_equal(a, b)
