"""The alert rules shipped with the hub: ``promtool check rules`` accepts them, and ``promtool test
rules`` runs them on synthetic series (a drift alarm and an excess surprise that persist, and ones
that do not last their ``for:``). promtool is Debian's ``prometheus`` package."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from edge_agent_host.hub.cli import main
from edge_agent_host.hub.cli.health import alert_rules_text

TESTS = (Path(__file__).parents[5] / "tests" / "data" / "hub" / "alert_rules_test.yml").read_text()


def promtool() -> str:
    path = shutil.which("promtool")
    assert path is not None, "promtool not found: apt-get install prometheus"
    return path


def test_the_shipped_rules_pass_promtool_check_and_test(tmp_path: Path, capsys: object) -> None:
    assert main(["alert-rules"]) == 0
    printed = capsys.readouterr().out  # type: ignore[attr-defined]
    assert printed == alert_rules_text()
    (tmp_path / "alerts.yml").write_text(printed)
    (tmp_path / "tests.yml").write_text(TESTS)
    check = subprocess.run(
        [promtool(), "check", "rules", "alerts.yml"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 2 rules found" in check.stdout
    test = subprocess.run(
        [promtool(), "test", "rules", "tests.yml"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def test_a_rule_that_would_not_fire_fails_the_rule_test(tmp_path: Path) -> None:
    """The rule test can fail: expecting the drift alert before its for: time is refused."""
    (tmp_path / "alerts.yml").write_text(alert_rules_text())
    (tmp_path / "tests.yml").write_text(TESTS.replace("eval_time: 8m", "eval_time: 5m", 1))
    test = subprocess.run(
        [promtool(), "test", "rules", "tests.yml"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert test.returncode != 0
    assert "EdgeAgentModelDrift" in test.stdout + test.stderr
