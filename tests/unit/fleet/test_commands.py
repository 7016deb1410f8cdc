"""Hub command verification, the durable nonce store and dispatch (edge_agent.fleet.commands)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from edge_agent.bundle.signing import TrustedKeys, key_id, sign_bytes
from edge_agent.fleet.commands import (
    ARG_MODELS,
    CommandProcessor,
    CommandVerifier,
    DeployArgs,
    NonceStore,
    Outcome,
    ResizeArgs,
    parse_args,
)
from edge_agent.fleet.commands import ArgsError as CommandArgsError
from edge_agent.fleet.protocol import (
    Command,
    DecodeError,
    Envelope,
    ResultCode,
    decode,
    encode,
)
from edge_agent.state_faults import StateFaults

FLEET = "unit"
NODE = "pi-01"
NOW = 1_700_000_000.0

HUB_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
TRUSTED = TrustedKeys([HUB_KEY.public_key()])


def signed(
    name: str = "ping",
    args: dict[str, Any] | None = None,
    *,
    target: str = NODE,
    expires: float = NOW + 60,
    nonce: bytes | None = None,
    key: Ed25519PrivateKey = HUB_KEY,
    fleet: str = FLEET,
) -> Command:
    cmd = Command(
        target=target,
        nonce=nonce or os.urandom(16),
        expires=expires,
        key_id=key_id(key.public_key()),
        name=name,
        args=args or {},
    )
    return replace(cmd, signature=sign_bytes(key, cmd.signing_bytes(fleet)))


@pytest.fixture
def nonces(tmp_path: Path) -> Iterator[NonceStore]:
    store = NonceStore(tmp_path / "nonces.log", max_entries=8, clock=lambda: NOW)
    yield store
    store.close()


def verifier(nonces: NonceStore, keys: TrustedKeys | None = TRUSTED) -> CommandVerifier:
    return CommandVerifier(
        keys, fleet=FLEET, node_id=NODE, nonces=nonces, max_ttl_s=3600, clock=lambda: NOW
    )


# ------------------------------------------------------------------------------ verification
def test_a_signed_fresh_command_passes_once_then_is_a_replay(nonces: NonceStore) -> None:
    v = verifier(nonces)
    cmd = signed()
    assert v.verify(cmd) is None
    again = v.verify(cmd)
    assert again is not None
    assert again.code is ResultCode.REPLAYED
    assert len(nonces) == 1


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: replace(signed(), signature=b""), ResultCode.BAD_SIGNATURE),
        (lambda: signed(key=OTHER_KEY), ResultCode.UNKNOWN_KEY),
        (
            lambda: replace(signed(), key_id=key_id(HUB_KEY.public_key())[::-1]),
            ResultCode.UNKNOWN_KEY,
        ),
        (lambda: signed(fleet="elsewhere"), ResultCode.BAD_SIGNATURE),
        (lambda: signed(target="pi-02"), ResultCode.BAD_ARGS),
        (lambda: signed(expires=NOW - 1), ResultCode.EXPIRED),
        (lambda: signed(expires=NOW), ResultCode.EXPIRED),
        (lambda: signed(expires=NOW + 7200), ResultCode.BAD_ARGS),
        (
            lambda: replace(
                signed("resize_group", {"group": "a", "agents": 5}),
                args={"group": "a", "agents": 6},
            ),
            ResultCode.BAD_SIGNATURE,
        ),
        (
            lambda: replace(signed(), expires=NOW + 61),
            ResultCode.BAD_SIGNATURE,
        ),
    ],
    ids=[
        "unsigned",
        "untrusted-key",
        "unknown-key-id",
        "other-fleet",
        "other-target",
        "expired",
        "expires-now",
        "too-far-ahead",
        "args-changed",
        "expiry-changed",
    ],
)
def test_refusals(nonces: NonceStore, make: Any, code: ResultCode) -> None:
    outcome = verifier(nonces).verify(make())
    assert outcome is not None
    assert outcome.code is code
    assert len(nonces) == 0  # nothing refused is remembered


def test_no_hub_keys_refuses_everything_signed(nonces: NonceStore) -> None:
    outcome = verifier(nonces, keys=None).verify(signed())
    assert outcome is not None
    assert outcome.code is ResultCode.UNKNOWN_KEY
    assert "none configured" in outcome.detail


def test_deploy_chunks_skip_signature_and_nonce_but_not_the_target(nonces: NonceStore) -> None:
    v = verifier(nonces)
    chunk = Command(
        target=NODE, nonce=b"c" * 16, expires=0.0, key_id="", name="deploy_chunk", args={}
    )
    assert v.verify(chunk) is None
    assert v.verify(chunk) is None  # a re-sent chunk is harmless; no nonce is stored
    assert len(nonces) == 0
    elsewhere = replace(chunk, target="pi-02")
    refused = v.verify(elsewhere)
    assert refused is not None
    assert refused.code is ResultCode.BAD_ARGS


# ---------------------------------------------------------------------------------- nonce store
def test_nonces_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "n.log"
    first = NonceStore(path, clock=lambda: NOW)
    cmd = signed()
    assert verifier(first).verify(cmd) is None
    first.close()
    second = NonceStore(path, clock=lambda: NOW)
    try:
        outcome = verifier(second).verify(cmd)
        assert outcome is not None
        assert outcome.code is ResultCode.REPLAYED
    finally:
        second.close()


def test_nonce_store_is_bounded_and_forgets_only_expired_nonces(tmp_path: Path) -> None:
    now = [NOW]
    store = NonceStore(tmp_path / "n.log", max_entries=3, clock=lambda: now[0])
    try:
        for i in range(3):
            assert store.record(bytes([i]) * 8, NOW + 10 * (i + 1))
        v = CommandVerifier(TRUSTED, fleet=FLEET, node_id=NODE, nonces=store, clock=lambda: now[0])
        full = v.verify(signed(expires=NOW + 60))
        assert full is not None
        assert full.code is ResultCode.BUSY  # never forget a live nonce to make room
        now[0] = NOW + 15  # the first nonce's command has expired
        assert v.verify(signed(expires=NOW + 60)) is None
        assert len(store) == 3
        assert not store.seen(b"\x00" * 8)
        assert store.seen(b"\x01" * 8)
    finally:
        store.close()


def test_a_nonce_store_rewrites_itself_with_only_the_live_nonces(tmp_path: Path) -> None:
    now = [NOW]
    path = tmp_path / "n.log"
    store = NonceStore(path, max_entries=1000, clock=lambda: now[0])
    try:
        for i in range(400):  # each lives 5 s: at most ~6 are live at once
            now[0] = NOW + i
            assert store.record(i.to_bytes(8, "big"), now[0] + 5)
        # Compacted when it held 4 x the live nonces + 64 records: never more on disk.
        assert store._log is not None
        assert store._log.records <= 4 * 6 + 64
        assert path.stat().st_size == store._log.size < (4 * 6 + 64) * 40
    finally:
        store.close()
    again = NonceStore(path, clock=lambda: now[0])
    try:
        assert again.seen((399).to_bytes(8, "big"))
        assert not again.seen((10).to_bytes(8, "big"))  # expired: not carried over
        assert again.replay_floor == 0.0
    finally:
        again.close()


@pytest.mark.parametrize("cut", ["torn", "crc"])
def test_a_damaged_tail_moves_the_file_aside_keeps_what_it_can_and_sets_a_floor(
    tmp_path: Path, cut: str
) -> None:
    path = tmp_path / "n.log"
    store = NonceStore(path, clock=lambda: NOW, lost_floor_s=600)
    for i in range(5):
        store.record(bytes([i]) * 16, NOW + 60)
    store.close()
    data = path.read_bytes()
    if cut == "torn":  # a crash in the middle of the last append
        path.write_bytes(data[:-7])
    else:  # one bit of the last record's nonce flipped
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    faults = StateFaults()
    store = NonceStore(path, clock=lambda: NOW, lost_floor_s=600, faults=faults)
    try:
        assert faults.moved["nonces"] == 1
        assert store.lost.startswith("damaged (a record cut short or damaged at byte")
        assert store.replay_floor == NOW + 600
        assert all(store.seen(bytes([i]) * 16) for i in range(4))  # read before the damage
        assert not store.seen(bytes([4]) * 16)
        assert store.record(b"new-nonce", NOW + 700)
    finally:
        store.close()
    again = NonceStore(path, clock=lambda: NOW, lost_floor_s=600, faults=faults)
    try:
        assert faults.moved["nonces"] == 1  # the fresh file is whole
        assert again.replay_floor == NOW + 600
        assert again.seen(b"new-nonce")
        assert again.seen(bytes([3]) * 16)
    finally:
        again.close()


def test_an_old_sqlite_nonce_store_is_migrated_once(tmp_path: Path) -> None:
    import sqlite3

    legacy = tmp_path / "command_nonces.sqlite3"
    with contextlib.closing(sqlite3.connect(legacy)) as conn, conn:
        conn.execute("CREATE TABLE nonces (nonce BLOB PRIMARY KEY, expires REAL NOT NULL)")
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value REAL)")
        conn.executemany(
            "INSERT INTO nonces VALUES (?, ?)",
            [(b"live-one", NOW + 60), (b"live-two", NOW + 90), (b"gone-old", NOW - 1)],
        )
        conn.execute("INSERT INTO meta VALUES ('replay_floor', ?)", (NOW + 30,))
    path = tmp_path / "command_nonces.log"
    store = NonceStore(path, clock=lambda: NOW, legacy=legacy, missing_is_lost=True)
    try:
        assert store.migrated == 2
        assert store.lost == ""  # the old store is not missing: it was moved over
        assert store.replay_floor == NOW + 30
        assert store.seen(b"live-one")
        assert store.seen(b"live-two")
        assert not store.seen(b"gone-old")
        assert not legacy.exists()
    finally:
        store.close()
    again = NonceStore(path, clock=lambda: NOW, legacy=legacy)
    try:
        assert again.migrated == 0
        assert again.seen(b"live-two")
        assert again.replay_floor == NOW + 30
    finally:
        again.close()


def test_a_damaged_old_sqlite_nonce_store_is_a_loss(tmp_path: Path) -> None:
    legacy = tmp_path / "command_nonces.sqlite3"
    legacy.write_bytes(os.urandom(4096))
    faults = StateFaults()
    store = NonceStore(
        tmp_path / "command_nonces.log",
        clock=lambda: NOW,
        legacy=legacy,
        lost_floor_s=600,
        faults=faults,
    )
    try:
        assert faults.moved["nonces"] == 1
        assert store.replay_floor == NOW + 600
        assert store.available
    finally:
        store.close()


def test_a_node_without_an_old_store_never_loads_sqlite(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from edge_agent.fleet.commands import NonceStore\n"
        f"s = NonceStore({str(tmp_path / 'n.log')!r}, legacy={str(tmp_path / 'old')!r})\n"
        "s.record(b'12345678', 2e9)\n"
        "s.close()\n"
        "assert 'sqlite3' not in sys.modules, 'sqlite3 was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------------------------- dispatch
def test_processor_dispatches_validates_and_never_raises(nonces: NonceStore) -> None:
    calls: list[tuple[str, Any]] = []

    def resize(args: ResizeArgs, _cmd: Command) -> Outcome:
        calls.append(("resize", args))
        return Outcome(ResultCode.OK, "resized", {"agents": args.agents})

    def boom(_args: Any, _cmd: Command) -> Outcome:
        raise RuntimeError("handler bug")

    proc = CommandProcessor(verifier(nonces), {"resize_group": resize, "ping": boom}, max_pending=3)
    good = signed("resize_group", {"group": "grid", "agents": 7})
    results = [
        proc.handle(good),
        proc.handle(signed("resize_group", {"group": "grid", "agents": 0})),
        proc.handle(signed("resize_group", {"group": "grid", "agents": "7"})),
        proc.handle(signed("resize_group", {"group": "grid", "agents": 7, "x": 1})),
        proc.handle(signed("teleport")),
        proc.handle(signed("ping")),
        proc.handle(good),
    ]
    codes = [r.code for r in results]
    assert codes == [
        ResultCode.OK,
        ResultCode.BAD_ARGS,
        ResultCode.BAD_ARGS,
        ResultCode.BAD_ARGS,
        ResultCode.UNKNOWN_COMMAND,
        ResultCode.FAILED,
        ResultCode.REPLAYED,
    ]
    assert results[0].nonce == good.nonce
    assert results[0].data == {"agents": 7}
    assert "handler bug" in results[5].detail
    assert calls == [("resize", ResizeArgs(group="grid", agents=7))]
    stats = proc.stats()
    assert stats["ok"] == 1
    assert stats["errors"] == 1
    assert stats["refused"] == 1
    assert stats["refused.replayed"] == 1
    # The queue is bounded and counts what it drops.
    for _ in range(5):
        proc.offer(signed("ping"))
    assert proc.counters["dropped"] == 2
    assert len(proc.process(2)) == 2
    assert len(proc.process(10)) == 1


def test_deploy_args_need_one_hash_per_chunk() -> None:
    base: dict[str, Any] = {
        "group": "grid",
        "sha256": "a" * 64,
        "file_sha256": "b" * 64,
        "size": 5000,
        "chunk_size": 2048,
    }
    args = parse_args("deploy", {**base, "chunk_hashes": b"\x00" * 96})
    assert isinstance(args, DeployArgs)
    assert args.chunks == 3
    assert args.chunk_length(2) == 5000 - 4096
    with pytest.raises(CommandArgsError, match="need 3 hashes"):
        parse_args("deploy", {**base, "chunk_hashes": b"\x00" * 64})


# ------------------------------------------------------------------------- property-based tests
names = st.sampled_from(sorted(ARG_MODELS))
arg_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.binary(max_size=40),
)
args_st = st.dictionaries(st.text(min_size=1, max_size=12), arg_values, max_size=4)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=names, args=args_st, ttl=st.floats(min_value=1, max_value=3000))
def test_any_signed_command_verifies_and_any_changed_byte_does_not(
    tmp_path: Path, name: str, args: dict[str, Any], ttl: float
) -> None:
    store = NonceStore(tmp_path / f"{os.urandom(4).hex()}.log", clock=lambda: NOW)
    try:
        v = verifier(store)
        cmd = signed(name, args, expires=NOW + ttl)
        # Through the wire and back: what was signed still verifies.
        env = Envelope(
            type="command", node="hub", seq=1, bdseq=0, ts=NOW, clock_synced=True, body=cmd
        )
        wire = decode(encode(env)).body
        assert isinstance(wire, Command)
        if name == "deploy_chunk":
            return  # authenticated by its hash, not its signature (tested above)
        for i in range(0, len(cmd.signature), 7):
            sig = bytearray(cmd.signature)
            sig[i] ^= 0x01
            bad = v.verify(replace(wire, signature=bytes(sig)))
            assert bad is not None
            assert bad.code is ResultCode.BAD_SIGNATURE
        other_nonce = v.verify(replace(wire, nonce=wire.nonce[::-1] + b"x"))
        assert other_nonce is not None
        assert other_nonce.code is ResultCode.BAD_SIGNATURE
        assert v.verify(wire) is None
        replay = v.verify(wire)
        assert replay is not None
        assert replay.code is ResultCode.REPLAYED
    finally:
        store.close()


def _forged(name: str, args: dict[str, Any], kid: str, sig: bytes, nonce: bytes) -> bytes:
    cmd = Command(
        target=NODE, nonce=nonce, expires=NOW + 30, key_id=kid, name=name, args=args, signature=sig
    )
    env = Envelope(type="command", node="hub", seq=0, bdseq=0, ts=NOW, clock_synced=False, body=cmd)
    return encode(env)


forged = st.builds(
    _forged,
    st.sampled_from(sorted(set(ARG_MODELS) - {"deploy_chunk"})),
    args_st,
    st.sampled_from([key_id(HUB_KEY.public_key()), key_id(OTHER_KEY.public_key()), "k"]),
    st.binary(max_size=70),
    st.binary(min_size=8, max_size=64),
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.one_of(
        forged,
        st.binary(max_size=300),
        st.builds(
            lambda body: msgspec.msgpack.encode(
                {
                    "v": 1,
                    "type": "command",
                    "node": "hub",
                    "seq": 0,
                    "bdseq": 0,
                    "ts": 1.0,
                    "clock_synced": False,
                    "body": body,
                },
            ),
            st.dictionaries(
                st.sampled_from(
                    ["target", "nonce", "expires", "key_id", "signature", "name", "args", "zz"]
                ),
                arg_values | args_st,
                max_size=8,
            ),
        ),
    )
)
def test_random_payloads_are_refused_or_answered_never_raised(
    nonces: NonceStore, payload: bytes
) -> None:
    proc = CommandProcessor(verifier(nonces), {"ping": lambda _a, _c: Outcome(ResultCode.OK)})
    reason = None
    try:
        env = decode(payload)
    except DecodeError as err:
        reason = err.reason
    if reason is not None:
        assert reason in ("not_msgpack", "not_a_map", "version", "unknown_type", "schema")
        return
    assert isinstance(env.body, Command)
    result = proc.handle(env.body)
    assert result.code is not ResultCode.OK  # nothing random carries a valid signature
