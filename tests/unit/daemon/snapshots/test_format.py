"""The snapshot file (``edge_agent/daemon/snapshots/format.py``): format v3 written and read
back, its JSON header as documented, every corruption refused, and the files of formats v2 and
v1 (``tests/data/snapshot-v*.eas``, made by the writer of the versions that wrote them) still
read, with msgspec imported only then."""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.daemon.snapshots.format import MAGIC, read_snapshot
from edge_agent.daemon.snapshots.store import SnapshotStore
from edge_agent.errors import SnapshotError
from tests.data.make_snapshot_fixtures import CREATED, META, MONOTONIC, fixture_arrays
from tests.unit.daemon.test_footprint import run_fresh

DATA = Path(__file__).resolve().parents[3] / "data"

DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    ">i4",
    ">f8",
]
SHAPES = [(), (0,), (7,), (3, 4), (2, 3, 5), (4, 0, 2)]


def sample(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> npt.NDArray[Any]:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dt)
    if dt.kind == "f":
        return rng.standard_normal(size=shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(
        info.min, info.max, size=shape, dtype=dt.newbyteorder("="), endpoint=True
    ).astype(dt)



# --- format v3 ------------------------------------------------------------------------------------


def test_round_trip_of_every_dtype_and_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    arrays = {f"{dtype}{shape}": sample(dtype, shape, rng) for dtype in DTYPES for shape in SHAPES}
    meta = {
        "tick": 12345,
        "profile": "pi4-2gb",
        "ok": True,
        "none": None,
        "nested": {"l": [1.5, "x", -0.0, 2**64 - 1, -(2**63), 0.1 + 0.2]},
        "text": "ünïcödé ✓ \"quoted\" \\ \n",
    }
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    before = time.time()
    info = store.save(arrays, meta, now=100.0)
    assert info is not None
    assert info.path.name == "snapshot-0000000001.eas"
    assert info.nbytes == info.path.stat().st_size
    assert info.path.read_bytes()[:8] == MAGIC == b"EASNAP\x00\x03"

    loaded = SnapshotStore(tmp_path, max_writes_per_hour=10).load_latest()
    assert loaded is not None
    assert loaded.seq == 1
    assert loaded.meta == meta
    assert loaded.monotonic == 100.0
    assert before <= loaded.created <= time.time()
    assert list(loaded.arrays) == list(arrays)
    for name, original in arrays.items():
        restored = loaded.arrays[name]
        assert restored.dtype == original.dtype, name
        assert restored.shape == original.shape, name
        assert restored.flags.c_contiguous
        assert restored.tobytes() == original.tobytes(), name


def test_non_contiguous_inputs_are_stored_in_c_order(tmp_path: Path) -> None:
    base = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    arrays = {
        "fortran": np.asfortranarray(base),
        "strided": base[:, ::2, 1::2],
        "transposed": base.T,
        "negative": base[::-1],
    }
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    store.save(arrays, {}, now=0.0)
    loaded = store.load_latest()
    assert loaded is not None
    for name, original in arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], original)


def test_loaded_arrays_are_writable(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    store.save({"q": np.zeros(3, np.float32)}, {}, now=0.0)
    loaded = store.load_latest()
    assert loaded is not None
    loaded.arrays["q"][1] = 2.0
    assert loaded.arrays["q"].tolist() == [0.0, 2.0, 0.0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.array([object()], dtype=object), "not allowed"),
        (np.array(["abc"]), "not allowed"),
        (np.zeros(2, dtype=np.complex64), "not allowed"),
        (np.zeros(2, dtype=[("a", "<i4"), ("b", "<f4")]), "not allowed"),
        (np.zeros(2, dtype="datetime64[s]"), "not allowed"),
        (np.zeros(2, dtype="V8"), "not allowed"),
        ([1, 2, 3], "expected numpy.ndarray"),
    ],
)
def test_unsupported_arrays_are_refused(tmp_path: Path, value: Any, message: str) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    with pytest.raises(SnapshotError, match=message):
        store.save({"ok": np.zeros(2), "bad": value}, {}, now=0.0)
    assert list(tmp_path.iterdir()) == []
    assert store.stats(now=0.0)["writes_in_last_hour"] == 0


@pytest.mark.parametrize(
    "meta",
    [
        {"x": np.float32(1.0)},
        {"x": (1, 2)},
        {"x": {1: "int key"}},
        {"x": [1, {2.0, 3.0}]},
        {"x": 2**70},
        {"x": -(2**63) - 1},
        {"x": b"bytes"},
        {"x": [float("nan")]},
        {"x": {"y": float("-inf")}},
    ],
)
def test_meta_that_would_not_round_trip_is_refused(tmp_path: Path, meta: dict[str, Any]) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=1)
    with pytest.raises(SnapshotError, match="meta"):
        store.save({"a": np.zeros(1)}, meta, now=0.0)
    assert store.save({"a": np.zeros(1)}, {"x": 1}, now=0.0) is not None  # budget untouched


def test_every_single_bit_flip_is_detected(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "state", max_writes_per_hour=10)
    info = store.save(
        {
            "qs": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
            "a": np.arange(5, dtype=np.uint8),
        },
        {"tick": 3},
        now=0.0,
    )
    assert info is not None
    good = info.path.read_bytes()
    victim = tmp_path / "snapshot-0000000009.eas"
    for i in range(len(good)):
        flipped = bytearray(good)
        flipped[i] ^= 1 << (i % 8)
        victim.write_bytes(flipped)
        with pytest.raises(SnapshotError):
            read_snapshot(victim)
    victim.write_bytes(good)
    assert read_snapshot(victim).meta == {"tick": 3}


def header_of(data: bytes) -> tuple[bytes, int]:
    """The header bytes of a snapshot file (padding included) and where its data starts."""
    (length,) = struct.unpack_from("<I", data, 8)
    return data[12 : 12 + length], -(-(12 + length) // 64) * 64


def test_the_header_is_canonical_json_padded_with_spaces_to_the_data(tmp_path: Path) -> None:
    """Format v3 as its docstring and docs/deployment.md describe it: the header is a JSON
    object with sorted keys and no whitespace, padded with spaces to the 64-byte boundary where
    the data starts; every array at an aligned offset; a sha256 of all before the trailer."""
    arrays = {"history.qs": np.zeros((64, 50, 10), np.uint8), "steps": np.arange(5)}
    info = SnapshotStore(tmp_path, max_writes_per_hour=10).save(
        arrays, {"groups": {"grid": {"key": "k", "agents": 50}}, "config": "c.toml"}, now=7.5
    )
    assert info is not None
    data = info.path.read_bytes()
    assert data[:8] == b"EASNAP\x00\x03"
    header, data_start = header_of(data)
    assert 12 + len(header) == data_start
    text = header.rstrip(b" ")
    parsed = json.loads(text)
    canonical = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert text == canonical.encode()
    assert sorted(parsed) == [
        "arrays", "created", "data_nbytes", "format_version", "meta", "monotonic",
    ]
    assert (parsed["format_version"], parsed["monotonic"]) == (3, 7.5)
    assert parsed["meta"] == {"config": "c.toml", "groups": {"grid": {"agents": 50, "key": "k"}}}
    qs, steps = parsed["arrays"]
    assert qs == {
        "name": "history.qs", "dtype": "|u1", "shape": [64, 50, 10], "offset": 0,
        "nbytes": 32000, "codec": "zlib", "stored": qs["stored"],
    }
    assert qs["stored"] < 1000
    assert steps["offset"] % 64 == 0 < steps["offset"]
    assert (steps["codec"], steps["stored"]) == ("raw", 40)
    assert data_start + parsed["data_nbytes"] + 32 == len(data)
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]


def rebuilt(data: bytes, header: bytes, prefix: bytes | None = None) -> bytes:
    """``data`` (a snapshot file) with another header (zeros to the next 64 bytes, as v2 wrote)
    and the checksum made to agree, as a bad writer would; ``prefix``: other first 12 bytes."""
    _, data_start = header_of(data)
    body = data[data_start:-32]
    start = -(-(12 + len(header)) // 64) * 64
    out = data[:8] + struct.pack("<I", len(header)) + header
    out = (prefix if prefix is not None else out[:12]) + out[12:]
    out += bytes(start - len(out)) + body
    return out + hashlib.sha256(out).digest()


def edited(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    """A header edit: ``change`` applied to the parsed header, written back as JSON."""

    def edit(header: bytes) -> bytes:
        parsed = json.loads(header)
        change(parsed)
        return json.dumps(parsed).encode()

    return edit


def first_array(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda h: h["arrays"][0].__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda h: b"not json", "header is not valid JSON"),
        (lambda h: b'{"meta": "\xff"}', "header is not valid JSON"),  # not UTF-8
        (lambda h: b"[" * 100_000 + b"]" * 100_000, "header is not valid JSON"),  # too deep
        (lambda h: b"[1, 2]", "header is not a map"),
        (lambda h: h.rstrip(b" ") + b" trailing", "header is not valid JSON"),
        (lambda h: h.replace(b'"meta":', b'"meta":{},"meta":', 1), "key 'meta' appears twice"),
        (lambda h: h.replace(b'"created":', b'"created":NaN,"x":', 1), "NaN is not JSON"),
        (edited(lambda h: h.__setitem__("format_version", 2)), "does not match the magic"),
        (edited(lambda h: h.pop("data_nbytes")), "'data_nbytes' is missing"),
        (edited(lambda h: h.__setitem__("created", "today")), "'created' is missing or of the"),
        (edited(lambda h: h.__setitem__("monotonic", True)), "'monotonic' is missing or of the"),
        (edited(lambda h: h.__setitem__("meta", [])), "'meta' is missing or of the wrong"),
        (edited(lambda h: h.__setitem__("data_nbytes", 1)), "does not match the header's data"),
        (edited(lambda h: h["arrays"].append(h["arrays"][0])), "appears twice"),
        (edited(lambda h: h["arrays"].__setitem__(0, [1])), "entry is not a map"),
        (edited(first_array("codec", "lz4")), "codec 'lz4'"),
        (edited(first_array("codec", "raw")), "codec 'raw' with"),
        (edited(first_array("dtype", "<c8")), "not allowed"),
        (edited(first_array("dtype", "no such")), "bad dtype"),
        (edited(first_array("shape", [-1])), "bad shape"),
        (edited(first_array("offset", 10**9)), "offset/size out of range"),
        (edited(first_array("nbytes", 3)), "offset/size out of range"),
    ],
)
def test_a_header_that_is_not_what_the_format_says_is_refused(
    tmp_path: Path, edit: Callable[[bytes], bytes], reason: str
) -> None:
    """What the checksum cannot catch (a writer that wrote it so): each refusal is a
    SnapshotError that says what is wrong, and the store sets the file aside."""
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    store.save({"qs": np.zeros((100, 50), np.uint8)}, {"generation": 1}, now=0.0)
    info = store.save({"qs": np.ones((100, 50), np.uint8)}, {"generation": 2}, now=1.0)
    assert info is not None
    data = info.path.read_bytes()
    info.path.write_bytes(rebuilt(data, edit(header_of(data)[0])))
    with pytest.raises(SnapshotError, match=reason):
        read_snapshot(info.path)
    fresh = SnapshotStore(tmp_path, max_writes_per_hour=10)
    loaded = fresh.load_latest()
    assert loaded is not None
    assert loaded.meta == {"generation": 1}
    assert [Path(where).name.split(".corrupt")[0] for where, _ in fresh.corrupt_events] == [
        info.path.name
    ]


def test_a_header_length_beyond_the_file_is_refused(tmp_path: Path) -> None:
    info = SnapshotStore(tmp_path, max_writes_per_hour=10).save({"a": np.zeros(3)}, {}, now=0.0)
    assert info is not None
    data = info.path.read_bytes()
    for length in (len(data), 2**32 - 1):
        prefix = data[:8] + struct.pack("<I", length)
        info.path.write_bytes(rebuilt(data, header_of(data)[0], prefix))
        with pytest.raises(SnapshotError, match=f"header length {length} out of range"):
            read_snapshot(info.path)


def test_a_header_beyond_its_limit_is_not_written(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    with pytest.raises(SnapshotError, match="limit 16777216"):
        store.save({"a": np.zeros(1)}, {"notes": "x" * (16 << 20)}, now=0.0)
    assert list(tmp_path.iterdir()) == []


# --- formats v2 and v1 ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 1])
def test_a_snapshot_an_earlier_version_wrote_is_read(version: int) -> None:
    """An upgraded daemon restores the snapshot the version before wrote: the files of
    ``tests/data/make_snapshot_fixtures.py``, made by that version's own writer (v2 with a
    compressed array, v1 all raw), read back as written, meta's bytes included."""
    loaded = read_snapshot(DATA / f"snapshot-v{version}.eas")
    assert loaded.meta == META
    assert (loaded.created, loaded.monotonic) == (CREATED, MONOTONIC)
    expected = fixture_arrays()
    assert list(loaded.arrays) == list(expected)
    compressed = {name for name, item in loaded.arrays._stored.items() if item.compressed}
    assert compressed == ({"group.grid.history.qs"} if version == 2 else set())
    for name, want in expected.items():
        got = loaded.arrays[name]
        assert (got.dtype, got.shape) == (want.dtype, want.shape), name
        assert got.tobytes() == want.tobytes(), name
    out = np.empty((64, 20, 10), np.uint8)
    read_snapshot(DATA / f"snapshot-v{version}.eas").arrays.read_into("group.grid.history.qs", out)
    np.testing.assert_array_equal(out, expected["group.grid.history.qs"])


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda h: b"\xc1", "header is not valid msgpack"),
        (lambda h: b"\x93\x01\x02\x03", "header is not a map"),
        (lambda h: h.replace(b"\xa4meta", b"\xa4mota", 1), "'meta' is missing"),
    ],
)
def test_a_v2_header_that_is_not_what_the_format_says_is_refused(
    tmp_path: Path, edit: Callable[[bytes], bytes], reason: str
) -> None:
    data = (DATA / "snapshot-v2.eas").read_bytes()
    (length,) = struct.unpack_from("<I", data, 8)
    bad = tmp_path / "snapshot-0000000001.eas"
    bad.write_bytes(rebuilt(data, edit(data[12 : 12 + length])))
    with pytest.raises(SnapshotError, match=reason):
        read_snapshot(bad)


def test_msgspec_is_imported_only_to_read_a_file_of_an_earlier_version(tmp_path: Path) -> None:
    """Writing and reading format v3 takes the standard library alone (a daemon without MQTT
    imports no MessagePack codec, tests/unit/test_architecture.py); reading a v2 file imports
    msgspec then."""
    out = run_fresh(
        f"""
        import sys
        from pathlib import Path
        import numpy as np
        from edge_agent.daemon.snapshots.store import SnapshotStore
        from edge_agent.daemon.snapshots.format import read_snapshot
        codecs = lambda: sorted(m for m in ("msgspec", "msgpack") if m in sys.modules)
        store = SnapshotStore(Path({str(tmp_path)!r}), max_writes_per_hour=10)
        store.save({{"qs": np.zeros((64, 100), np.uint8)}}, {{"n": 1}})
        assert store.load_latest().meta == {{"n": 1}}
        print(codecs())
        read_snapshot(Path({str(DATA / "snapshot-v2.eas")!r}))
        print(codecs())
        """
    )
    assert out.split("\n")[:2] == ["[]", "['msgspec']"]
