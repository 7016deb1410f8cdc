"""The converters of ``edge-agent-host convert``: one module per input format, found by name.

Each module holds its format's conversion and ends with ``CONVERTER``, a
:class:`~edge_agent_host.converter.common.Converter`: the help line, the host packages it needs,
how it adds its arguments to ``convert NAME``, and how it runs from those arguments and the
:class:`~edge_agent_host.converter.common.ConvertOptions` every conversion shares. The CLI asks
:func:`converter` for a name and never asks which format it has.

Adding an input format is one module here (its conversion and its ``CONVERTER``) and one line in
:data:`REGISTRY`. What the neural formats share (inputs, outputs, quantization, measuring, the
bundle) is in the host tool's ``neural_*`` modules, and their command-line options in
:mod:`~edge_agent_host.converter.neural.args`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from edge_agent_host.converter.common import Converter

__all__ = ["REGISTRY", "converter"]

#: ``convert NAME`` -> the module that defines its ``CONVERTER``, in the order of ``--help``.
REGISTRY: Final[dict[str, str]] = {
    "aif": "edge_agent_host.converter.formats.aif",
    "onnx": "edge_agent_host.converter.formats.onnx",
    "tflite": "edge_agent_host.converter.formats.tflite",
}


def converter(name: str) -> Converter:
    """The converter registered as ``name`` (its module imported now). Raises ``KeyError`` for a
    name not in :data:`REGISTRY`."""
    found: Converter = importlib.import_module(REGISTRY[name]).CONVERTER
    if found.name != name:
        raise RuntimeError(f"{REGISTRY[name]} registers {found.name!r}, not {name!r}")
    return found
