"""The status file's content: the config digest in force, computed once per config."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config.daemon import read_config
from edge_agent.daemon import status as status_view
from edge_agent.daemon.service import Daemon


def _write(path: Path, state: Path, count: int) -> None:
    path.write_text(
        f"""
[daemon]
profile = "x86-dev"
state_dir = "{state}"

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = {count}
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
"""
    )


def test_the_config_digest_is_computed_once_per_config_not_at_each_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "edge-agent.toml"
    _write(path, tmp_path / "state", 8)
    d = Daemon.from_file(read_config(path), path)
    first = d.status()["config_digest"]
    assert first == status_view.config_digest(d.config)
    digests: list[str] = []
    real = status_view.config_digest

    def counted(config: object) -> str:
        digests.append(real(config))  # type: ignore[arg-type]
        return digests[-1]

    monkeypatch.setattr(status_view, "config_digest", counted)
    for _ in range(3):
        assert d.status()["config_digest"] == first
    assert digests == []  # the status file's writes no longer hash the config
    # A reload that is refused keeps the digest; one that is applied brings its config's.
    path.write_text(path.read_text().replace("count = 8", "count = -5"))
    assert not d.reload()
    assert d.status()["config_digest"] == first
    _write(path, tmp_path / "state", 9)
    assert d.reload()
    assert len(digests) == 1
    assert d.status()["config_digest"] == digests[0] != first
    assert digests[0] == real(d.config)
