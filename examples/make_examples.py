"""Make the example models in this directory (deterministic: rerunning gives the same files).

* ``grid10.npz``, ``tmaze.npz`` -- the built-in grid world and T-maze as float generative models
  in pymdp's key layout (``A0..``, ``B0..``, ``C0..``, ``D0..``), the input of
  ``edge-agent-host convert aif``;
* ``grid10-episode.npz`` -- a recorded episode on the grid (``obs``, ``actions``,
  ``trial_start``) for ``edge-agent replay``;
* ``tmaze-learning.npz`` -- the reversal T-maze's model with Dirichlet counts ``pA1`` for its
  reward modality (pymdp's key), and ``tmaze-reversal-episode.npz`` -- 20 trials in that world
  (its rewarded arm swaps after 10) of an agent that visits the cue and then the arm it names:
  what ``edge-agent replay`` learns from (docs/learning.md);
* ``sensor_policy.onnx`` with ``sensor_calibration.npz`` and ``sensor_heldout.npz`` -- a small
  float MLP that solves the built-in sensor world from an 8-step window of 8 features, and the
  windows to calibrate and check its int8 version (``edge-agent-host convert onnx``);
* ``sensor_perception.onnx`` with ``perception_calibration.npz`` and ``perception_heldout.npz``
  -- the same network for one step: a classifier of the sensor world's class, the perception of
  the built-in Active Inference model ``sensors`` (``docs/examples/perception.toml``).

Run with the host extra installed: ``python examples/make_examples.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

from edge_agent.aif.model import save_npz
from edge_agent.core.agents import AifAgentGroup
from edge_agent.sim.gridworld import GridWorldEnv, gridworld_model
from edge_agent.sim.sensors import SensorWorld
from edge_agent.sim.tmaze import tmaze_model
from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv, tmaze_reversal_model
from edge_agent_host.converter.builders import mlp_onnx, sensor_policy

HERE = Path(__file__).resolve().parent
WINDOW, FEATURES = 8, 8


def grid_episode(steps: int = 40) -> dict[str, np.ndarray]:
    """One float64 agent walking the 10 x 10 grid: what it saw and what it did."""
    model = gridworld_model(10, 10)
    env = GridWorldEnv(1, seed=7)
    agent = AifAgentGroup(model, 1, precision="float64")
    obs, actions, starts = [], [], []
    o = env.reset()
    for _ in range(steps):
        starts.append(bool(env.episode_start[0]))
        if env.episode_start[0]:
            agent.reset(env.episode_start)
        obs.append(o[0].copy())
        a = agent.step(o).copy()
        actions.append(a[0])
        o = env.step(a)
    return {"obs": np.array(obs), "actions": np.array(actions), "trial_start": np.array(starts)}


def reversal_episode(trials: int = 20, every: int = 10) -> dict[str, np.ndarray]:
    """One agent in the reversal T-maze that goes to the cue, then to the arm the cue names."""
    env = ReversalTMazeEnv(1, seed=5, reverse_every=every)
    o = env.reset()
    obs, actions, starts = [], [], []
    for _ in range(trials * env.trial_len):
        starts.append(bool(env.episode_start[0]))
        obs.append(o[0].copy())
        at = int(env.episode_steps[0])
        move = 3 if at == 0 else 1 + int(o[0, 2]) if at == 1 else int(env.true_states[0, 0])
        actions.append(np.array([move, 0]))
        o = env.step(np.array([[move, 0]]))
    return {"obs": np.array(obs), "actions": np.array(actions), "trial_start": np.array(starts)}


def learning_model() -> dict[str, np.ndarray]:
    """The reversal T-maze's model with weak counts for the reward modality (pA1)."""
    model = tmaze_reversal_model()
    return {**model.to_npz_dict(), "pA1": model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)}


def main(out: Path = HERE) -> None:
    save_npz(gridworld_model(10, 10), out / "grid10.npz", compress=True)
    save_npz(tmaze_model(), out / "tmaze.npz", compress=True)
    np.savez_compressed(out / "grid10-episode.npz", **grid_episode())
    np.savez_compressed(out / "tmaze-learning.npz", **learning_model())
    np.savez_compressed(out / "tmaze-reversal-episode.npz", **reversal_episode())
    world = SensorWorld(1)
    layers = sensor_policy(world.prototypes, world.noise, WINDOW)
    onnx.save(mlp_onnx(layers, WINDOW, FEATURES), out / "sensor_policy.onnx")
    X, _ = world.sample_windows(128, WINDOW, seed=1)
    np.savez_compressed(out / "sensor_calibration.npz", window=X)
    Xh, yh = world.sample_windows(256, WINDOW, seed=2)
    np.savez_compressed(out / "sensor_heldout.npz", window=Xh, labels=yh)
    perception = sensor_policy(world.prototypes, world.noise, 1)
    onnx.save(mlp_onnx(perception, 1, FEATURES), out / "sensor_perception.onnx")
    X1, _ = world.sample_windows(128, 1, seed=3)
    np.savez_compressed(out / "perception_calibration.npz", window=X1)
    Xh1, yh1 = world.sample_windows(256, 1, seed=4)
    np.savez_compressed(out / "perception_heldout.npz", window=Xh1, labels=yh1)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
