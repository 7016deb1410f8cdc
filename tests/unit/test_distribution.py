"""edge_agent.distribution finds PyPI's edge-agent by its metadata, whatever spelling of the name
its directory uses, and never takes ours (edge-agent-runtime) for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.distribution import DISTRIBUTION, clash_notice, find_foreign


def metadata(where: Path, dirname: str, name: str, version: str = "0.4.0") -> Path:
    path = where / dirname
    path.mkdir(parents=True)
    (path / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nName: not-a-header\n"
    )
    return path


@pytest.mark.parametrize(
    ("dirname", "name"),
    [
        ("edge_agent-0.4.0.dist-info", "edge-agent"),
        ("Edge.Agent-0.4.0.dist-info", "Edge.Agent"),
        ("edge_agent-0.4.0-py3.11.egg-info", "edge_agent"),
    ],
)
def test_the_other_project_is_found(tmp_path: Path, dirname: str, name: str) -> None:
    path = metadata(tmp_path / "site", dirname, name)
    found = find_foreign([str(tmp_path / "missing"), str(tmp_path / "site")])
    assert found == (name, "0.4.0", path)
    notice = clash_notice("edge-agent", [str(tmp_path / "site")])
    assert notice is not None
    assert notice.startswith(f"edge-agent: warning: the distribution '{name}' 0.4.0 ({path}) ")
    assert "\n" not in notice
    assert "run 'pip uninstall edge-agent', then reinstall edge-agent-runtime" in notice


def test_an_egg_info_file_is_read_as_metadata(tmp_path: Path) -> None:
    (tmp_path / "edge_agent.egg-info").write_text("Name: edge-agent\nVersion: 0.3\n")
    assert find_foreign([str(tmp_path)]) == ("edge-agent", "0.3", tmp_path / "edge_agent.egg-info")


def test_ours_and_look_alikes_are_not_the_other_project(tmp_path: Path) -> None:
    metadata(tmp_path, "edge_agent_runtime-0.1.0.dist-info", DISTRIBUTION, "0.1.0")
    metadata(tmp_path, "edge_agent_host-1.0.dist-info", "edge-agent-host")
    # A directory named like it whose metadata names another distribution.
    metadata(tmp_path, "edge_agent-9.9.dist-info", "something-else")
    (tmp_path / "edge_agent").mkdir()  # the import package itself is no metadata
    assert find_foreign([str(tmp_path)]) is None
    assert clash_notice("edge-agent-host", [str(tmp_path)]) is None


def test_this_environment_has_ours_only() -> None:
    assert find_foreign() is None
