"""``edge-agent-host``: convert, write, sign, verify and inspect bundles on the host.

``convert KIND`` quantizes a model, reports what int8 costs in accuracy, size and latency,
refuses a conversion worse than its thresholds (exit 1 unless ``--force``), and writes the
bundle, signed with ``--sign KEY``; the kinds are the formats of
:data:`edge_agent_host.converter.formats.REGISTRY`, which this module never names. See
``docs/host-tool.md``.

Each subcommand is one entry in :data:`COMMANDS`: a help line, a function that adds its arguments
to an ``argparse`` parser, and a function that runs it and returns the exit code. Adding a command
means adding one entry. A run configures only the command it runs, and each command imports its
modules when it is configured or run: ``edge-agent-host hub fleet`` does not import the converter
or the bundle loader (every command's imports took 1.4-1.8 s before any of them ran). This
module is the only place in the host tool that configures logging.

Exit codes: 0 success, 1 the operation failed (bad bundle, bad signature, bad key), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from edge_agent import __version__
from edge_agent.distribution import clash_notice
from edge_agent.errors import (
    EdgeAgentError,
    SignatureError,
    file_problem,
    missing_module_message,
)
from edge_agent.service.closed_stdout import guard_stdout

if TYPE_CHECKING:
    from edge_agent.bundle.loader import Bundle

logger = logging.getLogger(__name__)

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


class Command(NamedTuple):
    """One subcommand: its help line, how to add its arguments, and how to run it."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# keygen ------------------------------------------------------------------------------------------


def _key_name(value: str) -> str:
    from edge_agent_host.keys import KEY_NAME_RE  # noqa: PLC0415 - imported when run

    if not KEY_NAME_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def _configure_keygen(parser: argparse.ArgumentParser) -> None:
    from edge_agent_host.keys import DEFAULT_KEY_NAME  # noqa: PLC0415 - imported when configured

    parser.add_argument("--out", required=True, type=Path, help="directory to write the keys into")
    parser.add_argument(
        "--name",
        type=_key_name,
        default=DEFAULT_KEY_NAME,
        help=f"key file name stem: NAME.key and NAME.pub (default: {DEFAULT_KEY_NAME})",
    )


def _run_keygen(args: argparse.Namespace) -> int:
    from edge_agent_host.keys import generate_keypair  # noqa: PLC0415 - imported when run

    pair = generate_keypair(args.out, args.name)
    print(f"key id:      {pair.key_id}")
    print(f"private key: {pair.private_path}  (keep secret; mode 0600)")
    print(
        f"public key:  {pair.public_path}  (copy it to every device: into [daemon] "
        "trusted_keys_dir if it signs bundles (a CI's, a hub's [learning] key_file), [mqtt] "
        "hub_keys_dir if it signs hub commands (a hub's [rollouts] key_file))"
    )
    return 0


# sign --------------------------------------------------------------------------------------------


def _configure_sign(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory or .tar to sign in place")
    parser.add_argument("--key", required=True, type=Path, help="private key file (NAME.key)")
    parser.add_argument("--signer", default=None, help="who signs, recorded in the manifest")


def _run_sign(args: argparse.Namespace) -> int:
    from edge_agent.bundle.signing import key_id  # noqa: PLC0415 - imported when run
    from edge_agent.bundle.writer import sign_bundle  # noqa: PLC0415
    from edge_agent_host.keys import load_signing_key  # noqa: PLC0415

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
    from edge_agent.bundle.loader import load_bundle  # noqa: PLC0415 - imported when run
    from edge_agent.bundle.signing import TrustedKeys  # noqa: PLC0415

    trusted = TrustedKeys.from_dir(args.trusted)
    try:
        bundle = load_bundle(args.bundle, trusted_keys=trusted, require_signature=True)
    except EdgeAgentError as err:
        print(f"FAILED: {err}", file=sys.stderr)
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
    from edge_agent.bundle.loader import load_bundle  # noqa: PLC0415 - imported when run
    from edge_agent.bundle.signing import TrustedKeys  # noqa: PLC0415

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


def _configure_convert(parser: argparse.ArgumentParser) -> None:
    from edge_agent_host.converter import formats  # noqa: PLC0415 - imported when configured

    kinds = parser.add_subparsers(dest="source_kind", required=True, metavar="KIND")
    for name in formats.REGISTRY:
        plugin = formats.converter(name)
        plugin.configure(kinds.add_parser(name, help=plugin.help, description=plugin.description))


def _run_convert(args: argparse.Namespace) -> int:
    from edge_agent_host.converter import formats  # noqa: PLC0415 - imported when run
    from edge_agent_host.converter.common import ConvertOptions, default_name  # noqa: PLC0415
    from edge_agent_host.converter.report import progress_enabled  # noqa: PLC0415
    from edge_agent_host.keys import load_signing_key  # noqa: PLC0415

    plugin = formats.converter(args.source_kind)
    missing = plugin.missing_packages()
    if missing:
        print(
            f"error: convert {args.source_kind} needs {' and '.join(missing)}, not installed: "
            "pip install 'edge-agent-runtime[host]'",
            file=sys.stderr,
        )
        return 1
    options = ConvertOptions(
        model=args.model,
        out=args.out,
        name=args.name or default_name(args.model),
        version=args.version,
        seed=args.seed,
        force=args.force,
        sign_key=load_signing_key(args.sign) if args.sign is not None else None,
        signer=args.signer,
        show_progress=progress_enabled(args.quiet),
    )
    report = plugin.convert(args, options)
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


# variant -----------------------------------------------------------------------------------------


def _configure_variant(parser: argparse.ArgumentParser) -> None:
    from edge_agent_host.converter.aif import variant  # noqa: PLC0415 - imported when configured

    def swap_of(table: Literal["A", "B"]) -> Callable[[str], variant.Swap]:
        def parse(text: str) -> variant.Swap:
            try:
                return variant.parse_swap(text, table)
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from err

        return parse

    parser.add_argument(
        "model",
        type=Path,
        help="model: .npz (pymdp keys A0.., B0.., ...; Dirichlet counts pA0.., pB0.. are swapped "
        "with their tables) or .json",
    )
    parser.add_argument("--out", required=True, type=Path, help="the variant to write (.npz)")
    parser.add_argument(
        "--swap-outcomes",
        action="append",
        default=[],
        type=swap_of("A"),
        metavar="M:I,J",
        help="in modality M's likelihood A[M], swap outcomes I and J: the model expects J where "
        "the world gives I (the T-maze's 1:1,2: its reward arms swapped); repeatable",
    )
    parser.add_argument(
        "--swap-actions",
        action="append",
        default=[],
        type=swap_of("B"),
        metavar="F:U,V",
        help="in factor F's transitions B[F], swap actions U and V: the model believes U does "
        "what V does (a grid's moves mirrored); repeatable",
    )


def _run_variant(args: argparse.Namespace) -> int:
    from edge_agent.aif.model import Counts  # noqa: PLC0415 - imported when run
    from edge_agent_host.converter.aif.source import load_aif_model  # noqa: PLC0415
    from edge_agent_host.converter.aif.variant import make_variant, write_variant  # noqa: PLC0415

    swaps = [*args.swap_outcomes, *args.swap_actions]
    if not swaps:
        print("error: nothing to change: give --swap-outcomes or --swap-actions", file=sys.stderr)
        return 2
    counts: Counts = {}
    model, counts = make_variant(load_aif_model(args.model, counts=counts), counts, swaps)
    write_variant(args.out, model, counts, source=str(args.model), swaps=swaps)
    changes = "; ".join(swap.describe() for swap in swaps)
    print(f"wrote {args.out}: {args.model} with {changes} (convert aif makes its bundle)")
    return 0


# hub, tasks, broker: their own modules, imported when configured or run -----------------------


def _configure_hub(parser: argparse.ArgumentParser) -> None:
    from edge_agent_host import fleetctl  # noqa: PLC0415 - imported when configured

    fleetctl.configure(parser)


def _run_hub(args: argparse.Namespace) -> int:
    from edge_agent_host import fleetctl  # noqa: PLC0415 - imported when run

    return fleetctl.run(args)


def _configure_tasks(parser: argparse.ArgumentParser) -> None:
    from edge_agent_host.fleetctl import tasks  # noqa: PLC0415 - imported when configured

    tasks.configure(parser)


def _run_tasks(args: argparse.Namespace) -> int:
    from edge_agent_host.fleetctl import tasks  # noqa: PLC0415 - imported when run

    return tasks.run(args)


def _configure_broker(parser: argparse.ArgumentParser) -> None:
    from edge_agent_host.broker import cli as broker_cli  # noqa: PLC0415 - imported when configured

    broker_cli.configure(parser)


def _run_broker(args: argparse.Namespace) -> int:
    from edge_agent_host.broker import cli as broker_cli  # noqa: PLC0415 - imported when run

    return broker_cli.run(args)


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
    "variant": Command(
        "write a deliberately changed copy of an Active Inference model (outcomes or actions "
        "swapped): a worse model to try a rollout's gate or a shadow evaluation with",
        _configure_variant,
        _run_variant,
    ),
    "hub": Command(
        "talk to a fleet over MQTT: list it, watch it, send commands, deploy bundles",
        _configure_hub,
        _run_hub,
    ),
    "tasks": Command(
        "announce tasks to a fleet's agents and see who holds them", _configure_tasks, _run_tasks
    ),
    "broker": Command(
        "set up mosquitto for a fleet: TLS, one identity per client, an ACL binding each to its "
        "topics",
        _configure_broker,
        _run_broker,
    ),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``edge-agent-host`` argument parser with every command in :data:`COMMANDS`; with
    ``only``, every command is listed but only that one's arguments are added (what a run needs:
    the other commands' modules are not imported)."""
    parser = argparse.ArgumentParser(
        prog="edge-agent-host", description="Host-side tool for edge-agent bundles."
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    parser.add_argument("--version", action="version", version=f"edge-agent-host {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        if only is None or name == only:
            command.configure(sub)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    if verbosity == 0:  # paho's own socket errors ("failed to receive on socket") only with -v:
        # each attempt's, where the client says once what went wrong (no connection, TLS wanted)
        logging.getLogger("edge_agent.fleet.comms.mqtt.paho").setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``edge-agent-host``; returns the exit code (argparse exits 2 on usage errors; a
    closed standard output 141, :mod:`edge_agent.service.closed_stdout`)."""
    notice = clash_notice("edge-agent-host")  # PyPI's edge-agent in this environment
    if notice is not None:
        print(notice, file=sys.stderr)
    return guard_stdout(lambda: _run(argv), "edge-agent-host")


def _run(argv: Sequence[str] | None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    # The command is the first word that is not an option (the tool's own options take no value);
    # without one (--help, --version, nothing) no command's arguments are needed.
    named = next((word for word in words if not word.startswith("-")), "")
    args = build_parser(only=named).parse_args(words)
    _configure_logging(args.verbose)
    command = COMMANDS[args.command]
    try:
        return command.run(args)
    except BrokenPipeError:
        raise  # standard output's reader left, or not: guard_stdout says which
    except (EdgeAgentError, OSError) as err:
        logger.debug("%s failed", args.command, exc_info=True)
        text = file_problem(err) if isinstance(err, OSError) else str(err)
        print(f"error: {text}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as err:
        message = missing_module_message(err)
        if message is None:
            raise
        print(f"error: {args.command} {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
