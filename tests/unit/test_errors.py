"""``edge_agent/errors.py``: the line a command line prints for a file operation that failed."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from edge_agent.errors import file_problem


def test_a_file_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        (tmp_path / "door-v9.tar").read_bytes()
    assert file_problem(caught.value) == f"{tmp_path / 'door-v9.tar'}: No such file or directory"


def test_a_directory_where_a_file_was_meant(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError) as caught:
        tmp_path.read_bytes()
    assert file_problem(caught.value) == f"{tmp_path}: Is a directory"


def test_two_files_and_none() -> None:
    both = OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b")
    assert file_problem(both) == "a -> b: Invalid cross-device link"
    assert file_problem(OSError("the socket went away")) == "the socket went away"
