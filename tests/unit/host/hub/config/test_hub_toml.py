"""The hub service's config: the shipped example loads, defaults are sane, and a bad file is
reported ``path:line: field: problem`` like the daemon's."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent_host.hub.cli import describe_config, main, unit_text
from edge_agent_host.hub.config.hub_toml import (
    HubConfig,
    PostgresDatabase,
    SqliteDatabase,
    example_config_text,
    load_hub_config,
    parse_hub_config,
)
from edge_agent_host.keys import generate_keypair

ROOT = Path(__file__).resolve().parents[5]


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_hub_config(text, "hub.toml", base_dir="/etc/edge-agent-hub")
    return caught.value.problems


def test_the_example_is_the_one_in_the_docs_and_loads() -> None:
    text = example_config_text()
    doc = (ROOT / "docs" / "hub.md").read_text()
    assert f"```toml\n{text}```" in doc, "docs/hub.md must show example.toml as it is"
    config = parse_hub_config(text, "example.toml").config
    assert config.hub.id == "hub-a"
    assert config.mqtt.share_group == "hubs"
    assert isinstance(config.database, SqliteDatabase)
    assert config.sqlite_path == Path("/var/lib/edge-agent-hub/hub.sqlite3")
    # Every value the example shows for a key it does not call "default ..." is the default.
    defaults = HubConfig()
    assert config.queue == defaults.queue
    assert config.retention == defaults.retention


def test_an_empty_file_is_a_lone_hub_on_sqlite() -> None:
    config = parse_hub_config("", "hub.toml").config
    assert config.mqtt.share_group == ""
    assert config.mqtt.fleet == "default"
    assert isinstance(config.database, SqliteDatabase)
    assert config.hub.status_path == Path("/var/lib/edge-agent-hub/status.json")
    assert config.retention.telemetry_raw_s == 3600
    assert config.hub.effective_id()  # the host name, made a protocol name


def test_postgresql_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(
        """
[hub]
state_dir = "state"

[database]
type = "postgresql"
host = "db.site.lan"
password_file = "secret/db-password"
sslmode = "verify-full"
"""
    )
    source = load_hub_config(path)
    db = source.config.database
    assert isinstance(db, PostgresDatabase)
    assert db.password_file == tmp_path / "secret" / "db-password"
    assert source.config.hub.state_dir == tmp_path / "state"
    assert source.config.sqlite_path is None
    described = describe_config(source)
    assert "postgresql edge_agent_hub@db.site.lan:5432/edge_agent_hub" in described
    assert "deadline 30 s a call" in described
    assert f"spooled to {tmp_path / 'state' / 'spool'} (fsync every 1 s)" in described
    path.write_text(path.read_text() + "\n[queue]\nspool = false\n")
    assert "in memory only (no spool" in describe_config(load_hub_config(path))


def test_problems_are_reported_at_their_lines() -> None:
    text = """[hub]
id = "has space"
status_interval_s = 0

[mqtt]
fleet = "plant/3"
share_group = "$share"
porrt = 1884

[database]
type = "mysql"

[queue]
max_messages = "many"

[retention]
telemetry_raw_s = 7200.0
telemetry_keep_s = 3600.0
"""
    found = problems(text)
    expected = {
        2: "hub.id: must match",
        3: "hub.status_interval_s: must be >= 0.1",
        6: "mqtt.fleet: must match",
        7: "mqtt.share_group: must match",
        8: "mqtt.porrt: unknown key; did you mean 'port'?",
        11: "database.type: unknown type 'mysql'",
        14: "queue.max_messages: expected an integer, got string 'many'",
        18: "retention.telemetry_keep_s: must be >= telemetry_raw_s",
    }
    assert len(found) == len(expected), found
    for line, start in expected.items():
        assert any(p.startswith(f"hub.toml:{line}: {start}") for p in found), (line, found)


def test_cross_field_checks_point_at_their_key() -> None:
    text = '[mqtt]\nport = 1884\npassword_file = "pw"\nreconnect_initial_s = 5.0\n'
    text += "reconnect_max_s = 1.0\n"
    found = problems(text)
    assert found == ["hub.toml:3: mqtt.password_file: requires username to be set"]
    found = problems("[mqtt]\nreconnect_initial_s = 5.0\nreconnect_max_s = 1.0\n")
    assert found == ["hub.toml:3: mqtt.reconnect_max_s: must be >= reconnect_initial_s"]


def test_database_type_is_required_when_the_table_is_there() -> None:
    (problem,) = problems('[database]\nhost = "x"\n')
    assert problem.startswith("hub.toml:1: database: required key 'type' is missing")
    assert "'sqlite'" in problem
    assert "'postgresql'" in problem


def test_check_config_prints_problems_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hub.toml"
    path.write_text("[mqtt]\nport = 0\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"^{re.escape(str(path))}:2: mqtt.port: must be >= 1, got 0$", err, re.M)
    path.write_text('[mqtt]\nport = 1884\nshare_group = "hubs"\n')
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: OK" in out
    assert "127.0.0.1:1884, fleet 'default', shared group 'hubs'" in out


def test_check_config_and_run_refuse_files_they_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the first broker connection would meet (a TLS file not installed) is a config error
    at its line, from check-config and from run, not a traceback per reconnect."""
    (tmp_path / "ca.crt").write_text("x")
    path = tmp_path / "hub.toml"
    path.write_text(
        f'[hub]\nstate_dir = "{tmp_path / "state"}"\n[mqtt]\nport = 8883\n'
        f'tls = {{ enabled = true, ca_file = "{tmp_path / "ca.crt"}", '
        f'cert_file = "{tmp_path / "hub-a.crt"}", key_file = "{tmp_path / "hub-a.key"}" }}\n'
        f'[rollouts]\nkey_file = "{tmp_path / "hub.key"}"\n'
    )
    for command in (["check-config", str(path)], ["run", "--config", str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err.splitlines()
        assert sorted(err) == sorted(
            [
                f"{path}:5: mqtt.tls.cert_file: {tmp_path / 'hub-a.crt'}: cannot read: "
                "No such file or directory",
                f"{path}:5: mqtt.tls.key_file: {tmp_path / 'hub-a.key'}: cannot read: "
                "No such file or directory",
                f"{path}:7: rollouts.key_file: {tmp_path / 'hub.key'}: cannot read: "
                "No such file or directory",
            ]
        ), err


def test_learned_rounds_are_signed_with_a_bundle_key_of_their_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rule of docs/fleet.md's two key directories: rounds are signed with ``[learning]
    key_file``, a bundle key, never the command key. A hub config of before (``[learning]``
    without it) is refused in one line that says what to do, and so is the command key named
    there; check-config and run alike. A good one says which key signs the rounds."""
    hub_key = generate_keypair(tmp_path / "hub-keys", "hub")
    learning = generate_keypair(tmp_path / "keys", "learning")
    path = tmp_path / "hub.toml"
    state = tmp_path / "state"
    head = f'[hub]\nstate_dir = "{state}"\n[rollouts]\nkey_file = "{hub_key.private_path}"\n'
    path.write_text(head + "[learning]\nmin_experience = 1000\n")
    for command in (["check-config", str(path)], ["run", "--config", str(path)]):
        assert main(command) == 2
        assert capsys.readouterr().err == (
            f"{path}:6: learning.min_experience: rounds are signed with a bundle key of their "
            "own: set [learning] key_file (make one with 'edge-agent-host keygen --out DIR "
            "--name learning' and put learning.pub in the nodes' [daemon] trusted_keys_dir; "
            'docs/fleet-learning.md "Signing keys")\n'
        )
    path.write_text(
        head + f'[learning]\nkey_file = "{hub_key.private_path}"\nmin_experience = 1000\n'
    )
    for command in (["check-config", str(path)], ["run", "--config", str(path)]):
        assert main(command) == 2
        assert capsys.readouterr().err == (
            f"{path}:6: learning.key_file: {hub_key.private_path}: is the hub's command key "
            "([rollouts] key_file): rounds are signed with a bundle key of their own "
            "(edge-agent-host keygen --name learning; its .pub in the nodes' [daemon] "
            "trusted_keys_dir)\n"
        )
    path.write_text(
        head + f'[learning]\nkey_file = "{learning.private_path}"\nmin_experience = 1000\n'
    )
    assert main(["check-config", str(path)]) == 0
    assert (
        f"  learning: rounds of every line at 1000 agent-ticks; rounds signed by bundle key "
        f"{learning.key_id} ([learning] key_file: its .pub goes in the nodes' [daemon] "
        "trusted_keys_dir)\n"
    ) in capsys.readouterr().out


def test_the_unit_runs_the_console_script_under_systemd_notify() -> None:
    unit = unit_text()
    assert "Type=notify" in unit
    assert "ExecStart=/opt/edge-agent-hub/venv/bin/edge-agent-hub run --config " in unit
    assert "RestartPreventExitStatus=2" in unit
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'edge-agent-hub = "edge_agent_host.hub.cli:main"' in pyproject


def test_every_command_and_option_has_help() -> None:
    from edge_agent_host.hub.cli import build_parser
    from tests.unit.test_cli_help import parsers

    missing = []
    for path, parser in parsers(build_parser(), "edge-agent-hub"):
        assert parser.prog.startswith("edge-agent-hub"), path
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                missing += [f"{path} {c}" for c in action.choices if not helps.get(c)]
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"no help text: {missing}"


def test_postgresql_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_agent_host.fleet.errors import FleetError
    from edge_agent_host.hub.storage.engines import PostgresEngine

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    with pytest.raises(FleetError, match=r"pip install 'edge-agent-runtime\[hub\]'"):
        PostgresEngine(host="127.0.0.1", port=5432, dbname="d", user="u")
