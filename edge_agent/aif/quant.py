"""int8 encoding of generative models: one documented scheme, ``logu8-v1``.

Probability tables (``A``, dense ``B``, ``D``, ``E``) are stored **log-domain, per column**: for a
column ``p`` (the distribution axis is axis 0) with largest entry ``p_max``, every non-zero entry
is stored as an unsigned 8-bit code

    code = round((ln p_max - ln p) / step),     code in [0, 254]
    step = (ln p_max - ln p_floor) / 254,       p_floor = max(min nonzero p, p_max * e^-RANGE)

and code ``255`` means exactly zero. Decoding is ``p = exp(ln p_max - code * step)`` followed by a
renormalisation of the column, so decoded columns are exact distributions. Zeros stay exact zeros
and nothing becomes ``-inf``: the smallest representable non-zero is ``p_max * e^-RANGE``.
The error bound, per column and table, is (see ``docs/quantization.md``)

    |ln p_hat - ln p| <= step           (step/2 from rounding, step/2 from renormalisation)

for every entry with ``p >= p_floor``; entries below the floor are raised to it (an absolute error
below ``p_max * e^-RANGE``, about 3.8e-11 of the column maximum).

Sparse transitions (columns of ``B`` with few non-zeros, e.g. deterministic moves in a grid) are
stored **column-sparse**: ``k`` (the largest number of non-zeros in any column) target indices
per column plus their log-domain codes; a deterministic ``B`` costs ``S*U`` indices and no codes.

Preferences ``C`` are real numbers: stored **linear symmetric int8 per modality**,
``C = code * scale`` with ``scale = max|C| / 127`` (absolute error <= ``scale / 2``).

Every array this module produces is a plain numeric ``numpy`` array, so a bundle stores them as
``.npy`` without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.model import GenerativeModel
from edge_agent.errors import ModelError

SCHEME = "logu8-v1"
#: Dynamic range (natural log) a column keeps below its maximum: e^-24 ~ 3.8e-11.
RANGE = 24.0
#: Largest code for a non-zero entry; 255 marks an exact zero.
MAX_CODE = 254
ZERO_CODE = 255
#: A B factor is stored sparse when ``k * 3 <= S`` (uint16 index + uint8 code per entry).
SPARSE_RATIO = 3

F64 = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class LogU8:
    """A probability table quantized per column: ``codes`` plus per-column ``top``/``step``.

    ``codes``: same shape as the table, uint8. ``top`` and ``step``: the table shape without axis 0,
    float32 (``ln p_max`` and the log step of each column).
    """

    codes: NDArray[np.uint8]
    top: NDArray[np.float32]
    step: NDArray[np.float32]

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.top.nbytes + self.step.nbytes)

    @property
    def max_log_error(self) -> float:
        """Bound on ``|ln p_hat - ln p|`` for entries above the floor, over all columns."""
        return float(self.step.max()) if self.step.size else 0.0


def encode_log_u8(p: np.ndarray) -> LogU8:
    """Quantize a table whose columns (axis 0) are distributions."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 0:
        raise ModelError("cannot quantize a scalar as a distribution")
    nonzero = p > 0
    if not nonzero.any(axis=0).all():
        raise ModelError("cannot quantize a column with no non-zero entry")
    # Zero entries read as their column's largest, so that one logarithm serves the column's
    # largest and smallest non-zero log (the log of 0 would also take numpy's slow path).
    largest = np.fmax.reduce(p, axis=0)
    logp = np.log(np.where(nonzero, p, largest[None]))
    top = logp.max(axis=0)
    low = logp.min(axis=0)
    low = np.maximum(low, top - RANGE)
    step = (top - low) / MAX_CODE
    safe_step = np.where(step > 0, step, 1.0)
    # (top - max(ln p, low)) / step lies in [0, 254] up to rounding: only the top is clipped
    codes = np.maximum(logp, low[None], out=logp)
    np.subtract(top[None], codes, out=codes)
    np.divide(codes, safe_step[None], out=codes)
    np.rint(codes, out=codes)
    np.minimum(codes, MAX_CODE, out=codes)
    codes = np.where(nonzero, codes, ZERO_CODE).astype(np.uint8)
    return LogU8(codes=codes, top=top.astype(np.float32), step=step.astype(np.float32))


def decode_log_u8(q: LogU8, dtype: type[np.floating] = np.float64) -> np.ndarray:
    """Decode and renormalise each column; zero codes decode to exact zeros."""
    codes = q.codes
    logp = (
        q.top.astype(np.float64)[None] - codes.astype(np.float64) * q.step.astype(np.float64)[None]
    )
    p = np.where(codes == ZERO_CODE, 0.0, np.exp(logp))
    p /= p.sum(axis=0, keepdims=True)
    return p.astype(dtype)


@dataclass(frozen=True, eq=False)
class SparseColumns:
    """A ``(S, S, U)`` transition stored column-sparse with ``k`` entries per column.

    ``index``: ``(k, S, U)`` uint16 targets (padding entries point at 0 with a zero code);
    ``values``: ``LogU8`` over axis 0 of the ``(k, S, U)`` weights, or ``None`` when every column is
    deterministic (``k == 1`` and each weight is exactly 1).
    """

    num_states: int
    index: NDArray[np.uint16]
    values: LogU8 | None

    @property
    def k(self) -> int:
        return int(self.index.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.index.nbytes + (self.values.nbytes if self.values is not None else 0))


def encode_transition(B: np.ndarray) -> LogU8 | SparseColumns:
    """Quantize one ``B[f]``: column-sparse when few entries per column are non-zero, else dense."""
    B = np.asarray(B, dtype=np.float64)
    S = B.shape[0]
    nnz = (B > 0).sum(axis=0)  # (S, U) non-zeros per column
    k = int(nnz.max())
    if k * SPARSE_RATIO > S:
        return encode_log_u8(B)
    if np.iinfo(np.uint16).max < S:
        raise ModelError(f"B has {S} states; sparse transitions support at most 65535")
    # For every column, its non-zero rows first (stable order), padded with row 0 / zero weight.
    order = np.argsort(~(B > 0), axis=0, kind="stable")[:k]  # (k, S, U)
    weights = np.take_along_axis(B, order, axis=0)
    index = np.where(weights > 0, order, 0).astype(np.uint16)
    deterministic = k == 1 and bool(np.all(np.abs(weights - 1.0) <= 1e-12))
    if deterministic:
        return SparseColumns(num_states=S, index=index, values=None)
    return SparseColumns(num_states=S, index=index, values=_encode_padded(weights))


def reencode_columns(
    q: LogU8 | SparseColumns, table: np.ndarray, columns: NDArray[np.bool_]
) -> int:
    """In place: the columns of ``q`` selected by ``columns`` (a mask over ``table.shape[1:]``)
    encoded anew from ``table``, exactly as :func:`encode_log_u8` / :func:`encode_transition` of
    the whole table would encode them (every column is encoded on its own). A sparse transition
    keeps its targets: the selected columns must have the non-zero rows ``q`` stores (a learning
    group's tables keep their support once they follow their counts). Returns the number of
    columns encoded."""
    n = int(np.count_nonzero(columns))
    if n == 0:
        return 0
    cols = np.asarray(table, dtype=np.float64)[:, columns]  # (rows, n)
    if isinstance(q, SparseColumns):
        if q.values is None:  # one target with weight 1 per column: nothing to re-encode
            return n
        index = q.index[:, columns].astype(np.intp)
        padding = q.values.codes[:, columns] == ZERO_CODE
        target = q.values
        cols = np.where(padding, 0.0, np.take_along_axis(cols, index, axis=0))
    else:
        target = q
    fresh = encode_log_u8(cols)
    target.codes[:, columns] = fresh.codes
    target.top[columns] = fresh.top
    target.step[columns] = fresh.step
    return n


def _encode_padded(weights: F64) -> LogU8:
    # Padding weights are 0 and decode to exact zeros (code 255).
    return encode_log_u8(weights)


def decode_transition(
    q: LogU8 | SparseColumns, dtype: type[np.floating] = np.float64
) -> np.ndarray:
    """Dense ``(S, S, U)`` float table (for the reference path and accuracy reports)."""
    if isinstance(q, LogU8):
        return decode_log_u8(q, dtype)
    S = q.num_states
    k, _, U = q.index.shape
    weights = np.ones((k, S, U)) if q.values is None else decode_log_u8(q.values)
    dense = np.zeros((S, S, U))
    cols = np.broadcast_to(np.arange(S)[None, :, None], (k, S, U))
    acts = np.broadcast_to(np.arange(U)[None, None, :], (k, S, U))
    np.add.at(dense, (q.index.astype(np.intp), cols, acts), weights)
    return dense.astype(dtype)


@dataclass(frozen=True, eq=False)
class LinearI8:
    """Real values stored as ``code * scale`` with int8 codes (symmetric, per vector)."""

    codes: NDArray[np.int8]
    scale: float

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + 4)


def encode_linear_i8(x: np.ndarray) -> LinearI8:
    x = np.asarray(x, dtype=np.float64)
    peak = float(np.abs(x).max()) if x.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    return LinearI8(codes=np.clip(np.rint(x / scale), -127, 127).astype(np.int8), scale=scale)


def decode_linear_i8(q: LinearI8, dtype: type[np.floating] = np.float64) -> np.ndarray:
    return (q.codes.astype(np.float64) * q.scale).astype(dtype)


@dataclass(frozen=True, eq=False)
class QuantizedModel:
    """A generative model in ``logu8-v1``: what a bundle stores and what a device loads."""

    A: tuple[LogU8, ...]
    B: tuple[LogU8 | SparseColumns, ...]
    C: tuple[LinearI8, ...]
    D: tuple[LogU8, ...]
    E: LogU8 | None
    num_obs: tuple[int, ...]
    num_states: tuple[int, ...]
    num_controls: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the quantized payload (codes, indices and scales)."""
        parts: list[LogU8 | SparseColumns | LinearI8] = [*self.A, *self.B, *self.C, *self.D]
        if self.E is not None:
            parts.append(self.E)
        return sum(p.nbytes for p in parts)

    def error_bounds(self) -> dict[str, float]:
        """Per-table bound on ``|ln p_hat - ln p|`` (0 for deterministic transitions)."""
        out: dict[str, float] = {}
        for m, a in enumerate(self.A):
            out[f"A{m}"] = a.max_log_error
        for f, b in enumerate(self.B):
            if isinstance(b, LogU8):
                out[f"B{f}"] = b.max_log_error
            else:
                out[f"B{f}"] = b.values.max_log_error if b.values is not None else 0.0
        for m, c in enumerate(self.C):
            # absolute error on C itself; an all-zero C (no preference) is stored exactly
            out[f"C{m}"] = c.scale / 2.0 if np.any(c.codes) else 0.0
        for f, d in enumerate(self.D):
            out[f"D{f}"] = d.max_log_error
        if self.E is not None:
            out["E"] = self.E.max_log_error
        return out

    def dequantize(self) -> GenerativeModel:
        """The float64 model these codes stand for (columns renormalised)."""
        return GenerativeModel.from_arrays(
            [decode_log_u8(a) for a in self.A],
            [decode_transition(b) for b in self.B],
            [decode_linear_i8(c) for c in self.C],
            [decode_log_u8(d) for d in self.D],
            None if self.E is None else decode_log_u8(self.E),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array mapping for a bundle payload (plain numeric arrays only)."""
        out: dict[str, np.ndarray] = {
            "num_obs": np.array(self.num_obs, dtype=np.int64),
            "num_states": np.array(self.num_states, dtype=np.int64),
            "num_controls": np.array(self.num_controls, dtype=np.int64),
        }

        def put_log(prefix: str, q: LogU8) -> None:
            out[f"{prefix}.codes"] = q.codes
            out[f"{prefix}.top"] = q.top
            out[f"{prefix}.step"] = q.step

        for m, a in enumerate(self.A):
            put_log(f"A{m}", a)
        for f, b in enumerate(self.B):
            if isinstance(b, LogU8):
                put_log(f"B{f}", b)
            else:
                out[f"B{f}.index"] = b.index
                if b.values is not None:
                    put_log(f"B{f}.values", b.values)
        for m, c in enumerate(self.C):
            out[f"C{m}.codes"] = c.codes
            out[f"C{m}.scale"] = np.array(c.scale, dtype=np.float64)
        for f, d in enumerate(self.D):
            put_log(f"D{f}", d)
        if self.E is not None:
            put_log("E", self.E)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> QuantizedModel:
        """Inverse of :meth:`to_arrays`; every missing or mis-shaped array is a ModelError."""

        def get(name: str, dtype: type[np.generic] | None = None) -> np.ndarray:
            if name not in arrays:
                raise ModelError(f"quantized model is missing array {name!r}")
            arr = np.asarray(arrays[name])
            if dtype is not None and arr.dtype != dtype:
                raise ModelError(
                    f"array {name!r} has dtype {arr.dtype}, expected {np.dtype(dtype)}"
                )
            return arr

        def get_log(prefix: str, shape: tuple[int, ...]) -> LogU8:
            codes = get(f"{prefix}.codes", np.uint8)
            top = get(f"{prefix}.top", np.float32)
            step = get(f"{prefix}.step", np.float32)
            if codes.shape != shape or top.shape != shape[1:] or step.shape != shape[1:]:
                raise ModelError(
                    f"{prefix}: codes {codes.shape}, top {top.shape}, step {step.shape} do not fit"
                    f" a table of shape {shape}"
                )
            if not (np.all(np.isfinite(top)) and np.all(np.isfinite(step)) and np.all(step >= 0)):
                raise ModelError(f"{prefix}: scales must be finite and steps non-negative")
            if np.any((codes == ZERO_CODE).all(axis=0)):
                raise ModelError(f"{prefix}: a column has no non-zero entry")
            return LogU8(codes=codes, top=top, step=step)

        num_obs = tuple(int(x) for x in get("num_obs").ravel())
        num_states = tuple(int(x) for x in get("num_states").ravel())
        num_controls = tuple(int(x) for x in get("num_controls").ravel())
        if not num_obs or not num_states or len(num_controls) != len(num_states):
            raise ModelError("quantized model: inconsistent num_obs/num_states/num_controls")
        if min(num_obs + num_states + num_controls) < 1:
            raise ModelError("quantized model: every dimension must be >= 1")
        A = tuple(get_log(f"A{m}", (o, *num_states)) for m, o in enumerate(num_obs))
        B: list[LogU8 | SparseColumns] = []
        for f, (S, U) in enumerate(zip(num_states, num_controls, strict=True)):
            if f"B{f}.index" in arrays:
                index = get(f"B{f}.index", np.uint16)
                if index.ndim != 3 or index.shape[1:] != (S, U) or index.shape[0] < 1:
                    raise ModelError(f"B{f}.index has shape {index.shape}, expected (k, {S}, {U})")
                if int(index.max()) >= S:
                    raise ModelError(f"B{f}.index points at state {int(index.max())} of {S}")
                values = (
                    get_log(f"B{f}.values", index.shape) if f"B{f}.values.codes" in arrays else None
                )
                if values is None and index.shape[0] != 1:
                    raise ModelError(f"B{f}: k={index.shape[0]} sparse columns need values")
                B.append(SparseColumns(num_states=S, index=index, values=values))
            else:
                B.append(get_log(f"B{f}", (S, S, U)))
        C = []
        for m, o in enumerate(num_obs):
            codes = get(f"C{m}.codes", np.int8)
            scale = float(get(f"C{m}.scale"))
            if codes.shape != (o,) or not np.isfinite(scale) or scale <= 0:
                raise ModelError(
                    f"C{m}: codes {codes.shape} / scale {scale} invalid for {o} outcomes"
                )
            C.append(LinearI8(codes=codes, scale=scale))
        D = tuple(get_log(f"D{f}", (S,)) for f, S in enumerate(num_states))
        E = None
        if "E.codes" in arrays:
            n_pol = int(np.asarray(arrays["E.codes"]).shape[0])
            E = get_log("E", (n_pol,))
        return cls(
            A=A,
            B=tuple(B),
            C=tuple(C),
            D=D,
            E=E,
            num_obs=num_obs,
            num_states=num_states,
            num_controls=num_controls,
        )


def quantize_model(model: GenerativeModel) -> QuantizedModel:
    """Encode a validated float model in ``logu8-v1``."""
    return QuantizedModel(
        A=tuple(encode_log_u8(a) for a in model.A),
        B=tuple(encode_transition(b) for b in model.B),
        C=tuple(encode_linear_i8(c) for c in model.C),
        D=tuple(encode_log_u8(d) for d in model.D),
        E=None if model.E is None else encode_log_u8(model.E),
        num_obs=model.num_obs,
        num_states=model.num_states,
        num_controls=model.num_controls,
    )


def encode_beliefs_u8(
    q: np.ndarray, out: np.ndarray | None = None, scratch: np.ndarray | None = None
) -> np.ndarray:
    """Linear uint8 code of probabilities for histories: ``round(q * 255)`` (error <= 1/510).

    ``out`` (uint8) and ``scratch`` (float, same shape as ``q``) may be given to avoid allocation.
    """
    if out is None:
        out = np.empty(q.shape, dtype=np.uint8)
    if scratch is None:
        scratch = np.empty(q.shape, dtype=np.float32)
    np.multiply(q, 255.0, out=scratch, casting="same_kind")
    np.add(scratch, 0.5, out=scratch)
    np.copyto(out, scratch, casting="unsafe")  # truncation of x + 0.5: rounding for x >= 0
    return out


def decode_beliefs_u8(codes: np.ndarray) -> np.ndarray:
    """Approximate probabilities back from :func:`encode_beliefs_u8` codes (not renormalised)."""
    return codes.astype(np.float32) / np.float32(255.0)
