"""The Raspberry Pi firmware's under-voltage and throttling flags (edge_agent/daemon/thermal.py)
in the daemon's status, telemetry counters and Prometheus file; absent on other hardware."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edge_agent.cli.status import format_status
from edge_agent.config.daemon import parse_config
from edge_agent.daemon.service import Daemon
from edge_agent.daemon.thermal import THROTTLED_GLOB, FirmwareFlags, read_firmware_flags

#: Values ``vcgencmd get_throttled`` prints, as the Raspberry Pi forum and docs decode them.
DECODED = {
    0x0: ("ok (0x0)", set()),
    0x50000: (
        "since boot under voltage, throttled (0x50000)",
        {"under_voltage_occurred", "throttled_occurred"},
    ),
    0x50005: (
        "NOW under voltage, throttled; since boot under voltage, throttled (0x50005)",
        {"under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"},
    ),
    0x80008: (
        "NOW soft temp limit; since boot soft temp limit (0x80008)",
        {"soft_temp_limit", "soft_temp_limit_occurred"},
    ),
    0xE0002: (
        "NOW freq capped; since boot freq capped, throttled, soft temp limit (0xe0002)",
        {"freq_capped", "freq_capped_occurred", "throttled_occurred", "soft_temp_limit_occurred"},
    ),
}


@pytest.mark.parametrize("value", sorted(DECODED))
def test_decoding_the_documented_values(value: int) -> None:
    described, set_flags = DECODED[value]
    flags = FirmwareFlags(value)
    assert flags.describe() == described
    numbers = flags.as_dict()
    assert numbers.pop("raw") == value
    assert {name for name, bit in numbers.items() if bit} == set_flags
    assert len(numbers) == 8


def test_the_reader_takes_the_sysfs_file_hex_with_or_without_0x(tmp_path: Path) -> None:
    firmware = tmp_path / "soc" / "soc:firmware"
    firmware.mkdir(parents=True)
    path = firmware / "get_throttled"
    pattern = str(tmp_path / "soc*" / "*firmware" / "get_throttled")
    path.write_text("50005\n")  # the kernel writes "%x\n"
    assert read_firmware_flags(pattern) == FirmwareFlags(0x50005)
    path.write_text("0x80008\n")
    assert read_firmware_flags(pattern) == FirmwareFlags(0x80008)
    path.write_text("not hex\n")
    assert read_firmware_flags(pattern) is None
    assert read_firmware_flags(str(tmp_path / "none" / "get_throttled")) is None


def test_this_machine_has_the_file_only_if_it_is_a_raspberry_pi() -> None:
    """The real path: a Pi's kernel has it, elsewhere the reader says None without an error."""
    model = Path("/proc/device-tree/model")
    is_pi = model.exists() and "Raspberry Pi" in model.read_text(errors="replace")
    assert (read_firmware_flags(THROTTLED_GLOB) is not None) == is_pi


def _config(tmp_path: Path) -> str:
    prom = tmp_path / "edge_agent.prom"
    return f"""
[daemon]
profile = "x86-dev"
state_dir = "{tmp_path / "state"}"
prometheus_textfile = "{prom}"
prometheus_interval_s = 1

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = 4
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
"""


def test_an_under_voltage_pi_shows_in_status_telemetry_and_prometheus(tmp_path: Path) -> None:
    flags = tmp_path / "get_throttled"
    flags.write_text("50005\n")
    config = parse_config(_config(tmp_path), "unit.toml")
    d = Daemon.from_config(config, None, firmware_flags_glob=str(flags))
    d.run(duration_s=1.2)
    status = d.status()
    assert status["power"]["under_voltage"] == 1
    assert status["power"]["raw"] == 0x50005
    counters = d.metrics.values()  # the telemetry message's counters are this dict
    assert counters["power.under_voltage"] == 1
    assert counters["power.throttled_occurred"] == 1
    assert counters["power.soft_temp_limit"] == 0
    prom = (tmp_path / "edge_agent.prom").read_text()
    assert "\nedge_agent_power_under_voltage 1\n" in prom
    assert "\nedge_agent_power_firmware_flags 327685\n" in prom
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool not found: apt-get install prometheus"
    lint = subprocess.run(  # noqa: PLW1510 - asserted below
        [promtool, "check", "metrics"], input=prom, capture_output=True, text=True, timeout=60
    )
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")
    assert [e["kind"] for e in d.events].count("under_voltage") == 1
    status.update(age_s=0.0, stale=False, status_file="s.json")
    assert (
        "  power      NOW under voltage, throttled; since boot under voltage, throttled "
        "(0x50005)" in format_status(status).splitlines()
    )


def test_without_the_file_there_is_no_power_field_and_no_error(tmp_path: Path) -> None:
    config = parse_config(_config(tmp_path), "unit.toml")
    d = Daemon.from_config(config, None, firmware_flags_glob=str(tmp_path / "absent"))
    d.run(duration_s=1.2)
    status = d.status()
    assert status["power"] is None
    assert not [k for k in d.metrics.values() if k.startswith("power.")]
    assert "edge_agent_power_" not in (tmp_path / "edge_agent.prom").read_text()
    status.update(age_s=0.0, stale=False, status_file="s.json")
    assert "power" not in format_status(status)
