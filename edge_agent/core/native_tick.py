"""The compiled tick of a group that does not learn: :func:`frozen_kernel` builds it from the
group's compiled tables, or says why the group steps with numpy.

The group builds it once (its tables do not change: nothing learns), holds it, and its tick path
(:class:`~edge_agent.core.tick_paths.CompiledTick`, chosen in
:func:`~edge_agent.core.path_choice.tick_path`) steps every agent in one pass of
:mod:`edge_agent.aif.kernels.native`'s tick over the arrays the group already keeps: beliefs,
priors, ``G`` and ``q_pi`` in the group's dtype (an int8 group's float32 are read and written as
they are, the arithmetic double), actions and whether each agent acted. The tables are the ones
the numpy kernels step with (:class:`~edge_agent.aif.kernels.CompiledModel`: an int8 group's
codes decoded once, as the kernels decoded them), in float64: the pass's results are the numpy
kernels' on the same tables up to float32 rounding for an int8 group (far inside
docs/quantization.md's bound) and rounding for a float64 one.

Where the compiled tick can take a group, the group measures both paths once when it is made
and keeps the cheaper (:func:`~edge_agent.core.path_choice.measure_costs`).
``EDGE_AGENT_NATIVE_TICK=0`` in the environment (:data:`NATIVE_ENV`) keeps every group on numpy,
the reference twin; ``EDGE_AGENT_NATIVE_TICK=1`` puts every group the compiled tick can take in it,
unmeasured (the tests of its results); read when the group is made.
"""

from __future__ import annotations

import os

import numpy as np

from edge_agent.aif import kernels
from edge_agent.aif.kernels import native
from edge_agent.aif.settings import AifSettings

__all__ = ["NATIVE_ENV", "choice_measured", "frozen_kernel", "numpy_reasons"]

#: The environment variable that keeps groups on numpy when it is ``0``.
NATIVE_ENV = "EDGE_AGENT_NATIVE_TICK"


def choice_measured() -> bool:
    """Whether a group the compiled tick can take measures both paths (:data:`NATIVE_ENV` not
    ``1``) rather than taking it unmeasured."""
    return os.environ.get(NATIVE_ENV, "") != "1"


def numpy_reasons(cm: kernels.CompiledModel, settings: AifSettings) -> str | None:
    """Why a group of ``cm`` with ``settings`` steps with numpy whatever it learns (None: the
    compiled tick takes it): the environment asks for numpy, policies of more than one step,
    stochastic or whole-policy action selection, a model numpy's local planner steps (faster),
    no library (or not the binding's), a model above the library's limits."""
    policies = cm.tree.policies
    reasons = [
        (os.environ.get(NATIVE_ENV, "1") == "0", f"{NATIVE_ENV}=0"),
        (policies.shape[1] != 1,
         f"policy_len {policies.shape[1]} (the compiled tick plans one-step policies)"),
        (settings.action_selection != "deterministic", "stochastic action selection"),
        (settings.sampling_mode != "marginal", f"sampling_mode {settings.sampling_mode}"),
        # grid10 frozen, N = 1,000, interleaved in one process: the compiled tick 0.45x numpy's
        # (int8), 0.62x (float64); at N = 1 1.1x (benchmarks/notes/learning.md)
        (cm.local is not None,
         "the local one-step planner (numpy) outruns the compiled tick's dense plan here"),
    ]
    for found, why in reasons:
        if found:
            return why
    missing = native.unavailable()  # no library, or not the binding's: its limits unknown
    if missing is not None:
        return missing
    return native.too_large(cm.num_states, cm.num_controls, cm.num_modalities, len(policies))


def frozen_kernel(cm: kernels.CompiledModel, settings: AifSettings) -> native.NativeTick | str:
    """The compiled tick of a group that steps with ``cm`` and does not learn (its state in
    ``cm.dtype``), or why it steps with numpy (:func:`numpy_reasons`)."""
    why = numpy_reasons(cm, settings)
    if why is not None:
        return why
    A = [np.asarray(a, dtype=np.float64) for a in cm.A_rows]
    return native.NativeTick(
        A, [kernels.dense_table(t) for t in cm.transitions],
        [np.asarray(d, dtype=np.float64) for d in cm.D],
        lnC=[np.asarray(c, dtype=np.float64) for c in cm.lnC],
        lnE=np.asarray(cm.lnE, dtype=np.float64), policies=cm.tree.policies, learned=(),
        supports=[a > 0 for a in A], n=1, gamma=float(settings.gamma),
        num_iter=settings.num_iter, dF_tol=settings.dF_tol, lr=0.0,
        use_utility=settings.use_utility, use_info_gain=settings.use_states_info_gain,
        shared_counts=False, state_dtype=cm.dtype.type,
    )
