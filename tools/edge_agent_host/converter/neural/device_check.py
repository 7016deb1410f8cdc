"""The device's view of a neural bundle, checked before it is signed (both converters).

Before the bundle is signed it is loaded as a device loads it, its agent group is built and
stepped on a few calibration inputs (:func:`device_check`); a bundle a device would refuse is
deleted and never signed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.bundle.loader import Bundle
from edge_agent.errors import EdgeAgentError, ModelError
from edge_agent.neural.agents import NeuralAgentGroup
from edge_agent.neural.backends import Session
from edge_agent.neural.perception import PerceptionAifGroup
from edge_agent_host.converter.neural.inputs import Samples, sample_count

__all__ = ["DEVICE_CHECK_AGENTS", "device_check"]

#: Agents the pre-signing device check runs (at most this many calibration inputs).
DEVICE_CHECK_AGENTS = 8


def _ticks(x: np.ndarray, window: int) -> list[np.ndarray]:
    """The per-tick observations that fill a group's window with the model inputs ``x``:
    ``T`` ticks of ``(n, F)`` for windows, one tick of ``(n, *frame)`` for frames."""
    if x.ndim == 4:
        return [x]
    rows = x.reshape(len(x), window, -1)
    return [rows[:, t] for t in range(window)]


def device_check(bundle: Bundle, samples: Samples, reference: Session) -> dict[str, Any]:
    """Run the written bundle as a device does and compare it with the measured int8 model.

    Builds the agent group from ``bundle`` (:meth:`NeuralAgentGroup.from_bundle`, or
    :meth:`PerceptionAifGroup.from_bundle` for ``aif+perception``), steps it on up to
    :data:`DEVICE_CHECK_AGENTS` of ``samples`` (one agent each, ``T`` ticks to fill the window)
    and requires its actions to be those of ``reference`` on the same inputs (ties agree).
    Raises ModelError in one line if a device would refuse or misread the bundle.
    """
    manifest = bundle.manifest
    n = min(DEVICE_CHECK_AGENTS, sample_count(samples))
    name, x = next(iter(samples.items()))
    x = x[:n]
    group: NeuralAgentGroup | PerceptionAifGroup
    spec = manifest.neural
    observation = (
        manifest.kind == "neural" and spec is not None and spec.output_kind == "observation"
    )
    try:
        if manifest.kind == "aif+perception":
            group = PerceptionAifGroup.from_bundle(bundle, n)
            window = group.perception.window
        elif observation:
            # A perception model on its own: the device builds it as a group's perception.
            assert spec is not None
            group = NeuralAgentGroup(spec, bundle.file_bytes(spec.model_file), n)
            window = group.window
        else:
            group = NeuralAgentGroup.from_bundle(bundle, n)
            window = group.window
    except EdgeAgentError as err:
        raise ModelError(f"a device would refuse this bundle: {err}") from err
    try:
        ticks = _ticks(x, window)
        actions: np.ndarray = np.zeros(0)  # argmax's integers or step's actions
        for obs in ticks:
            if observation:
                assert isinstance(group, NeuralAgentGroup)
                logits = group.forward(obs)[group.output.name]
                actions = np.argmax(logits, axis=1)
            else:
                actions = np.array(group.step(obs))
    except EdgeAgentError as err:
        raise ModelError(f"a device cannot step this bundle's agents: {err}") from err
    finally:
        group.release()
    if isinstance(group, NeuralAgentGroup):
        reference.set_batch(n)
        out = reference.run({name: x})[group.output.name].astype(np.float64)
        _compare_actions(group, actions, out)
    return {"agents": n, "ticks": len(ticks)}


def _compare_actions(group: NeuralAgentGroup, actions: np.ndarray, out: np.ndarray) -> None:
    tol = 1e-5 * max(1.0, float(np.abs(out).max()))
    if group.spec.output_kind == "continuous":
        low = np.asarray(group.spec.action_low, dtype=np.float64)
        high = np.asarray(group.spec.action_high, dtype=np.float64)
        bad = np.flatnonzero(~np.all(np.abs(actions - np.clip(out, low, high)) <= tol, axis=1))
    else:
        chosen = out[np.arange(len(out)), actions.astype(np.int64)]
        bad = np.flatnonzero(chosen < out.max(axis=1) - tol)
    if len(bad):
        i = int(bad[0])
        raise ModelError(
            f"the device's agent group and the measured int8 model disagree on calibration input "
            f"{i} (action {actions[i].tolist()}, model output {np.round(out[i], 4).tolist()}): "
            "the bundle's input layout is not what the model was measured with"
        )
