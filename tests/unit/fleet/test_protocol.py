"""Wire protocol: topics, schemas, encode/decode, sequence tracking, clock flag."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, get_args

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import ValidationError
from msgspec.structs import replace

from edge_agent.errors import ProtocolError
from edge_agent.fleet import protocol
from edge_agent.fleet.health_measures import MEASURES, MeasureName, measure
from edge_agent.fleet.protocol import (
    UINT32,
    ActionBatch,
    BeliefBatch,
    Birth,
    Body,
    BundleChunk,
    Command,
    CommandResult,
    CountsDelta,
    Death,
    DeathReason,
    DecodeError,
    DriftState,
    Envelope,
    Event,
    EventKind,
    GroupHealth,
    GroupInfo,
    Health,
    LearningDelta,
    MeasureSummary,
    NodeState,
    ObservationBatch,
    OutboxCounters,
    RebirthRequest,
    SeqTracker,
    SeqVerdict,
    Telemetry,
    as_builtins,
    clock,
    decode,
    encode,
    sparse_counts_delta,
    validate,
    wire,
)
from edge_agent.fleet.topics import Topics

SHA = "ab" * 32


def envelope(body: Body, seq: int = 7, bdseq: int = 3, node: str = "pi-01") -> Envelope:
    return Envelope(
        type=body.TYPE,
        node=node,
        seq=seq,
        bdseq=bdseq,
        ts=1_700_000_000.25,
        clock_synced=True,
        body=body,
    )


SAMPLE_BODIES: list[Body] = [
    NodeState(online=True),
    Birth(
        software_version="0.1.0",
        profile="pi4-2g",
        budget_bytes=400 << 20,
        groups={"thermo": GroupInfo(agents=1000, bundle="thermo", bundle_sha256=SHA)},
        capabilities=["onnxruntime", "ota"],
    ),
    Death(reason="shutdown"),
    Telemetry(
        uptime_s=12.5,
        rss_bytes=123 << 20,
        budget_used_bytes=100 << 20,
        budget_total_bytes=400 << 20,
        ticks=1000,
        tick_p50_ms=3.2,
        tick_p99_ms=9.9,
        overruns=2,
        groups={"thermo": 1000},
        cpu_temp_c=61.5,
        outbox=OutboxCounters(
            stored=5,
            sent=5,
            acked=4,
            rejected=0,
            expired=0,
            dropped=1,
            refused=0,
            depth_rows=1,
            depth_bytes=300,
            full=False,
        ),
        counters={"link.received": 3, "load": 0.5},
    ),
    Event(kind="thermal", severity="warning", detail="hot", group="thermo", data={"c": 81.0}),
    Command(
        target="pi-01",
        nonce=b"\x01" * 16,
        expires=1_700_000_060.0,
        key_id="hub-2024",
        signature=b"\x02" * 64,
        name="set_rate",
        args={"hz": 5, "groups": ["a", "b"], "blob": b"\x00\xff", "dry": False, "none": None},
    ),
    CommandResult(nonce=b"\x01" * 16, name="set_rate", code="ok", detail="", data={"hz": 5}),
    RebirthRequest(reason="gap"),
    ObservationBatch.from_arrays("thermo", 9, [0, 1, 2], np.array([[1], [2], [3]], np.int8)),
    ActionBatch.from_arrays("thermo", 9, [4, 5], np.zeros((2, 3), np.uint8)),
    BeliefBatch.from_arrays("thermo", 9, [7], np.full((1, 4), 0.25, np.float32)),
    Health(
        window_s=30.0,
        groups={
            "thermo": GroupHealth(
                model="thermo@1.2.0",
                agent_steps=30_000,
                measures={
                    "surprise": MeasureSummary(mean=1.2, p95=2.9, n=30_000),
                    "excess_surprise": MeasureSummary(mean=-0.01, p95=0.8, n=30_000),
                },
                drift=DriftState(alarm=True, statistic=6.5, threshold=5.0, since=1.7e9),
            )
        },
    ),
    LearningDelta(
        group="grid",
        model="grid10@1.0.0",
        model_sha256=SHA,
        seq=7,
        tables=[
            CountsDelta(
                table="B0", shape=(100, 100, 5),
                columns=np.array([3, 42], "<u4").tobytes(),
                values=np.full((2, 100), 0.01, "<f4").tobytes(),
                experience=2, lr=1.0,
            ),
            CountsDelta(  # sparse within its columns
                table="B1", shape=(100, 100, 5),
                columns=np.array([3, 42], "<u4").tobytes(),
                values=np.array([0.5, 0.25], "<f4").tobytes(),
                index=np.array([7, 100 + 99], "<u4").tobytes(),
                experience=1, lr=1.0,
            ),
        ],
    ),
]


def test_a_counts_delta_checks_its_sizes_and_gives_its_arrays() -> None:
    cols = np.array([1, 5, 9], dtype=np.uint32)
    vals = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    delta = CountsDelta(table="A0", shape=(4, 10), columns=cols.astype("<u4").tobytes(),
                        values=vals.astype("<f4").tobytes(), experience=3, lr=1.0)
    got_cols, got_vals = delta.arrays()
    np.testing.assert_array_equal(got_cols, cols)
    np.testing.assert_array_equal(got_vals, vals)
    with pytest.raises(ValueError, match="expected 3 columns x 4 x 4"):
        CountsDelta(table="A0", shape=(4, 10), columns=cols.astype("<u4").tobytes(),
                    values=b"\0" * 8, experience=3, lr=1.0)
    with pytest.raises(ValueError, match="table"):
        CountsDelta(table="C0", shape=(4,), columns=b"", values=b"", experience=0, lr=1.0)


@pytest.mark.parametrize(
    ("nonzero", "sparse"),
    [([], True), ([(0, 5), (2, 99)], True), ([(i, r) for i in range(3) for r in range(50)], False)],
)
def test_a_counts_delta_goes_in_the_smaller_encoding_and_round_trips_dense(
    nonzero: list[tuple[int, int]], sparse: bool
) -> None:
    """Sparse (8 bytes per value not 0) when fewer than half the values are not 0, else dense
    (4 bytes per value); either way the receiver's arrays() is the dense block sent."""
    values = np.zeros((3, 100), np.float32)
    for i, row in nonzero:
        values[i, row] = 0.5 + row
    columns = np.array([1, 7, 499], np.uint32)
    part = sparse_counts_delta("B0", (100, 100, 5), columns, values, experience=3, lr=1.0)
    assert (part.index is not None) is sparse
    sent = len(nonzero) if sparse else values.size
    assert (len(part.values), len(part.index or b"")) == (4 * sent, 4 * sent if sparse else 0)
    dense = CountsDelta(table="B0", shape=(100, 100, 5), columns=columns.tobytes(),
                        values=values.tobytes(), experience=3, lr=1.0)
    assert len(msgspec.msgpack.encode(part)) <= len(msgspec.msgpack.encode(dense))
    body = LearningDelta(group="g", model="m@1", model_sha256=SHA, seq=1, tables=[part])
    got = decode(encode(envelope(body))).body
    assert isinstance(got, LearningDelta)
    got_columns, got_values = got.tables[0].arrays()
    np.testing.assert_array_equal(got_columns, columns)
    np.testing.assert_array_equal(got_values, values)


def test_a_dense_counts_delta_encodes_as_before_the_sparse_encoding() -> None:
    """No ``index`` key in a dense part: a hub that predates it still reads it."""
    part = sparse_counts_delta("A0", (2, 3), np.array([0], np.uint32),
                               np.ones((1, 2), np.float32), experience=1, lr=1.0)
    assert set(msgspec.msgpack.decode(msgspec.msgpack.encode(part))) == {
        "table", "shape", "columns", "values", "experience", "lr"}


@pytest.mark.parametrize(
    ("index", "values", "where"),
    [
        ([1, 1], [1.0, 2.0], "ascending, distinct"),
        ([5, 2], [1.0, 2.0], "ascending, distinct"),
        ([0, 300], [1.0, 2.0], "below 3 columns x 100"),
        ([0, 1], [1.0], "expected 4 per index entry"),
    ],
)
def test_a_malformed_sparse_counts_delta_is_refused(
    index: list[int], values: list[float], where: str
) -> None:
    raw = _raw(LearningDelta(group="g", model="m@1", model_sha256=SHA, seq=1, tables=[
        CountsDelta(table="B0", shape=(100, 100, 5), columns=np.array([1, 7, 9], "<u4").tobytes(),
                    values=b"", index=b"", experience=3, lr=1.0)]))
    raw["body"]["tables"][0].update(index=np.array(index, "<u4").tobytes(),
                                    values=np.array(values, "<f4").tobytes())
    with pytest.raises(DecodeError) as info:
        decode(msgspec.msgpack.encode(raw))
    assert info.value.reason == "schema"
    assert where in str(info.value)
    raw["body"]["tables"][0]["index"] = b"\0" * 3
    with pytest.raises(DecodeError, match="not a multiple of 4"):
        decode(msgspec.msgpack.encode(raw))


def test_health_names_only_the_known_measures() -> None:
    """A measure the vocabulary does not know is refused where the message is made, and the
    vocabulary and the wire's type list the same measures."""
    assert set(get_args(MeasureName)) == set(MEASURES)
    bogus = {"bogus": MeasureSummary(mean=0, p95=0, n=1)}
    with pytest.raises(ValueError, match="bogus"):
        GroupHealth(model="m", agent_steps=1, measures=bogus)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n"):
        MeasureSummary(mean=0.0, p95=0.0, n=0)
    with pytest.raises(KeyError, match="known: surprise"):
        measure("bogus")


@pytest.mark.parametrize("body", SAMPLE_BODIES, ids=lambda b: b.TYPE)
def test_every_message_type_round_trips(body: Body) -> None:
    env = envelope(body)
    payload = encode(env)
    assert decode(payload) == env
    assert isinstance(decode(payload).body, type(body))


def test_payload_is_one_msgpack_map_with_arrays_as_bin() -> None:
    batch = ObservationBatch.from_arrays("g", 1, np.arange(100), np.ones((100, 2), np.int8))
    raw = msgspec.msgpack.decode(encode(envelope(batch)))
    assert set(raw) == {"v", "type", "node", "seq", "bdseq", "ts", "clock_synced", "body"}
    assert isinstance(raw["body"]["agent_ids"], bytes)
    assert isinstance(raw["body"]["values"], bytes)
    # 100 agents x 2 int8 values + 100 uint32 ids, plus a small fixed overhead.
    assert len(encode(envelope(batch))) < 200 + 400 + 200


def test_array_batch_round_trips_numbers() -> None:
    ids = np.array([3, 1, 2**32 - 1], dtype=np.uint32)
    vals = np.array([[-128, 0], [1, 127], [5, -5]], dtype=np.int8)
    batch = decode(encode(envelope(ActionBatch.from_arrays("g", 4, ids, vals)))).body
    assert isinstance(batch, ActionBatch)
    got_ids, got_vals = batch.arrays()
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_vals, vals)
    assert got_vals.dtype == np.int8
    assert batch.n_agents == 3


def test_array_batch_checks_shapes_and_sizes() -> None:
    with pytest.raises(ValueError, match=r"values has shape \(3,\), expected \(3, width\)"):
        ActionBatch.from_arrays("g", 0, [1, 2, 3], np.zeros(3, np.int8))
    with pytest.raises(ValueError, match="dtype float64"):
        ActionBatch.from_arrays("g", 0, [1], np.zeros((1, 1), np.float64))
    with pytest.raises(ValueError, match="values has 3 bytes, expected 2 agents"):
        ActionBatch(group="g", tick=0, agent_ids=b"\x00" * 8, dtype="int8", width=1, values=b"123")


def test_encode_refuses_oversized() -> None:
    event = Event(kind="other", detail="x" * 1000)
    with pytest.raises(ProtocolError, match="limit is 500"):
        encode(envelope(event), max_bytes=500)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1", "not_msgpack"),
        (b"", "not_msgpack"),
        (b"\x92\x01", "not_msgpack"),  # truncated array
        (msgspec.msgpack.encode([1, 2, 3]), "not_a_map"),
        (msgspec.msgpack.encode({1: 2}), "not_msgpack"),  # non-string map key
        (msgspec.msgpack.encode("text"), "not_a_map"),
        (msgspec.msgpack.encode({"v": 2, "type": "event"}), "version"),
        (msgspec.msgpack.encode({"v": True, "type": "event"}), "version"),
        (msgspec.msgpack.encode({"v": "1", "type": "event"}), "version"),
        (msgspec.msgpack.encode({"type": "event"}), "version"),
        (msgspec.msgpack.encode({"v": 1, "type": "nope"}), "unknown_type"),
        (msgspec.msgpack.encode({"v": 1, "type": ["event"]}), "unknown_type"),
        (msgspec.msgpack.encode({"v": 1, "type": "event", "body": {}}), "schema"),
    ],
)
def test_decode_reasons(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(payload)
    assert info.value.reason == reason
    assert isinstance(info.value, ProtocolError)


def test_decode_refuses_oversized_before_parsing() -> None:
    payload = encode(envelope(Event(kind="other", detail="y" * 900)))
    with pytest.raises(DecodeError) as info:
        decode(payload, max_bytes=len(payload) - 1)
    assert info.value.reason == "oversized"
    assert decode(payload, max_bytes=len(payload)).type == "event"


def _raw(body: Body) -> dict[str, Any]:
    raw: dict[str, Any] = msgspec.msgpack.decode(encode(envelope(body)))
    return raw


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda r: r.update(extra=1), "unknown field `extra`"),
        (lambda r: r["body"].update(extra=1), "unknown field `extra` - at `$.body`"),
        (lambda r: r.update(seq=-1), "`$.seq`"),
        (lambda r: r.update(seq=UINT32), "`$.seq`"),
        (lambda r: r.update(bdseq="1"), "got `str` - at `$.bdseq`"),
        (lambda r: r.update(ts=math.nan), "`$.ts`"),
        (lambda r: r.update(ts=math.inf), "`$.ts`"),
        (lambda r: r.update(ts=-1.0), "`$.ts`"),
        (lambda r: r.update(clock_synced=1), "got `int` - at `$.clock_synced`"),
        (lambda r: r.update(node="bad/node"), "`$.node`"),
        (lambda r: r.update(node="+"), "`$.node`"),
        (lambda r: r.update(node="pi-01\n"), "`$.node`"),  # no newline before the end
        (lambda r: r["body"].update(kind="meteor"), "`$.body.kind`"),
        (lambda r: r["body"].update(severity=3), "`$.body.severity`"),
        (lambda r: r["body"].update(detail=b"bytes"), "got `bytes` - at `$.body.detail`"),
        (lambda r: r["body"].update(data={"x": {"nested": 1}}), "data['x']: a map"),
        (lambda r: r["body"].update(data={"x": [1, [2]]}), "data['x'][1]: a list"),
        (lambda r: r["body"].update(data={"x": math.nan}), "data['x']: nan"),
        (lambda r: r["body"].update(data={"x": math.inf}), "data['x']: inf"),
        (lambda r: r["body"].update(data={"x": [1.0, -math.inf]}), "data['x'][1]: -inf"),
        (lambda r: r["body"].update(data={"x": "y" * 4097}), "data['x']: text of 4097"),
        (lambda r: r["body"].update(data={"x": [0] * 257}), "data['x']: a list of 257"),
        (lambda r: r["body"].update(data={"k" * 65: 1}), "`key` in `$.body.data`"),
        (lambda r: r["body"].update(data={str(i): i for i in range(65)}), "`$.body.data`"),
        (lambda r: r["body"].pop("kind"), "field `kind` - at `$.body`"),
        (lambda r: r.update(body=[1, 2]), "got `array` - at `$.body`"),
        # A body of another type: msgspec names the first key a NodeState does not have.
        (lambda r: r.update(type="state"), "state: Object contains unknown field `kind`"),
    ],
)
def test_decode_schema_errors(mutate: Any, where: str) -> None:
    raw = _raw(Event(kind="alarm", detail="d", data={"n": 1}))
    mutate(raw)
    with pytest.raises(DecodeError) as info:
        decode(msgspec.msgpack.encode(raw))
    assert info.value.reason == "schema"
    assert where in str(info.value)


def test_decode_is_strict_about_types() -> None:
    raw = _raw(
        Telemetry(
            uptime_s=1.0,
            rss_bytes=1,
            budget_used_bytes=1,
            budget_total_bytes=1,
            ticks=1,
            tick_p50_ms=1.0,
            tick_p99_ms=1.0,
            overruns=0,
        )
    )
    raw["body"]["ticks"] = True  # a bool is not an int here
    with pytest.raises(DecodeError, match="ticks"):
        decode(msgspec.msgpack.encode(raw))
    raw["body"]["ticks"] = 1.0  # nor is a float
    with pytest.raises(DecodeError, match="ticks"):
        decode(msgspec.msgpack.encode(raw))


def test_envelope_refuses_body_of_another_type() -> None:
    with pytest.raises(ValueError, match="needs a Event body"):
        Envelope(
            type="event",
            node="n",
            seq=0,
            bdseq=0,
            ts=0.0,
            clock_synced=False,
            body=Death(reason="shutdown"),
        )


TELEMETRY: dict[str, Any] = {
    "uptime_s": 1.0,
    "rss_bytes": 1,
    "budget_used_bytes": 1,
    "budget_total_bytes": 1,
    "ticks": 1,
    "tick_p50_ms": 1.0,
    "tick_p99_ms": 1.0,
    "overruns": 0,
}


@pytest.mark.parametrize(
    ("make", "where"),
    [
        (lambda: NodeState(online=1), "got `int` - at `$.online`"),
        (lambda: Telemetry(**{**TELEMETRY, "ticks": True}), "got `bool` - at `$.ticks`"),
        (lambda: Telemetry(**{**TELEMETRY, "ticks": 1.0}), "got `float` - at `$.ticks`"),
        (lambda: Telemetry(**{**TELEMETRY, "rss_bytes": "1"}), "got `str` - at `$.rss_bytes`"),
        (lambda: Telemetry(**{**TELEMETRY, "uptime_s": math.inf}), "`$.uptime_s`"),
        (lambda: Telemetry(**{**TELEMETRY, "cpu_temp_c": math.nan}), "`$.cpu_temp_c`"),
        (lambda: Telemetry(**{**TELEMETRY, "counters": {"x": math.inf}}), "`$.counters[...]`"),
        (lambda: Event(kind="meteor"), "Invalid enum value 'meteor' - at `$.kind`"),
        (lambda: Event(kind="other", detail=b"x"), "got `bytes` - at `$.detail`"),
        (lambda: Event(kind="other", group="g\n"), "`$.group`"),
        (lambda: Event(kind="other", data={"x": math.nan}), "data['x']: nan"),
        (lambda: Event(kind="other", data={"x": {"y": 1}}), "data['x']: a map"),
        (lambda: Event(kind="other", data={"x": (1, 2)}), "data['x']: a tuple"),
        (lambda: Event(kind="other", data={"x": bytearray(b"1")}), "data['x']: a bytearray"),
        (lambda: BundleChunk(sha256="ab" * 32, index=0, data="AAAA"), "got `str` - at `$.data`"),
        (lambda: BundleChunk(sha256="AB" * 32, index=0, data=b"x"), "`$.sha256`"),
        (lambda: GroupInfo(agents=-1), "`$.agents`"),
        (
            lambda: ActionBatch(
                group="g", tick=0, agent_ids=b"\x00" * 4, dtype="int64", width=1, values=b""
            ),
            "`$.dtype`",
        ),
    ],
)
def test_a_model_built_in_code_is_checked_as_a_decoded_one(make: Any, where: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(where)):
        make()


def test_a_model_built_in_code_holds_the_values_a_decoded_one_would() -> None:
    assert Death(reason="shutdown").reason is DeathReason.SHUTDOWN
    cmd = Command(target="n", nonce=bytes(8), expires=5, key_id="k", name="ping")
    assert type(cmd.expires) is float  # as on the wire: an int is taken for a float, as a float
    # What pydantic took as a builtin is that builtin: str enums, numpy floats, int subclasses.
    telemetry = Telemetry(
        **{**TELEMETRY, "uptime_s": np.float64(2.5), "counters": {"a": np.float32(0.5)}}
    )
    assert type(telemetry.uptime_s) is float
    assert type(telemetry.counters["a"]) is float
    event = Event(
        kind="other", detail=EventKind.ALARM, data={"k": EventKind.CLOCK, "f": np.float64(1)}
    )
    assert type(event.detail) is str
    assert [type(v) for v in event.data.values()] == [str, float]
    assert event == decode(encode(envelope(event))).body
    # replace() checks the copy again (pydantic's model_copy did not).
    with pytest.raises(ValidationError, match=re.escape("`$.nonce`")):
        replace(cmd, nonce=b"short")


def test_validate_and_as_builtins() -> None:
    birth = validate(
        Birth,
        {
            "software_version": "1",
            "profile": "p",
            "budget_bytes": 5,
            "groups": {"g": {"agents": 2}, "h": GroupInfo(agents=3, bundle="b")},
        },
    )
    assert birth.groups["g"] == GroupInfo(agents=2)
    with pytest.raises(ValidationError, match="unknown field `extra`"):
        validate(Birth, {"software_version": "1", "profile": "p", "budget_bytes": 5, "extra": 1})
    assert as_builtins(birth) == {
        "software_version": "1",
        "profile": "p",
        "budget_bytes": 5,
        "groups": {
            "g": {"agents": 2, "bundle": None, "bundle_sha256": None},
            "h": {"agents": 3, "bundle": "b", "bundle_sha256": None},
        },
    }  # a birth leaves out what is at its default (omit_defaults: every reader has them)
    result = CommandResult(nonce=bytes(8), name="x", code="ok", data={"b": b"\x01"})
    assert as_builtins(result)["code"] == "ok"
    assert as_builtins(result)["data"] == {"b": b"\x01"}


def test_command_signing_bytes_cover_everything_but_the_signature() -> None:
    base = SAMPLE_BODIES[5]
    assert isinstance(base, Command)
    reordered = replace(base, args=dict(reversed(list(base.args.items()))))
    assert base.signing_bytes("f") == reordered.signing_bytes("f")
    resigned = replace(base, signature=b"\x09" * 64)
    assert base.signing_bytes("f") == resigned.signing_bytes("f")
    for field, value in [
        ("target", "pi-02"),
        ("nonce", b"\x03" * 16),
        ("expires", 1.0),
        ("key_id", "other"),
        ("name", "reboot"),
        ("args", {"hz": 6}),
    ]:
        changed = replace(base, **{field: value})
        assert changed.signing_bytes("f") != base.signing_bytes("f"), field
    assert base.signing_bytes("f") != base.signing_bytes("g")


# Topics -------------------------------------------------------------------------------------


def test_topic_tree() -> None:
    t = Topics("plant1")
    assert t.node_state("pi-01") == "ea/v1/plant1/node/pi-01/state"
    assert t.birth("pi-01") == "ea/v1/plant1/node/pi-01/birth"
    assert t.death("pi-01") == "ea/v1/plant1/node/pi-01/death"
    assert t.telemetry("pi-01") == "ea/v1/plant1/node/pi-01/telemetry"
    assert t.event("pi-01") == "ea/v1/plant1/node/pi-01/event"
    assert t.command("pi-01") == "ea/v1/plant1/node/pi-01/cmd"
    assert t.command_result("pi-01") == "ea/v1/plant1/node/pi-01/result"
    assert t.rebirth("pi-01") == "ea/v1/plant1/node/pi-01/rebirth"
    assert t.beliefs("pi-01") == "ea/v1/plant1/node/pi-01/beliefs"
    assert t.obs("pi-01", "thermo") == "ea/v1/plant1/node/pi-01/obs/thermo"
    assert t.obs("pi-01", "thermo", 17) == "ea/v1/plant1/node/pi-01/obs/thermo/17"
    assert t.action("pi-01", "thermo", "a7") == "ea/v1/plant1/node/pi-01/action/thermo/a7"
    assert t.tasks("pi-01") == "ea/v1/plant1/node/pi-01/tasks"
    assert t.all_nodes("tasks") == "ea/v1/plant1/node/+/tasks"
    assert t.all_nodes("state") == "ea/v1/plant1/node/+/state"
    assert t.all_nodes("action") == "ea/v1/plant1/node/+/action/#"
    assert t.node_all("pi-01") == "ea/v1/plant1/node/pi-01/#"
    assert t.fleet_all() == "ea/v1/plant1/#"
    assert t.node_inbox("pi-01") == [
        "ea/v1/plant1/node/pi-01/cmd",
        "ea/v1/plant1/node/pi-01/rebirth",
        "ea/v1/plant1/node/pi-01/obs/#",
    ]


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "a b", "-lead", "x" * 65, "é"])
def test_topic_names_are_checked(bad: str) -> None:
    with pytest.raises(ProtocolError, match="not a valid name"):
        Topics("f").telemetry(bad)
    with pytest.raises(ProtocolError):
        Topics(bad)


def test_topic_parse() -> None:
    t = Topics("f")
    route = t.parse(t.action("n1", "g", 5))
    assert route is not None
    assert (route.kind, route.node, route.group, route.agent) == ("action", "n1", "g", "5")
    assert route.node_owned
    assert route.expected_type == "action"
    cmd = t.parse(t.command("n1"))
    assert cmd is not None
    assert cmd.kind == "cmd"
    assert not cmd.node_owned
    tasks = t.parse(t.tasks("n1"))
    assert tasks is not None
    assert (tasks.kind, tasks.node) == ("tasks", "n1")
    assert tasks.node_owned  # only n1 may send on it: a broker ACL can bind it to n1
    assert tasks.expected_type is None
    for foreign in [
        "ea/v1/other/node/n1/event",
        "ea/v2/f/node/n1/event",
        "ea/v1/f/node/n1/unknown",
        "ea/v1/f/node/n1/event/extra",
        "ea/v1/f/node/n1/obs",
        "ea/v1/f/node/n1/obs/g/a/b",
        "ea/v1/f/node/bad node/event",
        "ea/v1/f",
        "ea/v1/f/tasks",  # the fleet-wide task topic before per-node task topics
    ]:
        assert t.parse(foreign) is None, foreign


# Sequence numbers ---------------------------------------------------------------------------


def test_seq_tracker_in_order_gap_and_late() -> None:
    tr = SeqTracker()
    assert tr.observe("event", 0, 5).verdict is SeqVerdict.NO_BIRTH
    assert tr.observe("birth", 4, 10).verdict is SeqVerdict.BIRTH
    assert tr.observe("event", 4, 11).verdict is SeqVerdict.IN_ORDER
    gap = tr.observe("telemetry", 4, 15)
    assert (gap.verdict, gap.missing, gap.needs_rebirth) == (SeqVerdict.GAP, 3, True)
    assert tr.observe("event", 4, 16).verdict is SeqVerdict.IN_ORDER
    assert tr.observe("event", 4, 16).verdict is SeqVerdict.LATE  # duplicate
    assert tr.observe("event", 4, 12).verdict is SeqVerdict.LATE  # re-send of an older one
    assert tr.observe("event", 3, 99).verdict is SeqVerdict.STALE_SESSION
    newer = tr.observe("event", 5, 0)
    assert newer.verdict is SeqVerdict.NO_BIRTH
    assert newer.needs_rebirth
    assert tr.observe("state", 9, 0).verdict is SeqVerdict.UNTRACKED
    assert tr.observe("death", 9, 0).verdict is SeqVerdict.UNTRACKED
    assert (tr.gaps, tr.missing) == (1, 3)


def test_seq_tracker_wraps_around() -> None:
    tr = SeqTracker()
    tr.observe("birth", UINT32 - 1, UINT32 - 2)
    assert tr.observe("event", UINT32 - 1, UINT32 - 1).verdict is SeqVerdict.IN_ORDER
    assert tr.observe("event", UINT32 - 1, 0).verdict is SeqVerdict.IN_ORDER
    gap = tr.observe("event", UINT32 - 1, 3)
    assert (gap.verdict, gap.missing) == (SeqVerdict.GAP, 2)
    assert tr.observe("event", UINT32 - 1, UINT32 - 1).verdict is SeqVerdict.LATE
    # bdseq wraps too: 0 is newer than 2**32 - 1.
    assert tr.observe("event", 0, 4).verdict is SeqVerdict.NO_BIRTH


@given(start=st.integers(0, UINT32 - 1), steps=st.lists(st.integers(1, 1000), max_size=30))
def test_seq_tracker_counts_missing_exactly(start: int, steps: list[int]) -> None:
    tr = SeqTracker()
    tr.observe("birth", 1, start)
    seq = start
    for step in steps:
        seq = (seq + step) % UINT32
        tr.observe("event", 1, seq)
    assert tr.missing == sum(s - 1 for s in steps)
    assert tr.gaps == sum(1 for s in steps if s > 1)


# Clock ------------------------------------------------------------------------------------------


def test_clock_synced_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag = tmp_path / "synchronized"
    monkeypatch.setattr(clock, "TIMESYNC_FLAG", flag)
    monkeypatch.setattr(clock, "_adjtimex_state", lambda: 5)  # TIME_ERROR
    assert protocol.clock_synced() is False
    monkeypatch.setattr(clock, "_adjtimex_state", lambda: None)  # unavailable
    assert protocol.clock_synced() is False
    monkeypatch.setattr(clock, "_adjtimex_state", lambda: 0)  # TIME_OK
    assert protocol.clock_synced() is True
    monkeypatch.setattr(clock, "_adjtimex_state", lambda: 5)
    flag.touch()
    assert protocol.clock_synced() is True


def test_adjtimex_reads_the_kernel_state() -> None:
    state = clock._adjtimex_state()
    assert state is not None
    assert 0 <= state <= 5


# Property tests: decode raises nothing but DecodeError ----------------------------------------

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)

_FIELDS = ["v", "type", "node", "seq", "bdseq", "ts", "clock_synced", "body"]


def decode_or_reason(payload: bytes) -> Envelope | str:
    """The envelope, or the DecodeError's reason; any other exception fails the test."""
    try:
        return decode(payload)
    except DecodeError as err:
        return err.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_random_bytes(payload: bytes) -> None:
    result = decode_or_reason(payload)
    assert isinstance(result, Envelope) or result in protocol.DECODE_REASONS


@settings(max_examples=300, deadline=None)
@given(msgpack_values)
def test_decode_random_msgpack(value: Any) -> None:
    result = decode_or_reason(msgspec.msgpack.encode(value))
    assert isinstance(result, Envelope) or result in protocol.DECODE_REASONS


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.sampled_from(SAMPLE_BODIES),
    field=st.sampled_from(_FIELDS),
    body_field=st.text(min_size=1, max_size=12),
    value=msgpack_values,
    in_body=st.booleans(),
)
def test_decode_mutated_envelopes(
    body: Body, field: str, body_field: str, value: Any, in_body: bool
) -> None:
    raw = _raw(body)
    if in_body:
        keys = sorted(raw["body"])
        raw["body"][keys[hash(body_field) % len(keys)] if keys else body_field] = value
    else:
        raw[field] = value
    result = decode_or_reason(msgspec.msgpack.encode(raw))
    if isinstance(result, Envelope):
        assert result == decode(encode(result))  # whatever passes also round-trips
    else:
        assert result in protocol.DECODE_REASONS


@settings(max_examples=150, deadline=None)
@given(
    seq=st.integers(0, UINT32 - 1),
    bdseq=st.integers(0, UINT32 - 1),
    ts=st.floats(0, 4e9),
    detail=st.text(max_size=200),
    data=st.dictionaries(
        st.text(max_size=10),
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=9),
        max_size=5,
    ),
)
def test_valid_events_round_trip(
    seq: int, bdseq: int, ts: float, detail: str, data: dict[str, Any]
) -> None:
    env = Envelope(
        type="event",
        node="n-1",
        seq=seq,
        bdseq=bdseq,
        ts=ts,
        clock_synced=False,
        body=Event(kind="other", detail=detail, data=data),
    )
    assert decode(encode(env)) == env


def test_bundle_broadcast_topic_and_chunk() -> None:
    t = Topics("f")
    sha = "ab" * 32
    topic = t.bundle(sha)
    assert topic == f"ea/v1/f/bundle/{sha}"
    route = t.parse(topic)
    assert route is not None
    assert (route.kind, route.node, route.bundle) == ("bundle", None, sha)
    assert not route.node_owned  # the hub writes it; nodes only read (docs/security.md)
    assert route.expected_type == "chunk"
    assert t.all_bundles() == "ea/v1/f/bundle/+"
    for foreign in [
        f"ea/v1/f/bundle/{sha[:-1]}",
        f"ea/v1/f/bundle/{sha.upper()}",
        "ea/v1/f/bundle",
    ]:
        assert t.parse(foreign) is None, foreign
    with pytest.raises(ProtocolError):
        t.bundle("not-a-sha")
    env = Envelope(
        type="chunk",
        node="hub",
        seq=1,
        bdseq=0,
        ts=1.0,
        clock_synced=True,
        body=BundleChunk(sha256=sha, index=3, data=b"\x01" * 10),
    )
    back = decode(encode(env))
    assert back.body == env.body
    with pytest.raises(ValidationError):
        BundleChunk(sha256=sha, index=3, data=b"")


def test_every_wire_model_is_prepared_when_its_module_is_imported() -> None:
    """msgspec builds a Struct type's info on its first use, and a second thread using the type
    meanwhile crashes the process (see ``protocol.prepare``): the daemon's tick and transport
    threads would both use the envelope's header first at start. Every wire model's info is
    built while its module is imported."""
    import edge_agent.coordination.messages
    import edge_agent.fleet.commands

    models: list[type[protocol.WireModel]] = []
    todo: list[type[protocol.WireModel]] = [protocol.WireModel]
    while todo:
        model = todo.pop()
        models.append(model)
        todo.extend(model.__subclasses__())
    defined_here = [
        m
        for m in models
        if m.__module__
        in {
            *(f"{protocol.__name__}.{part}" for part in ("wire", "bodies", "envelope")),
            edge_agent.fleet.commands.__name__,
            edge_agent.coordination.messages.__name__,
        }
    ]
    assert len(defined_here) > 40
    assert [m for m in defined_here if m not in wire._PREPARED] == []


def test_a_birth_says_the_bundle_keys_it_trusts_and_its_tick_rate() -> None:
    """``bundle_keys`` and ``tick_hz`` came later: a birth without them (a node of an earlier
    version) encodes to the bytes it did and decodes with both None; one with them carries
    them; a key id that is not 16 hex digits, or a rate out of the daemon's range, is refused."""
    old = Birth(
        software_version="1", profile="p", budget_bytes=5, groups={"g": GroupInfo(agents=2)}
    )
    payload = msgspec.msgpack.encode(old)
    assert b"bundle_keys" not in payload
    assert b"tick_hz" not in payload
    back = msgspec.msgpack.decode(payload, type=Birth)
    assert (back.bundle_keys, back.tick_hz) == (None, None)
    new = replace(old, bundle_keys=["fd38d8c32cd84092", "f8422245126d6ab4"], tick_hz=20.0)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(new), type=Birth) == new
    assert replace(old, bundle_keys=[]) != old  # trusts no key: not the same as not saying
    for bad in ({"bundle_keys": ["FD38D8C32CD84092"]}, {"bundle_keys": ["fd38"]},
                {"tick_hz": 0.0}, {"tick_hz": 1001.0}):  # fmt: skip
        with pytest.raises(ValidationError):
            validate(Birth, {"software_version": "1", "profile": "p", "budget_bytes": 5, **bad})
