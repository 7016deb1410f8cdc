"""Neural agent groups: many agents, one int8 policy model, one batched backend call per tick.

A :class:`NeuralAgentGroup` keeps the last ``T`` observations of every agent in the backend
session's own ``(N, T, F)`` input, which slides one step per tick (a view moved on in a slightly
longer buffer, see :meth:`~edge_agent.neural.backends.base.Session.slide_input`), records every
observation in a :class:`~edge_agent.core.history.HistoryRing` (what snapshots keep; the windows
are rebuilt from it), and runs the model **once** for the whole group. A group that keeps more
history than its window (``history_capacity > T``, the daemon's) writes the windows' ``T`` steps
into the ring every ``T`` ticks with the compiled pass (streaming stores: a cold row of a 2 MB
ring every tick cost 3 us of a 56 us step), and appends each tick's observations as they come
on numpy's path (one contiguous copy: numpy's strided gather of ``T`` steps cost 3.4 times as
much a step); a group that keeps no more (the default) writes the ring from the windows only
when it is read (:attr:`NeuralAgentGroup.history`, snapshots, resets, resizes), as every group
writes the steps still pending then. Nothing is allocated on any tick; buffers change only when
:meth:`NeuralAgentGroup.resize` changes ``N``.

The work around the model's run (each observation into its window's newest step, the range
check, the ring, the argmax) is two calls into the compiled library's pass when the package
was built with it (:mod:`edge_agent.neural.native_pass`; ``compiled=``), numpy's otherwise,
with the same results.

The model's first output becomes the actions:

* ``output_kind = "discrete"``: ``(N, A)`` logits; the action is their argmax, or a sample from
  ``softmax(logits / temperature)`` with the group's seeded generator (``selection="sample"``).
* ``output_kind = "continuous"``: ``(N, D)`` actions, clipped to the bundle's
  ``action_low``/``action_high``.
* ``output_kind = "observation"``: a perception model for an Active Inference agent; use
  :meth:`NeuralAgentGroup.forward` or :class:`edge_agent.neural.perception.PerceptionAifGroup`.

Input layout: the model's single input is ``(batch, T, F)``, or ``(batch, T * F)`` (the same
memory, flattened), or a camera frame ``(batch, C, H, W)`` / ``(batch, H, W, C)`` with window 1
(:func:`frame_shape`; each agent's observation is one frame, passed as ``(N, *frame)`` or
flattened ``(N, C*H*W)``). Until an agent has seen ``T`` observations (at the start, after
:meth:`NeuralAgentGroup.reset`) the missing older steps are zeros.

Out of range: every 4th tick the group counts the agents whose observation has a feature outside
the range the bundle's model was calibrated on (:mod:`edge_agent.neural.input_range`: counts in
``metrics()`` and ``describe()``, one ``input_out_of_range`` event through ``alerts()`` when
their share crosses 1 %).

Memory: the model bytes are reserved once per model (shared key: the model file's sha256); every
agent reserves its ring (``capacity * F * 4`` bytes), its share of the session's buffers and its
actions, and the group the sliding input's room, the range check's scratch and the health
measures' buffers (:meth:`NeuralAgentGroup.bytes_for`), before anything is allocated.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from edge_agent.core.budget import MemoryBudget, Reservation
from edge_agent.core.contract import GroupEvent, GroupIO, state_under
from edge_agent.core.health_window import HealthSummary
from edge_agent.core.history import HistoryRing
from edge_agent.errors import BundleError, InputError, ModelError
from edge_agent.neural.backends import Session, get_backend
from edge_agent.neural.health import LOW_CONFIDENCE, NeuralHealth
from edge_agent.neural.input_range import RangeWatch
from edge_agent.neural.native_pass import NeuralPass, unavailable

if TYPE_CHECKING:
    from edge_agent.bundle.loader import Bundle
    from edge_agent.bundle.manifest import NeuralSpec, TensorSpec

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_BYTES_FACTOR",
    "PER_BATCH_SCHEMES",
    "NeuralAgentGroup",
    "Selection",
    "check_session",
    "frame_shape",
    "per_batch_warning",
    "window_layout",
]

Selection = Literal["argmax", "sample"]
FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]

#: float32 in this machine's byte order (``is`` compares it in 20 ns, ``==`` in 90).
_FLOAT32 = np.dtype(np.float32)

#: Shared bytes reserved per model, as a multiple of the model file: the verified file bytes plus
#: the runtime's own copy of the weights (an estimate; activations are counted per agent).
MODEL_BYTES_FACTOR = 2


def frame_shape(spec: NeuralSpec) -> tuple[int, ...] | None:
    """The frame ``(C, H, W)`` or ``(H, W, C)`` of a model whose single input is 4-D
    ``(-1, ...)``; ``None`` for window inputs. ModelError unless the frame is fixed and the
    window is 1 (one frame per observation)."""
    if len(spec.inputs) != 1 or len(spec.inputs[0].shape) != 4:
        return None
    tensor = spec.inputs[0]
    frame = tuple(tensor.shape[1:])
    if any(dim < 1 for dim in frame):
        raise ModelError(
            f"input {tensor.name!r} has shape {list(tensor.shape)}: a frame input needs fixed "
            "channels, height and width"
        )
    if spec.window != 1:
        raise ModelError(
            f"input {tensor.name!r} has shape {list(tensor.shape)}, a frame per observation: "
            f"window must be 1, got {spec.window}"
        )
    return frame


def window_layout(spec: NeuralSpec) -> tuple[str, int]:
    """``(input name, F)`` for a policy model's single input; ModelError if it does not fit.

    The input must be ``(-1, T, F)`` with ``T == spec.window``, or ``(-1, T * F)``, or a frame
    ``(-1, C, H, W)`` / ``(-1, H, W, C)`` with window 1 (``F = C * H * W``).
    """
    if len(spec.inputs) != 1:
        raise ModelError(
            f"a neural agent model must have exactly one input (the observation window), "
            f"got {[t.name for t in spec.inputs]}"
        )
    tensor = spec.inputs[0]
    shape = tensor.shape
    T = spec.window
    if len(shape) == 3:
        if shape[1] != T or shape[2] < 1:
            raise ModelError(
                f"input {tensor.name!r} has shape {list(shape)}, expected [-1, {T}, F] for "
                f"window {T}"
            )
        return tensor.name, shape[2]
    if len(shape) == 2 and shape[1] >= 1:
        if shape[1] % T:
            raise ModelError(
                f"input {tensor.name!r} has {shape[1]} features per item, not a multiple of "
                f"window {T}"
            )
        return tensor.name, shape[1] // T
    frame = frame_shape(spec)
    if frame is not None:
        return tensor.name, math.prod(frame)
    raise ModelError(
        f"input {tensor.name!r} has shape {list(shape)}; expected [-1, T, F], [-1, T*F] or a "
        "frame [-1, C, H, W] / [-1, H, W, C]"
    )


def _same_shape(declared: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    return len(declared) == len(actual) and all(
        a < 0 or b < 0 or a == b for a, b in zip(declared, actual, strict=True)
    )


def check_session(spec: NeuralSpec, session: Session) -> None:
    """The loaded model must have exactly the tensors the manifest declares; else ModelError."""
    for label, declared, actual in (
        ("input", spec.inputs, session.input_specs),
        ("output", spec.outputs, session.output_specs),
    ):
        by_name = {t.name: t for t in actual}
        if sorted(by_name) != sorted(t.name for t in declared):
            raise ModelError(
                f"the manifest declares {label}s {sorted(t.name for t in declared)}, the model "
                f"has {sorted(by_name)}"
            )
        for tensor in declared:
            got = by_name[tensor.name]
            if got.dtype != tensor.dtype or not _same_shape(tensor.shape, got.shape):
                raise ModelError(
                    f"{label} {tensor.name!r}: the manifest says {tensor.dtype}"
                    f"{list(tensor.shape)}, the model has {got.dtype}{list(got.shape)}"
                )
            if (tensor.scale is None) != (got.scale is None) or (
                tensor.scale is not None
                and got.scale is not None
                and (
                    not math.isclose(tensor.scale, got.scale, rel_tol=1e-6)
                    or tensor.zero_point != got.zero_point
                )
            ):
                raise ModelError(
                    f"{label} {tensor.name!r}: the manifest says scale {tensor.scale} zero_point "
                    f"{tensor.zero_point}, the model has {got.scale} and {got.zero_point}"
                )


def _finite_dot(arr: np.ndarray) -> bool:
    """Whether ``arr`` (real floats) is finite, or its squares overflowed: ``x . x`` in one BLAS
    call for float32 and float64 (half precision is summed in float32, its squares overflow at
    256)."""
    flat = arr.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # 1 us; the overflow is expected
        if flat.dtype.itemsize < 4:
            return math.isfinite(np.add.reduce(flat, dtype=np.float32))
        return math.isfinite(np.dot(flat, flat))


#: Quantization schemes whose activation scales are one per call over the whole batch: one
#: agent's input changes the other agents' outputs (older ``convert onnx --mode dynamic``
#: bundles carry it; the converter now writes ``onnx-dynamic-row-u8s8``, per row).
PER_BATCH_SCHEMES = frozenset({"onnx-dynamic-u8s8"})


def per_batch_warning(bundle: Bundle) -> str:
    """Why ``bundle``'s agents depend on each other (``""``: they do not), for the log."""
    scheme = bundle.manifest.quantization.get("scheme")
    if scheme not in PER_BATCH_SCHEMES:
        return ""
    manifest = bundle.manifest
    return (
        f"bundle {manifest.name} {manifest.version} is quantized with one activation scale per "
        f"call over the whole batch ({scheme}): one agent's unusual input changes the other "
        "agents' actions; convert the model again (convert onnx now scales each agent's row "
        "on its own)"
    )


def _quantization(spec: NeuralSpec) -> dict[str, tuple[float, int]]:
    return {
        t.name: (t.scale, t.zero_point)
        for t in (*spec.inputs, *spec.outputs)
        if t.scale is not None and t.zero_point is not None
    }


def _compiled_pass(compiled: bool | None, group: str) -> tuple[NeuralPass | None, str]:
    """The compiled pass a group does its work around the run with (``compiled``: None, where
    there is one; True, or an InputError saying why not; False, never), and why not ("": it
    has one)."""
    missing = "compiled=False" if compiled is False else unavailable() or ""
    if compiled and missing:
        raise InputError(f"group {group!r}: no compiled pass: {missing}")
    return (None if missing else NeuralPass()), missing


class NeuralAgentGroup:
    """``n_agents`` agents sharing one neural policy (see the module docstring).

    Parameters
    ----------
    spec, model_bytes:
        The bundle's :class:`~edge_agent.bundle.manifest.NeuralSpec` and model file.
    threads:
        Intra-op threads of the backend (pass the firmware profile's ``inference_threads``).
    spinning:
        Let the backend's idle threads spin between calls (onnxruntime's default; LiteRT has
        no such option). Off by default and in the daemon, which ticks on a period: spinning
        threads keep a core busy after every call. A program that calls :meth:`step` back to
        back gains from it (``benchmarks/bench_neural_digits.py``, ``group_step_spinning``).
    selection, temperature:
        Discrete outputs: ``"argmax"`` or ``"sample"`` from ``softmax(logits / temperature)``.
    history_capacity:
        Rows of observations kept per agent (at least the window ``T``).
    budget:
        Reserve the model (shared, once per model file) and the agents before allocating.
    check_finite:
        Scan every tick's observations for NaN and infinity (an InputError naming the first).
        The daemon turns it off: its sources let no such value through (the MQTT inbox counts
        and drops a non-finite row or frame where it arrives, the built-in worlds make finite
        values), so the scan would read every observation a second time each tick. Shapes and
        dtypes are checked either way.
    compiled:
        Do the work around the model's run (the window's newest step, the range check, the
        ring, the argmax) in the compiled library's pass (:mod:`edge_agent.neural.native_pass`):
        None where there is one, True or an InputError saying why not, False never (numpy).
        ``compiled_missing`` says why a group has none ("": it has one).
    """

    #: The bundle's model is int8 (the daemon's status reports a group's precision).
    precision: Literal["int8"] = "int8"
    _history: HistoryRing
    _batch: FloatArray
    _filled: IntArray
    _saturated: bool
    _actions: np.ndarray
    _probs: FloatArray | None
    _below: NDArray[np.bool_] | None
    _u: NDArray[np.float64] | None
    _threshold: FloatArray | None
    # The compiled pass's arguments made once per batch size (_bind_pass), the address of the
    # window's newest step (_use_input), and the last observations', logits' and ring's
    # addresses, kept while they are the same arrays.
    _newest_at: int
    _actions_at: int
    _range_at: tuple[int, int, int]
    _obs_seen: np.ndarray | None
    _obs_at: int
    _logits_seen: np.ndarray | None
    _logits_at: int
    _ring_arena: np.ndarray | None
    _ring_at: int
    _ring_row: int
    _obs_shape: tuple[int, int]
    _stride: int
    _lean: bool

    def __init__(
        self,
        spec: NeuralSpec,
        model_bytes: bytes,
        n_agents: int,
        *,
        threads: int = 1,
        spinning: bool = False,
        selection: Selection = "argmax",
        temperature: float = 1.0,
        seed: int | None = 0,
        history_capacity: int = 0,
        budget: MemoryBudget | None = None,
        name: str = "neural",
        check_finite: bool = True,
        low_confidence: float = LOW_CONFIDENCE,
        compiled: bool | None = None,
    ) -> None:
        if isinstance(n_agents, bool) or not isinstance(n_agents, int | np.integer) or n_agents < 1:
            raise InputError(f"group {name!r}: n_agents must be an integer >= 1, got {n_agents!r}")
        if selection not in ("argmax", "sample"):
            raise InputError(f"selection must be 'argmax' or 'sample', got {selection!r}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise InputError(f"temperature must be a positive number, got {temperature}")
        self.name = name
        self.spec = spec
        self.check_finite = bool(check_finite)
        self._pass, self.compiled_missing = _compiled_pass(compiled, name)
        self.selection: Selection = selection
        self.temperature = float(temperature)
        self.window = spec.window
        self.input_name, self.num_features = window_layout(spec)
        self.frame = frame_shape(spec)
        #: Observations outside the bundle's calibrated range, counted every tick.
        self.range_watch = RangeWatch(spec.observation_range, self.num_features, 0, group=name)
        #: Its health measures (docs/health.md), a part it holds.
        self.health = NeuralHealth(
            discrete=spec.output_kind == "discrete",
            temperature=self.temperature,
            threshold=low_confidence,
        )
        self.history_capacity = max(int(history_capacity), self.window)
        # Steps not yet in the ring: a ring no longer than the window is written from the
        # windows when read (_record_windows), not every tick.
        self._unrecorded = 0
        self.key = hashlib.sha256(model_bytes).hexdigest()[:16]
        self.shared_nbytes = MODEL_BYTES_FACTOR * len(model_bytes)
        self._reservations: list[Reservation] = []
        self._agent_reservation: Reservation | None = None
        if budget is not None:
            self._reservations.append(
                budget.reserve(
                    f"model:{self.key}", "model", self.shared_nbytes, shared_key=f"nn:{self.key}"
                )
            )
        try:
            backend = get_backend(spec.backend)
            self.session = backend.load(
                model_bytes, threads, quantization=_quantization(spec), spinning=spinning
            )
            check_session(spec, self.session)
            # The first output, as the loaded model has it (its shapes fully known).
            self.output: TensorSpec = next(
                t for t in self.session.output_specs if t.name == spec.outputs[0].name
            )
            self._out_dims = self._check_output()
            self._output_name = self.output.name
            if self.window > 1:  # each tick moves every window one step older (_push_window)
                # Before the reservation: its room is part of bytes_for.
                self.session.enable_slide(self.input_name, self.num_features)
            if budget is not None:
                self._agent_reservation = budget.reserve(
                    name,
                    "agents",
                    self.bytes_for(int(n_agents)),
                    hint=f"reduce group {name!r} count or its window/history",
                )
                self._reservations.append(self._agent_reservation)
        except BaseException:
            self.release()
            raise
        self.rng = np.random.default_rng(seed)
        self._fields = {"obs": ((self.num_features,), np.dtype(np.float32))}
        self.n_agents = 0
        self.ticks = 0
        self._last_output: np.ndarray = np.zeros(0, dtype=np.float32)
        self._inputs: dict[str, FloatArray] = {}
        # The input's views by staging array (see _use_input); one step of one agent as an item,
        # and the address of the first agent's newest step (the compiled pass writes there).
        self._views: dict[int, tuple[FloatArray, FloatArray, np.ndarray, int]] = {}
        self._row_item = np.dtype((np.void, 4 * self.num_features))
        try:
            self.health.allocate(self.num_actions)  # reserved with the agents (bytes_for)
            self._allocate(int(n_agents))
            self.session.warm_up()
        except BaseException:
            self.release()
            raise

    # -- layout ----------------------------------------------------------------------------------
    def _check_output(self) -> tuple[int, ...]:
        kind = self.spec.output_kind
        dims = tuple(self.output.shape[1:])
        if kind in ("discrete", "continuous") and (len(dims) != 1 or dims[0] < 1):
            raise ModelError(
                f"output {self.output.name!r} has shape {list(self.output.shape)}; {kind} "
                "actions need [-1, A]"
            )
        if kind == "continuous":
            assert self.spec.action_low is not None  # NeuralSpec guarantees it for continuous
            if dims[0] != len(self.spec.action_low):
                raise ModelError(
                    f"output {self.output.name!r} has {dims[0]} values per agent, the action "
                    f"bounds have {len(self.spec.action_low)}"
                )
        return dims

    @property
    def num_actions(self) -> int:
        """Discrete: actions to choose from; continuous: action dimensions."""
        return int(self._out_dims[0]) if self._out_dims else 1

    # -- memory ----------------------------------------------------------------------------------
    def per_agent_nbytes(self) -> int:
        """Bytes allocated per agent: ring and window scratch, session buffers, actions."""
        ring = HistoryRing.bytes_needed(
            1,
            self.history_capacity,
            {"obs": ((self.num_features,), np.float32)},
            max_window=0,  # the windows live in the session's input (see _push_window)
        )
        kind = self.spec.output_kind
        if kind == "continuous":
            actions = 4 * self.num_actions  # float32 actions
        else:
            actions = 8  # an int64 action (unused by perception models, still allocated)
            if kind == "discrete" and self.selection == "sample":
                # float32 probabilities and a bool row per action, a float64 uniform and a
                # float32 threshold.
                actions += self.num_actions * 5 + 12
        range_row = 1 if self.range_watch.calibrated else 0  # an agent out of range or not
        return ring + self.session.nbytes_per_item() + actions + 8 + range_row  # + filled

    def bytes_for(self, n_agents: int) -> int:
        """Bytes to reserve for ``n_agents`` (the model is reserved separately, once): the
        agents' own bytes, the sliding window input's extra room (a few KB, once), the range
        check's scratch (at most 128 KB) and the health measures' buffers (about 30 KB)."""
        return (
            n_agents * self.per_agent_nbytes()
            + self.session.slide_nbytes(n_agents)
            + self.range_watch.scratch_nbytes(n_agents)
            + self.health.nbytes_for(self.num_actions)
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays allocated by the group itself (ring, actions, the range check's
        and the health measures'); the windows are the session's input buffer, counted by the
        session."""
        arrays = [self._filled, self._actions, *self._sample_buffers()]
        own = self._history.nbytes + sum(a.nbytes for a in arrays) + self.health.nbytes
        return int(own + self.range_watch.nbytes_for(self.n_agents))

    def _sample_buffers(self) -> list[np.ndarray]:
        return [b for b in (self._probs, self._below, self._u, self._threshold) if b is not None]

    def _allocate(self, n_agents: int) -> None:
        old = self.n_agents
        keep = min(old, n_agents)
        if old == 0:
            self._history = HistoryRing(n_agents, self.history_capacity, self._fields, max_window=0)
            self._unrecorded = 0
            filled = np.zeros(n_agents, dtype=np.int64)
        else:
            self._record_windows()  # the ring keeps the kept agents' steps
            self._history.resize_agents(n_agents)
            filled = np.zeros(n_agents, dtype=np.int64)
            filled[:keep] = self._filled[:keep]
        self._filled = filled
        self._saturated = False
        # Every agent's window, oldest first, is its block of the session's (N, T, F) input: the
        # windows live there and nowhere else (see _push_window), so a resize carries the kept
        # agents' blocks over from the old buffer.
        previous = self._batch if old else None
        self.session.set_batch(n_agents)
        self._make_views()
        self._use_input(self.session.input_buffer(self.input_name))
        if previous is None:
            self._batch.fill(0.0)
        elif not np.may_share_memory(previous, self._batch):
            self._batch[:keep] = previous[:keep]
            self._batch[keep:] = 0.0
        kind = self.spec.output_kind
        A = self.num_actions
        self._probs = self._below = self._u = self._threshold = None
        # A tick's actions from the model's first output, chosen once (a perception model has
        # none: step() refuses it).
        argmax = self._act_argmax if self._pass is None else self._act_argmax_compiled
        self._act: Callable[[FloatArray], np.ndarray] | None = {
            "continuous": self._act_clip,
            "discrete": self._act_sample if self.selection == "sample" else argmax,
        }.get(kind)
        if kind == "continuous":
            self._actions = np.zeros((n_agents, A), dtype=np.float32)
            self._low = np.asarray(self.spec.action_low, dtype=np.float32)
            self._high = np.asarray(self.spec.action_high, dtype=np.float32)
        else:
            self._actions = np.zeros(n_agents, dtype=np.int64)
            if kind == "discrete" and self.selection == "sample":
                self._probs = np.zeros((n_agents, A), dtype=np.float32)
                self._below = np.zeros((n_agents, A), dtype=bool)
                self._u = np.zeros(n_agents, dtype=np.float64)
                self._threshold = np.zeros(n_agents, dtype=np.float32)
        self.range_watch.resize(n_agents)
        self.n_agents = n_agents
        self._bind_pass()

    def _bind_pass(self) -> None:
        """The compiled pass's arguments for this batch size (the actions', the range's); the
        ring's, the observations' and the logits' are taken at the next tick."""
        self._ring_arena = self._obs_seen = self._logits_seen = None
        self._obs_at = self._logits_at = self._ring_at = self._ring_row = 0
        self._actions_at, self._range_at = 0, (0, 0, 0)
        self._obs_shape = (self.n_agents, self.num_features)
        self._stride = self.window * self.num_features  # values between two agents' windows
        # step() goes straight to the pass (_step_compiled) when there is nothing else to do.
        self._lean = self._act == self._act_argmax_compiled
        if self._pass is None:
            return
        self._actions_at = int(self._actions.ctypes.data)
        if self.range_watch.calibrated:
            low, high, rows = self.range_watch.bounds()
            self._range_at = (int(low.ctypes.data), int(high.ctypes.data), int(rows.ctypes.data))

    def resize(self, n_agents: int) -> None:
        """Grow or shrink the group, reserving first; new agents start with an empty window."""
        if isinstance(n_agents, bool) or not isinstance(n_agents, int | np.integer) or n_agents < 1:
            raise InputError(f"group {self.name!r}: n_agents must be an integer >= 1")
        if self._agent_reservation is not None:
            self._agent_reservation.resize(
                self.bytes_for(int(n_agents)), hint=f"reduce group {self.name!r} count"
            )
        self._allocate(int(n_agents))

    def resize_history(self, capacity: int) -> None:
        """Keep fewer (or more) observations per agent, never fewer than the window."""
        capacity = max(int(capacity), self.window)
        self._record_windows()  # before the ring may start recording every tick
        if self._agent_reservation is not None:
            old = self.history_capacity
            self.history_capacity = capacity
            try:
                self._agent_reservation.resize(self.bytes_for(self.n_agents))
            except BaseException:
                self.history_capacity = old
                raise
        self._history.resize(capacity)
        self.history_capacity = capacity

    def release(self) -> None:
        """Give the group's reservations back to the budget."""
        for reservation in self._reservations:
            reservation.release()
        self._reservations.clear()

    # -- ticking ---------------------------------------------------------------------------------
    def reset(self, mask: np.ndarray | None = None) -> None:
        """Forget the windows of the agents in ``mask`` (all by default): they restart empty."""
        self._record_windows()  # the ring keeps what the windows held
        if mask is None:
            self._filled.fill(0)
            self._saturated = False
            self._batch.fill(0.0)
            return
        sel = np.asarray(mask)
        if sel.shape != (self.n_agents,) or sel.dtype != np.bool_:
            raise InputError(f"mask must be a bool array of shape ({self.n_agents},)")
        self._filled[sel] = 0
        self._saturated = False
        self._batch[sel] = 0.0  # older steps of a restarted window are zeros

    def check_obs(self, obs: np.ndarray) -> np.ndarray:
        """``obs`` must be a real ``(N, F)`` array (or ``(N, *frame)`` for a frame model,
        returned as its ``(N, F)`` view), finite unless the group was built with
        ``check_finite=False``; InputError naming what is wrong."""
        arr = np.asarray(obs)
        expected = (self.n_agents, self.num_features)
        if self.frame is not None and arr.shape == (self.n_agents, *self.frame):
            arr = arr.reshape(expected)
        if arr.shape != expected:
            frames = "" if self.frame is None else f" or {(self.n_agents, *self.frame)}"
            raise InputError(f"obs has shape {arr.shape}, expected {expected}{frames}")
        if arr.dtype.kind not in "fiu":
            raise InputError(f"obs must be real numbers, got dtype {arr.dtype}")
        # One dot product of the values with themselves (BLAS: 5 us for 64,000 float32, a sum
        # takes 12): NaN or inf anywhere makes it non-finite; a square that overflows from
        # finite values only sends us to the exact search below, which then finds nothing.
        if self.check_finite and arr.dtype.kind == "f" and not _finite_dot(arr):
            bad = np.argwhere(~np.isfinite(arr))
            if len(bad):
                agent, feature = (int(i) for i in bad[0])
                raise InputError(
                    f"obs[{agent}, {feature}] is {arr[agent, feature]}: observations must be "
                    f"finite ({len(bad)} bad value(s))"
                )
        return arr

    def forward(self, obs: np.ndarray, now: float | None = None) -> Mapping[str, FloatArray]:
        """Append ``obs`` ``(N, F)`` to every agent's window and run the model once.

        Returns the model's real-valued outputs ``{name: (N, ...)}``: views of the session's
        buffers, valid until the next call.
        """
        del now  # observations are timed per tick by the caller; kept for a uniform signature
        o = self.check_obs(obs)
        if not self._saturated:  # until every agent's window is full (then nothing to count)
            np.add(self._filled, 1, out=self._filled)
            np.minimum(self._filled, self.window, out=self._filled)
            self._saturated = bool(self._filled.min() >= self.window)
        if self._pass is not None and o.dtype is _FLOAT32 and o.flags.c_contiguous:
            self._observe_compiled(o)
        else:
            if self._unrecorded and self.history_capacity > self.window:
                self._record_windows()  # the steps the compiled pass left in the windows first
            self.range_watch.observe(o)
            self._push_window(o)
            # A ring longer than the window records each observation as it comes (one
            # contiguous copy); a ring no longer than the window holds what the windows hold,
            # and is written from them only when it is read (_record_windows).
            if self.history_capacity > self.window:
                self._history.append_one(
                    "obs", o if o.dtype == np.float32 else self._batch[:, -1]
                )
            else:
                self._unrecorded += 1
        outputs = self.session.run_staged()  # the windows are the session's input already
        self.ticks += 1
        return outputs

    def _observe_compiled(self, obs: FloatArray) -> None:
        """What the numpy branch of :meth:`forward` does with the tick's observations (float32,
        C-contiguous), in one call of the compiled pass: the window's newest step, the range
        check on a checked tick. The ring is written from the windows (:meth:`_record_windows`)
        once they hold ``T`` steps it has not recorded, or when it is read: ``T`` rows in one
        burst of the pass's streaming stores every ``T`` ticks rather than a cold row of the
        ring every tick (the same bytes; a row a tick cost 3 us of a 56 us step, 2026-11-28)."""
        if self.window > 1:  # the window slides first: its newest step is then the one to write
            staging = self.session.slide_input(self.input_name)
            _, self._batch, self._newest, self._newest_at = self._views[id(staging)]
            self._inputs[self.input_name] = staging
        self._unrecorded += 1
        if obs is not self._obs_seen:  # held, so its memory stays where it is
            self._obs_seen = obs
            self._obs_at = int(obs.ctypes.data)
        watch = self.range_watch
        due = watch.due()
        low, high, rows = self._range_at
        out = self._pass.observe(  # type: ignore[union-attr]  # the caller checked it
            self._obs_at,
            self.n_agents,
            self.num_features,
            self._newest_at,
            self._stride,
            None,
            low if due else None,
            high,
            rows,
        )
        watch.counted(self.n_agents, out if due else None)
        if self._unrecorded >= self.window and self.history_capacity > self.window:
            self._record_windows()

    def _push_window(self, obs: np.ndarray) -> None:
        """Append ``obs`` ``(N, F)`` to every agent's window, in the session's input itself.

        The ``(N, T, F)`` input, read as one flat array, moves ``F`` values towards its start
        (every agent's steps move one place older, and each agent's oldest step lands in the
        previous agent's newest slot), then the newest row is written over those slots. No
        second buffer, no per-agent work. The move is the session's slide
        (:meth:`~edge_agent.neural.backends.base.Session.slide_input`): a view moved on in a
        slightly longer buffer, the values copied back once every 64 ticks.
        """
        if self.window > 1:
            self._use_input(self.session.slide_input(self.input_name))
        if obs.dtype == np.float32 and obs.flags.c_contiguous:
            # Each agent's newest step as one 4F-byte item: numpy copies 1,000 items instead of
            # 1,000 rows of F floats (a third less time for the strided write at F = 8).
            np.copyto(self._newest, obs.view(self._row_item)[:, 0])
        else:
            np.copyto(self._batch[:, -1], obs, casting="unsafe")

    def _make_views(self) -> None:
        """The group's views of every array the session's input may be (a sliding input has
        up to 65 positions), made once per batch size: a tick only picks them."""
        self._views.clear()
        for staging in self.session.input_views(self.input_name):
            batch = staging.reshape(len(staging), self.window, self.num_features)
            # The tuple holds ``staging``, so its id stays its own while it is a key.
            self._views[id(staging)] = (
                staging,
                batch,
                batch[:, -1].view(self._row_item)[:, 0],
                int(batch[:, -1].ctypes.data),
            )

    def _use_input(self, staging: FloatArray) -> None:
        """Point the group's views at the session's current input staging array."""
        _, self._batch, self._newest, self._newest_at = self._views[id(staging)]
        self._inputs[self.input_name] = staging

    @property
    def history(self) -> HistoryRing:
        """Every agent's last ``history_capacity`` observations (see the module docstring)."""
        self._record_windows()
        return self._history

    def _record_windows(self) -> None:
        """Append the steps the ring has not recorded yet, from the windows: a ring no longer
        than the window when it is read, a longer one also every ``T`` ticks of the compiled
        pass (a longer ring on numpy records every observation as it comes: nothing is
        pending). The ring then holds what it would hold had every step been appended; a ring
        no longer than the window counts at most ``T`` steps per read in ``total_appended``."""
        pending = min(self._unrecorded, self.window)
        self._unrecorded = 0
        if self._pass is not None and self._newest_at:
            F, row = self.num_features, self._ring_row_at
            for j in range(self.window - pending, self.window):  # oldest first
                step = self._newest_at - 4 * F * (self.window - 1 - j)  # the window's step j
                self._pass.gather(step, self.n_agents, F, self._stride, row())
            return
        for j in range(self.window - pending, self.window):  # oldest first
            self._history.append_one("obs", self._batch[:, j])

    def _ring_row_at(self) -> int:
        """The address of the ring's next row, claimed (:meth:`HistoryRing.claim_one`)."""
        arena = self._history.arena("obs")
        if arena is not self._ring_arena:  # a new ring (a resize): its rows' addresses
            self._ring_arena = arena
            self._ring_at = int(arena.ctypes.data)
            self._ring_row = arena[0].nbytes
        return self._ring_at + self._history.claim_one() * self._ring_row

    def _rebuild_windows(self) -> None:
        """The windows from the history and the fill counters (after a snapshot load): each
        agent's last ``min(filled, T)`` observations, zeros before them."""
        T = self.window
        self._batch.fill(0.0)
        rows = min(len(self._history), T)
        if rows == 0:
            return
        recent = self._history.window("obs", rows)  # (rows, N, F), oldest first
        for j in range(rows):  # over time steps, never over agents
            age = rows - 1 - j  # 0: the newest
            keep = (self._filled > age)[:, None]
            np.copyto(self._batch[:, T - rows + j], recent[j], where=keep)

    def step(self, obs: np.ndarray, now: float | None = None) -> np.ndarray:
        """One tick: ``obs`` ``(N, F)`` in, actions out.

        Discrete: ``(N,)`` int64; continuous: ``(N, D)`` float32 within the bounds. The result is
        the group's own action array (overwritten next tick).
        """
        if self._act is None:
            raise InputError(
                f"group {self.name!r} runs a perception model (output_kind 'observation'): "
                "use forward(), or PerceptionAifGroup to feed an Active Inference agent"
            )
        if (
            self._lean
            and not self.check_finite
            and type(obs) is np.ndarray
            and obs.dtype is _FLOAT32
            and obs.shape == self._obs_shape
            and obs.flags.c_contiguous
        ):
            return self._step_compiled(obs)
        out = self.forward(obs, now)[self._output_name]
        self._last_output = out
        self.health.observe(out, self.n_agents)
        return self._act(out)

    def _step_compiled(self, obs: FloatArray) -> np.ndarray:
        """:meth:`step` of a group that takes the argmax and scans no values, on observations
        of its shape, float32 and C-contiguous: what :meth:`forward` and :meth:`_act` do, in
        the compiled pass's two calls and the model's run, with no call between them that this
        case does not need (they cost 3 us of a 55 us step at 1,000 agents, 2026-11-28)."""
        if not self._saturated:
            np.add(self._filled, 1, out=self._filled)
            np.minimum(self._filled, self.window, out=self._filled)
            self._saturated = bool(self._filled.min() >= self.window)
        self._observe_compiled(obs)
        out = self.session.run_staged()[self._output_name]
        self.ticks += 1
        self._last_output = out
        self.health.observe(out, self.n_agents)
        if out is not self._logits_seen:
            return self._act_argmax_compiled(out)
        self._pass.argmax(  # type: ignore[union-attr]  # _lean only with a pass
            self._logits_at, self.n_agents, self.num_actions, self._actions_at
        )
        return self._actions

    def _act_argmax(self, out: FloatArray) -> np.ndarray:
        out.argmax(axis=1, out=self._actions)  # the method: no Python wrapper per tick
        return self._actions

    def _act_argmax_compiled(self, out: FloatArray) -> np.ndarray:
        """:meth:`_act_argmax` in the compiled pass (the same actions: numpy's rule)."""
        if out is not self._logits_seen:  # the session's output buffer: the same every tick
            if not (
                out.dtype == np.float32
                and out.flags.c_contiguous
                and out.shape == (self.n_agents, self.num_actions)
            ):
                return self._act_argmax(out)
            self._logits_seen = out
            self._logits_at = int(out.ctypes.data)
        self._pass.argmax(  # type: ignore[union-attr]  # chosen only with a pass
            self._logits_at, self.n_agents, self.num_actions, self._actions_at
        )
        return self._actions

    def _act_sample(self, out: FloatArray) -> np.ndarray:
        self._sample(out)
        return self._actions

    def _act_clip(self, out: FloatArray) -> np.ndarray:
        np.clip(out, self._low, self._high, out=self._actions)
        return self._actions

    def _sample(self, logits: FloatArray) -> None:
        probs, below, u, threshold = self._probs, self._below, self._u, self._threshold
        if probs is None or below is None or u is None or threshold is None:
            raise InputError(f"group {self.name!r} was not built for sampling")
        np.divide(logits, np.float32(self.temperature), out=probs)
        np.max(probs, axis=1, out=threshold)
        np.subtract(probs, threshold[:, None], out=probs)
        np.exp(probs, out=probs)
        np.cumsum(probs, axis=1, out=probs)
        self.rng.random(out=u)
        np.multiply(u, probs[:, -1], out=threshold, casting="same_kind")
        np.less_equal(probs, threshold[:, None], out=below)
        np.sum(below, axis=1, out=self._actions)
        np.minimum(self._actions, self.num_actions - 1, out=self._actions)

    @property
    def action(self) -> np.ndarray:
        """The last actions: ``(N,)`` int64 or ``(N, D)`` float32 (the group's own array)."""
        return self._actions

    def outputs_finite(self) -> bool:
        """Whether the policy's last outputs were finite (a deployment's watch checks this)."""
        return bool(np.isfinite(self._last_output).all())

    @property
    def actions(self) -> np.ndarray:
        """The last actions (read-only view)."""
        view = self._actions.view()
        view.flags.writeable = False
        return view

    # -- snapshots -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that restore the windows, fill counters and last actions exactly."""
        out = {f"history.{k}": v for k, v in self.history.state_dict().items()}
        out["filled"] = self._filled.copy()
        out["actions"] = self._actions.copy()
        out["ticks"] = np.array(self.ticks, dtype=np.int64)
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`; InputError if it does not fit this group."""
        for key, like in (("filled", self._filled), ("actions", self._actions)):
            if key not in state:
                raise InputError(f"group {self.name!r} snapshot lacks {key!r}")
            if np.shape(state[key]) != like.shape:
                raise InputError(
                    f"group {self.name!r} snapshot {key!r} has shape {np.shape(state[key])}, "
                    f"expected {like.shape}"
                )
        self._history.load_state_dict(state_under(state, "history."))
        self._unrecorded = 0
        self._filled[...] = np.minimum(np.asarray(state["filled"]), self.window)
        self._saturated = bool(self._filled.min() >= self.window)
        self._actions[...] = state["actions"]
        self.ticks = int(state.get("ticks", np.array(0)))
        self._rebuild_windows()

    # -- the group contract (edge_agent.core.contract.AgentGroup) ----------------------------------
    def advance(
        self, obs: np.ndarray, now: float | None, outcomes: np.ndarray | None,
        starts: np.ndarray | None = None,
    ) -> np.ndarray:
        """One tick's step (``outcomes`` unused: a policy sees only its feature vectors), the
        agents of ``starts`` reset first."""
        del outcomes
        if starts is not None:
            self.reset(starts)
        return self.step(obs, now)

    def io(self) -> GroupIO:
        continuous = self.num_actions if self.spec.output_kind == "continuous" else 0
        return GroupIO(
            features=self.num_features,
            frame=self.frame,
            actions=(self.num_actions,),
            continuous=continuous,
        )

    def io_signature(self) -> tuple[object, ...]:
        return ("neural", self.num_features, self.spec.output_kind, self.num_actions)

    def warm_up(self, obs: np.ndarray) -> None:
        """Step once on ``obs``, then put every window, counter and action back."""
        state = {k: np.array(v, copy=True) for k, v in self.state_dict().items()}
        self.step(obs)
        self.load_state_dict(state)

    def finite(self) -> bool:
        return self.outputs_finite()

    def random_inputs(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        return rng.standard_normal((self.n_agents, self.num_features), dtype=np.float32), None

    def describe(self) -> dict[str, Any]:
        return {
            "workers": 1,
            "workers_rss_bytes": 0,
            "workers_restarts": 0,
            "window": self.window,
            **self.range_watch.describe(),
        }

    def metrics(self) -> dict[str, object]:
        """Observations outside the calibrated range (none without a range in the bundle)."""
        return self.range_watch.metrics()

    def health_summary(self) -> HealthSummary:
        """The health measures since the last call (one reporting window, docs/health.md)."""
        watch = self.range_watch
        return self.health.close(watch.checked, watch.out_of_range)

    def alerts(self) -> list[GroupEvent]:
        """The ``input_out_of_range`` event, when the share out of range crossed 1 %."""
        return self.range_watch.alerts()

    # -- bundles ---------------------------------------------------------------------------------
    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        n_agents: int,
        *,
        threads: int = 1,
        spinning: bool = False,
        selection: Selection = "argmax",
        temperature: float = 1.0,
        seed: int | None = 0,
        history_capacity: int = 0,
        budget: MemoryBudget | None = None,
        name: str = "neural",
    ) -> NeuralAgentGroup:
        """A group running the neural model of a verified bundle (kind ``neural``)."""
        manifest = bundle.manifest
        spec = manifest.neural
        if spec is None or manifest.kind != "neural":
            raise BundleError(
                f"{bundle.path}: a neural agent group needs a bundle of kind 'neural', "
                f"got {manifest.kind!r}"
            )
        if spec.output_kind == "observation":
            raise BundleError(
                f"{bundle.path}: the model outputs observations, not actions; pair it with an "
                "Active Inference model in an 'aif+perception' bundle"
            )
        if coupled := per_batch_warning(bundle):
            logger.warning("group %s: %s", name, coupled)
        logger.info(
            "group %s: neural bundle %s %s (%s, window %d, %s output)",
            name,
            manifest.name,
            manifest.version,
            spec.backend,
            spec.window,
            spec.output_kind,
        )
        return cls(
            spec,
            bundle.file_bytes(spec.model_file),
            n_agents,
            threads=threads,
            spinning=spinning,
            selection=selection,
            temperature=temperature,
            seed=seed,
            history_capacity=history_capacity,
            budget=budget,
            name=name,
        )
