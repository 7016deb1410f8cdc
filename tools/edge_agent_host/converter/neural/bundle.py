"""From a converted neural model to its bundle (both converters: :func:`finish_neural`).

The manifest's :class:`~edge_agent.bundle.manifest.NeuralSpec` (:func:`neural_spec`), the float/int8
comparison and its checks (:mod:`edge_agent_host.converter.neural.measure`), the generative model
of an ``aif+perception`` bundle (:func:`check_perception_outputs`), then the bundle is written,
loaded and stepped as a device does (:mod:`edge_agent_host.converter.neural.device_check`) and
signed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import quantize_model
from edge_agent.aif.settings import AifSettings
from edge_agent.bundle.loader import Bundle
from edge_agent.bundle.manifest import MAX_RANGE_FEATURES, BundleKind, NeuralSpec, ObservationRange
from edge_agent.errors import InputError, ModelError
from edge_agent.neural.agents import window_layout
from edge_agent.neural.backends import Session, get_backend
from edge_agent_host.converter.aif.bundle import aif_bundle_arrays, aif_spec
from edge_agent_host.converter.aif.measure import aif_checks, aif_report_data
from edge_agent_host.converter.common import ConvertOptions
from edge_agent_host.converter.neural.device_check import device_check
from edge_agent_host.converter.neural.inputs import Samples, sample_count, scale_mismatch
from edge_agent_host.converter.neural.measure import compare_models, neural_checks, neural_rows
from edge_agent_host.converter.neural.options import NeuralOptions
from edge_agent_host.converter.output import write_output
from edge_agent_host.converter.report import ConversionReport

__all__ = [
    "ConvertedModel",
    "check_perception_outputs",
    "finish_neural",
    "int8_does_not_pay",
    "neural_spec",
    "observation_range",
    "perception_model",
]


def int8_does_not_pay(size_ratio: float, quantized_share: float | None) -> str:
    """Why an int8 model is not worth bundling (``""`` when it is): it quantized none of the
    float model's weights (``quantized_share`` 0; ``None``: not known), or its file is not
    smaller than the float model's."""
    if quantized_share is not None and quantized_share <= 0.0:
        return (
            f"the int8 model quantizes none of the float model's weights and is "
            f"{100 * size_ratio:.1f} % of its size"
        )
    if size_ratio >= 1.0:
        return f"the int8 model is {100 * size_ratio:.1f} % of the float model's size"
    return ""


def neural_spec(
    backend: Literal["onnxruntime", "litert"],
    model_file: str,
    session: Session,
    options: NeuralOptions,
    window: int,
) -> NeuralSpec:
    """The manifest's NeuralSpec for a converted model; ModelError if the device cannot run it."""
    if options.output_kind != "continuous" and (
        options.action_low is not None or options.action_high is not None
    ):
        raise InputError("--action-low/--action-high go with --output-kind continuous only")
    try:
        spec = NeuralSpec(
            backend=backend,
            model_file=model_file,
            inputs=session.input_specs,
            outputs=session.output_specs,
            window=window,
            output_kind=options.output_kind,
            action_low=options.action_low,
            action_high=options.action_high,
        )
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'neural'}: {e['msg']}" for e in err.errors()
        )
        raise InputError(
            f"the model cannot run as {options.output_kind} agents: {problems}"
        ) from err
    window_layout(spec)
    return spec


def observation_range(spec: NeuralSpec, samples: Samples) -> ObservationRange:
    """The range of each observation feature in ``samples`` (the data the model was calibrated,
    or checked, on): what a device counts its observations against (``neural.observation_range``,
    :mod:`edge_agent.neural.input_range`). One value per feature of a step, or one for all of
    them when a step has more than :data:`~edge_agent.bundle.loader.MAX_RANGE_FEATURES` (a
    camera frame)."""
    features = window_layout(spec)[1]
    values = np.asarray(samples[spec.inputs[0].name], dtype=np.float32).reshape(-1, features)
    if features > MAX_RANGE_FEATURES:
        values = values.reshape(-1, 1)
    return ObservationRange(
        low=tuple(float(v) for v in values.min(axis=0)),
        high=tuple(float(v) for v in values.max(axis=0)),
        samples=sample_count(samples),
    )


def perception_model(neural: NeuralOptions) -> GenerativeModel | None:
    """The generative model an ``aif+perception`` conversion pairs with its observation model
    (``None``: a plain neural bundle); InputError in one line when the pairing cannot be."""
    if neural.aif is None:
        return None
    if neural.aif.model is None:
        raise InputError("a perception bundle needs the generative model (AifOptions.model)")
    if neural.output_kind != "observation":
        raise InputError("a perception bundle (--aif) needs --output-kind observation")
    if neural.aif.counts:
        raise InputError(
            "Dirichlet counts are carried by convert aif; an aif+perception bundle takes none"
        )
    return neural.aif.model


def check_perception_outputs(session: Session, model: GenerativeModel) -> None:
    """An observation model needs one ``(batch, O_m)`` logits output per modality, in order."""
    outputs = session.output_specs
    if len(outputs) != model.num_modalities:
        raise ModelError(
            f"the observation model has {len(outputs)} outputs, the generative model "
            f"{model.num_modalities} modalities (output m gives the logits of modality m)"
        )
    for m, (spec, outcomes) in enumerate(zip(outputs, model.num_obs, strict=True)):
        if tuple(spec.shape[1:]) != (outcomes,):
            raise ModelError(
                f"output {m} {spec.name!r} has shape {list(spec.shape)}; modality {m} has "
                f"{outcomes} outcomes, expected [-1, {outcomes}]"
            )


@dataclass(frozen=True)
class ConvertedModel:
    """What a neural format's converter hands :func:`finish_neural`: the float and converted
    models (bytes and loaded sessions) and what it learnt on the way.

    ``backend``: the device backend that runs ``model_file``; ``scheme``: the manifest's
    quantization scheme of the converted model; ``source``: the input, as the report names it;
    ``window``: the history window; ``heldout``/``labels`` and ``calibration``: the data sets
    (the device check steps the bundle on ``calibration``, else ``heldout``);
    ``calibration_info`` and ``quantization_info``: the report's records; ``warnings``: lines
    for the report; ``quantized_share``: the share of the float weights quantized (``None``:
    not known); ``quantize_seconds``: how long each quantization took (per mode, and the
    comparison with minmax calibration when there was one), for the report, not the manifest.
    """

    backend: Literal["onnxruntime", "litert"]
    model_file: str
    scheme: str
    source: str
    float_bytes: bytes
    int8_bytes: bytes
    float_session: Session
    int8_session: Session
    window: int
    heldout: Samples
    labels: np.ndarray | None
    calibration: Samples
    calibration_info: dict[str, Any]
    quantization_info: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    quantized_share: float | None = None
    quantize_seconds: dict[str, float] = field(default_factory=dict)


def finish_neural(
    converted: ConvertedModel, options: ConvertOptions, neural: NeuralOptions
) -> ConversionReport:
    """Compare, check, write, device-check and sign the bundle of a converted neural model (both
    converters).

    An int8 model that does not pay (:func:`int8_does_not_pay`) is measured and reported, but
    the bundle carries the float model, with a warning that says so (``options.force`` keeps the
    int8 one); the accuracy checks then do not apply (``data["bundled"]`` is ``"float"``).
    """
    c = converted
    backend_name, model_file, scheme = c.backend, c.model_file, c.scheme
    float_bytes, int8_bytes = c.float_bytes, c.int8_bytes
    float_session, int8_session = c.float_session, c.int8_session
    heldout, calibration, warnings = c.heldout, c.calibration, c.warnings
    force = options.force
    pairing = neural.aif
    aif_model = perception_model(neural)
    ratio = len(int8_bytes) / len(float_bytes)
    why_float = int8_does_not_pay(ratio, c.quantized_share)
    bundled: Literal["int8", "float"] = "float" if why_float and not force else "int8"
    if why_float:
        warnings = [
            *warnings,
            f"{why_float}: bundled anyway because of --force"
            if force
            else f"{why_float}: the bundle carries the float model instead (exact, and smaller; "
            "--force bundles the int8 one)",
        ]
    device_session = float_session if bundled == "float" else int8_session
    spec = neural_spec(backend_name, model_file, device_session, neural, c.window)
    # The range the device counts observations against: the calibration data's for a model
    # calibrated on them (static int8: beyond it, inputs clip), else the held-out data's, on
    # which the bundled model was checked (dynamic int8, float).
    calibrated = bundled == "int8" and c.calibration_info.get("method") is not None
    observed = calibration if calibration and calibrated else heldout
    spec = spec.model_copy(update={"observation_range": observation_range(spec, observed)})
    if aif_model is not None:
        check_perception_outputs(int8_session, aif_model)
    comparison = compare_models(
        float_session,
        int8_session,
        heldout,
        labels=c.labels,
        classify=neural.output_kind != "continuous",
        latency_repeats=neural.latency_repeats,
    )
    latency = comparison.pop("latency_ms")
    backend = get_backend(backend_name)
    data: dict[str, Any] = {
        "scheme": scheme if bundled == "int8" else f"{scheme.split('-', maxsplit=1)[0]}-float32",
        "bundled": bundled,
        "backend": backend_name,
        "backend_version": backend.version(),
        "quantization": c.quantization_info,
        "calibration": c.calibration_info,
        "size": {
            "float_bytes": len(float_bytes),
            "int8_bytes": len(int8_bytes),
            "ratio": ratio,
        },
        "accuracy": comparison,
        "latency_ms": latency,
    }
    if c.quantize_seconds:
        data["quantize_s"] = dict(c.quantize_seconds)
    x64_precision = getattr(int8_session, "x64_precision", None)
    if x64_precision is not None:
        data["x64_quant_precision"] = bool(x64_precision)
    mismatch = scale_mismatch(calibration, heldout)
    if mismatch:
        warnings = [*warnings, mismatch]
    lost = getattr(int8_session, "x64_precision_lost", "")
    if lost:
        warnings = [*warnings, f"{lost}: the report's int8 numbers are that CPU's"]
    # The accuracy thresholds judge the int8 model: a bundle of the float model has no error.
    checks = neural_checks(data, neural.thresholds) if bundled == "int8" else []
    rows = neural_rows(data)
    kind: BundleKind = "neural"
    arrays: dict[str, np.ndarray] = {}
    aif = None
    if pairing is not None and aif_model is not None:
        kind = "aif+perception"
        settings = pairing.settings or AifSettings()
        quantized = quantize_model(aif_model)
        limits = pairing.thresholds
        aif_data, aif_rows = aif_report_data(
            aif_model,
            quantized,
            settings,
            rollouts=pairing.rollouts,
            steps=pairing.steps,
            seed=options.seed,
            show_progress=options.show_progress,
            tie_tol=limits.tie_tolerance,
        )
        data["aif"] = aif_data
        rows += [("active inference model",), *aif_rows]
        checks += aif_checks(aif_data, limits)
        arrays, names = aif_bundle_arrays(quantized)
        aif = aif_spec(quantized, settings, names)
    report = ConversionReport(
        kind=kind, source=c.source, data=data, rows=rows, checks=checks, warnings=list(warnings)
    )
    if not report.passed and not force:
        return report
    inputs = calibration if calibration else heldout
    checked: dict[str, Any] = {}

    def on_device(bundle: Bundle) -> None:
        checked.update(device_check(bundle, inputs, device_session))

    report.bundle = write_output(
        options.out,
        name=options.name,
        version=options.version,
        kind=kind,
        arrays=arrays,
        files={model_file: int8_bytes if bundled == "int8" else float_bytes},
        aif=aif,
        neural=spec,
        quantization=report.manifest_record(),
        sign_key=options.sign_key,
        signer=options.signer,
        device_check=on_device,
    )
    report.data["device_check"] = checked
    return report
