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
import logging
from dataclasses import replace
from pathlib import Path

from edge_agent.aif.model import Counts
from edge_agent.aif.quant import quantize_model
from edge_agent.aif.settings import AifSettings
from edge_agent.errors import InputError, ModelError
from edge_agent_host.converter.aif.bundle import (
    AIF_ARRAY_DIR,
    aif_bundle_arrays,
    aif_spec,
    bundle_counts,
)
from edge_agent_host.converter.aif.measure import aif_checks, aif_report_data
from edge_agent_host.converter.aif.options import AifOptions, add_aif_options, aif_options
from edge_agent_host.converter.aif.source import (
    counts_from_pymdp,
    load_aif_model,
    model_from_pymdp,
    settings_from_pymdp,
)
from edge_agent_host.converter.common import Converter, ConvertOptions, add_common_options
from edge_agent_host.converter.output import check_output, write_output
from edge_agent_host.converter.report import ConversionReport

logger = logging.getLogger(__name__)

__all__ = ["CONVERTER", "convert_aif", "convert_pymdp"]


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
        options,
        replace(aif, model=model, settings=settings, counts=counts),
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
        model,
        quantized,
        agent_settings,
        rollouts=aif.rollouts,
        steps=aif.steps,
        seed=options.seed,
        show_progress=options.show_progress,
        tie_tol=limits.tie_tolerance,
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
        options.out,
        name=options.name,
        version=options.version,
        kind="aif",
        arrays=arrays,
        aif=aif_spec(quantized, agent_settings, names),
        quantization=report.manifest_record(),
        sign_key=options.sign_key,
        signer=options.signer,
    )
    return report


# ``convert aif`` -------------------------------------------------------------------------------


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        type=Path,
        help="model: .npz (pymdp keys A0.., B0.., ...; Dirichlet counts pA0.., pB0.., pD0.. "
        "are carried into the bundle for agents that learn) or .json",
    )
    add_common_options(parser)
    add_aif_options(parser)


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
