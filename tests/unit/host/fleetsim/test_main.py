"""The fleet simulator refuses more nodes than one process can hold, saying why."""

from __future__ import annotations

import pytest

from edge_agent_host.fleetsim.__main__ import MAX_NODES_PER_PROCESS, main


def test_more_nodes_than_select_can_watch_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--nodes", str(MAX_NODES_PER_PROCESS + 1), "--state-dir", "/nonexistent"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"at most {MAX_NODES_PER_PROCESS} per process" in err
    assert "--first" in err
