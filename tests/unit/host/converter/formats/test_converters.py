"""The converter registry: a new input format is one module and one registry line.

This module is such a format itself (``two-table``: a one-factor model as an ``.npz`` with the
keys ``likelihood`` and ``transition``, what a pipeline without pymdp's layout might write); the
tests register it, run it through ``edge-agent-host convert`` and load the bundle it wrote.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif.model import GenerativeModel
from edge_agent.bundle.loader import load_bundle
from edge_agent.errors import InputError
from edge_agent_host.cli import build_parser, main
from edge_agent_host.converter import formats as converters
from edge_agent_host.converter.aif.options import AifOptions, add_aif_options, aif_options
from edge_agent_host.converter.common import Converter, ConvertOptions, add_common_options
from edge_agent_host.converter.formats.aif import convert_aif
from edge_agent_host.converter.formats.onnx import convert_onnx
from edge_agent_host.converter.report import ConversionReport

REPO = Path(__file__).resolve().parents[5]


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="an .npz with 'likelihood' and 'transition'")
    add_common_options(parser)
    add_aif_options(parser)


def _convert(args: argparse.Namespace, options: ConvertOptions) -> ConversionReport:
    source = options.input("an .npz with 'likelihood' and 'transition'")
    with np.load(source, allow_pickle=False) as data:
        model = GenerativeModel.from_arrays([data["likelihood"]], [data["transition"]])
    return convert_aif(options, aif_options(args, model))


CONVERTER = Converter(
    name="two-table",
    help="one-factor model as likelihood and transition tables",
    description="A format defined in the tests: one module and one registry line.",
    configure=_configure,
    convert=_convert,
)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(converters.REGISTRY, "two-table", __name__)


def test_every_registered_converter_names_itself_and_has_its_help() -> None:
    parser = build_parser()
    for name in converters.REGISTRY:
        plugin = converters.converter(name)
        assert plugin.name == name
        assert plugin.help
        assert plugin.description
    assert parser.parse_args(["convert", "aif", "m.npz", "--out", "b"]).source_kind == "aif"


def test_a_format_defined_in_one_module_converts_through_the_cli(
    registered: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = np.load(REPO / "examples" / "grid10.npz")
    source = tmp_path / "grid.tables.npz"
    np.savez(source, likelihood=grid["A0"], transition=grid["B0"])
    out = tmp_path / "grid.bundle"
    code = main(["convert", "two-table", str(source), "--out", str(out), "--rollouts", "8",
                 "--steps", "4", "--quiet"])
    assert code == 0, capsys.readouterr()
    bundle = load_bundle(out, trusted_keys=None, require_signature=False)
    assert bundle.manifest.name == "grid"  # from the file name, as for every format
    assert bundle.manifest.kind == "aif"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "one-factor model as likelihood and transition tables" in capsys.readouterr().out


def test_a_missing_package_is_named_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    needy = Converter(
        name="two-table", help="h", description="d", configure=_configure, convert=_convert,
        needs=(("edge_agent_no_such_module",), ("numpy",)),
    )
    monkeypatch.setitem(converters.REGISTRY, "two-table", __name__)
    monkeypatch.setattr(sys.modules[__name__], "CONVERTER", needy)
    code = main(["convert", "two-table", str(tmp_path / "absent.npz"), "--out",
                 str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == (
        "error: convert two-table needs edge-agent-no-such-module, not installed: "
        "pip install 'edge-agent-runtime[host]'"
    )


def test_a_module_registered_under_another_name_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(converters.REGISTRY, "other", __name__)
    with pytest.raises(RuntimeError, match="registers 'two-table', not 'other'"):
        converters.converter("other")


def test_the_cli_asks_no_format_which_it_is() -> None:
    """``convert`` in cli.py: the registry's names and modules appear nowhere in its code (the
    ``inspect`` command's manifest sections are bundle kinds, not input formats)."""
    source = (REPO / "tools" / "edge_agent_host" / "cli.py").read_text()
    tree = ast.parse(source)
    convert = [
        ast.get_source_segment(source, node) or ""
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name in ("_configure_convert", "_run_convert")
    ]
    assert len(convert) == 2
    for name, module in converters.REGISTRY.items():
        for code in convert:
            assert not re.search(rf"\b{re.escape(name)}\b", code), name
            assert module not in source, module


def test_a_format_that_reads_a_file_says_so_when_none_is_given(tmp_path: Path) -> None:
    """``ConvertOptions.model`` is optional (a model handed over in memory); a format that
    reads its input from a file says which input it needs, in one line, before any work."""
    options = ConvertOptions(out=tmp_path / "b", name="m")
    with pytest.raises(InputError, match=r"^ConvertOptions.model: give the input, a float "
                       r"\.onnx model$"):
        convert_onnx(options)
    with pytest.raises(InputError, match=r"^ConvertOptions.model: give the input, a \.npz or "
                       r"\.json model$"):
        convert_aif(options)
    with pytest.raises(InputError, match=r"^AifOptions.counts go with AifOptions.model"):
        convert_aif(options, AifOptions(counts={}))
    assert not (tmp_path / "b").exists()
