"""The refresh: the tables a learning group infers with, made from its Dirichlet counts.

Pure functions over the counts (:class:`~edge_agent.aif.learning_counts.DirichletCounts`: their
values and the columns touched since the last refresh), the current float tables, int8 codes
(:mod:`edge_agent.aif.quant`) and compiled tables (:mod:`edge_agent.aif.kernels`), returning the
updated ones: :func:`refresh_model` builds the whole model again from the normalised counts
(encoding only the touched columns of a table past its first refresh) and compiles it;
:func:`refresh_touched_likelihood` brings only the touched columns of the learned likelihoods into
the compiled tables, without a compile, and :func:`refresh_touched_transitions` the columns of a
learned ``B`` that moved (:func:`moved_transition_columns`), with what the transitions give made
again (not the likelihood's tables, the policy tree or ``D``), when its structure stays; and
:func:`normalise_agent_tables` makes per-agent tables from per-agent counts. Nothing here marks
the counts refreshed: the caller does, once it uses what a function returned.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.learning_counts import DirichletCounts
from edge_agent.aif.learning_kernels import normalise
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import (
    LogU8,
    QuantizedModel,
    SparseColumns,
    decode_log_u8,
    encode_log_u8,
    encode_transition,
    reencode_columns,
)

__all__ = [
    "Codes",
    "Refreshed",
    "codes_nbytes",
    "decoded_likelihoods",
    "learned_codes",
    "moved_transition_columns",
    "normalise_agent_tables",
    "refresh_model",
    "refresh_touched_likelihood",
    "refresh_touched_transitions",
    "refreshed_columns",
]

#: A model's int8 tables by kind (``"A"``, ``"B"``, ``"D"``), by modality or factor:
#: :class:`LogU8` (``A``, ``D``, a dense ``B``) or :class:`SparseColumns` (a sparse ``B``).
Codes = dict[str, list[Any]]


class Refreshed(NamedTuple):
    """What a refresh made: the float model the agents infer with, its int8 codes (None for a
    float64 group), its compiled tables, and how many int8 columns it encoded."""

    model: GenerativeModel
    quantized: QuantizedModel | None
    cm: kernels.CompiledModel
    columns_encoded: int


def learned_codes(quantized: QuantizedModel, counts: Sequence[DirichletCounts]) -> Codes:
    """``quantized``'s int8 tables by kind, the learned ones (those of ``counts``) copied: a
    refresh encodes into the copies, and the model given (which other groups may share) stays
    as it is."""
    codes: Codes = {"A": list(quantized.A), "B": list(quantized.B), "D": list(quantized.D)}
    for table in counts:
        for index in table.tables:
            codes[table.kind][index] = _copy_codes(codes[table.kind][index])
    return codes


def codes_nbytes(counts: Sequence[DirichletCounts]) -> int:
    """The bytes of a group's own int8 codes of the learned tables, by the counts' support,
    which a learned table has from its first refresh on (a sparse ``B`` with more targets per
    column than the model's takes more)."""
    total = 0
    for table in counts:
        for prior in table.prior:
            expected = normalise(prior)
            encoded = encode_transition(expected) if table.kind == "B" else encode_log_u8(expected)
            total += encoded.nbytes
    return total


def refreshed_columns(
    counts: np.ndarray, touched: NDArray[np.bool_], table: np.ndarray
) -> np.ndarray:
    """A copy of ``table`` ``(rows, ...)`` whose columns ``touched`` (a mask over
    ``table.shape[1:]``) are the normalised ``counts`` (the table's shape)."""
    flat = counts.reshape(counts.shape[0], -1)
    out = np.array(table, dtype=np.float64).reshape(flat.shape)
    columns = touched.reshape(-1)
    out[:, columns] = normalise(flat[:, columns])
    return out.reshape(table.shape)


def refresh_model(
    model: GenerativeModel,
    quantized: QuantizedModel | None,
    codes: Codes | None,
    counts: Sequence[DirichletCounts],
    *,
    policies: np.ndarray,
    dtype: type[np.floating],
    whole: Collection[str] = (),
) -> Refreshed:
    """The whole model again: every learned table whose counts were updated since they were
    last their prior is their expectation (until then the table the model was given: pymdp's
    ``update_A`` sets ``A``, not ``B``); for an int8 group (``quantized`` and ``codes``, the
    group's own from :func:`learned_codes`) a table is encoded whole at its first refresh and
    only its touched columns after (in place, into ``codes``); ``whole``: the kinds (``"A"``,
    ``"B"``) whose learned tables are encoded whole (their ``codes`` still the ones the group
    was loaded with, while the counts were refreshed elsewhere: a shared group's compiled
    pass); compiled with ``policies`` in
    ``dtype``."""
    A, B, D = list(model.A), list(model.B), list(model.D)
    tables = {"A": A, "B": B, "D": D}
    encoded = 0
    for table in counts:
        if not table.learned:
            continue
        for slot, index in enumerate(table.tables):
            tables[table.kind][index] = table.normalised(slot)
            if codes is not None:
                encoded += _encode(codes, table, slot, index, tables[table.kind][index],
                                   whole=table.kind in whole)
    floats = GenerativeModel.from_arrays(A, B, model.C, D, model.E)
    source: GenerativeModel | QuantizedModel = floats
    if quantized is not None and codes is not None:
        source = quantized = QuantizedModel(
            A=tuple(codes["A"]),
            B=tuple(codes["B"]),
            C=quantized.C,
            D=tuple(codes["D"]),
            E=quantized.E,
            num_obs=model.num_obs,
            num_states=model.num_states,
            num_controls=model.num_controls,
        )
    cm = kernels.compile_model(source, policies, dtype=dtype)
    return Refreshed(floats, quantized, cm, encoded)


def refresh_touched_likelihood(
    cm: kernels.CompiledModel,
    model: GenerativeModel,
    quantized: QuantizedModel | None,
    codes: Codes | None,
    pA: DirichletCounts,
    *,
    decoded: list[np.ndarray] | None = None,
    in_place: bool = False,
) -> Refreshed | None:
    """The learned likelihoods' touched columns (``pA.touched``: joint states) normalised,
    encoded (int8: into ``codes``) and brought into the compiled tables without a compile
    (:func:`~edge_agent.aif.kernels.refresh_likelihood`); the transitions, ``D`` and every
    planner's structure are kept. None when that does not apply (the support of a touched column
    moved, or a deep planner): compile the model again then (the codes of the touched columns may
    be encoded already, as :func:`refresh_model` encodes them). ``pA`` must be past its first
    refresh (its tables follow its counts).

    ``decoded`` (int8): every modality's codes decoded, ``(O_m, S_joint)`` float64
    (:func:`decoded_likelihoods`), kept by the caller across refreshes: only the columns encoded
    here are decoded, into it, and the other modalities' columns are read from it rather than
    decoded again. ``in_place``: ``cm`` is the caller's own, made by an earlier refresh that
    copied (:func:`~edge_agent.aif.kernels.refresh_likelihood`)."""
    columns = np.zeros(model.num_states, dtype=bool)
    for touched in pA.touched:
        columns |= touched
    cols = np.flatnonzero(columns.reshape(-1))
    A = list(model.A)
    moved = [False] * len(A)
    encoded = 0
    for slot, index in enumerate(pA.tables):
        touched = pA.touched[slot]
        if not np.count_nonzero(touched):  # (a C call: any() costs a few Python frames)
            continue
        moved[index] = True
        table = refreshed_columns(pA.counts[slot], touched, A[index])
        A[index] = table
        if codes is not None:
            flat = table.reshape(table.shape[0], -1)
            mask = touched.reshape(-1)
            flat_codes = _flat_codes(codes["A"][index])
            encoded += reencode_columns(flat_codes, flat, mask)
            if decoded is not None:
                decoded[index][:, mask] = decode_log_u8(_columns(flat_codes, mask))
    if codes is None:
        A_cols = [a.reshape(a.shape[0], -1)[:, cols] for a in A]
    elif decoded is not None:
        A_cols = [d[:, cols] for d in decoded]
    else:
        A_cols = [decode_log_u8(_columns(_flat_codes(q), cols)) for q in codes["A"]]
    refreshed = kernels.refresh_likelihood(
        cm, columns.reshape(-1), A_cols, moved=moved, in_place=in_place
    )
    if refreshed is None:
        return None
    for table in A:
        table.setflags(write=False)
    if codes is not None and quantized is not None and any(
        mine is not theirs for mine, theirs in zip(codes["A"], quantized.A, strict=True)
    ):  # the group's own codes, encoded in place from their first refresh on
        quantized = replace(quantized, A=tuple(codes["A"]))
    return Refreshed(replace(model, A=tuple(A)), quantized, refreshed, encoded)


def refresh_touched_transitions(
    cm: kernels.CompiledModel,
    model: GenerativeModel,
    quantized: QuantizedModel | None,
    codes: Codes | None,
    pB: DirichletCounts,
) -> Refreshed | None:
    """The learned transitions' columns that moved since the last refresh
    (:func:`moved_transition_columns`: touched, and normalised to other values) brought into the
    tables, encoded (int8: into ``codes``) and into the compiled tables without a compile: each
    factor that moved gets its transitions from its table (int8: its codes), a dense one only
    those columns written (:func:`~edge_agent.aif.kernels.refreshed_transition`), and
    :func:`~edge_agent.aif.kernels.refresh_transitions` makes again only what they give; the
    likelihood, ``D`` and the policy tree are kept; ``cm`` itself (and ``model``) when no column
    moved (a deterministic move learned on its support never does). None when that does not
    apply (the transitions' structure moved, a joint planner's distinct nodes changed, or a
    deep planner): compile the model again then (the codes of the moved columns may be encoded
    already, as :func:`refresh_model` encodes them). ``pB`` must be past its first refresh (its
    tables follow its counts, and their support is the counts')."""
    B = list(model.B)
    new: list[kernels.Transition | None] = [None] * len(B)
    columns: list[np.ndarray | None] = [None] * len(B)
    encoded = 0
    for slot, index in enumerate(pB.tables):
        moved, values = moved_transition_columns(pB, slot, B[index])
        if not values.shape[1]:
            continue
        table = np.array(B[index], dtype=np.float64)
        table[:, moved] = values
        table.setflags(write=False)
        pB.carry_fixed(slot, B[index], table)
        B[index] = table
        source: np.ndarray | LogU8 | SparseColumns = table
        if codes is not None:
            encoded += reencode_columns(codes["B"][index], table, moved)
            source = codes["B"][index]
        new[index] = kernels.refreshed_transition(
            cm.transitions[index], source, moved, cm.dtype.type
        )
        columns[index] = moved
    if not any(t is not None for t in new):
        return Refreshed(model, quantized, cm, 0)
    refreshed = kernels.refresh_transitions(cm, new, columns)
    if refreshed is None:
        return None
    if codes is not None and quantized is not None and any(
        mine is not theirs for mine, theirs in zip(codes["B"], quantized.B, strict=True)
    ):  # the group's own codes, encoded in place from their first refresh on
        quantized = replace(quantized, B=tuple(codes["B"]))
    return Refreshed(replace(model, B=tuple(B)), quantized, refreshed, encoded)


def decoded_likelihoods(codes: Codes) -> list[np.ndarray]:
    """Every modality's int8 likelihood decoded whole, ``(O_m, S_joint)`` float64 (what
    :func:`~edge_agent.aif.kernels.compile_model` decodes): what
    :func:`refresh_touched_likelihood` keeps up to date column by column."""
    return [decode_log_u8(_flat_codes(q)) for q in codes["A"]]


def moved_transition_columns(
    pB: DirichletCounts, slot: int, table: np.ndarray
) -> tuple[NDArray[np.bool_], np.ndarray]:
    """The columns of learned ``B`` ``slot`` (``pB`` past its first refresh; ``table`` the one
    the agents use now) touched since the last refresh whose counts normalise to other values
    than ``table``'s (a mask over ``table.shape[1:]``), and those values ``(rows, moved)``.
    The columns known to stay (a deterministic move learned on its support, however its counts
    grow: :meth:`~edge_agent.aif.learning_counts.DirichletCounts.fixed_columns`) are neither
    normalised nor compared."""
    touched = pB.touched[slot] & ~pB.fixed_columns(slot, table)
    if not np.count_nonzero(touched):
        return touched, np.empty((table.shape[0], 0))
    values = normalise(pB.counts[slot][:, touched])
    differ = np.any(values != table[:, touched], axis=0)
    moved = np.zeros_like(touched)
    moved[touched] = differ
    return moved, values[:, differ]


def normalise_agent_tables(counts: np.ndarray, out: np.ndarray) -> None:
    """Per-agent tables from per-agent counts, in place: ``out[n] = counts[n] / sum`` over the
    outcomes (axis 1 of ``(N, rows, ...)``, ``counts`` of ``out``'s shape), the sums in float64
    and no temporary the size of the tables."""
    np.divide(
        counts,
        np.add.reduce(counts, axis=1, dtype=np.float64, keepdims=True),
        out=out,
        dtype=np.float64,
    )


def _encode(
    codes: Codes, counts: DirichletCounts, slot: int, index: int, table: np.ndarray, *,
    whole: bool = False,
) -> int:
    """The int8 form of one learned table into ``codes``: whole at its first refresh (its
    support becomes the counts' and stays so) or when asked (``whole``), then only the columns
    touched since the last refresh. Returns the columns encoded."""
    kind = counts.kind
    if kind == "D" or not counts.refreshed or whole:
        codes[kind][index] = encode_transition(table) if kind == "B" else encode_log_u8(table)
        return int(np.prod(table.shape[1:]))
    return reencode_columns(codes[kind][index], table, counts.touched[slot])


def _copy_log(q: LogU8) -> LogU8:
    return LogU8(codes=q.codes.copy(), top=q.top.copy(), step=q.step.copy())


def _copy_codes(q: LogU8 | SparseColumns) -> LogU8 | SparseColumns:
    if isinstance(q, LogU8):
        return _copy_log(q)
    values = None if q.values is None else _copy_log(q.values)
    return SparseColumns(num_states=q.num_states, index=q.index.copy(), values=values)


def _flat_codes(q: LogU8 | SparseColumns) -> LogU8:
    """A likelihood's codes with the states flattened: ``(O, S_joint)`` views (writable, so a
    refresh encodes into the group's own codes through them)."""
    assert isinstance(q, LogU8)  # a likelihood is always dense log-u8
    n = q.codes.shape[0]
    return LogU8(codes=q.codes.reshape(n, -1), top=q.top.reshape(-1), step=q.step.reshape(-1))


def _columns(q: LogU8, cols: np.ndarray) -> LogU8:
    return LogU8(codes=q.codes[:, cols], top=q.top[cols], step=q.step[cols])
