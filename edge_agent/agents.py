"""Agent groups: every agent that shares one model, stepped as one batch.

An :class:`AifAgentGroup` owns the per-agent state (beliefs, last actions, policy posteriors and an
optional circular history) in preallocated arrays, and calls the pure kernels of
:mod:`edge_agent.aif.kernels` on the whole batch, in blocks of at most ``block_size`` agents so that
temporary arrays stay bounded (and cache-friendly) however many agents there are.

``precision="int8"`` stores the model in the ``logu8-v1`` scheme (:mod:`edge_agent.quant`) and
computes in float32 from tables decoded once per model; ``precision="float64"`` computes from the
float tables in float64 and gives pymdp's numbers.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.policies import construct_policies, validate_policies
from edge_agent.aif.settings import AifSettings
from edge_agent.budget import MemoryBudget, Reservation
from edge_agent.errors import InputError
from edge_agent.history import HistoryRing
from edge_agent.quant import QuantizedModel, encode_beliefs_u8, quantize_model

Precision = Literal["int8", "float64"]
IntArray = NDArray[np.int64]

#: Agents per kernel call; bounds temporary memory to ``block_size * per-agent scratch``.
DEFAULT_BLOCK = 2048


def model_key(model: GenerativeModel | QuantizedModel, precision: str, policies: np.ndarray) -> str:
    """A stable identity for shared tables: same model + precision + policies -> same key."""
    h = hashlib.sha256(precision.encode())
    arrays = (
        model.to_arrays() if isinstance(model, QuantizedModel) else model.to_npz_dict()
    )
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    h.update(np.ascontiguousarray(policies).tobytes())
    return h.hexdigest()[:16]


def _small_uint(limit: int) -> type[np.unsignedinteger]:
    return np.uint8 if limit <= 256 else np.uint16


class AifAgentGroup:
    """``n_agents`` Active Inference agents sharing one generative model.

    Per-agent state, all ``(n_agents, ...)``:
    ``qs[f]`` posterior ``(N, S_f)``; ``prior[f]`` prior for the next observation;
    ``action`` last committed action ``(N, F)``; ``q_pi`` and ``G`` ``(N, P)``.
    """

    def __init__(
        self,
        model: GenerativeModel | QuantizedModel,
        n_agents: int,
        *,
        settings: AifSettings | None = None,
        policies: np.ndarray | None = None,
        precision: Precision = "int8",
        seed: int | None = 0,
        history_capacity: int = 0,
        budget: MemoryBudget | None = None,
        name: str = "group",
        block_size: int = DEFAULT_BLOCK,
    ) -> None:
        if n_agents < 1:
            raise InputError(f"group {name!r}: n_agents must be >= 1, got {n_agents}")
        if precision not in ("int8", "float64"):
            raise InputError(f"precision must be 'int8' or 'float64', got {precision!r}")
        self.name = name
        self.settings = settings or AifSettings()
        self.precision: Precision = precision
        self.block_size = max(1, int(block_size))
        num_controls = model.num_controls
        if policies is None:
            pol = construct_policies(
                num_controls, self.settings.policy_len, self.settings.control_fac_idx
            )
        else:
            pol = validate_policies(policies, num_controls)
        if precision == "int8":
            qmodel = model if isinstance(model, QuantizedModel) else quantize_model(model)
            self.quantized: QuantizedModel | None = qmodel
            source: GenerativeModel | QuantizedModel = qmodel
            dtype: type[np.floating] = np.float32
        else:
            self.quantized = None
            source = model.dequantize() if isinstance(model, QuantizedModel) else model
            dtype = np.float64
        self.dtype = np.dtype(dtype)
        self.key = model_key(source, precision, pol)
        self._budget = budget
        self._reservations: list[Reservation] = []
        # Reserve before allocating: shared tables once per model, then per-agent state.
        self.cm = kernels.compile_model(source, pol, dtype=dtype)
        shared = self.cm.nbytes + (self.quantized.nbytes if self.quantized is not None else 0)
        self.shared_nbytes = shared
        if budget is not None:
            self._reservations.append(
                budget.reserve(f"model:{self.key}", "model", shared, shared_key=self.key)
            )
        self.history_capacity = int(history_capacity)
        self._history_fields = {
            "obs": ((self.cm.num_modalities,), np.dtype(_small_uint(max(self.cm.num_obs)))),
            "action": ((self.cm.num_factors,), np.dtype(_small_uint(max(self.cm.num_controls)))),
            "qs": ((sum(self.cm.num_states),), np.dtype(np.uint8)),
        }
        self._agent_reservation: Reservation | None = None
        if budget is not None:
            self._agent_reservation = budget.reserve(
                name, "agents", self.bytes_for(n_agents, self.history_capacity),
                hint=f"reduce group {name!r} count or history_capacity",
            )
            self._reservations.append(self._agent_reservation)
        self.rng = np.random.default_rng(seed)
        self.n_agents = 0
        self._allocate(n_agents)
        self.ticks = 0

    # -- memory ------------------------------------------------------------------------------
    def per_agent_nbytes(self, history_capacity: int | None = None) -> int:
        """Exact bytes of one agent's state, history included."""
        cap = self.history_capacity if history_capacity is None else history_capacity
        item = self.dtype.itemsize
        P = self.cm.num_policies
        beliefs = 2 * sum(self.cm.num_states) * item  # qs + prior
        policy = 2 * P * item  # q_pi + G
        actions = self.cm.num_factors * 8 + 1  # action + has_action
        history = 0
        if cap > 0:
            # Timestamps are per tick and shared by the group: counted in bytes_for.
            history = HistoryRing.bytes_needed(1, cap, self._history_fields, max_window=0)
        return beliefs + policy + actions + history

    def scratch_nbytes_per_agent(self) -> int:
        """Upper bound of one agent's temporaries in a kernel call (policy-tree states, outcomes)."""
        S_joint, O_joint = self.cm.A_joint_T.shape
        worst = 0
        for depth in self.cm.tree.depths:
            nodes = sum(len(p) * s for p, s in zip(depth.parent, self.cm.num_states, strict=True))
            worst = max(worst, nodes + len(depth.joint) * (2 * int(S_joint) + 2 * int(O_joint)))
        return worst * self.dtype.itemsize

    def bytes_for(self, n_agents: int, history_capacity: int) -> int:
        """Bytes to reserve for ``n_agents``: state, history, shared timestamps, block scratch."""
        times = 8 * history_capacity
        scratch = min(self.block_size, n_agents) * (
            self.scratch_nbytes_per_agent() + sum(self.cm.num_states)
        )
        return n_agents * self.per_agent_nbytes(history_capacity) + times + scratch

    @property
    def nbytes(self) -> int:
        """Bytes of per-agent arrays currently allocated (not the shared model)."""
        arrays = [*self.qs, *self.prior, self.q_pi, self.G, self.action, self.has_action]
        total = sum(a.nbytes for a in arrays)
        if self.history is not None:
            total += self.history.nbytes + self._times.nbytes
        return int(total)

    def _allocate(self, n_agents: int) -> None:
        old = self.n_agents
        keep = min(old, n_agents)
        dt = self.dtype
        qs = [np.empty((n_agents, s), dtype=dt) for s in self.cm.num_states]
        prior = [np.empty((n_agents, s), dtype=dt) for s in self.cm.num_states]
        q_pi = np.empty((n_agents, self.cm.num_policies), dtype=dt)
        G = np.zeros((n_agents, self.cm.num_policies), dtype=dt)
        action = np.zeros((n_agents, self.cm.num_factors), dtype=np.int64)
        has_action = np.zeros(n_agents, dtype=bool)
        if keep:
            for new, cur in zip(qs + prior, self.qs + self.prior, strict=True):
                new[:keep] = cur[:keep]
            q_pi[:keep] = self.q_pi[:keep]
            G[:keep] = self.G[:keep]
            action[:keep] = self.action[:keep]
            has_action[:keep] = self.has_action[:keep]
        self.qs, self.prior, self.q_pi, self.G = qs, prior, q_pi, G
        self.action, self.has_action = action, has_action
        self.n_agents = n_agents
        if n_agents > keep:
            self.reset(np.arange(n_agents) >= keep)
        if self.history_capacity > 0:
            if old and hasattr(self, "history") and self.history is not None:
                self.history.resize_agents(n_agents)
            else:
                self.history = HistoryRing(
                    n_agents, self.history_capacity, self._history_fields, max_window=0
                )
                self._times = HistoryRing(1, self.history_capacity, {"t": ((), np.dtype(np.float64))})
                self._now = np.zeros(1, dtype=np.float64)
            self._qs_row = np.empty((n_agents, sum(self.cm.num_states)), dtype=np.uint8)
        else:
            self.history = None

    def resize(self, n_agents: int) -> None:
        """Grow or shrink the group; new agents start from ``D``. Reserves before allocating."""
        if n_agents < 1:
            raise InputError(f"group {self.name!r}: n_agents must be >= 1, got {n_agents}")
        if self._agent_reservation is not None:
            self._agent_reservation.resize(self.bytes_for(n_agents, self.history_capacity))
        self._allocate(n_agents)

    def resize_history(self, capacity: int) -> None:
        """Shrink (or grow) every agent's history, keeping the newest rows."""
        if self.history is None or capacity < 1:
            raise InputError(f"group {self.name!r} has no history to resize to {capacity}")
        if self._agent_reservation is not None:
            self._agent_reservation.resize(self.bytes_for(self.n_agents, capacity))
        self.history.resize(capacity)
        self._times.resize(capacity)
        self.history_capacity = capacity

    def release(self) -> None:
        """Give the group's reservations back to the budget (the group is no longer used)."""
        for r in self._reservations:
            r.release()
        self._reservations.clear()

    # -- the maths, batched ---------------------------------------------------------------------
    def reset(self, mask: np.ndarray | None = None) -> None:
        """Start a new trial for the agents in ``mask`` (all by default): prior back to ``D``."""
        sel = slice(None) if mask is None else np.asarray(mask, dtype=bool)
        for f, d in enumerate(self.cm.D):
            self.prior[f][sel] = d
            self.qs[f][sel] = d
        self.has_action[sel] = False
        self.q_pi[sel] = 1.0 / self.cm.num_policies
        self.G[sel] = 0.0

    def check_obs(self, obs: np.ndarray) -> IntArray:
        """Validate ``obs (N, M)`` integer outcomes; raise InputError naming what is wrong."""
        arr = np.asarray(obs)
        expected = (self.n_agents, self.cm.num_modalities)
        if arr.shape != expected:
            raise InputError(f"obs has shape {arr.shape}, expected {expected}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"obs must be integer outcomes, got dtype {arr.dtype}")
        for m, o in enumerate(self.cm.num_obs):
            col = arr[:, m]
            bad = (col < 0) | (col >= o)
            if bad.any():
                agent = int(np.flatnonzero(bad)[0])
                raise InputError(
                    f"obs[{agent}, {m}] = {int(col[agent])} is out of range [0, {o}) "
                    f"({int(bad.sum())} agent(s) out of range in modality {m})"
                )
        return arr.astype(np.int64, copy=False)

    def check_actions(self, actions: np.ndarray) -> IntArray:
        arr = np.asarray(actions)
        expected = (self.n_agents, self.cm.num_factors)
        if arr.shape != expected:
            raise InputError(f"actions has shape {arr.shape}, expected {expected}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"actions must be integers, got dtype {arr.dtype}")
        for f, u in enumerate(self.cm.num_controls):
            col = arr[:, f]
            if col.min() < 0 or col.max() >= u:
                raise InputError(f"actions on factor {f} must be in [0, {u}), got {int(col.max())}")
        return arr.astype(np.int64, copy=False)

    def _blocks(self) -> range:
        return range(0, self.n_agents, self.block_size)

    def infer_states(self, obs: np.ndarray) -> list[np.ndarray]:
        """Update every agent's posterior from ``obs (N, M)``; returns ``qs`` (views)."""
        o = self.check_obs(obs)
        for start in self._blocks():
            self._infer_block(o, slice(start, start + self.block_size))
        return self.qs

    def _infer_block(self, obs: IntArray, sl: slice) -> None:
        s = self.settings
        post = kernels.infer_states(
            self.cm, obs[sl], [p[sl] for p in self.prior], num_iter=s.num_iter, dF_tol=s.dF_tol
        )
        for q, new in zip(self.qs, post, strict=True):
            q[sl] = new

    def infer_policies(self) -> tuple[np.ndarray, np.ndarray]:
        """``q_pi`` and ``G`` ``(N, P)`` for the current beliefs."""
        for start in self._blocks():
            self._plan_block(slice(start, start + self.block_size))
        return self.q_pi, self.G

    def _plan_block(self, sl: slice) -> kernels.PolicyEvaluation:
        s = self.settings
        ev = kernels.evaluate_policies(
            self.cm, [q[sl] for q in self.qs],
            use_utility=s.use_utility, use_info_gain=s.use_states_info_gain,
        )
        self.G[sl] = ev.G
        self.q_pi[sl] = kernels.policy_posterior(ev.G, self.cm.lnE, s.gamma)
        return ev

    def sample_action(self) -> IntArray:
        """Select and commit each agent's next action ``(N, F)``; it drives the next prior."""
        for start in self._blocks():
            self._act_block(slice(start, start + self.block_size), None)
        return self.action

    def _act_block(self, sl: slice, ev: kernels.PolicyEvaluation | None) -> None:
        s = self.settings
        actions = kernels.select_actions(
            self.cm, self.q_pi[sl], mode=s.sampling_mode,
            deterministic=s.action_selection == "deterministic", alpha=s.alpha, rng=self.rng,
        )
        self._commit_block(sl, actions, ev)

    def _commit_block(
        self, sl: slice, actions: IntArray, ev: kernels.PolicyEvaluation | None
    ) -> None:
        self.action[sl] = actions
        self.has_action[sl] = True
        nxt = kernels.next_prior(
            self.cm, [q[sl] for q in self.qs], actions, None if ev is None else ev.first_step
        )
        for p, new in zip(self.prior, nxt, strict=True):
            p[sl] = new

    def set_action(self, actions: np.ndarray) -> None:
        """Commit externally chosen actions ``(N, F)`` (replay, manual control)."""
        a = self.check_actions(actions)
        for start in self._blocks():
            sl = slice(start, start + self.block_size)
            self._commit_block(sl, a[sl], None)

    def step(self, obs: np.ndarray, now: float | None = None) -> IntArray:
        """One full tick for every agent: infer states, plan, act, record history.

        Returns the committed actions ``(N, F)`` (a view of the group's action array).
        """
        o = self.check_obs(obs)
        for start in self._blocks():
            sl = slice(start, start + self.block_size)
            self._infer_block(o, sl)
            ev = self._plan_block(sl)
            self._act_block(sl, ev)
        if self.history is not None:
            self._record(o, now)
        self.ticks += 1
        return self.action

    def _record(self, obs: IntArray, now: float | None) -> None:
        if self.history is None:
            return
        offset = 0
        for q in self.qs:
            width = q.shape[1]
            encode_beliefs_u8(q, out=self._qs_row[:, offset : offset + width])
            offset += width
        self.history.append(obs=obs, action=self.action, qs=self._qs_row)
        self._now[0] = np.nan if now is None else now
        self._times.append(t=self._now)

    # -- snapshots -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that restore this group's beliefs, actions and history exactly."""
        out: dict[str, np.ndarray] = {
            "action": self.action, "has_action": self.has_action, "q_pi": self.q_pi,
            "ticks": np.array(self.ticks, dtype=np.int64),
        }
        for f in range(self.cm.num_factors):
            out[f"qs{f}"] = self.qs[f]
            out[f"prior{f}"] = self.prior[f]
        if self.history is not None:
            for k, v in self.history.state_dict().items():
                out[f"history.{k}"] = v
            for k, v in self._times.state_dict().items():
                out[f"times.{k}"] = v
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`state_dict`; shapes must match this group exactly."""
        def take(name: str, like: np.ndarray) -> np.ndarray:
            if name not in state:
                raise InputError(f"group {self.name!r} snapshot lacks {name!r}")
            arr = np.asarray(state[name])
            if arr.shape != like.shape:
                raise InputError(
                    f"group {self.name!r} snapshot {name!r} has shape {arr.shape}, expected {like.shape}"
                )
            return arr

        self.action[...] = take("action", self.action)
        self.has_action[...] = take("has_action", self.has_action)
        self.q_pi[...] = take("q_pi", self.q_pi)
        for f in range(self.cm.num_factors):
            self.qs[f][...] = take(f"qs{f}", self.qs[f])
            self.prior[f][...] = take(f"prior{f}", self.prior[f])
        self.ticks = int(state.get("ticks", np.array(0)))
        if self.history is not None:
            hist = {k[len("history."):]: v for k, v in state.items() if k.startswith("history.")}
            times = {k[len("times."):]: v for k, v in state.items() if k.startswith("times.")}
            if hist:
                self.history.load_state_dict(hist)
                self._times.load_state_dict(times)
