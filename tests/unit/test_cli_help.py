"""Every command line says what each command and option does, under its own name."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent import __version__
from edge_agent.cli import build_daemon_parser, build_parser
from edge_agent_host.cli import build_parser as build_host_parser

#: scripts/arm64/check-backends, the venv check test-arm64 and build-deb run (a script, no .py).
CHECK_BACKENDS = Path(__file__).resolve().parents[2] / "scripts" / "arm64" / "check-backends"


def _load_check_backends() -> object:
    loader = importlib.machinery.SourceFileLoader("check_backends", str(CHECK_BACKENDS))
    spec = importlib.util.spec_from_loader("check_backends", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


check_backends = _load_check_backends()


def parsers(
    parser: argparse.ArgumentParser, path: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{path} {name}")


@pytest.mark.parametrize(
    ("name", "build"),
    [("edge-agent", build_parser), ("edge-agentd", build_daemon_parser),
     ("edge-agent-host", build_host_parser),
     ("check-backends", check_backends.build_parser)],  # type: ignore[attr-defined]
)
def test_every_command_and_option_has_help(name: str, build: object) -> None:
    missing = []
    for path, parser in parsers(build(), name):  # type: ignore[operator]
        assert parser.prog.startswith(name), f"{path}: prog is {parser.prog!r}"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                missing += [f"{path} {c}" for c in action.choices if not helps.get(c)]
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"no help text: {missing}"


@pytest.mark.parametrize(
    ("name", "build"),
    [("edge-agent", build_parser), ("edge-agentd", build_daemon_parser),
     ("edge-agent-host", build_host_parser)],
)
def test_version(name: str, build: object, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build().parse_args(["--version"])  # type: ignore[operator]
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"{name} {__version__}"


def test_top_level_help_lists_each_command_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    commands = ("run", "status", "check-config", "profiles", "replay", "export-model",
                "systemd-unit", "systemd-dropin")
    for command in commands:
        assert sum(line.split()[:1] == [command] for line in text.splitlines()) == 1, command


def test_daemon_help_names_the_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_daemon_parser().parse_args(["--help"])
    assert capsys.readouterr().out.startswith("usage: edge-agentd ")


def test_check_backends_fails_on_another_machine(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        check_backends.main(["--machine", "no-such-machine"])  # type: ignore[attr-defined]
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == (
        f"check-backends: platform.machine() is {platform.machine()!r}, "
        "expected 'no-such-machine'"
    )


def test_check_backends_default_machine_is_the_pi() -> None:
    assert check_backends.build_parser().parse_args([]).machine == "aarch64"  # type: ignore[attr-defined]


def test_check_backends_on_this_machine_prints_one_json_line() -> None:
    # As build-deb runs it for an amd64 venv: --machine names the machine it runs on.
    run = subprocess.run(
        [sys.executable, "-B", str(CHECK_BACKENDS), "--machine", platform.machine(),
         "--require-litert"],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    (line,) = run.stdout.splitlines()
    report = json.loads(line)
    assert report["machine"] == platform.machine()
    assert report["onnxruntime_matmul"] == [[9.0, 12.0]]
    assert report["litert"]
