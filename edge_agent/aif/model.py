"""Full-precision discrete generative models (POMDPs) in pymdp's conventions.

A model has ``F`` hidden-state factors and ``M`` observation modalities:

* ``A[m]``: ``(O_m, S_0, ..., S_{F-1})`` likelihood ``P(o_m | s)``; every column sums to 1.
* ``B[f]``: ``(S_f, S_f, U_f)`` transition ``P(s_f' | s_f, u_f)``; ``B[f][:, s, u]`` sums to 1.
* ``C[m]``: ``(O_m,)`` log-preferences over outcomes (any real numbers; pymdp turns them into a
  distribution with a softmax before taking the log).
* ``D[f]``: ``(S_f,)`` prior over the initial state.
* ``E``: optional ``(P,)`` prior over policies (pymdp's habits); ``None`` means uniform.

Models are read from ``.npz`` with keys ``A0..``, ``B0..``, ``C0..``, ``D0..`` and optional ``E``,
arrays only (``allow_pickle=False``). Validation is strict: a table that is not normalised, has the
wrong shape or contains NaN raises :class:`~edge_agent.errors.ModelError` naming the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import ModelError

#: Largest tolerated deviation of a column sum from 1.
NORM_TOL = 1e-6

Array = NDArray[np.float64]

_KEY = re.compile(r"^([ABCD])(\d+)$")
#: Dirichlet counts of a learning model, pymdp's names: pA0.., pB0.., pD0..
_COUNT_KEY = re.compile(r"^p([ABD])(\d+)$")
#: Where a model came from (``edge-agent export-model`` writes ``meta_group``,
#: ``meta_version_pA``, ...): carried in the file for people and tools, ignored by the readers.
META_PREFIX = "meta_"

#: Counts by kind ("A", "B", "D") and modality/factor index.
Counts = dict[str, dict[int, np.ndarray]]


@dataclass(frozen=True, eq=False)
class GenerativeModel:
    """A validated float64 POMDP. Build with :meth:`from_arrays` or :func:`load_npz`."""

    A: tuple[Array, ...]
    B: tuple[Array, ...]
    C: tuple[Array, ...]
    D: tuple[Array, ...]
    E: Array | None = None

    @property
    def num_obs(self) -> tuple[int, ...]:
        """Outcomes per modality ``(O_0, ..., O_{M-1})``."""
        return tuple(int(a.shape[0]) for a in self.A)

    @property
    def num_states(self) -> tuple[int, ...]:
        """States per factor ``(S_0, ..., S_{F-1})``."""
        return tuple(int(b.shape[0]) for b in self.B)

    @property
    def num_controls(self) -> tuple[int, ...]:
        """Actions per factor ``(U_0, ..., U_{F-1})``; 1 means the factor is not controllable."""
        return tuple(int(b.shape[2]) for b in self.B)

    @property
    def num_modalities(self) -> int:
        return len(self.A)

    @property
    def num_factors(self) -> int:
        return len(self.B)

    @classmethod
    def from_arrays(  # noqa: PLR0912 - one check per table property, each with its message
        cls,
        A: list[np.ndarray] | tuple[np.ndarray, ...],
        B: list[np.ndarray] | tuple[np.ndarray, ...],
        C: list[np.ndarray] | tuple[np.ndarray, ...] | None = None,
        D: list[np.ndarray] | tuple[np.ndarray, ...] | None = None,
        E: np.ndarray | None = None,
    ) -> GenerativeModel:
        """Validate and copy the tables into an immutable float64 model.

        ``C`` defaults to zeros (no preference), ``D`` to uniform priors.
        """
        if len(A) == 0:
            raise ModelError("model has no observation modality: A is empty")
        if len(B) == 0:
            raise ModelError("model has no hidden-state factor: B is empty")
        Bs = tuple(_as_float("B", f, b) for f, b in enumerate(B))
        for f, b in enumerate(Bs):
            if b.ndim == 2:  # a factor with a single action may be given as (S, S)
                Bs = (*Bs[:f], b[:, :, None], *Bs[f + 1 :])
        for f, b in enumerate(Bs):
            if b.ndim != 3 or b.shape[0] != b.shape[1]:
                raise ModelError(f"B{f} has shape {b.shape}, expected (S, S, U) with S == S")
            _check_normalised(f"B{f}", b)
        num_states = tuple(b.shape[0] for b in Bs)

        As = tuple(_as_float("A", m, a) for m, a in enumerate(A))
        for m, a in enumerate(As):
            if tuple(a.shape[1:]) != num_states:
                raise ModelError(
                    f"A{m} has shape {a.shape}, expected (O_{m}, {', '.join(map(str, num_states))})"
                    " to match the state factors of B"
                )
            _check_normalised(f"A{m}", a)
        num_obs = tuple(a.shape[0] for a in As)

        if C is None:
            Cs = tuple(np.zeros(o) for o in num_obs)
        else:
            if len(C) != len(As):
                raise ModelError(f"C has {len(C)} modalities, A has {len(As)}")
            Cs = tuple(_as_float("C", m, c) for m, c in enumerate(C))
            for m, c in enumerate(Cs):
                if c.shape != (num_obs[m],):
                    raise ModelError(f"C{m} has shape {c.shape}, expected ({num_obs[m]},)")

        if D is None:
            Ds = tuple(np.full(s, 1.0 / s) for s in num_states)
        else:
            if len(D) != len(Bs):
                raise ModelError(f"D has {len(D)} factors, B has {len(Bs)}")
            Ds = tuple(_as_float("D", f, d) for f, d in enumerate(D))
            for f, d in enumerate(Ds):
                if d.shape != (num_states[f],):
                    raise ModelError(f"D{f} has shape {d.shape}, expected ({num_states[f]},)")
                _check_normalised(f"D{f}", d)

        Ev: Array | None = None
        if E is not None:
            Ev = _as_float("E", None, E)
            if Ev.ndim != 1:
                raise ModelError(f"E has shape {Ev.shape}, expected (num_policies,)")
            _check_normalised("E", Ev)

        for arr in (*As, *Bs, *Cs, *Ds, *(() if Ev is None else (Ev,))):
            arr.setflags(write=False)
        return cls(A=As, B=Bs, C=Cs, D=Ds, E=Ev)

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        """The arrays under pymdp-convention keys, as :func:`save_npz` writes them."""
        out: dict[str, np.ndarray] = {}
        for m, a in enumerate(self.A):
            out[f"A{m}"] = a
            out[f"C{m}"] = self.C[m]
        for f, b in enumerate(self.B):
            out[f"B{f}"] = b
            out[f"D{f}"] = self.D[f]
        if self.E is not None:
            out["E"] = self.E
        return out


def _as_float(name: str, index: int | None, arr: object) -> Array:
    label = name if index is None else f"{name}{index}"
    try:
        out = np.array(arr, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as err:
        raise ModelError(f"{label} is not a numeric array: {err}") from err
    if not np.all(np.isfinite(out)):
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise ModelError(f"{label} contains {bad} NaN or infinite value(s)")
    return out


def _check_normalised(label: str, arr: Array) -> None:
    if np.any(arr < 0):
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise ModelError(f"{label} has a negative probability {arr[idx]:g} at index {idx}")
    sums = arr.sum(axis=0)
    bad = np.abs(sums - 1.0) > NORM_TOL
    if np.any(bad):
        col = tuple(int(i) for i in np.argwhere(np.atleast_1d(bad))[0])
        total = float(np.atleast_1d(sums)[col]) if sums.ndim else float(sums)
        where = f"column {col}" if arr.ndim > 1 else "vector"
        raise ModelError(
            f"{label} is not normalised: {where} sums to {total:.9g}, expected 1 "
            f"(tolerance {NORM_TOL:g}; {int(np.count_nonzero(bad))} column(s) off)"
        )


def load_npz(path: str | Path, *, counts: Counts | None = None) -> GenerativeModel:
    """Read a model from a pymdp-convention ``.npz`` (arrays only, no pickle); ``counts``
    collects Dirichlet counts (``pA0``..) if the caller learns (see
    :func:`model_from_npz_dict`)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except FileNotFoundError as err:
        raise ModelError(f"{path}: no such model file") from err
    except ValueError as err:  # object arrays need pickle: refused
        raise ModelError(f"{path}: not a plain-array .npz ({err})") from err
    except OSError as err:
        raise ModelError(f"{path}: cannot read as .npz ({err})") from err
    return model_from_npz_dict(arrays, source=str(path), counts=counts)


def model_from_npz_dict(
    arrays: dict[str, np.ndarray], source: str = "model", *, counts: Counts | None = None
) -> GenerativeModel:
    """Assemble a model from pymdp-convention keys; unknown keys are an error (``meta_*`` keys,
    where a model came from, are skipped).

    Dirichlet counts (``pA0``.., ``pB0``.., ``pD0``..) go into ``counts`` (``{"A": {0: pA0},
    ...}``) when the caller passes a dict to fill: a caller that would drop them (no learning)
    refuses them instead of ignoring what the model file says.
    """
    groups: dict[str, dict[int, np.ndarray]] = {"A": {}, "B": {}, "C": {}, "D": {}}
    E = None
    for key, value in arrays.items():
        if key == "E":
            E = value
            continue
        if key.startswith(META_PREFIX):
            continue
        counted = _COUNT_KEY.match(key)
        if counted:
            if counts is None:
                raise ModelError(
                    f"{source}: {key!r} is a Dirichlet count for learning, which this command "
                    "does not use (edge-agent replay learns with it)"
                )
            counts.setdefault(counted.group(1), {})[int(counted.group(2))] = np.asarray(value)
            continue
        match = _KEY.match(key)
        if not match:
            raise ModelError(
                f"{source}: unexpected key {key!r} (expected A0.., B0.., C0.., D0.., E; "
                f"{META_PREFIX}* keys are ignored)"
            )
        groups[match.group(1)][int(match.group(2))] = value

    def ordered(name: str) -> list[np.ndarray]:
        items = groups[name]
        if sorted(items) != list(range(len(items))):
            raise ModelError(
                f"{source}: keys {name}* are not contiguous from {name}0: {sorted(items)}"
            )
        return [items[i] for i in range(len(items))]

    A, B, C, D = (ordered(name) for name in "ABCD")
    if not A or not B:
        raise ModelError(f"{source}: missing {'A0' if not A else 'B0'}")
    try:
        return GenerativeModel.from_arrays(A, B, C or None, D or None, E)
    except ModelError as err:
        raise ModelError(f"{source}: {err}") from err


def save_npz(model: GenerativeModel, path: str | Path, *, compress: bool = False) -> None:
    """Write a model with pymdp-convention keys (``A0..``, ``B0..``, ``C0..``, ``D0..``, ``E``),
    the file ``edge-agent-host convert aif`` reads; ``compress`` zips the arrays (mostly-zero
    tables shrink a lot)."""
    save = np.savez_compressed if compress else np.savez
    save(Path(path), **model.to_npz_dict())  # type: ignore[arg-type]
