"""Firmware profiles: the shipped files, their schema, auto-detection and the reports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge_agent.config.profiles import (
    OVERRIDES_DIR_ENV,
    PROFILES_DIR_ENV,
    DeviceFacts,
    FirmwareProfile,
    default_profiles_dir,
    detect_profile,
    explain_profile,
    format_profiles_table,
    get_profile,
    load_profile_file,
    load_profiles,
    read_device_facts,
    select_profile,
    shipped_profiles_dir,
)
from edge_agent.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "firmware_profiles"
MiB = 1024 * 1024
GiB = 1024 * MiB

SHIPPED_NAMES = {
    "cm4",
    "generic-arm64",
    "pi-3b-plus",
    "pi-zero-2w",
    "pi4-1gb",
    "pi4-2gb",
    "pi4-4gb",
    "pi4-8gb",
    "pi5-4gb",
    "pi5-8gb",
    "x86-dev",
}

#: Nominal RAM (MiB) of the smallest device each device profile is for.
NOMINAL_RAM_MIB = {
    "pi-zero-2w": 512,
    "pi-3b-plus": 1024,
    "pi4-1gb": 1024,
    "pi4-2gb": 2048,
    "pi4-4gb": 4096,
    "pi4-8gb": 8192,
    "pi5-4gb": 4096,
    "pi5-8gb": 8192,
    "cm4": 1024,
    "generic-arm64": 1024,
}


@pytest.fixture(scope="module")
def profiles() -> dict[str, FirmwareProfile]:
    return load_profiles(SHIPPED)


def detect(profiles: dict[str, FirmwareProfile], model: str | None, mem: int, machine: str) -> str:
    return detect_profile(
        profiles, device_tree_model=model, mem_total_bytes=mem, machine=machine
    ).name


# ----------------------------------------------------------------------------- shipped profiles
def test_every_shipped_profile_validates_and_is_named_after_its_file(
    profiles: dict[str, FirmwareProfile],
) -> None:
    assert set(profiles) == SHIPPED_NAMES
    for path in SHIPPED.glob("*.toml"):
        assert load_profile_file(path).name == path.stem


def test_default_directory_is_the_package_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILES_DIR_ENV, raising=False)
    monkeypatch.setenv(OVERRIDES_DIR_ENV, "/nonexistent")
    assert default_profiles_dir() == shipped_profiles_dir()
    assert shipped_profiles_dir().resolve() == SHIPPED.resolve()
    assert shipped_profiles_dir().parts[-2:] == ("edge_agent", "firmware_profiles")
    assert set(load_profiles()) == SHIPPED_NAMES


def test_profiles_d_adds_and_replaces_profiles(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The operator's /etc/edge-agent/profiles.d: new boards, and shipped profiles replaced."""
    monkeypatch.delenv(PROFILES_DIR_ENV, raising=False)
    monkeypatch.setenv(OVERRIDES_DIR_ENV, str(tmp_path))
    text = (SHIPPED / "pi-zero-2w.toml").read_text()
    fewer = text.replace("max_agents = 4000", "max_agents = 3000")
    (tmp_path / "pi-zero-2w.toml").write_text(fewer)
    (tmp_path / "my-board.toml").write_text(text.replace('"pi-zero-2w"', '"my-board"'))
    profiles = load_profiles()
    assert set(profiles) == SHIPPED_NAMES | {"my-board"}
    assert profiles["pi-zero-2w"].max_agents == 3000
    assert profiles["my-board"].max_agents == 4000
    (tmp_path / "broken.toml").write_text('name = "broken"\ntick_hz = -1\n')
    with pytest.raises(ConfigError, match=r"broken.toml:\d+: "):
        load_profiles()


def test_environment_variable_overrides_the_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shutil.copy(SHIPPED / "x86-dev.toml", tmp_path / "x86-dev.toml")
    monkeypatch.setenv(PROFILES_DIR_ENV, str(tmp_path))
    assert default_profiles_dir() == tmp_path
    assert set(load_profiles()) == {"x86-dev"}


def test_directory_without_profiles_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no firmware profiles \(\*\.toml\)"):
        load_profiles(tmp_path)


@pytest.mark.parametrize("name", sorted(NOMINAL_RAM_MIB))
def test_device_profiles_leave_most_memory_to_the_os(
    profiles: dict[str, FirmwareProfile], name: str
) -> None:
    profile = profiles[name]
    ram = NOMINAL_RAM_MIB[name]
    assert profile.memory_max_mb <= 0.35 * ram
    assert profile.total_budget_mb <= profile.memory_high_mb < profile.memory_max_mb
    assert profile.base_mb < profile.soft_limit_mb < profile.total_budget_mb


def test_zero_2w_numbers(profiles: dict[str, FirmwareProfile]) -> None:
    zero = profiles["pi-zero-2w"]
    assert zero.memory_budget_mb == 96
    assert zero.memory_max_mb == 160
    assert zero.total_budget_bytes == (96 + 40) * MiB
    assert zero.base_bytes == 40 * MiB
    assert zero.soft_limit_bytes == 124 * MiB
    assert zero.thermal.zone_glob == "/sys/class/thermal/thermal_zone*/temp"
    assert zero.tick_period_s == pytest.approx(0.2)


def test_cm4_tiers_follow_module_memory(profiles: dict[str, FirmwareProfile]) -> None:
    cm4 = profiles["cm4"]
    budgets = {gib: cm4.for_memory(int(gib * GiB * 0.93)).memory_budget_mb for gib in (1, 2, 4, 8)}
    assert budgets == {1: 192, 2: 448, 4: 1024, 8: 2048}
    eight = cm4.for_memory(8 * GiB)
    assert eight.memory_tiers == ()
    assert (eight.memory_max_mb, eight.max_agents, eight.base_mb) == (2560, 100000, 48)
    for gib in (1, 2, 4, 8):
        assert cm4.for_memory(gib * GiB).memory_max_mb <= 0.35 * gib * 1024


def test_profile_without_tiers_is_its_own_resolution(profiles: dict[str, FirmwareProfile]) -> None:
    assert profiles["pi4-4gb"].for_memory(4 * GiB) is profiles["pi4-4gb"]


# ----------------------------------------------------------------------------------- detection
@pytest.mark.parametrize(
    ("model", "mem", "machine", "expected"),
    [
        ("Raspberry Pi 4 Model B Rev 1.4", 4 * GiB, "aarch64", "pi4-4gb"),
        ("Raspberry Pi 4 Model B Rev 1.4", 3794 * MiB, "aarch64", "pi4-4gb"),
        ("Raspberry Pi 4 Model B Rev 1.1", 922 * MiB, "armv7l", "pi4-1gb"),
        ("Raspberry Pi 4 Model B Rev 1.2", 1848 * MiB, "aarch64", "pi4-2gb"),
        ("Raspberry Pi 4 Model B Rev 1.5", 7810 * MiB, "aarch64", "pi4-8gb"),
        ("Raspberry Pi 400 Rev 1.0", 3790 * MiB, "aarch64", "pi4-4gb"),
        ("Raspberry Pi Zero 2 W Rev 1.0", 427 * MiB, "aarch64", "pi-zero-2w"),
        ("Raspberry Pi Zero 2 W Rev 1.0", 512 * MiB, "armv7l", "pi-zero-2w"),
        ("Raspberry Pi 3 Model B Plus Rev 1.3", 920 * MiB, "armv7l", "pi-3b-plus"),
        ("Raspberry Pi Compute Module 4 Rev 1.1", 4 * GiB, "aarch64", "cm4"),
        ("Raspberry Pi Compute Module 4 Rev 1.0", 922 * MiB, "aarch64", "cm4"),
        ("Raspberry Pi 5 Model B Rev 1.0", 4 * GiB, "aarch64", "pi5-4gb"),
        ("Raspberry Pi 5 Model B Rev 1.0", 8 * GiB, "aarch64", "pi5-8gb"),
        ("Raspberry Pi 5 Model B Rev 1.0", 16 * GiB, "aarch64", "pi5-8gb"),
        ("Raspberry Pi 5 Model B Rev 1.0", 2 * GiB, "aarch64", "generic-arm64"),
        (None, 16 * GiB, "x86_64", "x86-dev"),
        ("Radxa ROCK 5B", 2 * GiB, "aarch64", "generic-arm64"),
        (None, 4 * GiB, "arm64", "generic-arm64"),
    ],
)
def test_detection(
    profiles: dict[str, FirmwareProfile], model: str | None, mem: int, machine: str, expected: str
) -> None:
    assert detect(profiles, model, mem, machine) == expected


def test_detected_cm4_gets_the_tier_of_its_memory(profiles: dict[str, FirmwareProfile]) -> None:
    cm4 = detect_profile(
        profiles,
        device_tree_model="Raspberry Pi Compute Module 4 Rev 1.1",
        mem_total_bytes=7810 * MiB,
        machine="aarch64",
    )
    assert (cm4.name, cm4.memory_budget_mb, cm4.memory_max_mb) == ("cm4", 2048, 2560)


def test_explicit_override_wins_over_detection(profiles: dict[str, FirmwareProfile]) -> None:
    chosen = detect_profile(
        profiles,
        device_tree_model="Raspberry Pi 4 Model B Rev 1.4",
        mem_total_bytes=4 * GiB,
        machine="aarch64",
        override="pi-zero-2w",
    )
    assert chosen.name == "pi-zero-2w"
    auto = detect_profile(
        profiles,
        device_tree_model="Raspberry Pi 4 Model B Rev 1.4",
        mem_total_bytes=4 * GiB,
        machine="aarch64",
        override="auto",
    )
    assert auto.name == "pi4-4gb"


def test_unknown_override_names_the_known_profiles(profiles: dict[str, FirmwareProfile]) -> None:
    with pytest.raises(ConfigError, match=r"unknown firmware profile 'pi9'; known: cm4, generic"):
        detect_profile(
            profiles, device_tree_model=None, mem_total_bytes=GiB, machine="x86_64", override="pi9"
        )


def test_no_match_tells_what_to_do(profiles: dict[str, FirmwareProfile]) -> None:
    with pytest.raises(ConfigError) as info:
        detect(profiles, None, 4 * GiB, "riscv64")
    assert "no firmware profile matches this device (no device-tree model, 4096 MiB" in str(
        info.value
    )
    assert "set [daemon] profile to one of: cm4," in str(info.value)
    with pytest.raises(ConfigError, match="no firmware profile matches"):
        detect(profiles, "Some Board", 512 * MiB, "aarch64")  # below generic-arm64's minimum


#: A valid profile whose line numbers the tests below rely on.
BASE_PROFILE = """\
name = "{name}"
description = "test profile"
memory_budget_mb = 256
base_mb = 64
soft_limit_mb = 300
memory_high_mb = 320
memory_max_mb = 384
inference_threads = 2
tick_hz = 10.0
history_capacity = 64
snapshot_interval_s = 600
max_snapshot_writes_per_hour = 12
watchdog_interval_s = 30
telemetry_interval_s = 15
max_agents = 10000

[match]
machine = ["x86_64"]

[thermal]
throttle_c = 80.0
critical_c = 90.0
throttled_tick_factor = 0.5
"""


def _write_profile(directory: Path, name: str, **replace: str) -> Path:
    """BASE_PROFILE named ``name`` in ``directory``, with some lines replaced."""
    text = BASE_PROFILE.format(name=name)
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def test_equally_specific_matches_are_refused(tmp_path: Path) -> None:
    _write_profile(tmp_path, "dev-a")
    _write_profile(tmp_path, "dev-b")
    profiles = load_profiles(tmp_path)
    with pytest.raises(ConfigError, match="profiles dev-a, dev-b match this device"):
        detect(profiles, None, 8 * GiB, "x86_64")


def test_narrower_memory_range_is_more_specific(tmp_path: Path) -> None:
    _write_profile(tmp_path, "wide")
    _write_profile(
        tmp_path,
        "narrow",
        **{'machine = ["x86_64"]': 'machine = ["x86_64"]\nmin_mem_mib = 4096'},
    )
    profiles = load_profiles(tmp_path)
    assert detect(profiles, None, 8 * GiB, "x86_64") == "narrow"
    assert detect(profiles, None, 2 * GiB, "x86_64") == "wide"


def test_profile_without_patterns_is_only_chosen_by_name(tmp_path: Path) -> None:
    _write_profile(tmp_path, "named-only", **{'machine = ["x86_64"]': "min_mem_mib = 0"})
    profiles = load_profiles(tmp_path)
    assert not profiles["named-only"].match.auto_detectable
    with pytest.raises(ConfigError, match="no firmware profile matches"):
        detect(profiles, None, 8 * GiB, "x86_64")
    assert select_profile("named-only", profiles).name == "named-only"


def test_select_profile_uses_the_given_facts(profiles: dict[str, FirmwareProfile]) -> None:
    zero = DeviceFacts("Raspberry Pi Zero 2 W Rev 1.0", 427 * MiB, "aarch64")
    assert select_profile("auto", profiles, zero).name == "pi-zero-2w"
    assert select_profile("pi4-2gb", profiles, zero).name == "pi4-2gb"
    cm4_2gb = DeviceFacts("Raspberry Pi Compute Module 4 Rev 1.1", 1848 * MiB, "aarch64")
    assert select_profile("cm4", profiles, cm4_2gb).memory_budget_mb == 448
    assert get_profile("cm4", profiles).memory_budget_mb == 192


def test_read_device_facts(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    facts = read_device_facts([tmp_path / "missing", model])
    assert facts.device_tree_model == "Raspberry Pi 4 Model B Rev 1.4"
    assert facts.mem_total_bytes > 64 * MiB
    assert facts.machine
    assert facts.mem_total_mib == facts.mem_total_bytes // MiB
    assert read_device_facts([tmp_path / "missing"]).device_tree_model is None


# --------------------------------------------------------------------------------- bad profiles
def test_name_must_match_the_file(tmp_path: Path) -> None:
    path = _write_profile(tmp_path, "good")
    path.rename(tmp_path / "other.toml")
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)
    assert info.value.problems == [
        f"{tmp_path / 'other.toml'}:1: name: must equal the file name without .toml ('other'), "
        "got 'good'"
    ]


def test_inconsistent_memory_numbers_point_at_their_lines(tmp_path: Path) -> None:
    path = _write_profile(
        tmp_path,
        "bad-mem",
        **{
            "soft_limit_mb = 300": "soft_limit_mb = 320",
            "memory_high_mb = 320": "memory_high_mb = 319",
            "memory_max_mb = 384": "memory_max_mb = 319",
        },
    )
    with pytest.raises(ConfigError) as info:
        load_profile_file(path)
    assert info.value.problems == [
        f"{path}:5: soft_limit_mb: must be between base_mb (64) and memory_budget_mb + base_mb "
        "(320), exclusive",
        f"{path}:6: memory_high_mb: must be >= memory_budget_mb + base_mb (320), or systemd "
        "throttles a daemon that keeps to its budget",
        f"{path}:7: memory_max_mb: must be > memory_high_mb (319)",
    ]
    assert str(info.value) == "\n".join(info.value.problems)


def test_unknown_key_wrong_type_and_bad_regex(tmp_path: Path) -> None:
    path = _write_profile(
        tmp_path,
        "bad-misc",
        **{
            "inference_threads = 2": "inference_thread = 2",
            "history_capacity = 64": 'history_capacity = "64"',
            'machine = ["x86_64"]': 'machine = ["x86_64("]',
            "throttled_tick_factor = 0.5": "throttled_tick_factor = 1.5",
        },
    )
    with pytest.raises(ConfigError) as info:
        load_profile_file(path)
    assert info.value.problems == [
        f"{path}:1: inference_threads: required key is missing",
        f"{path}:8: inference_thread: unknown key; did you mean 'inference_threads'?",
        f"{path}:10: history_capacity: expected an integer, got string '64'",
        f"{path}:18: match.machine: bad regex 'x86_64(': missing ), unterminated subpattern at "
        "position 6",
        f"{path}:23: thermal.throttled_tick_factor: must be <= 1.0, got 1.5",
    ]


def test_thermal_limits_must_be_ordered(tmp_path: Path) -> None:
    path = _write_profile(tmp_path, "hot", **{"critical_c = 90.0": "critical_c = 80.0"})
    with pytest.raises(ConfigError) as info:
        load_profile_file(path)
    assert info.value.problems == [f"{path}:22: thermal.critical_c: must be > throttle_c (80 °C)"]


def test_problems_of_every_bad_file_are_reported(tmp_path: Path) -> None:
    one = _write_profile(tmp_path, "one", **{"tick_hz = 10.0": "tick_hz = 0"})
    two = _write_profile(tmp_path, "two", **{"max_agents = 10000": "max_agents = -1"})
    _write_profile(tmp_path, "three")
    (tmp_path / "four.toml").write_text('name = "four"\ndescription = "x"\nbase_mb = [1\n')
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)
    assert info.value.path == str(tmp_path)
    assert info.value.problems == [
        f"{tmp_path / 'four.toml'}:3: syntax: Unclosed array (at end of document)",
        f"{one}:9: tick_hz: must be > 0.0, got 0",
        f"{two}:15: max_agents: must be >= 1, got -1",
    ]


def test_tiers_must_ascend_and_be_consistent(tmp_path: Path) -> None:
    tiers = (
        "\n[[memory_tiers]]\nmin_mem_mib = 4096\nmemory_budget_mb = 2048\nsoft_limit_mb = 2000\n"
        "memory_high_mb = 2304\nmemory_max_mb = 2560\nmax_agents = 10\n"
        "\n[[memory_tiers]]\nmin_mem_mib = 2048\nmemory_budget_mb = 512\nsoft_limit_mb = 60\n"
        "memory_high_mb = 700\nmemory_max_mb = 800\nmax_agents = 10\n"
    )
    path = _write_profile(tmp_path, "tiers")
    path.write_text(path.read_text() + tiers)
    # Lines 24-31: the first tier, 33-39: the second.
    with pytest.raises(ConfigError) as info:
        load_profile_file(path)
    assert info.value.problems == [
        f"{path}:34: memory_tiers[1].min_mem_mib: tiers must ascend: must be > 4096",
        f"{path}:36: memory_tiers[1].soft_limit_mb: must be between base_mb (64) and "
        "memory_budget_mb + base_mb (576), exclusive",
    ]


def test_snapshot_rate_and_watchdog_are_checked(tmp_path: Path) -> None:
    path = _write_profile(
        tmp_path,
        "rates",
        **{
            "snapshot_interval_s = 600": "snapshot_interval_s = 10",
            "tick_hz = 10.0": "tick_hz = 0.1",
        },
    )
    with pytest.raises(ConfigError) as info:
        load_profile_file(path)
    assert info.value.problems == [
        f"{path}:11: snapshot_interval_s: 10 s means 360 snapshots an hour, more than "
        "max_snapshot_writes_per_hour (12)",
        f"{path}:13: watchdog_interval_s: must be at least twice the slowest (throttled) tick "
        "period, 20 s",
    ]


# ------------------------------------------------------------------------------------- reports
def test_profiles_table_lists_every_profile_with_its_numbers(
    profiles: dict[str, FirmwareProfile],
) -> None:
    lines = format_profiles_table(profiles).splitlines()
    assert lines[0].split()[:4] == ["NAME", "MEMORY", "MATCH", "BUDGET"]
    assert [line.split()[0] for line in lines[1:]] == sorted(SHIPPED_NAMES)
    zero = next(line for line in lines if line.startswith("pi-zero-2w "))
    assert zero.split()[1:11] == ["any", "96", "40", "124", "144", "160", "2", "5", "32", "4000"]
    cm4 = next(line for line in lines if line.startswith("cm4 "))
    assert cm4.endswith("(+3 memory tiers)")
    pi4 = next(line for line in lines if line.startswith("pi4-2gb "))
    assert pi4.split()[1:3] == ["1536-3071", "MiB"]


def test_explain_profile_says_what_the_numbers_mean(profiles: dict[str, FirmwareProfile]) -> None:
    text = explain_profile(profiles["pi-zero-2w"])
    assert text.splitlines()[0] == "pi-zero-2w: Raspberry Pi Zero 2 W (512 MB, 4x Cortex-A53)"
    assert "device-tree model: '^Raspberry Pi Zero 2'" in text
    assert "budget + base                    136  the memory budget's total" in text
    assert "systemd MemoryMax" in text
    assert "every agent steps every 200 ms" in text
    assert "6.4 s at tick_hz" in text
    assert "every 30 min (2 an hour)" in text
    assert "(2.5 Hz by default)" in text
    cm4 = explain_profile(profiles["cm4"])
    assert "with >= 6144 MiB of RAM: budget 2048, soft 1960, MemoryHigh 2304" in cm4


def test_documented_profile_table_matches_the_files(profiles: dict[str, FirmwareProfile]) -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    rows = {
        cells[0].strip("`"): cells
        for line in doc.splitlines()
        if line.startswith("| `")
        and (cells := [c.strip() for c in line.strip("|").split(" | ")])[0].strip("`") in profiles
    }
    assert set(rows) == SHIPPED_NAMES
    for name, p in profiles.items():
        documented = rows[name][4:]
        actual = [
            p.memory_budget_mb,
            p.base_mb,
            p.soft_limit_mb,
            p.memory_high_mb,
            p.memory_max_mb,
            p.inference_threads,
            f"{p.tick_hz:g}",
            p.history_capacity,
            f"{p.snapshot_interval_s:g}",
            p.max_snapshot_writes_per_hour,
            f"{p.thermal.throttle_c:g}/{p.thermal.critical_c:g}",
            p.max_agents,
        ]
        assert documented == [str(v) for v in actual], name
