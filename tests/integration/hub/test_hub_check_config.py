"""``edge-agent-hub check-config`` refuses what ``run`` would refuse, with the same line: the
``hub`` extra's packages that the config needs (``prometheus_client`` for ``[http]``,
``psycopg`` for PostgreSQL), in an interpreter where they are really not installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
HUB_EXTRA = ("prometheus_client", "psycopg")


def without_hub_extra(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """This interpreter with this environment's packages except the hub extra's: a directory of
    links to every installed package but those, in place of site-packages (``-s -S``)."""
    import site

    farm = tmp_path / "site-without-hub-extra"
    farm.mkdir(exist_ok=True)
    for directory in map(Path, site.getsitepackages()):
        if not directory.is_dir():  # Debian's Python also names .../local/lib/.../dist-packages
            continue
        for entry in directory.iterdir():
            name = entry.name.split("-")[0].split(".")[0].lower()
            if name in HUB_EXTRA or name.startswith(("psycopg", "__editable__")):
                continue
            if not (farm / entry.name).exists():
                (farm / entry.name).symlink_to(entry)
    paths = [str(REPO), str(REPO / "tools"), str(farm)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return [sys.executable, "-s", "-S"], env


def hub(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    python, env = without_hub_extra(tmp_path)
    code = "import sys; from edge_agent_host.hub.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(  # noqa: PLW1510 - exit codes are asserted
        [*python, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=120,
    )


def test_the_farm_really_lacks_the_hub_extra(tmp_path: Path) -> None:
    python, env = without_hub_extra(tmp_path)
    probe = subprocess.run(  # noqa: PLW1510 - asserted
        [*python, "-c", "import prometheus_client"], capture_output=True, text=True, env=env,
        timeout=60,
    )
    assert "No module named 'prometheus_client'" in probe.stderr


def test_http_and_postgresql_without_their_packages_are_refused_by_check_config_and_run(
    tmp_path: Path,
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        f"""[hub]
state_dir = "{tmp_path / "state"}"

[database]
type = "postgresql"
host = "127.0.0.1"

[http]
enabled = true
port = 0
"""
    )
    expected = [
        f"{config}:5: database.type: PostgreSQL needs the Python package psycopg, which is not "
        "installed: pip install 'edge-agent-runtime[hub]'",
        f"{config}:9: http.enabled: [http] (the metrics and the fleet page) needs the Python "
        "package prometheus_client, which is not installed: pip install "
        "'edge-agent-runtime[hub]'",
    ]
    check = hub(tmp_path, "check-config", str(config))
    assert check.returncode == 2, check.stdout
    assert check.stderr.splitlines() == expected
    run = hub(tmp_path, "run", "--config", str(config), "--duration", "5")
    assert run.returncode == 2
    assert run.stderr.splitlines() == expected
    # SQLite and no [http]: nothing of the extra is needed, and check-config passes.
    config.write_text(f'[hub]\nstate_dir = "{tmp_path / "state"}"\n')
    check = hub(tmp_path, "check-config", str(config))
    assert check.returncode == 0, check.stderr
    assert f"{config}: OK" in check.stdout
