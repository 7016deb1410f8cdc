"""Agent I/O over MQTT: observations in from a topic filter, actions out on a topic.

Wire format (both directions): one protocol envelope (:func:`edge_agent.fleet.protocol.encode`) per
message, ``type`` ``obs`` with an :class:`~edge_agent.fleet.protocol.ObservationBatch` body, or
``action`` with an :class:`~edge_agent.fleet.protocol.ActionBatch` body: ``group``, ``tick``,
``agent_ids`` (little-endian uint32, the agent's index in its group, 0 ... count-1), ``dtype``,
``width`` and ``values`` (``(n, width)`` row-major). An observation row holds one outcome index
per modality of the group's model (``width`` = number of modalities, integer dtype); an action
row one action per hidden-state factor. :func:`encode_observations` and :func:`decode_actions`
are all a sensor process needs.

Observations (:class:`ObservationBuffer`, one per group):

- The transport thread decodes, validates and writes each batch into the group's *pending* row
  of each agent, under a lock: the newest observation of an agent replaces an older one that the
  tick has not taken yet (newest wins, later rows of a batch beat earlier ones). The buffer is
  one preallocated row per agent, so it is bounded whatever the sender does.
- Each tick takes the fresh rows (:meth:`ObservationBuffer.take`). An agent without a fresh
  observation keeps its last one and is counted *stale* for that tick (``stale_agent_ticks``,
  and its ``age`` in ticks grows). A group does not step at all until every agent has received
  at least one observation (``waiting``, ``unobserved`` agents), so no agent acts on a made-up
  observation.
- A malformed batch (not decodable, wrong type, group, dtype or width, an agent id outside the
  group, or, on a per-agent topic ``.../obs/{group}/{agent}``, ids other than that agent) is
  dropped whole; rows with an outcome out of range for its modality are dropped one by one. Both
  are counted by reason and never raised; the daemon turns the counts into ``rejected_input``
  events.

Actions (:class:`ActionPublisher`): once per tick per group, the whole group's actions as
batches of at most :data:`~edge_agent.fleet.protocol.MAX_BATCH_AGENTS` agents that fit the payload
limit, ids ``0 ... n-1``, the smallest unsigned dtype that holds every action.

In a group (:mod:`edge_agent.daemon.group_runtime`), an ``mqtt`` source is an
:class:`InboxSource` (a buffer and the topic filter it listens on through the uplink) and an
``mqtt`` sink an
:class:`ActionPublisher`: :class:`edge_agent.core.contract.Source` and ``Sink`` by their shape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

from edge_agent.arrays import distinct
from edge_agent.errors import ProtocolError
from edge_agent.fleet.comms.base import Incoming, topic_matches
from edge_agent.fleet.protocol import (
    ARRAY_DTYPES,
    DEFAULT_MAX_BYTES,
    MAX_BATCH_AGENTS,
    ActionBatch,
    DecodeError,
    Envelope,
    FrameBatch,
    ObservationBatch,
    decode,
    encode,
)
from edge_agent.fleet.topics import TopicKind, Topics

logger = logging.getLogger(__name__)

__all__ = [
    "ActionPublisher",
    "FeatureBuffer",
    "InboxSource",
    "ObservationBuffer",
    "ObservationRouter",
    "decode_actions",
    "encode_frame",
    "encode_observations",
]

_INTEGER_DTYPES: Final = frozenset({"int8", "uint8", "int16", "int32"})
_ENVELOPE_OVERHEAD: Final = 512
"""Bytes reserved for the envelope and body keys when sizing an action batch."""

REJECT_REASONS: Final = (
    "decode",
    "type",
    "group",
    "dtype",
    "width",
    "agent_id",
    "agent_topic",
    "value",
)


class ObservationBuffer:
    """The newest observation of every agent of one group (see the module docstring).

    ``obs: (n_agents, num_modalities) int64`` is what the group steps on; only :meth:`take`
    (the tick) writes it. :meth:`offer` (any thread) writes the pending rows.
    """

    def __init__(self, group: str, n_agents: int, num_obs: Sequence[int]) -> None:
        self.group = group
        self.num_obs = tuple(int(o) for o in num_obs)
        self._limit = np.asarray(self.num_obs, dtype=np.int64)
        self._lock = threading.Lock()
        self.counters: dict[str, int] = dict.fromkeys(
            ("batches", "rows", "rows_rejected", "batches_rejected", "stale_agent_ticks"), 0
        )
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.last_reject = ""
        self.refusals = 0
        """Times the broker refused the subscription to the filter this buffer listens on."""
        self.refusal = ""
        """The broker's last reason (``0x87 not authorized``); empty: never refused."""
        self.waiting_ticks = 0
        self.last_fresh = 0
        self._allocate(n_agents)

    #: What a row holds, for messages; its dtype in :attr:`obs`.
    row_kind: str = "outcomes"
    row_dtype: type[np.generic] = np.int64

    @property
    def width(self) -> int:
        return len(self.num_obs)

    def _allocate(self, n_agents: int) -> None:
        m = self.width
        self.n_agents = n_agents
        self.obs = np.zeros((n_agents, m), dtype=self.row_dtype)
        self.seen = np.zeros(n_agents, dtype=bool)
        self.age = np.zeros(n_agents, dtype=np.uint32)
        self._pending = np.zeros((n_agents, m), dtype=self.row_dtype)
        self._fresh = np.zeros(n_agents, dtype=bool)
        self._primed = False

    def resize(self, n_agents: int) -> None:
        """Change the number of agents, keeping the rows of the first ``min(old, new)``."""
        with self._lock:
            keep = min(self.n_agents, n_agents)
            old: list[npt.NDArray[Any]] = [self.obs, self.seen, self.age, self._pending]
            old.append(self._fresh)
            self._allocate(n_agents)
            new: list[npt.NDArray[Any]] = [self.obs, self.seen, self.age, self._pending]
            new.append(self._fresh)
            for dst, src in zip(new, old, strict=True):
                dst[:keep] = src[:keep]
            self._primed = bool(self.seen.all())

    # Transport thread ---------------------------------------------------------------------
    def reject(self, reason: str, detail: str, rows: int = 0) -> None:
        """Count a whole batch as dropped."""
        with self._lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            self.counters["batches_rejected"] += 1
            self.counters["rows_rejected"] += rows
            self.last_reject = f"{reason}: {detail}"[:256]
        logger.debug("group %s: observation batch rejected: %s: %s", self.group, reason, detail)

    def refused(self, reason: str) -> bool:
        """The broker refused the subscription to the filter this buffer listens on, for
        ``reason`` (its code by name): counted; True the first time (the daemon says it once)."""
        with self._lock:
            first = not self.refusals
            self.refusals += 1
            self.refusal = reason
        return first

    @property
    def heard(self) -> bool:
        """Whether anything arrived for this group at all (kept or rejected)."""
        with self._lock:
            return bool(self.counters["batches"] or self.counters["batches_rejected"])

    def offer(self, batch: ObservationBatch, topic_agent: str | None = None) -> int:
        """Validate ``batch`` and keep its valid rows as the newest observations.

        Returns how many rows were kept. Never raises for what the batch contains.
        """
        n = batch.n_agents
        if batch.group != self.group:
            self.reject("group", f"batch for group {batch.group!r}", n)
            return 0
        if batch.dtype not in self._dtypes:
            self.reject("dtype", f"dtype {batch.dtype}, {self.row_kind} are {self._dtype_word}", n)
            return 0
        if batch.width != self.width:
            self.reject("width", f"width {batch.width}, the model takes {self.width}", n)
            return 0
        ids, values = batch.arrays()
        if n and int(ids.max()) >= self.n_agents:
            self.reject("agent_id", f"agent id {int(ids.max())} >= {self.n_agents} agents", n)
            return 0
        if topic_agent is not None and (
            not topic_agent.isdigit() or (n and not bool((ids == int(topic_agent)).all()))
        ):
            self.reject("agent_topic", f"ids other than {topic_agent!r} on its own topic", n)
            return 0
        vals = values.astype(self.row_dtype)
        ok = self._valid_rows(vals)
        bad = n - int(ok.sum())
        if bad:
            ids, vals = ids[ok], vals[ok]
        if len(ids) and len(distinct(ids)) != len(ids):
            # Keep the last row of every agent: later rows of a batch are newer.
            _, last = np.unique(ids[::-1], return_index=True)
            keep = len(ids) - 1 - last
            ids, vals = ids[keep], vals[keep]
        with self._lock:
            if len(ids) and int(ids.max()) < self.n_agents:  # a resize may have happened
                self._pending[ids] = vals
                self._fresh[ids] = True
            self.counters["batches"] += 1
            self.counters["rows"] += len(ids)
            if bad:
                self.counters["rows_rejected"] += bad
                self.rejected["value"] += bad
                self.last_reject = f"value: {bad} row(s) {self._bad_row}"
        return len(ids)

    _dtypes: frozenset[str] = _INTEGER_DTYPES
    _dtype_word = "integers"
    _bad_row = "with outcomes out of range"

    def _valid_rows(self, vals: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        """Which rows can be used (the batch's shape and dtype are already checked)."""
        return np.asarray(((vals >= 0) & (vals < self._limit)).all(axis=1))

    # Tick thread ----------------------------------------------------------------------------
    def take(self) -> bool:
        """Merge the fresh rows into :attr:`obs`; True when the group can step this tick."""
        with self._lock:
            fresh = self._fresh
            np.copyto(self.obs, self._pending, where=fresh[:, None])
            n_fresh = int(np.count_nonzero(fresh))
            self.age += 1
            np.copyto(self.age, 0, where=fresh)
            self.seen |= fresh
            fresh[:] = False
        self.last_fresh = n_fresh
        if not self._primed:
            self._primed = bool(self.seen.all())
            if not self._primed:
                self.waiting_ticks += 1
                return False
        self.counters["stale_agent_ticks"] += self.n_agents - n_fresh
        return True

    @property
    def unobserved(self) -> int:
        return int(self.n_agents - np.count_nonzero(self.seen))

    def stats(self) -> dict[str, object]:
        with self._lock:
            out: dict[str, object] = dict(self.counters)
            out["rejected"] = {k: v for k, v in self.rejected.items() if v}
            out["last_reject"] = self.last_reject
            out["refused"] = self.refusals
            out["refusal"] = self.refusal
        out["waiting"] = not self._primed
        out["waiting_ticks"] = self.waiting_ticks
        out["unobserved"] = self.unobserved
        out["fresh_last_tick"] = self.last_fresh
        out["max_age_ticks"] = int(self.age.max()) if self.n_agents else 0
        return out


class FeatureBuffer(ObservationBuffer):
    """The newest feature vector of every agent of a neural or perception group.

    The same wire format and rules as :class:`ObservationBuffer` (newest wins, stale agents
    counted, no step until every agent has been observed), with rows of ``num_features`` real
    values: ``float32`` or, for quantized senders, ``int8``/``uint8``/``int16``/``int32`` (taken
    as the numbers they are). A row with a NaN or an infinity is dropped (reason ``value``).
    """

    row_kind = "features"
    row_dtype = np.float32
    _dtypes = frozenset({"float32", *_INTEGER_DTYPES})
    _dtype_word = "real numbers (float32 or integers)"
    _bad_row = "with a NaN or an infinity"

    def __init__(
        self, group: str, n_agents: int, num_features: int, frame: tuple[int, ...] | None = None
    ) -> None:
        self.num_features = int(num_features)
        #: The model's frame ``(C, H, W)`` or ``(H, W, C)`` when it takes camera frames.
        self.frame = frame
        super().__init__(group, n_agents, ())

    @property
    def width(self) -> int:
        return self.num_features

    def _valid_rows(self, vals: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        return np.asarray(np.isfinite(vals).all(axis=1))

    def offer_frame(self, body: FrameBatch, topic_agent: str | None = None) -> int:
        """Decode one agent's camera frame into its pending row (1 if kept, else 0). A frame of
        another shape than the model's (up to the channel order), an undecodable JPEG or a
        non-finite value is counted and dropped."""
        if self.frame is None:
            self.reject("type", "a frame for a group whose model takes feature vectors", 1)
            return 0
        if body.group != self.group:
            self.reject("group", f"frame for group {body.group!r}", 1)
            return 0
        agent = body.agent_id
        if agent >= self.n_agents:
            self.reject("agent_id", f"agent id {agent} >= {self.n_agents} agents", 1)
            return 0
        if topic_agent is not None and topic_agent != str(agent):
            self.reject("agent_topic", f"agent {agent} on agent {topic_agent!r}'s topic", 1)
            return 0
        try:
            pixels = decode_frame(body, channels=_channels(self.frame))
        except ValueError as err:
            self.reject("decode", str(err)[:200], 1)
            return 0
        row = _model_layout(pixels, self.frame)
        if row is None:
            self.reject("width", f"frame of shape {list(pixels.shape)}, the model takes "
                        f"{list(self.frame)}", 1)  # fmt: skip
            return 0
        if not np.isfinite(row).all():
            self.reject("value", "a frame with a NaN or an infinity", 1)
            return 0
        with self._lock:
            if agent < self.n_agents:
                self._pending[agent] = row.reshape(-1)
                self._fresh[agent] = True
            self.counters["batches"] += 1
            self.counters["rows"] += 1
        return 1


class InboxPort(Protocol):
    """Where an :class:`InboxSource` asks for its observations (the daemon's uplink)."""

    def listen(self, topic: str, inbox: ObservationBuffer) -> None:
        """Route the observations arriving on the filter ``topic`` to ``inbox``."""
        ...


class InboxSource:
    """An MQTT inbox as a group's source (the ``mqtt`` source of the config): the newest
    observation of every agent from the topic filter ``topic``, in ``buffer`` (an
    :class:`ObservationBuffer`, or a :class:`FeatureBuffer` for feature vectors and frames).

    It satisfies :class:`edge_agent.core.contract.Source` by its shape (``fleet`` does not
    import ``core``).
    """

    def __init__(self, topic: str, buffer: ObservationBuffer) -> None:
        self.topic = topic
        self.buffer = buffer
        self._reported = 0  # rejected batches and rows already reported

    @property
    def obs(self) -> npt.NDArray[Any]:
        return self.buffer.obs

    def take(self) -> tuple[npt.NDArray[Any], None, None] | None:
        """The newest observation of every agent, or None until every agent has had one
        (:meth:`ObservationBuffer.take`); an inbox has no outcomes and no episodes."""
        if not self.buffer.take():
            return None
        return self.buffer.obs, None, None

    def resize(self, n_agents: int) -> None:
        self.buffer.resize(n_agents)

    def carry_over(self, prev: object) -> None:
        """Take over ``prev``'s buffer (its pending rows and counters) if it is an inbox too."""
        if isinstance(prev, InboxSource):
            self.buffer, self._reported = prev.buffer, prev._reported

    def connect(self, port: InboxPort) -> None:
        port.listen(self.topic, self.buffer)

    def rejected(self) -> tuple[str, dict[str, int]] | None:
        """Observations dropped since the last call: the last reason and the counters (None:
        nothing new)."""
        counters = self.buffer.counters
        batches, rows = counters["batches_rejected"], counters["rows_rejected"]
        if batches + rows <= self._reported:
            return None
        self._reported = batches + rows
        return self.buffer.last_reject, {"batches_rejected": batches, "rows_rejected": rows}

    def counters(self) -> dict[str, int]:
        c = self.buffer.counters
        return {
            "obs_rows": c["rows"],
            "rows_rejected": c["rows_rejected"],
            "batches_rejected": c["batches_rejected"],
            "stale_agent_ticks": c["stale_agent_ticks"],
            "subscriptions_refused": self.buffer.refusals,
        }

    def describe(self) -> dict[str, Any]:
        return {"io": self.buffer.stats()}

    def report_line(self) -> str:
        io = self.buffer.stats()
        refused = f", the broker REFUSED {self.topic!r}: {io['refusal']}" if io["refused"] else ""
        return (
            f"mqtt: {io['rows']} observations, {io['rows_rejected']} rejected, "
            f"{io['unobserved']} agents never observed{refused}"
        )


def _channels_last(frame: tuple[int, ...]) -> bool:
    """Whether a model frame is ``(H, W, C)`` (Keras) rather than ``(C, H, W)`` (torch, ONNX)."""
    return frame[-1] in (1, 3, 4) and frame[0] not in (1, 3, 4)


def _channels(frame: tuple[int, ...]) -> int:
    return frame[-1] if _channels_last(frame) else frame[0]


def _model_layout(pixels: npt.NDArray[Any], frame: tuple[int, ...]) -> npt.NDArray[Any] | None:
    """``pixels`` (``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``) in the model's frame layout, or
    None when they are another size."""
    if pixels.shape == frame:
        return pixels
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]  # grayscale: one channel, last
    if _channels_last(frame):
        return (
            pixels.transpose(1, 2, 0)
            if pixels.shape == (frame[2], frame[0], frame[1])
            else (pixels if pixels.shape == frame else None)
        )
    if pixels.shape == (frame[1], frame[2], frame[0]):
        return pixels.transpose(2, 0, 1)
    return None


def decode_frame(body: FrameBatch, *, channels: int = 3) -> npt.NDArray[Any]:
    """The frame's values: raw as sent, JPEG decoded with Pillow to ``(H, W)`` (one channel) or
    ``(H, W, 3)`` uint8. ValueError with one line for what cannot be decoded."""
    if body.encoding == "raw":
        flat = np.frombuffer(body.data, dtype=ARRAY_DTYPES[body.dtype])
        return flat.reshape(tuple(body.shape))
    try:
        from PIL import Image  # noqa: PLC0415 - the camera extra, needed only for JPEG frames
    except ModuleNotFoundError as err:
        raise ValueError(
            "JPEG frames need Pillow: pip install 'edge-agent-runtime[camera]' (Pi OS: apt install "
            "python3-pil)"
        ) from err
    import io  # noqa: PLC0415

    try:
        with Image.open(io.BytesIO(body.data)) as image:
            if image.format != "JPEG":
                raise ValueError(f"not a JPEG file ({image.format})")
            decoded = image.convert("L" if channels == 1 else "RGB")
            return np.asarray(decoded)
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"JPEG: {err}") from err


@dataclass(frozen=True, slots=True)
class _Route:
    pattern: str
    buffer: ObservationBuffer


class ObservationRouter:
    """Claims incoming messages on the MQTT sources' topic filters (transport thread).

    :meth:`handle` returns False for a topic no source filter matches, so the caller passes the
    message on (to the fleet link).
    """

    def __init__(self, topics: Topics, *, max_payload_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.topics = topics
        self.max_payload_bytes = max_payload_bytes
        self._routes: tuple[_Route, ...] = ()
        self.claimed = 0

    def bind(self, routes: Mapping[str, Sequence[ObservationBuffer]]) -> None:
        """Replace the routing table: topic filter -> the buffers of the groups reading it."""
        self._routes = tuple(
            _Route(pattern, buf) for pattern, bufs in routes.items() for buf in bufs
        )

    @property
    def patterns(self) -> list[str]:
        return sorted({r.pattern for r in self._routes})

    def handle(self, msg: Incoming) -> bool:
        matches = [r.buffer for r in self._routes if topic_matches(r.pattern, msg.topic)]
        if not matches:
            return False
        self.claimed += 1
        try:
            env = decode(msg.payload, self.max_payload_bytes)
        except DecodeError as err:
            matches[0].reject("decode", str(err)[:200])
            return True
        self.deliver(msg.topic, env, matches)
        return True

    def deliver(
        self,
        topic: str,
        env: Envelope,
        matches: Sequence[ObservationBuffer] | None = None,
    ) -> bool:
        """Hand a decoded envelope to the buffer of its group; False if no filter matches."""
        if matches is None:
            matches = [r.buffer for r in self._routes if topic_matches(r.pattern, topic)]
            if not matches:
                return False
        body = env.body
        if not isinstance(body, ObservationBatch | FrameBatch):
            matches[0].reject("type", f"{env.type} message on an observation topic")
            return True
        target = next((b for b in matches if b.group == body.group), None)
        rows = body.n_agents if isinstance(body, ObservationBatch) else 1
        if target is None:
            matches[0].reject("group", f"batch for group {body.group!r}", rows)
            return True
        route = self.topics.parse(topic)
        agent = route.agent if route is not None and route.kind is TopicKind.OBS else None
        if isinstance(body, ObservationBatch):
            target.offer(body, agent)
        elif isinstance(target, FeatureBuffer):
            target.offer_frame(body, agent)
        else:
            target.reject("type", "a frame for a group that takes outcome indices", 1)
        return True


class ActionPort(Protocol):
    """Where an :class:`ActionPublisher` sends its bodies (the daemon's uplink)."""

    def send_actions(self, topic: str, body: ActionBatch) -> bool:
        """Queue ``body`` for ``topic``; False if it was refused (counted by the port)."""
        ...

    def publishes(self, topic: str, publisher: ActionPublisher) -> None:
        """``publisher`` sends its actions on ``topic``: what the broker refuses of them goes
        back to it (:meth:`ActionPublisher.refused`)."""
        ...


class ActionPublisher:
    """An ``mqtt`` sink (:class:`edge_agent.core.contract.Sink` by its shape): packs one
    group's actions into :class:`ActionBatch` bodies, once per tick, and sends them through the
    port it is connected to (:meth:`connect`; none: nothing is sent).

    Discrete actions (``num_controls``: the choices per factor, or one entry for a neural
    policy's ``(N,)`` actions) go out as the smallest unsigned dtype that holds them; a neural
    policy's continuous actions (``continuous=D``) as ``float32`` rows of ``D`` values.
    """

    def __init__(
        self,
        group: str,
        topic: str,
        n_agents: int,
        num_controls: Sequence[int],
        *,
        continuous: int = 0,
        max_payload_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.group = group
        self.topic = topic
        self.num_controls = tuple(int(u) for u in num_controls)
        if continuous:
            self._dtype = "float32"
            self._np_dtype: np.dtype[Any] = np.dtype("<f4")
            self.width = int(continuous)
        else:
            top = max(self.num_controls)
            self._dtype = "uint8" if top <= 256 else "int32"
            self._np_dtype = np.dtype("<u1" if top <= 256 else "<i4")
            self.width = len(self.num_controls)
        width = self.width
        row = 4 + width * self._np_dtype.itemsize
        self.rows_per_batch = max(
            1, min(MAX_BATCH_AGENTS, (max_payload_bytes - _ENVELOPE_OVERHEAD) // row)
        )
        self.published = 0
        self.batches = 0
        self.dropped = 0
        self.refusals = 0
        """Batches the broker refused (a PUBACK >= 0x80: its ACL), after they left the outbox."""
        self.refusal = ""
        """The broker's last reason (``0x87 not authorized``); empty: never refused."""
        self.port: ActionPort | None = None
        self.resize(n_agents)

    def connect(self, port: ActionPort | None) -> None:
        self.port = port
        if port is not None:
            port.publishes(self.topic, self)

    def refused(self, reason: str) -> bool:
        """The broker refused a batch of these actions, for ``reason`` (its code by name):
        counted; True the first time (the daemon says it once)."""
        first = not self.refusals
        self.refusals += 1
        self.refusal = reason
        return first

    def describe(self) -> dict[str, Any]:
        """What a group's description shows of its ``mqtt`` sink."""
        counts = {
            "batches": self.batches,
            "published": self.published,
            "dropped": self.dropped,
            "refused": self.refusals,
            "refusal": self.refusal,
        }
        return {"actions": counts}

    def put(self, tick: int, actions: npt.NDArray[Any]) -> None:
        """Send the tick's ``actions`` (see :meth:`bodies`) through the port, counting batches
        and agents sent and batches refused."""
        port = self.port
        if port is None:
            return
        for body in self.bodies(tick, actions):
            if port.send_actions(self.topic, body):
                self.batches += 1
                self.published += body.n_agents
            else:
                self.dropped += 1

    def resize(self, n_agents: int) -> None:
        """Precompute the id bytes of every batch (they never change between ticks)."""
        self.n_agents = n_agents
        ids = np.arange(n_agents, dtype="<u4")
        self._slices: list[tuple[slice, bytes]] = []
        for start in range(0, n_agents, self.rows_per_batch):
            sl = slice(start, min(start + self.rows_per_batch, n_agents))
            self._slices.append((sl, ids[sl].tobytes()))

    def bodies(self, tick: int, actions: npt.NDArray[Any]) -> list[ActionBatch]:
        """``actions: (n_agents, width)`` (or ``(n_agents,)`` for width 1) -> the batches to
        publish for this tick."""
        if actions.ndim == 1 and self.width == 1:
            actions = actions.reshape(-1, 1)
        if actions.shape != (self.n_agents, self.width):
            raise ProtocolError(
                f"actions has shape {actions.shape}, expected ({self.n_agents}, {self.width})"
            )
        out = []
        for sl, id_bytes in self._slices:
            out.append(
                ActionBatch(
                    group=self.group,
                    tick=tick,
                    agent_ids=id_bytes,
                    dtype=self._dtype,  # type: ignore[arg-type]  # one of the literal names
                    width=self.width,
                    values=actions[sl].astype(self._np_dtype).tobytes(),
                )
            )
        return out


# Sensor-side helpers ---------------------------------------------------------------------------
def encode_observations(
    sender: str,
    group: str,
    tick: int,
    agent_ids: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    seq: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> bytes:
    """One observation message for ``group``: ``values (n, width)``, integer outcomes (one per
    modality) or ``float32`` features (a neural or perception group's).

    Integer values are sent as uint8 when every one fits, else as int32; floats as float32.
    """
    vals = np.asarray(values)
    if np.issubdtype(vals.dtype, np.integer) and vals.dtype.name not in _INTEGER_DTYPES:
        small = vals.size == 0 or (int(vals.min()) >= 0 and int(vals.max()) < 256)
        vals = vals.astype(np.uint8 if small else np.int32)
    elif vals.dtype.kind == "f":
        vals = vals.astype(np.float32)
    body = ObservationBatch.from_arrays(group, tick, agent_ids, vals)
    env = Envelope(
        type=ObservationBatch.TYPE,
        node=sender,
        seq=seq % (1 << 32),
        bdseq=0,
        ts=time.time(),
        clock_synced=False,
        body=body,
    )
    return encode(env, max_bytes)


def encode_frame(
    sender: str,
    group: str,
    tick: int,
    agent_id: int,
    frame: npt.ArrayLike,
    *,
    jpeg_quality: int | None = None,
    seq: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> bytes:
    """One camera frame message for agent ``agent_id`` of ``group``: ``frame`` ``(H, W)``,
    ``(H, W, C)`` or ``(C, H, W)`` uint8 or float32, sent raw; with ``jpeg_quality`` (1-95) an
    ``(H, W)`` or ``(H, W, 3)`` uint8 frame is sent as a JPEG file (Pillow, the camera extra)."""
    arr = np.asarray(frame)
    if jpeg_quality is None:
        dtype: Literal["uint8", "float32"] = "float32" if arr.dtype.kind == "f" else "uint8"
        data = arr.astype(ARRAY_DTYPES[dtype]).tobytes()
        body = FrameBatch(group=group, tick=tick, agent_id=agent_id, encoding="raw",
                          dtype=dtype, shape=list(arr.shape), data=data)  # fmt: skip
    else:
        import io  # noqa: PLC0415

        from PIL import Image  # noqa: PLC0415 - the camera extra

        out = io.BytesIO()
        Image.fromarray(arr.astype(np.uint8)).save(out, format="JPEG", quality=jpeg_quality)
        body = FrameBatch(group=group, tick=tick, agent_id=agent_id, encoding="jpeg",
                          shape=list(arr.shape), data=out.getvalue())  # fmt: skip
    env = Envelope(
        type=FrameBatch.TYPE,
        node=sender,
        seq=seq % (1 << 32),
        bdseq=0,
        ts=time.time(),
        clock_synced=False,
        body=body,
    )
    return encode(env, max_bytes)


def decode_actions(
    payload: bytes, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[ActionBatch, npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
    """``(batch, agent_ids (n,), actions (n, width))`` of one action message: int64, or float32
    for a continuous policy."""
    env = decode(payload, max_bytes)
    if not isinstance(env.body, ActionBatch):
        raise DecodeError("schema", f"expected an action message, got {env.type}")
    ids, values = env.body.arrays()
    if values.dtype.kind == "f":  # a continuous policy's actions
        return env.body, ids, values.astype(np.float32)
    return env.body, ids, values.astype(np.int64)
