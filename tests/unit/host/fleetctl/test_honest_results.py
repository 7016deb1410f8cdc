"""Honest numbers and results: the hub keeps a command's own answer over a duplicate's, and an
event the outbox refuses keeps its number.

After a node restarts, the answer it gave before (waiting in its outbox) can arrive after the
``replayed`` answer to the same command sent again; the hub must not take the replay for the
outcome."""

from __future__ import annotations

import time
from typing import Any

import pytest

from edge_agent.fleet.comms.memory import MemoryBroker, MemoryTransport
from edge_agent.fleet.protocol import CommandResult, ResultCode
from edge_agent_host.fleetctl import FleetClient, FleetError

NONCE = b"n" * 16


def result(code: ResultCode, **data: object) -> CommandResult:
    return CommandResult(nonce=NONCE, name="ping", code=code, detail="", data=dict(data))


@pytest.fixture
def hub(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[FleetClient, list[tuple[float, CommandResult]]]:
    """A hub on the in-memory broker whose results arrive on a script ``(poll, result)``: the
    result comes with the client's poll of that number (0: the first), whatever the time."""
    client = FleetClient(fleet="f", transport=MemoryTransport(MemoryBroker(), "hub"))
    script: list[tuple[int, CommandResult]] = []
    polls = [0]

    def poll(timeout_s: float = 0.0) -> list[object]:
        time.sleep(min(timeout_s, 0.01))
        while script and script[0][0] <= polls[0]:
            client.results.setdefault(NONCE, []).append(script.pop(0)[1])
        polls[0] += 1
        return []

    monkeypatch.setattr(client, "poll", poll)
    return client, script


def test_the_commands_own_answer_wins_over_a_duplicate_that_came_first(hub: Any) -> None:
    client, script = hub
    script += [(0, result(ResultCode.REPLAYED, duplicate=True)), (3, result(ResultCode.OK))]
    # The grace is far longer than three polls take on any machine: only the OK can end it.
    assert client.wait_result(NONCE, 600, duplicate_grace_s=300).code is ResultCode.OK


def test_a_duplicate_alone_is_returned_after_the_grace(hub: Any) -> None:
    client, script = hub
    script.append((0, result(ResultCode.REPLAYED, duplicate=True)))
    started = time.monotonic()
    assert client.wait_result(NONCE, 600, duplicate_grace_s=0.3).code is ResultCode.REPLAYED
    assert time.monotonic() - started >= 0.3  # a lower bound: a slow machine only adds to it


def test_a_replay_without_the_mark_and_a_timeout_are_as_before(hub: Any) -> None:
    client, script = hub
    script.append((0, result(ResultCode.REPLAYED)))
    assert client.wait_result(NONCE, 600).code is ResultCode.REPLAYED  # 600 s: a hang guard
    with pytest.raises(FleetError, match="no result"):
        client.wait_result(NONCE, 0.2)


def test_an_event_the_outbox_refuses_keeps_its_number(tmp_path: Any) -> None:
    """Receivers number events by data.n: a refused one leaves a gap and is counted lost."""
    from edge_agent.config.daemon import (
        ConfigFile,
        parse_config,
    )
    from edge_agent.config.toml_lines import TomlDocument
    from edge_agent.daemon.uplink import FleetUplink
    from edge_agent.fleet.protocol import Birth

    config = parse_config(
        f"""[daemon]
profile = "x86-dev"
state_dir = "{tmp_path}"
[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = 1
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
[mqtt]
enabled = true
node_id = "pi-1"
outbox_max_bytes = 65536
""",
        "x.toml",
    )
    birth = Birth(software_version="0", profile="x86-dev", budget_bytes=1, groups={})
    uplink = FleetUplink(
        config,
        ConfigFile(config, TomlDocument.parse("", "x.toml")),
        tmp_path,
        birth=birth,
        handlers={},
        event=lambda *_a, **_k: None,
    )
    try:
        for _ in range(300):  # 1 KiB each: far more than 64 KiB of outbox
            uplink.publish_event("tick_failed", "error", "x" * 1000)
        counters = uplink.counters
        assert counters["events_lost"] > 0
        assert counters["events_published"] == 300  # every event took its number
        assert counters["publish_refused"] == counters["events_lost"]
    finally:
        uplink.stop()
