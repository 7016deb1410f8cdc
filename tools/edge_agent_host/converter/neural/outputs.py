"""Which outputs of a neural model a bundle keeps.

Outputs: a bundle holds only outputs a device can act on. An output that cannot be a policy or a
classifier (integer class labels such as skl2onnx's ``label``, a single column, a ZipMap) is
dropped from the model when another one qualifies (the report names it), or the model is refused
in one line; ``outputs`` (``--output NAME``) chooses them by name.

An ONNX model is cut down to the outputs kept (:func:`choose_outputs`); a converter that cannot
drop outputs checks the first one (:func:`check_outputs`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edge_agent.bundle.manifest import TensorSpec
from edge_agent.errors import InputError, ModelError
from edge_agent.neural.backends import get_backend
from edge_agent_host.converter.neural.options import NeuralOptions, OutputKind

__all__ = [
    "check_outputs",
    "choose_outputs",
    "keep_outputs",
    "output_problem",
    "select_outputs",
    "unzip_outputs",
]

_FLOAT_DTYPES = ("float32", "float16")


def output_problem(spec: TensorSpec, kind: OutputKind) -> str | None:
    """Why output ``spec`` cannot be ``kind`` (policy logits, actions, observation logits), or
    ``None`` when it can: ``(batch, A)`` floats, with ``A >= 2`` unless continuous."""
    shape = list(spec.shape)
    if spec.dtype not in _FLOAT_DTYPES:
        if len(shape) == 1 and spec.dtype.startswith(("int", "uint")):
            return (
                f"is {spec.dtype} {shape}: class labels (one index per item), not scores per class"
            )
        return f"is {spec.dtype} {shape}: {kind} outputs are float scores"
    if len(shape) != 2:
        return f"has shape {shape}: {kind} outputs are [-1, A] (one row per item)"
    if kind != "continuous" and shape[1] < 2:
        return f"has shape {shape}: a single column, whose argmax is always 0 (no choice to make)"
    return None


def select_outputs(
    specs: Sequence[TensorSpec],
    kind: OutputKind,
    requested: Sequence[str] = (),
    unloadable: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """``(outputs to keep, {dropped output: why})`` (module docstring); ModelError in one line
    when nothing qualifies or a requested output does not. ``unloadable``: outputs already
    dropped because they are no tensors, and why (named in that error)."""
    by_name = {spec.name: spec for spec in specs}
    unknown = [name for name in requested if name not in by_name]
    if unknown:
        raise InputError(
            f"--output {unknown[0]!r}: the model's outputs are {[s.name for s in specs]}"
        )
    problems = {spec.name: problem for spec in specs if (problem := output_problem(spec, kind))}
    if requested:
        for name in requested:
            if name in problems:
                raise ModelError(f"output {name!r} {problems[name]}; it cannot be {kind} output")
        keep = list(dict.fromkeys(requested))
    else:
        keep = [spec.name for spec in specs if spec.name not in problems]
    if not keep:
        reasons = "; ".join(
            f"{name!r} {why}" for name, why in {**problems, **(unloadable or {})}.items()
        )
        raise ModelError(
            f"no output of the model can be {kind} output: {reasons}. Export per-class scores "
            "(logits) of shape [-1, A], A >= 2"
        )
    dropped = {
        spec.name: problems.get(spec.name, "not chosen with --output")
        for spec in specs
        if spec.name not in keep
    }
    return keep, dropped


def _proto_output_problem(value: Any) -> str | None:
    """Why a graph output cannot even be loaded as a tensor (ZipMap, strings), or ``None``."""
    from onnx import TensorProto, helper

    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        hint = ""
        if kind == "sequence_type":
            hint = " (skl2onnx's ZipMap: export with options={'zipmap': False})"
        return f"is a {kind.replace('_type', '')}, not a tensor{hint}"
    elem = value.type.tensor_type.elem_type
    supported = (
        TensorProto.FLOAT,
        TensorProto.FLOAT16,
        TensorProto.INT8,
        TensorProto.UINT8,
        TensorProto.INT16,
        TensorProto.INT32,
        TensorProto.INT64,
        TensorProto.BOOL,
    )
    if elem not in supported:
        name = helper.tensor_dtype_to_string(elem).removeprefix("TensorProto.").lower()
        return f"is a tensor of {name} (class names?), not scores per class"
    return None


def _subgraph_inputs(node: Any) -> set[str]:
    """Every tensor name the node's subgraphs (If, Loop, Scan) read, outer scope included."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
        for graph in graphs:
            for inner in graph.node:
                names.update(inner.input)
                names.update(_subgraph_inputs(inner))
    return names


def keep_outputs(model_bytes: bytes, names: Sequence[str]) -> bytes:
    """The model with only the graph outputs ``names`` (in that order) and the nodes and
    initializers they need."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    by_name = {value.name: value for value in graph.output}
    outputs = [by_name[name] for name in names]
    needed = set(names)
    kept = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
            needed.update(_subgraph_inputs(node))
    nodes = list(reversed(kept))
    initializers = [init for init in graph.initializer if init.name in needed]
    value_info = [value for value in graph.value_info if value.name in needed]
    for field, values in (
        ("output", outputs),
        ("node", nodes),
        ("initializer", initializers),
        ("value_info", value_info),
    ):
        copies = [type(v)() for v in values]
        for copy, value in zip(copies, values, strict=True):
            copy.CopyFrom(value)
        target = getattr(graph, field)
        del target[:]
        target.extend(copies)
    return bytes(model.SerializeToString())


def unzip_outputs(model_bytes: bytes, warnings: list[str]) -> bytes:
    """Replace each graph output that a ``ZipMap`` makes (skl2onnx's default: one dict of class
    probabilities per item) by the ``ZipMap``'s own float input ``(batch, classes)``."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    zipmaps = {node.output[0]: node for node in graph.node if node.op_type == "ZipMap"}
    names = [value.name for value in graph.output]
    if not any(name in zipmaps for name in names):
        return model_bytes
    outputs = []
    for value in graph.output:
        node = zipmaps.get(value.name)
        if node is None:
            outputs.append(value)
            continue
        source = node.input[0]
        labels = next(
            (
                len(a.ints) or len(a.strings)
                for a in node.attribute
                if a.name.startswith("classlabels")
            ),
            0,
        )
        if source not in names:
            outputs.append(
                helper.make_tensor_value_info(
                    source, TensorProto.FLOAT, ["batch", labels or "classes"]
                )
            )
        warnings.append(
            f"output {value.name!r} is a ZipMap (a dict of class probabilities per item, which a "
            f"device cannot read): bundled as its float input {source!r} [-1, {labels or '?'}] "
            "(export with options={'zipmap': False} to skip this)"
        )
    del graph.output[:]
    graph.output.extend(outputs)
    return keep_outputs(model.SerializeToString(), [value.name for value in outputs])


def choose_outputs(
    model_bytes: bytes, options: NeuralOptions, warnings: list[str], threads: int = 1
) -> bytes:
    """``model_bytes`` with only the outputs a device can use as ``options.output_kind``
    (:func:`select_outputs`); each dropped output is named in ``warnings``."""
    import onnx

    if not options.outputs:
        model_bytes = unzip_outputs(model_bytes, warnings)
    graph_outputs = onnx.load_from_string(model_bytes).graph.output
    names = [value.name for value in graph_outputs]
    unloadable = {
        value.name: problem
        for value in graph_outputs
        if (problem := _proto_output_problem(value)) is not None
    }
    for name in options.outputs:
        if name not in names:
            raise InputError(f"--output {name!r}: the model's outputs are {names}")
        if name in unloadable:
            raise ModelError(f"output {name!r} {unloadable[name]}")
    if len(unloadable) == len(names):
        reasons = "; ".join(f"{name!r} {why}" for name, why in unloadable.items())
        raise ModelError(f"no output of the model is a tensor: {reasons}")
    loadable = [name for name in names if name not in unloadable]
    if unloadable:
        model_bytes = keep_outputs(model_bytes, loadable)
    specs = get_backend("onnxruntime").load(model_bytes, threads).output_specs
    keep, dropped = select_outputs(specs, options.output_kind, options.outputs, unloadable)
    dropped = {**unloadable, **dropped}
    for name in names:
        if name in dropped:
            warnings.append(
                f"output {name!r} {dropped[name]}: dropped from the bundle; using "
                f"{', '.join(repr(k) for k in keep)} (--output NAME chooses)"
            )
    if keep != loadable:
        model_bytes = keep_outputs(model_bytes, keep)
    return model_bytes


def check_outputs(specs: Sequence[TensorSpec], kind: OutputKind) -> None:
    """The first output must be usable as ``kind`` (converters that cannot drop outputs)."""
    problem = output_problem(specs[0], kind)
    if problem is not None:
        raise ModelError(f"output {specs[0].name!r} {problem}; it cannot be {kind} output")
