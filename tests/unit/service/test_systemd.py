"""sd_notify over a real AF_UNIX datagram socket, the watchdog gate, and the unit renderer."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.config.profiles import load_profiles
from edge_agent.daemon import unit
from edge_agent.daemon.unit import profile_dropin
from edge_agent.service.systemd import SdNotifier, WatchdogGate

REPO = Path(__file__).resolve().parents[3]
SHIPPED_UNIT = REPO / "systemd" / "edge-agent.service"


class Receiver:
    """The service manager's end: a bound datagram socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def recv(self) -> bytes:
        return self.sock.recv(4096)

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        finally:
            self.sock.setblocking(True)
            self.sock.settimeout(2.0)
        return True


@pytest.fixture
def path_receiver() -> Iterator[Receiver]:
    # A short directory: AF_UNIX paths are limited to 107 bytes and tmp_path can be longer.
    directory = tempfile.mkdtemp(prefix="ea-sd-")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.settimeout(2.0)
        yield Receiver(sock, path)
    finally:
        sock.close()
        shutil.rmtree(directory)


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"edge-agent-test-{os.getpid()}-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        yield Receiver(sock, "@" + name)
    finally:
        sock.close()


@pytest.fixture
def notifier(path_receiver: Receiver) -> Iterator[SdNotifier]:
    n = SdNotifier(env={"NOTIFY_SOCKET": path_receiver.env_value})
    yield n
    n.close()


# --- sd_notify -------------------------------------------------------------------------------


def test_ready_with_status_is_one_datagram(notifier: SdNotifier, path_receiver: Receiver) -> None:
    assert notifier.enabled
    assert notifier.ready(status="4 groups, 1200 agents") is True
    assert path_receiver.recv() == b"READY=1\nSTATUS=4 groups, 1200 agents"
    assert not path_receiver.pending()


def test_each_message_has_its_exact_payload(notifier: SdNotifier, path_receiver: Receiver) -> None:
    assert notifier.ready()
    assert path_receiver.recv() == b"READY=1"
    assert notifier.status("ticking at 10 Hz")
    assert path_receiver.recv() == b"STATUS=ticking at 10 Hz"
    assert notifier.watchdog()
    assert path_receiver.recv() == b"WATCHDOG=1"
    assert notifier.stopping()
    assert path_receiver.recv() == b"STOPPING=1"
    assert notifier.stopping(status="writing final snapshot")
    assert path_receiver.recv() == b"STOPPING=1\nSTATUS=writing final snapshot"
    assert notifier.extend_timeout(2.5)
    assert path_receiver.recv() == b"EXTEND_TIMEOUT_USEC=2500000"
    assert notifier.stats() == {"enabled": True, "sent": 6, "send_errors": 0}


def test_status_cannot_inject_assignments(notifier: SdNotifier, path_receiver: Receiver) -> None:
    notifier.status("line one\nREADY=1\r\nline two")
    assert path_receiver.recv() == b"STATUS=line one READY=1  line two"


def test_reloading_carries_clock_monotonic_usec(
    notifier: SdNotifier, path_receiver: Receiver
) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", path_receiver.recv())
    assert match is not None
    assert before <= int(match.group(1)) <= after


def test_abstract_namespace_socket(abstract_receiver: Receiver) -> None:
    n = SdNotifier(env={"NOTIFY_SOCKET": abstract_receiver.env_value})
    try:
        assert n.watchdog() is True
        assert abstract_receiver.recv() == b"WATCHDOG=1"
    finally:
        n.close()


def test_default_env_is_os_environ(
    path_receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_receiver.env_value)
    n = SdNotifier()
    try:
        assert n.ready()
        assert path_receiver.recv() == b"READY=1"
    finally:
        n.close()


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}])
def test_without_a_usable_socket_every_call_is_a_no_op(env: dict[str, str]) -> None:
    n = SdNotifier(env=env)
    assert not n.enabled
    assert n.ready("x") is False
    assert n.status("x") is False
    assert n.watchdog() is False
    assert n.stopping() is False
    assert n.reloading() is False
    assert n.extend_timeout(1.0) is False
    assert n.stats() == {"enabled": False, "sent": 0, "send_errors": 0}


def test_send_errors_are_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = SdNotifier(env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    try:
        with caplog.at_level(logging.DEBUG, logger="edge_agent.service.systemd"):
            assert n.watchdog() is False
            assert n.watchdog() is False
            assert n.ready() is False
        assert n.stats() == {"enabled": True, "sent": 0, "send_errors": 3}
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1
        assert "nobody-listens" in warnings[0].getMessage()
    finally:
        n.close()


def test_extend_timeout_rejects_non_positive(notifier: SdNotifier) -> None:
    with pytest.raises(ValueError, match="> 0"):
        notifier.extend_timeout(0)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "self"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({"WATCHDOG_USEC": "1500"}, 0.0015),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert SdNotifier(env=env).watchdog_interval() == expected


# --- watchdog gate -----------------------------------------------------------------------------


def test_gate_refuses_before_the_first_tick() -> None:
    gate = WatchdogGate(watchdog_interval_s=30, tick_period_s=1.0)
    assert gate.should_ping(0.0) is False
    assert gate.is_stalled(0.0)


def test_gate_pings_at_half_the_interval_while_ticks_complete() -> None:
    gate = WatchdogGate(watchdog_interval_s=30, tick_period_s=1.0)
    pings = []
    for step in range(600):  # a 60 s run, 0.1 s loop iterations, a tick every second
        now = step / 10
        if step % 10 == 0:
            gate.record_tick(now)
        if gate.should_ping(now):
            pings.append(now)
    assert pings == [0.0, 15.0, 30.0, 45.0]
    assert gate.pings == 4
    assert gate.stale_refusals == 0


def test_gate_stops_pinging_when_ticks_stall() -> None:
    gate = WatchdogGate(watchdog_interval_s=30, tick_period_s=1.0, stale_floor_s=2.0)
    pings = []
    for step in range(1200):  # ticks for 40 s, then the tick loop hangs in a backend call
        now = step / 10
        if step % 10 == 0 and now < 40:
            gate.record_tick(now)
        if gate.should_ping(now):
            pings.append(now)
    assert pings == [0.0, 15.0, 30.0]  # 45 s would be due, but the last tick ended at 39 s
    assert gate.is_stalled(41.1)
    assert not gate.is_stalled(41.0)
    assert gate.stale_refusals > 0
    gate.record_tick(120.0)  # progress resumes: pings resume at once
    assert gate.should_ping(120.0) is True


def test_gate_staleness_window_is_two_periods_or_the_floor() -> None:
    slow = WatchdogGate(watchdog_interval_s=60, tick_period_s=5.0, stale_floor_s=2.0)
    assert slow.stale_after_s == 10.0
    slow.record_tick(0.0)
    assert slow.should_ping(9.5) is True
    fast = WatchdogGate(watchdog_interval_s=60, tick_period_s=0.05, stale_floor_s=2.0)
    assert fast.stale_after_s == 2.0
    fast.record_tick(0.0)
    assert fast.should_ping(2.5) is False


@pytest.mark.parametrize(
    ("interval_s", "tick_period_s", "floor"), [(0, 1, 1), (30, 0, 1), (30, 1, -1)]
)
def test_gate_rejects_bad_arguments(interval_s: float, tick_period_s: float, floor: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        WatchdogGate(
            watchdog_interval_s=interval_s, tick_period_s=tick_period_s, stale_floor_s=floor
        )


# --- unit file ---------------------------------------------------------------------------------


def shipped_defaults() -> str:
    return SHIPPED_UNIT.read_text(encoding="utf-8")


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, _, value = line.partition("=")
        sections[current].append((key, value))
    return sections


def test_shipped_defaults_are_the_pi4_2gb_profile_and_its_dropin() -> None:
    """The static unit carries pi4-2gb's numbers; that profile's drop-in repeats exactly them,
    and every other profile's drop-in sets its own."""
    profiles = load_profiles(REPO / "firmware_profiles")
    settings = dict(parse_unit(shipped_defaults())["Service"])
    dropin = dict(parse_unit(profile_dropin(profiles["pi4-2gb"]))["Service"])
    assert dropin == {"MemoryHigh": settings["MemoryHigh"], "MemoryMax": settings["MemoryMax"],
                      "WatchdogSec": settings["WatchdogSec"] + "s"}
    assert settings["ExecStart"] == unit.SHIPPED_EXEC_START
    zero = dict(parse_unit(profile_dropin(profiles["pi-zero-2w"]))["Service"])
    assert zero == {"MemoryHigh": "144M", "MemoryMax": "160M", "WatchdogSec": "30s"}


def test_dropin_can_replace_exec_start_and_refuses_bad_commands() -> None:
    profile = load_profiles(REPO / "firmware_profiles")["pi-zero-2w"]
    text = profile_dropin(profile, exec_start="/usr/local/bin/edge-agentd --config /etc/z.toml")
    service = parse_unit(text)["Service"]
    assert service[-2:] == [("ExecStart", ""),
                            ("ExecStart", "/usr/local/bin/edge-agentd --config /etc/z.toml")]
    for bad, message in (("edge-agentd", "absolute path"), ("/bin/x\nUser=root", "one non-empty"),
                         ("  ", "one non-empty")):
        with pytest.raises(ValueError, match=message):
            profile_dropin(profile, exec_start=bad)


def test_unit_has_the_required_settings() -> None:
    sections = parse_unit(shipped_defaults())
    unit = dict(sections["Unit"])
    service = sections["Service"]
    settings = dict(service)
    # Reload checks the config ExecStart names before it signals: a refused config fails
    # `systemctl reload` instead of being reported as "Reloaded".
    assert [v for k, v in service if k == "ExecReload"] == [
        "/opt/edge-agent/venv/bin/edge-agent check-config /etc/edge-agent/config.toml",
        "/bin/kill -HUP $MAINPID",
    ]
    assert settings["ExecStart"].endswith(" --config /etc/edge-agent/config.toml")
    assert unit["StartLimitIntervalSec"] == "300"
    assert unit["StartLimitBurst"] == "5"
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": "/opt/edge-agent/venv/bin/edge-agentd --config /etc/edge-agent/config.toml",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "RestartSec": "5",
        "MemoryHigh": "528M",
        "MemoryMax": "576M",
        "StateDirectory": "edge-agent",
        "RuntimeDirectory": "edge-agent",
        "ConfigurationDirectory": "edge-agent",
        "User": "edge-agent",
        "Group": "edge-agent",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "ProtectKernelModules": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "UMask": "0077",
    }
    assert {key: settings.get(key) for key in expected} == expected
    assert ("SystemCallFilter", "@system-service") in service
    assert "TimeoutStartSec" in settings
    assert "TimeoutStopSec" in settings
    assert "LimitNOFILE" in settings
    assert dict(sections["Install"]) == {"WantedBy": "multi-user.target"}


def test_a_manager_that_stops_reading_never_blocks_the_caller(tmp_path: Path) -> None:
    """A full notify socket drops (and counts) notifications instead of stalling the tick loop
    (a blocking send waited up to a second per tick once ten datagrams were queued)."""
    path = tmp_path / "notify.sock"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(path))  # bound, never read
    try:
        notifier = SdNotifier({"NOTIFY_SOCKET": str(path)})
        results = [notifier.status(f"tick {i}") for i in range(2_000)]
        assert results[0] is True
        assert False in results  # the queue filled: later sends were refused at once
        assert notifier.sent + notifier.send_errors == 2_000
        assert notifier.send_errors == results.count(False)
        notifier.close()
    finally:
        sink.close()
