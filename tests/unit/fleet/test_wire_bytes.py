"""The wire format did not change with the models: encoded bytes pinned from the pydantic models.

The digests (and the two payloads written out) were computed with the pydantic models of the
protocol and the coordination layer, before they became msgspec Structs: old and new nodes and
hubs read each other's messages only while ``encode`` writes the same maps (same keys in the same
order, the same value types: an int given for a float field is still written as a float).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edge_agent.coordination.messages import (
    BidColumns,
    Claim,
    Consumed,
    DeadSession,
    Release,
    TaskAnnounce,
    TaskBids,
    TaskRelease,
    TaskSpec,
    TaskState,
    TaskSync,
    Tombstone,
)
from edge_agent.fleet.protocol import (
    ActionBatch,
    BeliefBatch,
    Birth,
    Body,
    BundleChunk,
    Command,
    CommandResult,
    Death,
    Envelope,
    Event,
    FrameBatch,
    GroupInfo,
    NodeState,
    ObservationBatch,
    OutboxCounters,
    RebirthRequest,
    Telemetry,
    decode,
    encode,
)

SHA = "ab" * 32


def env(
    body: Body, *, node: str = "pi-01", seq: int = 7, bdseq: int = 3, ts: float = 1_700_000_000.25
) -> Envelope:
    return Envelope(
        type=body.TYPE, node=node, seq=seq, bdseq=bdseq, ts=ts, clock_synced=True, body=body
    )


def samples() -> dict[str, Envelope]:
    spec = TaskSpec(
        task="t1",
        epoch=2,
        capability="move",
        goal_factor=1,
        goal_state=5,
        deadline=1_700_000_100,
        announced_by="hub",
    )
    outbox = OutboxCounters(
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
    )
    return {
        "state": env(NodeState(online=False), seq=0, bdseq=0, ts=0),
        "birth": env(
            Birth(
                software_version="0.1.0",
                profile="pi4-2g",
                budget_bytes=400 << 20,
                groups={
                    "thermo": GroupInfo(agents=1000, bundle="thermo", bundle_sha256=SHA),
                    "b": GroupInfo(agents=0),
                },
                capabilities=["onnxruntime", "ota"],
                labels={"site": "north", "rack": "r7"},
            )
        ),
        "birth_min": env(Birth(software_version="x", profile="p", budget_bytes=0)),
        "death": env(Death(reason="upgrade")),
        "telemetry": env(
            Telemetry(
                uptime_s=12.5,
                rss_bytes=123 << 20,
                budget_used_bytes=100 << 20,
                budget_total_bytes=400 << 20,
                ticks=2**40,
                tick_p50_ms=3,
                tick_p99_ms=9.9,
                overruns=2,
                groups={"thermo": 1000},
                cpu_temp_c=61,
                outbox=outbox,
                counters={"link.received": 3, "load": 0.5, "neg": -7, "big": 2**63 - 1},
            )
        ),
        "telemetry_min": env(
            Telemetry(
                uptime_s=0,
                rss_bytes=0,
                budget_used_bytes=0,
                budget_total_bytes=0,
                ticks=0,
                tick_p50_ms=0,
                tick_p99_ms=0,
                overruns=0,
            )
        ),
        "event": env(
            Event(
                kind="thermal",
                severity="warning",
                detail="hot ünïcode " * 5,
                group="thermo",
                data={
                    "c": 81.0,
                    "n": -1,
                    "big": 2**64 - 1,
                    "b": b"\x00\xff",
                    "t": True,
                    "z": None,
                    "l": [1, 2.5, "x", b"y", None, False],
                    "e": [],
                },
            )
        ),
        "event_min": env(Event(kind="other")),
        "command": env(
            Command(
                target="pi-01",
                nonce=b"\x01" * 16,
                expires=1_700_000_060,
                key_id="hub-2024",
                signature=b"\x02" * 64,
                name="set_rate",
                args={
                    "hz": 5,
                    "groups": ["a", "b"],
                    "blob": b"\x00\xff",
                    "dry": False,
                    "none": None,
                },
            ),
            node="hub",
        ),
        "command_unsigned": env(
            Command(target="pi-01", nonce=b"\x01" * 8, expires=0.0, key_id="", name="ping"),
            node="hub",
        ),
        "result": env(
            CommandResult(
                nonce=b"\x01" * 16,
                name="set_rate",
                code="bad_args",
                detail="no",
                data={"hz": 5},
            )
        ),
        "rebirth": env(RebirthRequest(reason="gap"), node="hub"),
        "rebirth_min": env(RebirthRequest()),
        "obs": env(
            ObservationBatch.from_arrays("thermo", 9, [0, 1, 2], np.array([[1], [2], [3]], np.int8))
        ),
        "action": env(
            ActionBatch.from_arrays("thermo", 9, [4, 5], np.arange(6, dtype=np.int16).reshape(2, 3))
        ),
        "beliefs": env(
            BeliefBatch.from_arrays("thermo", 2**33, [7], np.full((1, 4), 0.25, np.float32))
        ),
        "frame_raw": env(
            FrameBatch(
                group="cam", tick=3, agent_id=1, encoding="raw", shape=[2, 3], data=b"\x05" * 6
            )
        ),
        "frame_jpeg": env(
            FrameBatch(
                group="cam",
                tick=3,
                agent_id=1,
                encoding="jpeg",
                dtype="uint8",
                shape=[4, 4, 3],
                data=b"\xff\xd8jpeg",
            )
        ),
        "chunk": env(BundleChunk(sha256=SHA, index=3, data=bytes(range(256)) * 300), node="hub"),
        "task_announce": env(
            TaskAnnounce(
                tasks=[
                    spec,
                    TaskSpec(task="t2", epoch=0, capability="c", goal_state=0, announced_by="n1"),
                ],
                sigs=b"\x5a" * 64 + b"\xa5" * 64,
            )
        ),
        "task_bids": env(
            TaskBids.from_arrays(
                "g",
                4,
                ["t1", "t2"],
                epochs=[2, 0],
                task_index=[0, 1, 1],
                agents=[3, 4, 5],
                costs=[0.5, 1.5, -2.0],
            )
        ),
        "task_release": env(
            TaskRelease(
                items=[
                    Release(
                        task="t1",
                        epoch=2,
                        node="n1",
                        group="g",
                        agent=3,
                        bdseq=1,
                        bseq=4,
                        status="abandoned",
                    )
                ]
            )
        ),
        "task_state": env(
            TaskState(
                digest=b"\x11" * 16,
                open_tasks=2,
                claims=[Claim(task="t1", epoch=2, group="g", agent=3)],
            )
        ),
        "task_state_min": env(TaskState(digest=b"\x00" * 16, open_tasks=0)),
        "task_sync": env(
            TaskSync(
                tasks=[spec],
                task_sigs=b"\x3c" * 64,
                closed=[Tombstone(task="t9", epoch=1)],
                consumed=[Consumed(node="n1", group="g", agent=3, bdseq=1, bseq=2)],
                dead=[DeadSession(node="n2", bdseq=5)],
                bids=BidColumns(
                    nodes=["n1"],
                    groups=["g"],
                    tasks=["t1"],
                    task_index=b"\x00\x00",
                    epoch=b"\x02\x00\x00\x00",
                    node_index=b"\x00\x00",
                    bdseq=b"\x01\x00\x00\x00",
                    group_index=b"\x00\x00",
                    agent=b"\x03\x00\x00\x00",
                    cost=np.array([0.5], "<f4").tobytes(),
                    bseq=b"\x04\x00\x00\x00",
                ),
            )
        ),
        "task_sync_min": env(TaskSync()),
    }


PYDANTIC_SHA256 = {
    "state": "9aa1b65a499b08b07ff42f54d9baf7dfa34cd95eb4a895011bd088bb73b69c85",
    "birth": "03422fcbc33626e6e5624b0ac581be6d66c7934d5b9d046e9788149b8b7cbb00",
    # A birth leaves out the fields at their defaults (omit_defaults, so that one without the
    # later bundle_keys and tick_hz is the bytes an earlier hub reads): the empty groups,
    # capabilities and labels of birth_min are left out, which every version reads as empty.
    "birth_min": "810d44d5087eee1d9cd4252f4e1755f31b1259e5946278b42e707d8dd70d441c",
    "death": "4c2102dd0d56239f4badabbf7553c0ff6376e95a3472a6e548016c3b03dafd34",
    "telemetry": "8ca807b2f94fa30beb6f2a1727a6fbcbfe759110e73f93eb94517ceae4fa0719",
    "telemetry_min": "3c9c50a6bc758454b2be42cb249cf9c1a5cbbda06f369717f0e1141afb14a9c9",
    "event": "05a41672831aad5c8ae41366cf296ec0198f311afe775400b7020821075bcb55",
    "event_min": "37421270774ab3b9752cb65eb5a6e730e9d4aae4e26fc7bf8e9c4734374f8236",
    "command": "a03946e0222ade7583e118c72ad38f9b1474288e93c0e6b58ed5a59fd54cb7ab",
    "command_unsigned": "07ba96d31633c7d4e4cd96731822a3eebb0ed308e54310263484392c70c64c37",
    "result": "843c290d55b89cc093ca485914bf83dc71e4a16c3cd2727ba7bef957a990b3fb",
    "rebirth": "30d4803cce548e081e1fb7997fd790d1a80106561b9bddc80139cadb28c7bdca",
    "rebirth_min": "a05ad2caabb3963769eacdfd94ff0b1bb0a73da414ca612fb0dce4a7a7240678",
    "obs": "ab412b79998df902bf8a6c160ec962e44a1278af69c9e970a9f3af911ff97c3a",
    "action": "f765063cc18d5bcbc365b6ab212b0ec86afa8ec1cf3e1cc690b056c519ce5a6f",
    "beliefs": "90ebef5a6d8b867138af155dd6380a14b8282c506685c682ad1e0833dd3cd21f",
    "frame_raw": "c1f4a313737aa63379a5a68afe4e125194a2c403b0fc7607d77b827da7abf5bc",
    "frame_jpeg": "d326f86d211e42b63d161c283255f199f82d1421d634b1b52d29ee33cdcc1de3",
    "chunk": "67e95540ee4e29483792beb789fce58a65a9eca88f3256a95f259b0625b1612c",
    "task_announce": "58dfadfd0510b533e3b6b4c8d434e64be33bcfb9798a2fcc48d0a8948bc27731",
    "task_bids": "1bcd37e63109b59857b2d3ee469deadf5d41b343d0f15214b02956d1f94eeafc",
    # task_release and task_sync gained the holders' signatures (sigs; closers, closer_sigs),
    # then task_announce and task_sync the announcers' signatures of the specs (sigs;
    # task_sigs), so that no node can speak for another: the only bodies whose bytes changed on
    # purpose since the pydantic models (docs/protocol.md, "Signed task facts").
    "task_release": "5467f8ca343798a583cd7a515fe6083f38857babc9d2753f7229da30460490c7",
    "task_state": "ef013a083359e683195e6a5962124c9aaff2ffdaf581bb95456f0496152c4eab",
    "task_state_min": "c2491e53599af3307b8ab5767db74267838508df2b4c41640d30931a625c7abf",
    "task_sync": "963075426d367780a446908a5a042af2c21b516fe152a420b65ba278e23b494f",
    "task_sync_min": "24d5f0c81670c3d6bf1334e4fd896c88f733ec1d1fa6e5f317a99648465d343c",
}

# Two payloads written out, to read what a difference is when one appears.
PYDANTIC_PAYLOADS = {
    "state": (
        "88a17601a474797065a57374617465a46e6f6465a570692d3031a373657100a5626473657100a27473cb"
        "0000000000000000ac636c6f636b5f73796e636564c3a4626f647981a66f6e6c696e65c2"
    ),
    "command_unsigned": (
        "88a17601a474797065a7636f6d6d616e64a46e6f6465a3687562a373657107a5626473657103a27473cb"
        "41d954fc40100000ac636c6f636b5f73796e636564c3a4626f647987a6746172676574a570692d3031a5"
        "6e6f6e6365c4080101010101010101a765787069726573cb0000000000000000a66b65795f6964a0a973"
        "69676e6174757265c400a46e616d65a470696e67a46172677380"
    ),
}

SAMPLES = samples()


def test_every_sample_is_pinned() -> None:
    assert set(SAMPLES) == set(PYDANTIC_SHA256)


@pytest.mark.parametrize("name", sorted(PYDANTIC_SHA256))
def test_encoded_bytes_are_those_of_the_pydantic_models(name: str) -> None:
    payload = encode(SAMPLES[name])
    if name in PYDANTIC_PAYLOADS:
        assert payload.hex() == PYDANTIC_PAYLOADS[name]
    assert hashlib.sha256(payload).hexdigest() == PYDANTIC_SHA256[name]
    assert decode(payload) == SAMPLES[name]
