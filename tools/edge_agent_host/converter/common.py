"""What every converter shares: :class:`ConvertOptions` (the one options record of a
conversion, whatever the input format), :class:`Converter` (what a format's module registers),
and the command-line options and argument types of every ``convert`` subcommand.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import InputError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_agent_host.converter.report import ConversionReport

__all__ = [
    "ConvertOptions",
    "Converter",
    "add_common_options",
    "bundle_name",
    "default_name",
    "fraction",
    "positive_int",
]


@dataclass(frozen=True)
class ConvertOptions:
    """What every conversion is asked, whatever its input format.

    A format's conversion function takes this record and, if it has options of its own, one
    record of its own (``convert_onnx(options, NeuralOptions(...))``).

    ``out``: the bundle to write (a new directory, or a ``.tar`` / ``.tar.gz``); ``name`` and
    ``version``: the bundle's; ``model``: the input file or directory, as the format reads it
    (``None`` when the format is handed its model in memory, as ``convert_aif`` and
    ``convert_pymdp`` can be; the report names it as its source); ``seed``: of simulations and
    samples; ``force``: write the bundle even if a check fails; ``sign_key`` and ``signer``:
    sign it (``None``: unsigned); ``show_progress``: progress bars.
    """

    out: Path
    name: str
    model: Path | None = None
    version: str = "1.0.0"
    seed: int = 0
    force: bool = False
    sign_key: Ed25519PrivateKey | None = None
    signer: str | None = None
    show_progress: bool = False

    def input(self, what: str) -> Path:
        """``model``, which this format needs (``what``: the input it reads, for the error)."""
        if self.model is None:
            raise InputError(f"ConvertOptions.model: give the input, {what}")
        return self.model


@dataclass(frozen=True)
class Converter:
    """One input format of ``edge-agent-host convert``, as its module registers it.

    ``configure`` adds the format's arguments to its ``convert NAME`` parser: a positional
    ``model`` and :func:`add_common_options` among them. ``convert`` runs the conversion from the
    parsed arguments (the format's own) and the shared :class:`ConvertOptions`. ``needs``: the
    host packages it imports, each a tuple of modules any one of which will do, named to the
    user before any work when missing.
    """

    name: str
    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    convert: Callable[[argparse.Namespace, ConvertOptions], ConversionReport]
    needs: tuple[tuple[str, ...], ...] = ()

    def missing_packages(self) -> list[str]:
        """The packages this converter needs that are not installed."""
        return [
            modules[0].replace("_", "-")
            for modules in self.needs
            if not any(importlib.util.find_spec(module) for module in modules)
        ]


def bundle_name(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return value


def fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value}: expected a fraction in [0, 1]")
    return number


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected an integer >= 1")
    return number


def default_name(path: Path) -> str:
    """The bundle name when ``--name`` is not given: from the model's file name."""
    stem = path.name.split(".")[0] if path.name else "model"
    slug = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "model"
    return slug[:64]


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options of every ``convert`` subcommand (read into :class:`ConvertOptions`)."""
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="bundle to write: a new directory, or a .tar / .tar.gz file",
    )
    parser.add_argument(
        "--name",
        type=bundle_name,
        default=None,
        help="bundle name (default: from the model file name)",
    )
    parser.add_argument("--version", default="1.0.0", help="bundle version (default: 1.0.0)")
    parser.add_argument(
        "--sign",
        type=Path,
        default=None,
        metavar="KEY",
        help="sign the bundle with this private key (NAME.key)",
    )
    parser.add_argument("--signer", default=None, help="who signs, recorded in the manifest")
    parser.add_argument("--seed", type=int, default=0, help="seed of simulations and samples")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--force",
        action="store_true",
        help="write the bundle even if an accuracy check fails (neural: and "
        "bundle the int8 model even when it is not smaller than float)",
    )
