"""The daemon config: schema, line-accurate errors, the TOML locator, the demo config."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.aif.settings import AifSettings
from edge_agent.config.daemon import (
    BuiltinModel,
    BundleModel,
    DaemonConfig,
    GroupConfig,
    LogSink,
    MqttSink,
    MqttSource,
    SimSink,
    SimSource,
    check_config,
    default_config,
    default_config_text,
    expand_path,
    load_config,
    parse_config,
    profile_problems,
    read_config,
)
from edge_agent.config.mqtt import MqttSection
from edge_agent.config.profiles import DeviceFacts, FirmwareProfile, load_profiles
from edge_agent.config.toml_lines import Loc, TomlPositions, format_loc, normalize_loc
from edge_agent.daemon.admission import admit
from edge_agent.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "tests" / "data" / "configs"
MiB = 1024 * 1024
GiB = 1024 * MiB

MINIMAL = """\
[[groups]]
name = "grid"
model = { type = "builtin", name = "grid10" }
count = 10
source = { type = "sim" }
sink = { type = "sim" }
"""


@pytest.fixture(scope="module")
def profiles() -> dict[str, FirmwareProfile]:
    return load_profiles(REPO / "firmware_profiles")


def problems_of(path: Path, profiles: dict[str, FirmwareProfile] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, profiles=profiles)
    assert str(info.value) == "\n".join(info.value.problems)
    assert info.value.path == str(path)
    return info.value.problems


# --------------------------------------------------------------------------- the demo config
def test_default_config_is_the_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    config = default_config()
    assert config.daemon.profile == "x86-dev"
    assert config.daemon.state_dir == tmp_path / "xdg" / "edge-agent"
    assert config.daemon.status_path == tmp_path / "xdg" / "edge-agent" / "status.json"
    assert [(g.name, g.count, g.precision) for g in config.groups] == [
        ("grid", 1000, "int8"),
        ("tmaze", 1000, "int8"),
    ]
    assert [g.model for g in config.groups] == [
        BuiltinModel(type="builtin", name="grid10"),
        BuiltinModel(type="builtin", name="tmaze"),
    ]
    assert all(g.source == SimSource(type="sim") for g in config.groups)
    assert all(g.sink == SimSink(type="sim") for g in config.groups)
    assert config.mqtt.enabled is False
    assert config.total_agents == 2000


def test_default_state_dir_falls_back_to_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_config().daemon.state_dir == tmp_path / ".local" / "state" / "edge-agent"


def test_default_config_suits_its_profile(profiles: dict[str, FirmwareProfile]) -> None:
    config = default_config()
    profile = profiles[config.daemon.profile]
    assert profile_problems(config, profile) == []
    assert config.daemon.tick_hz_for(profile) == profile.tick_hz
    assert [g.history_capacity_for(profile) for g in config.groups] == [64, 64]
    assert "[[groups]]" in default_config_text()


# ---------------------------------------------------------------------------- a valid config
def test_full_config_loads_with_resolved_paths(
    monkeypatch: pytest.MonkeyPatch, profiles: dict[str, FirmwareProfile]
) -> None:
    monkeypatch.delenv("EDGE_AGENT_TEST_RUN_DIR", raising=False)
    config = load_config(CONFIGS / "full.toml", profiles=profiles)
    daemon = config.daemon
    assert daemon.profile == "pi4-4gb"
    assert daemon.state_dir == CONFIGS / "state"
    assert daemon.status_path == Path("/run/edge-agent/status.json")
    assert daemon.trusted_keys_dir == CONFIGS / "keys"
    assert daemon.tick_hz == 20.0
    assert daemon.log_level == "debug"
    grid, neural = config.groups
    assert grid.source == MqttSource(type="mqtt", topic="sensors/grid/+")
    assert grid.sink == MqttSink(type="mqtt", topic="actuators/grid")
    assert (grid.count, grid.history_capacity, grid.priority, grid.seed) == (1500, 128, 7, 42)
    assert grid.table_or_default(AifSettings).policy_len == 2
    assert grid.table_or_default(AifSettings).gamma == 8.0
    assert grid.table_or_default(AifSettings).action_selection == "stochastic"
    assert grid.table_or_default(AifSettings).control_fac_idx == (0,)
    assert neural.model == BundleModel(type="bundle", path=CONFIGS / "bundles" / "neural.tar")
    assert neural.sink == LogSink(type="log")
    assert neural.history_capacity_for(profiles["pi4-4gb"]) == 128
    assert neural.table_or_default(AifSettings).policy_len == 1
    mqtt = config.mqtt
    assert (mqtt.host, mqtt.port, mqtt.fleet, mqtt.effective_node_id()) == (
        "broker.local",
        8883,
        "site-a",
        "pi-17",
    )
    assert mqtt.password_file == Path("/etc/edge-agent/mqtt.password")
    assert mqtt.tls.cert_file == CONFIGS / "client.pem"
    assert mqtt.outbox_max_bytes == 16_000_000
    assert config.group("neural-1") is neural
    with pytest.raises(KeyError):
        config.group("nope")


def test_environment_reference_in_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_TEST_RUN_DIR", "/tmp/ea-run")
    config = load_config(CONFIGS / "full.toml")
    assert config.daemon.status_path == Path("/tmp/ea-run/status.json")


def test_config_is_frozen() -> None:
    config = parse_config(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.daemon.profile = "x86-dev"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.groups[0].count = 5  # type: ignore[misc]


def test_minimal_config_takes_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.daemon.profile == "auto"
    assert config.daemon.state_dir == Path("/var/lib/edge-agent")
    assert config.daemon.status_path == Path("/var/lib/edge-agent/status.json")
    assert config.daemon.tick_hz is None
    assert config.daemon.trusted_keys_dir is None
    group = config.groups[0]
    assert (group.priority, group.precision, group.seed, group.history_capacity) == (
        5,
        "int8",
        0,
        None,
    )
    assert config.mqtt == MqttSection()
    assert config.mqtt.effective_node_id()
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", config.mqtt.effective_node_id())


def test_empty_optional_paths_mean_default_and_relative_paths_follow_base_dir() -> None:
    text = '[daemon]\nstatus_file = ""\ntrusted_keys_dir = "keys"\n' + MINIMAL
    assert parse_config(text).daemon.trusted_keys_dir == Path("keys")
    config = parse_config(text, base_dir="/etc/edge-agent")
    assert config.daemon.status_file is None
    assert config.daemon.trusted_keys_dir == Path("/etc/edge-agent/keys")


# ------------------------------------------------------------------------- errors, with lines
def test_unknown_keys(profiles: dict[str, FirmwareProfile]) -> None:
    path = CONFIGS / "unknown_keys.toml"
    assert problems_of(path, profiles) == [
        f"{path}:3: daemon.log_levl: unknown key; did you mean 'log_level'?",
        f"{path}:14: groups[1].model.path: required key is missing",
        f"{path}:14: groups[1].model.pth: unknown key; did you mean 'path'?",
        f"{path}:19: groups[1].settings.gama: unknown key; did you mean 'gamma'?",
        f"{path}:22: mqtt.tls.enable: unknown key; did you mean 'enabled'?",
    ]


def test_unknown_key_without_a_close_match_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[mqtt]\nzzz = 1\n" + MINIMAL, "c.toml")
    assert info.value.problems == [
        "c.toml:2: mqtt.zzz: unknown key (allowed: enabled, host, port, fleet, node_id, "
        "labels, keepalive_s, username, password_file, tls, outbox_max_bytes, "
        "outbox_commit_interval_s, hub_keys_dir, telemetry_interval_s, action_qos, "
        "command_max_ttl_s, reconnect_initial_s, reconnect_max_s, io_silent_after_s)"
    ]


def test_a_key_of_another_case_is_named_before_a_close_one() -> None:
    """``lr_pa`` is ``lr_pA`` in another case (difflib alone rates ``lr_pD`` as close)."""
    text = MINIMAL + '[groups.learning]\nA = "all"\nlr_pa = 0.1\nLR_PD = 0.2\nforgeting = 0.1\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.toml")
    assert info.value.problems == [
        "c.toml:9: groups[0].learning.lr_pa: unknown key; did you mean 'lr_pA'? "
        "(keys are case-sensitive)",
        "c.toml:10: groups[0].learning.LR_PD: unknown key; did you mean 'lr_pD'? "
        "(keys are case-sensitive)",
        "c.toml:11: groups[0].learning.forgeting: unknown key; did you mean 'forgetting'?",
    ]


def test_a_key_of_another_table_or_the_profile_says_where_it_belongs() -> None:
    text = (
        '[daemon]\nsnapshot_interval_s = 30\n\n[mqtt]\ntick_hz = 5\n\n'
        + MINIMAL
        + "lr_pA = 0.1\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.toml")
    profile = (
        "the firmware profile ('edge-agent profile show NAME' shows it; yours go in "
        "/etc/edge-agent/profiles.d/NAME.toml, docs/configuration.md#where-profiles-are-found)"
    )
    assert info.value.problems == [
        f"c.toml:2: daemon.snapshot_interval_s: unknown key; snapshot_interval_s belongs in "
        f"{profile}, not [daemon]",
        f"c.toml:5: mqtt.tick_hz: unknown key; tick_hz belongs in [daemon] or {profile}, "
        "not [mqtt]",
        "c.toml:13: groups[0].lr_pA: unknown key; lr_pA belongs in [groups.learning], "
        "not [[groups]]",
    ]


def test_wrong_types() -> None:
    path = CONFIGS / "wrong_types.toml"
    assert problems_of(path) == [
        f"{path}:2: daemon.tick_hz: expected a number, got string 'fast'",
        f"{path}:3: daemon.state_dir: expected a string, got integer 17",
        f"{path}:8: groups[0].count: expected an integer, got string '1000'",
        f"{path}:10: groups[0].sink: expected a table, got string 'log'",
        f"{path}:15: groups[1].count: expected an integer, got float 1.5",
        f"{path}:16: groups[1].priority: expected an integer, got boolean true",
        f"{path}:23: groups[1].settings.control_fac_idx[1]: expected an integer, got string 'one'",
        f"{path}:27: mqtt.enabled: expected true or false, got string 'yes'",
    ]


def test_out_of_bounds() -> None:
    path = CONFIGS / "out_of_bounds.toml"
    assert problems_of(path) == [
        f"{path}:2: daemon.tick_hz: must be > 0.0, got 0.0",
        f"{path}:14: groups[1].count: must be >= 1, got 0",
        f"{path}:15: groups[1].priority: must be <= 9, got 10",
        f"{path}:16: groups[1].history_capacity: must be <= 65536, got 100000",
        f"{path}:19: groups[1].settings.policy_len: must be <= 8, got 9",
        f"{path}:19: groups[1].settings.gamma: must be > 0.0, got -1.0",
        f"{path}:22: mqtt.port: must be <= 65535, got 70000",
    ]


def test_duplicate_group_names() -> None:
    path = CONFIGS / "duplicate_groups.toml"
    assert problems_of(path) == [
        f"{path}:17: groups[2].name: duplicate group name 'grid' (first used in groups[0])"
    ]


def test_bad_toml_syntax() -> None:
    path = CONFIGS / "bad_syntax.toml"
    assert problems_of(path) == [
        f"{path}:6: syntax: Expected newline or end of document after a statement (column 12)"
    ]


def test_missing_keys_point_at_their_table_header() -> None:
    path = CONFIGS / "missing_keys.toml"
    assert problems_of(path) == [
        f"{path}:11: groups[1].count: required key is missing",
        f"{path}:16: groups[1].model.path: required key is missing",
    ]


def test_missing_groups_is_reported_at_line_1() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[daemon]\nprofile = "auto"\n', "c.toml")
    assert info.value.problems == ["c.toml:1: groups: required key is missing"]
    with pytest.raises(ConfigError) as info:
        parse_config("groups = []\n", "c.toml")
    assert info.value.problems == ["c.toml:1: groups: must have at least 1 items, got 0"]


def test_mqtt_endpoints_need_mqtt_enabled() -> None:
    path = CONFIGS / "mqtt_disabled.toml"
    assert problems_of(path) == [
        f"{path}:5: groups[0].source: an mqtt source needs [mqtt] enabled = true",
        f"{path}:6: groups[0].sink: an mqtt sink needs [mqtt] enabled = true",
    ]


def test_unknown_profile_name_is_reported_only_when_profiles_are_given(
    profiles: dict[str, FirmwareProfile],
) -> None:
    text = '[daemon]\nprofile = "pi9"\n' + MINIMAL
    assert parse_config(text).daemon.profile == "pi9"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.toml", profiles=profiles)
    assert info.value.problems[0].startswith(
        "c.toml:2: daemon.profile: unknown firmware profile 'pi9'; known: auto, cm4, "
    )


def test_unknown_union_type_points_at_the_type_key() -> None:
    text = MINIMAL.replace('source = { type = "sim" }', '[groups.source]\ntype = "pigeon"')
    text = text.replace('sink = { type = "sim" }\n', "") + '[groups.sink]\ntype = "sim"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.toml")
    assert info.value.problems == [
        "c.toml:6: groups[0].source.type: unknown type 'pigeon'; expected one of 'sim', 'mqtt'"
    ]
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL.replace('sink = { type = "sim" }', 'sink = { typ = "log" }'), "c.toml")
    assert info.value.problems == [
        "c.toml:6: groups[0].sink: required key 'type' is missing (one of 'sim', 'mqtt', 'log')"
    ]


@pytest.mark.parametrize(
    ("source", "sink", "problem"),
    [
        ('"a/+/b"', '"x/y"', None),
        ('"a/#"', '"x/y"', None),
        ('"#"', '"x/y"', None),
        ('"a/b+"', '"x/y"', "groups[0].source.topic: '+' must be a whole topic level"),
        ('"a/#/b"', '"x/y"', "groups[0].source.topic: '#' must be the whole last topic level"),
        ('"a/b#"', '"x/y"', "groups[0].source.topic: '#' must be the whole last topic level"),
        ('"a"', '"x/+"', "groups[0].sink.topic: a publish topic cannot contain wildcards"),
        ('"a"', '""', "groups[0].sink.topic: must have at least 1 characters"),
    ],
)
def test_topics(source: str, sink: str, problem: str | None) -> None:
    text = (
        MINIMAL.replace(
            'source = { type = "sim" }', f'source = {{ type = "mqtt", topic = {source} }}'
        ).replace('sink = { type = "sim" }', f'sink = {{ type = "mqtt", topic = {sink} }}')
        + "[mqtt]\nenabled = true\n"
    )
    if problem is None:
        parse_config(text)
        return
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.toml")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"c.toml:{5 if 'source' in problem else 6}: {problem}")


def test_mqtt_cross_checks() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + '[mqtt]\nusername = ""\npassword_file = "pw"\n', "c.toml")
    assert info.value.problems == ["c.toml:9: mqtt.password_file: requires username to be set"]
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + '[mqtt.tls]\nenabled = true\nkey_file = "k"\n', "c.toml")
    assert info.value.problems == ["c.toml:7: mqtt.tls.cert_file: required when key_file is set"]


def test_unset_environment_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_AGENT_UNSET_FOR_TEST", raising=False)
    text = '[daemon]\nstate_dir = "${EDGE_AGENT_UNSET_FOR_TEST}/x"\n' + MINIMAL
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.toml")
    assert info.value.problems == [
        "c.toml:2: daemon.state_dir: environment variable EDGE_AGENT_UNSET_FOR_TEST is not set "
        "(write ${EDGE_AGENT_UNSET_FOR_TEST:-default})"
    ]


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(missing))}:1: <file>: cannot read"):
        load_config(missing)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'[daemon]\nprofile = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(binary)
    assert info.value.problems == [f"{binary}:2: syntax: not UTF-8 text (byte 20)"]


# --------------------------------------------------------------------------------- check-config
def test_check_config_summarises_a_good_file(profiles: dict[str, FirmwareProfile]) -> None:
    ok, report = check_config(CONFIGS / "full.toml", profiles=profiles)
    lines = report.splitlines()
    assert ok
    assert lines[0] == f"{CONFIGS / 'full.toml'}: OK"
    assert "  profile: pi4-4gb" in lines
    assert "  tick: 20 Hz" in lines
    assert "  groups: 2, 1510 agents (profile allows 50000)" in lines
    assert any(
        line.startswith("    grid      1500 x builtin grid10, int8, history 128, priority 7")
        for line in lines
    )
    assert "  mqtt: broker.local:8883 (TLS), fleet 'site-a', node 'pi-17'" in lines


def test_check_config_detects_the_profile_from_facts(profiles: dict[str, FirmwareProfile]) -> None:
    pi4 = DeviceFacts("Raspberry Pi 4 Model B Rev 1.4", 4 * GiB, "aarch64")
    ok, report = check_config(CONFIGS / "zero_too_many.toml", profiles=profiles, facts=pi4)
    assert ok
    assert (
        "  profile: pi4-4gb, auto-detected from 'Raspberry Pi 4 Model B Rev 1.4', 4096 MiB, "
        "machine 'aarch64'" in report.splitlines()
    )
    assert "  tick: 10 Hz (profile default)" in report.splitlines()


def test_check_config_refuses_more_agents_than_the_profile_allows(
    profiles: dict[str, FirmwareProfile],
) -> None:
    path = CONFIGS / "zero_too_many.toml"
    zero = DeviceFacts("Raspberry Pi Zero 2 W Rev 1.0", 427 * MiB, "aarch64")
    ok, report = check_config(path, profiles=profiles, facts=zero)
    assert not ok
    assert report == (
        f"{path}:14: groups[1].count: brings the total to 6000 agents, over max_agents 4000 of "
        "profile 'pi-zero-2w'"
    )


def test_check_config_reports_an_undetectable_device(
    profiles: dict[str, FirmwareProfile],
) -> None:
    path = CONFIGS / "zero_too_many.toml"
    riscv = DeviceFacts(None, 4 * GiB, "riscv64")
    ok, report = check_config(path, profiles=profiles, facts=riscv)
    assert not ok
    assert report.startswith(
        f"{path}:2: daemon.profile: no firmware profile matches this device (no device-tree "
        "model, 4096 MiB, machine 'riscv64')"
    )


def test_check_config_reports_schema_problems_as_lines(
    profiles: dict[str, FirmwareProfile],
) -> None:
    ok, report = check_config(CONFIGS / "out_of_bounds.toml", profiles=profiles)
    assert not ok
    assert report.splitlines() == problems_of(CONFIGS / "out_of_bounds.toml", profiles)


def test_check_config_reports_a_too_slow_tick(
    profiles: dict[str, FirmwareProfile], tmp_path: Path
) -> None:
    path = tmp_path / "slow.toml"
    path.write_text('[daemon]\nprofile = "x86-dev"\ntick_hz = 0.05\n' + MINIMAL)
    ok, report = check_config(path, profiles=profiles)
    assert not ok
    assert report == (
        f"{path}:3: daemon.tick_hz: 0.05 Hz is too slow for the 30 s watchdog of profile "
        "'x86-dev' (a throttled tick takes 40 s)"
    )


# ------------------------------------------------------------------------- admit: the one check
#: config file -> (line, field, start of the problem) of the first line ``admit`` refuses it with.
REFUSED = {
    "slow_tick": (
        3,
        "daemon.tick_hz",
        "0.01 Hz is too slow for the 30 s watchdog of profile "
        "'pi-zero-2w' (a throttled tick takes 200 s)",
    ),
    "unknown_profile": (2, "daemon.profile", "unknown firmware profile 'pi9-64gb'; known: auto, "),
    "unknown_model": (12, "groups[0].model.name", "unknown built-in model 'grid11'; known: "),
    "unknown_world": (12, "groups[0].source.world", "unknown built-in world 'maze'; known: "),
    "too_many_agents": (
        14,
        "groups[1].count",
        "brings the total to 6000 agents, over max_agents 4000 of profile 'pi-zero-2w'",
    ),
    "over_budget": (14, "groups[1].count", "agents "),
    "no_trusted_keys_dir": (
        3,
        "daemon.trusted_keys_dir",
        f"{CONFIGS / 'no-such-keys'}: trusted key directory does not exist",
    ),
    "no_password_file": (
        14,
        "mqtt.password_file",
        f"{CONFIGS / 'no-such.password'}: cannot read: ",
    ),
}


@pytest.fixture
def shipped_profiles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``load_profiles()`` sees the shipped profiles and no operator overrides."""
    monkeypatch.setenv("EDGE_AGENT_PROFILES_DIR", str(REPO / "firmware_profiles"))
    monkeypatch.setenv("EDGE_AGENT_PROFILES_OVERRIDES", str(tmp_path / "no-profiles.d"))


@pytest.mark.usefixtures("shipped_profiles")
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_admit_refuses_each_problem_at_the_line_of_its_key(name: str) -> None:
    path = CONFIGS / f"{name}.toml"
    with pytest.raises(ConfigError) as info:
        admit(read_config(path))
    line, field, problem = REFUSED[name]
    assert str(info.value).startswith(f"{path}:{line}: {field}: {problem}"), str(info.value)
    assert info.value.path == str(path)
    assert info.value.problems == [str(info.value).splitlines()[0]]


@pytest.mark.usefixtures("shipped_profiles")
def test_over_budget_names_the_group_line_then_the_totals() -> None:
    path = CONFIGS / "over_budget.toml"
    with pytest.raises(ConfigError) as info:
        admit(read_config(path))
    located, summary = str(info.value).splitlines()
    # The second [[groups]] table's count is on line 14 (not "line 4", its memory request).
    assert path.read_text().splitlines()[13] == "count = 3000"
    assert re.fullmatch(
        rf"{re.escape(str(path))}:14: groups\[1\]\.count: agents [0-9.]+ MiB brings the total to "
        r"[0-9.]+ MiB, over the 96\.0 MiB left",
        located,
    ), located
    assert summary.startswith(
        "configuration refused by the 136.0 MiB (142,606,336 bytes) budget of profile "
        "'pi-zero-2w': it needs "
    )
    assert summary.endswith(
        "To fit: reduce group 'tmaze' count (now 3000) or history_capacity, or choose a profile "
        "with a larger budget"
    )


@pytest.mark.usefixtures("shipped_profiles")
@pytest.mark.parametrize(
    "name", ["slow_tick", "unknown_profile", "unknown_model", "too_many_agents"]
)
def test_check_config_function_reports_what_admit_reports(name: str) -> None:
    path = CONFIGS / f"{name}.toml"
    ok, report = check_config(path)
    assert not ok
    with pytest.raises(ConfigError) as info:
        admit(read_config(path))
    assert report == str(info.value)


# ---------------------------------------------------------------------------------- expand_path
def test_expand_path() -> None:
    env = {"A": "/data", "EMPTY": ""}
    assert expand_path("${A}/x", environ=env) == Path("/data/x")
    assert expand_path("${B:-/opt}/x", environ=env) == Path("/opt/x")
    assert expand_path("${EMPTY:-/opt}/x", environ=env) == Path("/opt/x")
    assert expand_path("$A/x", environ=env) == Path("$A/x")
    assert expand_path("rel", Path("/etc/ea"), environ=env) == Path("/etc/ea/rel")
    assert expand_path("/abs", Path("/etc/ea"), environ=env) == Path("/abs")
    assert expand_path("~/x", environ=env) == Path.home() / "x"
    with pytest.raises(ValueError, match="environment variable B is not set"):
        expand_path("${B}/x", environ=env)


def test_records_built_in_code_are_checked_without_pydantic() -> None:
    group = GroupConfig(
        name="g",
        model=BuiltinModel(type="builtin", name="grid10"),
        count=3,
        source=SimSource(type="sim"),
        sink=LogSink(type="log"),
    )
    config = DaemonConfig(groups=(group,))
    assert config.groups == (group,)
    with pytest.raises(ValueError, match=re.escape("groups[1].name: duplicate group name 'g'")):
        DaemonConfig(groups=(group, group))
    with pytest.raises(ValueError, match="count: must be >= 1, got 0"):
        dataclasses.replace(group, count=0)
    with pytest.raises(ValueError, match="unknown built-in model 'nope'"):
        BuiltinModel(type="builtin", name="nope")
    with pytest.raises(ValueError, match=re.escape("sink.type: a 'sim' sink acts on")):
        dataclasses.replace(
            group, source=MqttSource(type="mqtt", topic="a/+"), sink=SimSink(type="sim")
        )


# --------------------------------------------------------------------------------- the locator
LOCATOR_DOC = """\
# comment with [brackets] and key = "value"
title = "x"  # trailing [comment]
[daemon]
profile = "auto"
"quoted.key" = 1
a.b.c = 2
s = \"\"\"multi
fake = 3
[fake]
\"\"\"
lit = '''
[[also_fake]]
'''
arr = [
  1, # one
  { x = 1, y.z = [2, 3] },
  [4, 5],
]
[[groups]]
name = "a"
[[groups]]
name = "b"
model = { type = "bundle", path = "b.tar" }
[groups.settings]
policy_len = 2
[[groups.extra]]
q = 1
[[groups.extra]]
q = 2
[ x . "y z" ]
[x]
z = 1
esc = "quote \\" inside # not a comment"
"""


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        (("title",), 2),
        (("daemon",), 3),
        (("daemon", "profile"), 4),
        (("daemon", "quoted.key"), 5),
        (("daemon", "a"), 6),
        (("daemon", "a", "b", "c"), 6),
        (("daemon", "s"), 7),
        (("daemon", "lit"), 11),
        (("daemon", "arr"), 14),
        (("daemon", "arr", 0), 15),
        (("daemon", "arr", 1, "y", "z", 1), 16),
        (("daemon", "arr", 2, 1), 17),
        (("groups",), 19),
        (("groups", 0), 19),
        (("groups", 0, "name"), 20),
        (("groups", 1), 21),
        (("groups", 1, "name"), 22),
        (("groups", 1, "model", "path"), 23),
        (("groups", 1, "settings"), 24),
        (("groups", 1, "settings", "policy_len"), 25),
        (("groups", 1, "extra", 0, "q"), 27),
        (("groups", 1, "extra", 1), 28),
        (("groups", 1, "extra", 1, "q"), 29),
        (("x", "y z"), 30),
        (("x",), 31),
        (("x", "z"), 32),
        (("x", "esc"), 33),
    ],
)
def test_locator_finds_every_kind_of_key(loc: Loc, line: int) -> None:
    tomllib.loads(LOCATOR_DOC)  # the document is valid TOML
    positions = TomlPositions(LOCATOR_DOC)
    assert positions.exact(loc) == line


def test_locator_knows_no_fake_keys_and_falls_back_to_tables() -> None:
    positions = TomlPositions(LOCATOR_DOC)
    assert positions.exact(("daemon", "fake")) is None
    assert positions.exact(("fake",)) is None
    assert positions.exact(("also_fake",)) is None
    assert positions.line_of(("groups", 1, "settings", "gamma")) == 24
    assert positions.line_of(("groups", 1, "count")) == 21
    assert positions.line_of(("nowhere", "at", "all")) == 1
    assert positions.line_of(()) == 1
    assert positions.last_line == 33


def test_locator_handles_crlf_and_unfinished_text() -> None:
    positions = TomlPositions('[a]\r\nb = 1\r\n\r\n[[c]]\r\nd = "x"\r\n')
    assert positions.exact(("a", "b")) == 2
    assert positions.exact(("c", 0, "d")) == 5
    broken = TomlPositions('[a]\nb = 1\nc = "unterminated\nd = 2\n')
    assert broken.exact(("a", "b")) == 2
    assert broken.exact(("a", "d")) is None


def test_normalize_loc_drops_union_tags_and_validator_names() -> None:
    data = {"groups": [{"model": {"type": "bundle", "pth": "x"}}]}
    assert normalize_loc(data, ("groups", 0, "model", "bundle", "path")) == (
        "groups",
        0,
        "model",
        "path",
    )
    assert normalize_loc(data, ("groups", 0, "model", "bundle", "pth")) == (
        "groups",
        0,
        "model",
        "pth",
    )
    assert normalize_loc(data, ("groups", 0, "function-after[f(), str]", "x")) == (
        "groups",
        0,
        "x",
    )
    assert normalize_loc(data, ("mqtt", "enabled")) == ("mqtt", "enabled")
    assert format_loc(("groups", 1, "model", "path")) == "groups[1].model.path"
    assert format_loc(("x", "y z", 0)) == 'x."y z"[0]'
    assert format_loc(()) == "<document>"


# A generated document: every location's line is known from how the document was written.
_KEYS = st.sampled_from(["a", "b", "name", "x-y", "under_score", "with space", "dot.ted", "ü"])
_SCALARS = st.one_of(
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.text(alphabet=st.sampled_from("ab #=[]{}.\"'\\\n,"), max_size=8),
)
_VALUES = st.recursive(
    st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3)),
    lambda inner: st.one_of(
        st.dictionaries(_KEYS, inner, max_size=3),
        st.lists(st.dictionaries(_KEYS, inner, max_size=3), min_size=1, max_size=2),
    ),
    max_leaves=10,
)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


class _Writer:
    """Writes a document as TOML in styles chosen by hypothesis, noting each location's line."""

    def __init__(self, draw: Callable[[st.SearchStrategy[bool]], bool]) -> None:
        self.draw = draw
        self.lines: list[str] = []
        self.expected: dict[Loc, int] = {}

    @property
    def line(self) -> int:
        return len(self.lines) + 1

    def inline(self, value: object, loc: Loc, line: int) -> str:
        """The inline text of ``value``; records locations inside it at ``line``."""
        if isinstance(value, dict):
            parts = []
            for key, item in value.items():
                self.expected[(*loc, key)] = line
                parts.append(f"{_key(key)} = {self.inline(item, (*loc, key), line)}")
            return "{ " + ", ".join(parts) + " }" if parts else "{}"
        if isinstance(value, list):
            items = []
            for index, item in enumerate(value):
                self.expected[(*loc, index)] = line
                items.append(self.inline(item, (*loc, index), line))
            return "[" + ", ".join(items) + "]"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        return json.dumps(value, ensure_ascii=False)

    def key_value(self, key: str, value: object, loc: Loc) -> None:
        self.expected[loc] = self.line
        if isinstance(value, str) and "\n" in value and self.draw(st.booleans()):
            body = value.replace("\\", "\\\\").replace('"', '\\"')
            # The newline right after the opening quotes is not part of the string.
            self.lines += f'{_key(key)} = """\n{body}"""'.split("\n")
        elif isinstance(value, list) and value and self.draw(st.booleans()):
            self.lines.append(f"{_key(key)} = [  # one element a line")
            for index, item in enumerate(value):
                self.expected[(*loc, index)] = self.line
                self.lines.append("  " + self.inline(item, (*loc, index), self.line) + ",")
            self.lines.append("]")
        else:
            self.lines.append(f"{_key(key)} = {self.inline(value, loc, self.line)}")

    def table(self, table: dict[str, Any], loc: Loc, header: tuple[str, ...]) -> None:
        later: list[tuple[str, object]] = []
        for key, value in table.items():
            as_header = isinstance(value, dict) or _is_table_array(value)
            if as_header and self.draw(st.booleans()):
                later.append((key, value))
            else:
                self.key_value(key, value, (*loc, key))
        for key, value in later:
            path = (*header, key)
            names = ".".join(_key(k) for k in path)
            if isinstance(value, dict):
                self.expected[(*loc, key)] = self.line
                self.lines.append(f"[{names}]")
                self.table(value, (*loc, key), path)
                continue
            assert isinstance(value, list)
            for index, entry in enumerate(value):
                self.expected[(*loc, key, index)] = self.line
                self.lines.append(f"[[{names}]]")
                self.table(entry, (*loc, key, index), path)


@settings(max_examples=150, deadline=None)
@given(document=st.dictionaries(_KEYS, _VALUES, max_size=4), data=st.data())
def test_locator_matches_how_generated_documents_were_written(
    document: dict[str, Any], data: st.DataObject
) -> None:
    writer = _Writer(data.draw)
    writer.table(document, (), ())
    text = "\n".join(writer.lines) + "\n"
    assert tomllib.loads(text) == document, text
    positions = TomlPositions(text)
    for loc, line in writer.expected.items():
        assert positions.exact(loc) == line, (loc, text)
