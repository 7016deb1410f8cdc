"""``edge-agent-host``: convert, write, sign, verify and inspect bundles on the host.

``convert aif|onnx|tflite`` quantizes a model, reports what int8 costs in accuracy, size and
latency, refuses a conversion worse than its thresholds (exit 1 unless ``--force``), and writes
the bundle, signed with ``--sign KEY``. See ``docs/host-tool.md``.

Each subcommand is one entry in :data:`COMMANDS`: a help line, a function that adds its arguments
to an ``argparse`` parser, and a function that runs it and returns the exit code. Adding a command
means adding one entry. This module is the only place in the host tool that configures logging.

Exit codes: 0 success, 1 the operation failed (bad bundle, bad signature, bad key), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from edge_agent import __version__
from edge_agent.aif.settings import AifSettings
from edge_agent.bundle.loader import Bundle, load_bundle
from edge_agent.bundle.signing import TrustedKeys, key_id
from edge_agent.bundle.writer import sign_bundle
from edge_agent.distribution import clash_notice
from edge_agent.errors import EdgeAgentError, InputError, SignatureError, missing_module_message
from edge_agent_host import broker, hub, tasks
from edge_agent_host.convert_aif import AifThresholds, convert_aif, load_aif_model
from edge_agent_host.convert_onnx import (
    CALIBRATION_METHODS,
    MIN_CALIBRATION_SAMPLES,
    QUANT_MODES,
    SIZE_WARNING_RATIO,
    NeuralOptions,
    NeuralThresholds,
    convert_onnx,
)
from edge_agent_host.convert_tflite import TFLITE_MODES, convert_tflite
from edge_agent_host.keys import (
    DEFAULT_KEY_NAME,
    KEY_NAME_RE,
    generate_keypair,
    load_signing_key,
)
from edge_agent_host.report import progress_enabled

logger = logging.getLogger(__name__)

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


class Command(NamedTuple):
    """One subcommand: its help line, how to add its arguments, and how to run it."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# keygen ------------------------------------------------------------------------------------------


def _key_name(value: str) -> str:
    if not KEY_NAME_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def _configure_keygen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="directory to write the keys into")
    parser.add_argument(
        "--name",
        type=_key_name,
        default=DEFAULT_KEY_NAME,
        help=f"key file name stem: NAME.key and NAME.pub (default: {DEFAULT_KEY_NAME})",
    )


def _run_keygen(args: argparse.Namespace) -> int:
    pair = generate_keypair(args.out, args.name)
    print(f"key id:      {pair.key_id}")
    print(f"private key: {pair.private_path}  (keep secret; mode 0600)")
    print(f"public key:  {pair.public_path}  (copy into each device's trusted key directory)")
    return 0


# sign --------------------------------------------------------------------------------------------


def _configure_sign(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory or .tar to sign in place")
    parser.add_argument("--key", required=True, type=Path, help="private key file (NAME.key)")
    parser.add_argument("--signer", default=None, help="who signs, recorded in the manifest")


def _run_sign(args: argparse.Namespace) -> int:
    private_key = load_signing_key(args.key)
    manifest = sign_bundle(args.bundle, private_key, signer=args.signer)
    print(
        f"signed {args.bundle} ({manifest.name} {manifest.version}) "
        f"with key {key_id(private_key.public_key())}"
    )
    return 0


# verify ------------------------------------------------------------------------------------------


def _configure_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory or .tar")
    parser.add_argument(
        "--trusted", required=True, type=Path, help="directory of trusted *.pub keys"
    )


def _run_verify(args: argparse.Namespace) -> int:
    trusted = TrustedKeys.from_dir(args.trusted)
    try:
        bundle = load_bundle(args.bundle, trusted_keys=trusted, require_signature=True)
    except EdgeAgentError as err:
        print(f"FAILED: {err}")
        return 1
    print(
        f"OK: {bundle.path}: {bundle.manifest.name} {bundle.manifest.version} "
        f"({bundle.manifest.kind}), {len(bundle.manifest.files)} files, {bundle.nbytes} bytes, "
        f"signed by key {bundle.key_id}, sha256 {bundle.sha256}"
    )
    return 0


# inspect -----------------------------------------------------------------------------------------


def _configure_inspect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory or .tar")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    parser.add_argument(
        "--trusted", type=Path, default=None, help="directory of trusted *.pub keys to verify with"
    )


def _inspect_report(bundle: Bundle, status: str, detail: str | None) -> dict[str, Any]:
    manifest = bundle.manifest
    return {
        "path": str(bundle.path),
        "sha256": bundle.sha256,
        "nbytes": bundle.nbytes,
        "signature": {
            "status": status,
            "detail": detail,
            "key_id": bundle.key_id,
            "signer": manifest.signer,
        },
        "manifest": manifest.model_dump(mode="json"),
    }


def _shape(shape: Sequence[int] | None) -> str:
    return "" if shape is None else "[" + ", ".join(str(dim) for dim in shape) + "]"


def _print_inspect(bundle: Bundle, status: str, detail: str | None) -> None:
    manifest = bundle.manifest
    signature = "unsigned" if bundle.key_id is None else f"key {bundle.key_id}"
    if manifest.signer is not None:
        signature += f" (signer: {manifest.signer})"
    print(f"bundle     {bundle.path}")
    print(f"name       {manifest.name} {manifest.version}")
    print(f"kind       {manifest.kind}")
    print(f"created    {manifest.created.isoformat()}")
    print(f"sha256     {bundle.sha256}")
    print(f"signature  {signature}: {status}" + (f" ({detail})" if detail else ""))
    print(f"files      {len(manifest.files)} files, {bundle.nbytes} bytes")
    width = max((len(rel) for rel in manifest.files), default=0)
    for rel, entry in sorted(manifest.files.items()):
        array = "" if entry.dtype is None else f"  {entry.dtype}{_shape(entry.shape)}"
        print(f"  {rel:<{width}}  {entry.size:>10} B{array}")
    if manifest.aif is not None:
        aif = manifest.aif
        print(
            f"aif        num_obs={list(aif.num_obs)} num_states={list(aif.num_states)} "
            f"num_controls={list(aif.num_controls)} quant={aif.quant_scheme}"
        )
        arrays = " ".join(f"{name}={rel}" for name, rel in sorted(aif.arrays.items()))
        print(f"           arrays: {arrays}")
        if aif.shared_factors:
            print(f"           shared_factors: {list(aif.shared_factors)}")
    if manifest.neural is not None:
        neural = manifest.neural
        print(
            f"neural     {neural.backend} {neural.model_file} window={neural.window} "
            f"output={neural.output_kind}"
        )
        for direction, tensors in (("in ", neural.inputs), ("out", neural.outputs)):
            for tensor in tensors:
                quant = (
                    ""
                    if tensor.scale is None
                    else f" scale={tensor.scale} zero_point={tensor.zero_point}"
                )
                tensor_type = f"{tensor.dtype}{_shape(tensor.shape)}"
                print(f"           {direction} {tensor.name} {tensor_type}{quant}")
        if neural.action_low is not None and neural.action_high is not None:
            print(
                f"           actions low={list(neural.action_low)} high={list(neural.action_high)}"
            )
    if manifest.quantization:
        print(f"quantization {json.dumps(manifest.quantization, sort_keys=True)}")


def _run_inspect(args: argparse.Namespace) -> int:
    trusted = TrustedKeys.from_dir(args.trusted) if args.trusted is not None else None
    detail: str | None = None
    try:
        bundle = load_bundle(args.bundle, trusted_keys=trusted, require_signature=False)
    except SignatureError as err:
        bundle = load_bundle(args.bundle, trusted_keys=None, require_signature=False)
        status, detail = "failed", str(err)
    else:
        if bundle.signature_verified:
            status = "verified"
        elif bundle.key_id is None:
            status = "unsigned"
        else:
            status, detail = "not-checked", "pass --trusted DIR to verify"
    if args.json:
        print(json.dumps(_inspect_report(bundle, status, detail), indent=2, sort_keys=True))
    else:
        _print_inspect(bundle, status, detail)
    return 1 if status == "failed" else 0


# convert -----------------------------------------------------------------------------------------


def _bundle_name(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return value


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value}: expected a fraction in [0, 1]")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected an integer >= 1")
    return number


def _add_common_convert_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, type=Path,
        help="bundle to write: a new directory, or a .tar / .tar.gz file",
    )
    parser.add_argument("--name", type=_bundle_name, default=None,
                        help="bundle name (default: from the model file name)")
    parser.add_argument("--version", default="1.0.0", help="bundle version (default: 1.0.0)")
    parser.add_argument("--sign", type=Path, default=None, metavar="KEY",
                        help="sign the bundle with this private key (NAME.key)")
    parser.add_argument("--signer", default=None, help="who signs, recorded in the manifest")
    parser.add_argument("--seed", type=int, default=0, help="seed of simulations and samples")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--force", action="store_true",
                        help="write the bundle even if an accuracy check fails (neural: and "
                        "bundle the int8 model even when it is not smaller than float)")


def _add_aif_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Active Inference model")
    group.add_argument("--policy-len", type=_positive_int, default=1,
                       help="planning horizon L stored in the bundle's settings (default 1)")
    group.add_argument("--gamma", type=float, default=16.0, help="policy precision (default 16)")
    group.add_argument("--action-selection", choices=("deterministic", "stochastic"),
                       default="deterministic", help="action selection (default deterministic)")
    group.add_argument("--rollouts", type=_positive_int, default=200,
                       help="agents simulated for the agreement report (default 200)")
    group.add_argument("--steps", type=_positive_int, default=30,
                       help="steps per simulated agent (default 30)")
    group.add_argument("--max-kl", type=float, default=AifThresholds.max_kl,
                       help=f"largest mean belief KL accepted (default {AifThresholds.max_kl})")
    group.add_argument("--min-action-agreement", type=_fraction,
                       default=AifThresholds.min_action_agreement,
                       help="smallest fraction of int8 actions that the float64 agents rate "
                       "optimal, ties counted as agreeing "
                       f"(default {AifThresholds.min_action_agreement})")
    group.add_argument("--tie-tolerance", type=_fraction, default=AifThresholds.tie_tolerance,
                       help="an int8 action agrees when the float64 posterior gives it at most "
                       "this much less probability than its best action "
                       f"(default {AifThresholds.tie_tolerance})")


def _add_neural_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("calibration and held-out data")
    data.add_argument("--calibration", type=Path, default=None, metavar="X.npz",
                      help="an .npz of real inputs keyed by input name (numpy.savez), (n, ...) "
                      "per input: windows (n, T, F), vectors (n, F) or frames (n, C, H, W) / "
                      f"(n, H, W, C); fewer than {MIN_CALIBRATION_SAMPLES} warn, 1 is refused")
    data.add_argument("--input-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                      help="draw inputs uniformly from [LOW, HIGH) instead (warns)")
    data.add_argument("--heldout", type=Path, default=None, metavar="Y.npz",
                      help="held-out inputs (and optional 'labels': class indices of the first "
                      "output) for the report; default: the last 20%% of --calibration, or "
                      "fresh draws from --input-range")
    data.add_argument("--samples", type=_positive_int, default=256,
                      help="inputs drawn per set with --input-range (default 256)")
    quant = parser.add_argument_group("quantization")
    quant.add_argument("--per-tensor", action="store_true",
                       help="one weight scale per tensor instead of per channel")
    use = parser.add_argument_group("how the device uses the model")
    use.add_argument("--window", type=_positive_int, default=None,
                     help="history window T (default: from a (batch, T, F) input, else 1)")
    use.add_argument("--output-kind", choices=("discrete", "continuous", "observation"),
                     default="discrete",
                     help="action logits, continuous actions, or observation logits (perception)")
    use.add_argument("--action-low", type=float, nargs="+", default=None,
                     help="continuous action lower bounds")
    use.add_argument("--action-high", type=float, nargs="+", default=None,
                     help="continuous action upper bounds")
    use.add_argument("--aif", type=Path, default=None, metavar="MODEL",
                     help="pair the observation model with this generative model (.npz/.json): "
                     "an aif+perception bundle")
    report = parser.add_argument_group("report and thresholds")
    report.add_argument("--threads", type=_positive_int, default=1,
                        help="inference threads for the measurements (default 1)")
    report.add_argument("--latency-repeats", type=_positive_int, default=30,
                        help="timed runs per latency measurement (default 30)")
    report.add_argument("--min-top1", type=_fraction, default=NeuralThresholds.min_top1,
                        help="smallest top-1 agreement accepted on the held-out set "
                        f"(default {NeuralThresholds.min_top1}; not for continuous output)")
    report.add_argument("--max-abs-error", type=float, default=None,
                        help="largest absolute output error accepted (default: not checked)")
    _add_aif_options(parser)


def _add_onnx_options(parser: argparse.ArgumentParser) -> None:
    quant = parser.add_argument_group("ONNX quantization")
    quant.add_argument("--mode", choices=QUANT_MODES, default="auto",
                       help="static: QDQ int8 activations and weights, calibrated; dynamic: int8 "
                       "weights, activations quantized per call (onnxruntime's only way to "
                       "quantize LSTM; needs no calibration data); auto (default): quantize in "
                       "both, measure both on the held-out set, keep the one that quantized more "
                       "of the weights, static on a tie, never the less accurate one")
    quant.add_argument("--method", choices=CALIBRATION_METHODS, default="minmax",
                       help="static activation calibration: observed min/max (default), "
                       "entropy (KL-optimal clipping) or percentile")
    quant.add_argument("--percentile", type=float, default=99.999,
                       help="percentile kept by --method percentile (default 99.999)")
    quant.add_argument("--symmetric-activations", action="store_true",
                       help="static: activation ranges symmetric around 0 (zero point 0)")
    quant.add_argument("--exclude-nodes", nargs="+", default=[], metavar="NAME",
                       help="leave these nodes (by name) in float")
    quant.add_argument("--exclude-op-types", nargs="+", default=[], metavar="OP",
                       help="leave every node of these op types (e.g. Softmax) in float")
    quant.add_argument("--no-preprocess", action="store_true",
                       help="skip onnxruntime's quant_pre_process (shape inference and graph "
                       "optimisation); without it the converter falls back to this by itself "
                       "when pre-processing fails or breaks quantization, and says so")
    quant.add_argument("--output", action="append", default=[], metavar="NAME",
                       dest="outputs",
                       help="model output to bundle (repeat for several, in order; default: "
                       "every output that can be a policy or classifier: integer labels, single "
                       "columns and ZipMaps are dropped with a warning)")


def _configure_convert(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="source_kind", required=True, metavar="KIND")
    aif = kinds.add_parser(
        "aif", help="Active Inference model (.npz, .json) to logu8-v1",
        description="Quantize an Active Inference model (A, B, C, D, E) to logu8-v1, compare "
        "float64 and int8 agents over simulated rollouts, and write the bundle.",
    )
    aif.add_argument("model", type=Path, help="model: .npz (pymdp keys A0.., B0.., ...) or .json")
    _add_common_convert_options(aif)
    _add_aif_options(aif)
    onnx = kinds.add_parser(
        "onnx", help="ONNX model to int8 (static QDQ S8S8, or dynamic)",
        description="Quantize a float ONNX model to int8 (static QDQ, or dynamic for LSTMs), "
        "compare it with the float model on held-out data, step it as a device would, and write "
        "the bundle. A warning says when the int8 model is not below "
        f"{100 * SIZE_WARNING_RATIO:.0f} % of the float model's size.",
    )
    onnx.add_argument("model", type=Path, help="float .onnx model")
    _add_common_convert_options(onnx)
    _add_neural_options(onnx)
    _add_onnx_options(onnx)
    tflite = kinds.add_parser(
        "tflite", help="SavedModel / Keras model to int8 or float16 .tflite (LiteRT)",
        description="Convert a SavedModel or .keras model (needs TensorFlow) to a full-integer "
        "int8, dynamic-range or float16 .tflite, or take a float .tflite and its converted "
        "version (--int8); compare them with LiteRT on held-out data, step the bundle as a "
        "device would, and write it.",
    )
    tflite.add_argument("model", type=Path,
                        help="SavedModel directory, .keras file, or float .tflite (with --int8)")
    tflite.add_argument("--int8", type=Path, default=None, metavar="INT8.tflite",
                        help="already converted model of a float .tflite source (of --mode)")
    _add_common_convert_options(tflite)
    _add_neural_options(tflite)
    tflite.add_argument("--mode", choices=TFLITE_MODES, default="full-integer",
                        help="full-integer: int8 weights, activations, inputs and outputs "
                        "(default); dynamic-range: int8 weights, float activations; float16: "
                        "float16 weights")


def _default_name(path: Path) -> str:
    stem = path.name.split(".")[0] if path.name else "model"
    slug = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "model"
    return slug[:64]


def _aif_settings(args: argparse.Namespace) -> AifSettings:
    try:
        return AifSettings(
            policy_len=args.policy_len, gamma=args.gamma, action_selection=args.action_selection
        )
    except ValueError as err:  # RecordError: "field: problem; ..."
        raise InputError(f"invalid agent settings: {err}") from err


#: What ``convert KIND`` imports from the host extra (any one module of each tuple will do).
_CONVERT_NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "onnx": (("onnx",), ("onnxruntime",)),
    "tflite": (("ai_edge_litert", "tflite_runtime"),),
}


def _missing_host_packages(kind: str) -> list[str]:
    """The packages ``convert KIND`` needs that are not installed, named before any work."""
    return [
        modules[0].replace("_", "-") for modules in _CONVERT_NEEDS.get(kind, ())
        if not any(importlib.util.find_spec(module) for module in modules)
    ]


def _run_convert(args: argparse.Namespace) -> int:
    missing = _missing_host_packages(args.source_kind)
    if missing:
        print(
            f"error: convert {args.source_kind} needs {' and '.join(missing)}, not installed: "
            "pip install 'edge-agent-runtime[host]'",
            file=sys.stderr,
        )
        return 1
    sign_key = load_signing_key(args.sign) if args.sign is not None else None
    show = progress_enabled(args.quiet)
    name = args.name or _default_name(args.model)
    aif_thresholds = AifThresholds(
        max_kl=args.max_kl, min_action_agreement=args.min_action_agreement,
        tie_tolerance=args.tie_tolerance,
    )
    common: dict[str, Any] = {
        "name": name, "version": args.version, "seed": args.seed, "force": args.force,
        "sign_key": sign_key, "signer": args.signer, "show_progress": show,
    }
    if args.source_kind == "aif":
        report = convert_aif(
            load_aif_model(args.model), args.out, settings=_aif_settings(args),
            source=str(args.model), rollouts=args.rollouts, steps=args.steps,
            thresholds=aif_thresholds, **common,
        )
    else:
        options = NeuralOptions(
            output_kind=args.output_kind, window=args.window,
            action_low=tuple(args.action_low) if args.action_low else None,
            action_high=tuple(args.action_high) if args.action_high else None,
            mode=args.mode,
            method=getattr(args, "method", "minmax"),
            percentile=getattr(args, "percentile", 99.999),
            per_channel=not args.per_tensor, threads=args.threads,
            preprocess=not getattr(args, "no_preprocess", False),
            symmetric_activations=getattr(args, "symmetric_activations", False),
            exclude_nodes=tuple(getattr(args, "exclude_nodes", ())),
            exclude_op_types=tuple(getattr(args, "exclude_op_types", ())),
            outputs=tuple(getattr(args, "outputs", ())),
            latency_repeats=args.latency_repeats,
        )
        neural: dict[str, Any] = {
            "options": options,
            "calibration_path": args.calibration,
            "heldout_path": args.heldout,
            "input_range": tuple(args.input_range) if args.input_range else None,
            "samples": args.samples,
            "thresholds": NeuralThresholds(
                min_top1=args.min_top1, max_abs_error=args.max_abs_error
            ),
            "aif_model": load_aif_model(args.aif) if args.aif is not None else None,
            "aif_settings": _aif_settings(args),
            "aif_thresholds": aif_thresholds,
            "rollouts": args.rollouts,
            "steps": args.steps,
        }
        if args.source_kind == "onnx":
            report = convert_onnx(args.model, args.out, **neural, **common)
        else:
            report = convert_tflite(args.model, args.out, int8_path=args.int8, **neural, **common)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True, allow_nan=False))
        for warning in report.warnings:  # the table shows them; JSON readers see them here too
            print(f"warning: {warning}", file=sys.stderr)
    else:
        print(report.render())
    if not report.passed:
        if not args.force:
            return 1
        logger.warning("accuracy checks failed; bundle written anyway because of --force")
    return 0


COMMANDS: dict[str, Command] = {
    "keygen": Command("generate an Ed25519 signing key pair", _configure_keygen, _run_keygen),
    "sign": Command("sign a bundle in place", _configure_sign, _run_sign),
    "verify": Command("verify a bundle against trusted keys", _configure_verify, _run_verify),
    "inspect": Command("show a bundle's manifest and status", _configure_inspect, _run_inspect),
    "convert": Command(
        "quantize a model, report its accuracy and write a (signed) bundle",
        _configure_convert,
        _run_convert,
    ),
    "hub": Command(
        "talk to a fleet over MQTT: list it, watch it, send commands, deploy bundles",
        hub.configure,
        hub.run,
    ),
    "tasks": Command(
        "announce tasks to a fleet's agents and see who holds them", tasks.configure, tasks.run
    ),
    "broker": Command(
        "set up mosquitto for a fleet: TLS, one identity per client, an ACL binding each to its "
        "topics",
        broker.configure,
        broker.run,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``edge-agent-host`` argument parser with every command in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="edge-agent-host", description="Host-side tool for edge-agent bundles."
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    parser.add_argument(
        "--version", action="version", version=f"edge-agent-host {__version__}"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.configure(subparsers.add_parser(name, help=command.help, description=command.help))
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``edge-agent-host``; returns the exit code (argparse exits 2 on usage errors)."""
    notice = clash_notice("edge-agent-host")  # PyPI's edge-agent in this environment
    if notice is not None:
        print(notice, file=sys.stderr)
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    command = COMMANDS[args.command]
    try:
        return command.run(args)
    except (EdgeAgentError, OSError) as err:
        logger.debug("%s failed", args.command, exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as err:
        message = missing_module_message(err)
        if message is None:
            raise
        print(f"error: {args.command} {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
