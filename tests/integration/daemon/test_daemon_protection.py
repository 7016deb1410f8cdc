"""The daemon's protection as a real process: thermal throttling and memory degradation."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.integration.daemon.test_daemon import PROFILES, Daemon, NotifySocket, wait_status

pytestmark = pytest.mark.integration


def custom_profile(directory: Path, name: str, *, append: str = "", **replace: str) -> Path:
    """A copy of x86-dev named ``name`` with whole lines replaced (key -> new line) and ``append``
    added at the end (inside its last table, ``[thermal]``)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for line in (PROFILES / "x86-dev.toml").read_text().splitlines():
        key = line.split("=")[0].strip()
        lines.append(replace.get(key, line))
    text = "\n".join(lines).replace('name = "x86-dev"', f'name = "{name}"')
    (directory / f"{name}.toml").write_text(text + "\n" + append + "\n")
    return directory


def write_config(path: Path, state: Path, profile: str) -> None:
    path.write_text(f"""
[daemon]
profile = "{profile}"
state_dir = "{state}"
status_file = "{state / "status.json"}"
tick_hz = 20

[[groups]]
name = "important"
model = {{ type = "builtin", name = "grid10" }}
count = 200
priority = 9
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[[groups]]
name = "expendable"
model = {{ type = "builtin", name = "tmaze" }}
count = 200
priority = 1
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
""")


def test_hot_cpu_lowers_the_tick_rate_and_cooling_restores_it(tmp_path: Path) -> None:
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "temp").write_text("45000\n")
    profiles = custom_profile(
        tmp_path / "profiles",
        "hot-test",
        append=f'zone_glob = "{tmp_path}/thermal_zone*/temp"',
        throttled_tick_factor="throttled_tick_factor = 0.25",
    )
    state = tmp_path / "state"
    cfg = tmp_path / "cfg.toml"
    write_config(cfg, state, "hot-test")
    notify = NotifySocket(tmp_path / "n.sock")
    daemon = Daemon(cfg, notify, {"EDGE_AGENT_PROFILES_DIR": str(profiles)})
    status_path = state / "status.json"
    try:
        notify.wait_for("READY=1", 60)
        cool = wait_status(status_path, lambda s: s["thermal"]["temp_c"] == 45.0)
        assert cool["thermal"]["throttled"] is False
        assert cool["tick"]["hz"] == 20.0
        (zone / "temp").write_text("95000\n")  # above the profile's 90 C
        hot = wait_status(status_path, lambda s: s["thermal"]["throttled"], timeout=20)
        assert hot["tick"]["hz"] == 5.0
        assert any(e["kind"] == "thermal_throttle" for e in hot["events"])
        (zone / "temp").write_text("50000\n")  # below the limit minus the 5 C hysteresis
        restored = wait_status(status_path, lambda s: not s["thermal"]["throttled"], timeout=20)
        assert restored["tick"]["hz"] == 20.0
        assert daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        daemon.kill()
        notify.close()


def test_rss_above_the_soft_limit_shrinks_histories_then_pauses_low_priority(
    tmp_path: Path,
) -> None:
    # A soft limit far below what any Python daemon uses: every check finds RSS above it.
    profiles = custom_profile(
        tmp_path / "profiles",
        "tight-test",
        base_mb="base_mb = 8",
        soft_limit_mb="soft_limit_mb = 16",
    )
    state = tmp_path / "state"
    cfg = tmp_path / "cfg.toml"
    write_config(cfg, state, "tight-test")
    notify = NotifySocket(tmp_path / "n.sock")
    daemon = Daemon(cfg, notify, {"EDGE_AGENT_PROFILES_DIR": str(profiles)})
    status_path = state / "status.json"
    try:
        notify.wait_for("READY=1", 60)
        degraded = wait_status(
            status_path,
            lambda s: any(g["paused"] for g in s["groups"]),
            timeout=30,
        )
        groups = {g["name"]: g for g in degraded["groups"]}
        # Histories were halved step by step down to the floor before anything was paused.
        assert groups["important"]["history_capacity"] == 8
        assert groups["expendable"]["history_capacity"] == 8
        assert groups["expendable"]["paused"] is True
        assert groups["expendable"]["paused_reason"] == "memory"
        assert groups["important"]["paused"] is False
        assert any("histories halved" in d for d in degraded["degradations"])
        assert any("paused group expendable" in d for d in degraded["degradations"])
        # The important group keeps ticking; the daemon never stops.
        steps = groups["important"]["steps"]
        wait_status(
            status_path,
            lambda s: next(g for g in s["groups"] if g["name"] == "important")["steps"] > steps + 5,
        )
        assert daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        daemon.kill()
        notify.close()


def test_critical_temperature_pauses_every_group_until_below_throttle(tmp_path: Path) -> None:
    """Above ``critical_c`` no agent steps (the loop, watchdog and status go on); the groups
    resume once the CPU is below ``throttle_c``, not before."""
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "temp").write_text("45000\n")
    profiles = custom_profile(
        tmp_path / "profiles", "crit-test", append=f'zone_glob = "{tmp_path}/thermal_zone*/temp"'
    )
    state = tmp_path / "state"
    cfg = tmp_path / "cfg.toml"
    write_config(cfg, state, "crit-test")
    notify = NotifySocket(tmp_path / "n.sock")
    daemon = Daemon(cfg, notify, {"EDGE_AGENT_PROFILES_DIR": str(profiles)})
    status_path = state / "status.json"

    def steps(s: dict) -> dict[str, int]:  # type: ignore[type-arg]
        return {g["name"]: g["steps"] for g in s["groups"]}

    try:
        notify.wait_for("READY=1", 60)
        wait_status(status_path, lambda s: s["thermal"]["temp_c"] == 45.0)
        (zone / "temp").write_text("101000\n")  # x86-dev: throttle 90 C, critical 100 C
        hot = wait_status(status_path, lambda s: s["thermal"]["critical"], timeout=20)
        assert all(g["paused"] and g["paused_reason"] == "thermal" for g in hot["groups"])
        assert any(e["kind"] == "thermal_critical" for e in hot["events"])
        ticks = hot["tick"]["ticks"]
        frozen = steps(wait_status(status_path, lambda s: s["tick"]["ticks"] > ticks))
        later = wait_status(status_path, lambda s: s["tick"]["ticks"] > ticks + 10)
        assert steps(later) == frozen  # ticking, but no agent stepped
        (zone / "temp").write_text("95000\n")  # below critical, still above throttle: paused
        warm = wait_status(status_path, lambda s: s["thermal"]["temp_c"] == 95.0, timeout=20)
        assert all(g["paused"] for g in warm["groups"])
        (zone / "temp").write_text("85000\n")  # below throttle_c: every group resumes
        cooled = wait_status(status_path, lambda s: not s["thermal"]["critical"], timeout=20)
        resumed = wait_status(
            status_path, lambda s: all(not g["paused"] for g in s["groups"]), timeout=20
        )
        assert cooled["thermal"]["temp_c"] == 85.0
        moving = wait_status(
            status_path, lambda s: all(steps(s)[n] > frozen[n] for n in frozen), timeout=20
        )
        assert moving["thermal"]["throttled"] is True  # still within the 5 C hysteresis
        assert resumed["state"] == "running"
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        daemon.kill()
        notify.close()
