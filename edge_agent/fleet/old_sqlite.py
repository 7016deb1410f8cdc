"""The SQLite stores of earlier versions (the outbox's and the command nonces'), read once when
a node is upgraded, and deleted once what they held is in the record log that replaces them.

:func:`read_old` is the one place the fleet imports ``sqlite3``: a node with no old database
never does (docs/memory.md). A file that is not a database, or one SQLite finds damaged, is moved
aside (with its sidecars) and reported to the store's part of
:class:`~edge_agent.state_faults.StateFaults`, as a damaged record log is.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from edge_agent.fsutil import SQLITE_SIDECARS, not_a_file, sqlite_damaged

if TYPE_CHECKING:
    import sqlite3

    from edge_agent.state_faults import StateFaults

__all__ = ["OldStore", "read_old", "remove_old"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OldStore(Generic[T]):
    """What :func:`read_old` found: ``value`` what the reader returned, or None when the
    database was damaged and moved aside (``lost`` then says why and where it went)."""

    value: T | None
    lost: str = ""


def read_old(
    path: Path, read: Callable[[sqlite3.Connection], T], *, faults: StateFaults, part: str
) -> OldStore[T] | None:
    """``read`` the old database at ``path`` (a ``sqlite3.DatabaseError`` it raises is damage).
    None when the storage refused it (reported to ``faults`` as a storage error)."""
    import sqlite3  # noqa: PLC0415  (only to migrate: a node keeps no SQLite otherwise)

    reason = "not a regular file" if not_a_file(path) else ""
    if not reason:
        try:
            with contextlib.closing(sqlite3.connect(path)) as conn:
                return OldStore(read(conn))
        except sqlite3.DatabaseError as err:
            if not sqlite_damaged(err, opening=True):
                faults.storage_error(part, err, f"read {path}")
                return None
            reason = f"{type(err).__name__}: {err}"
    moved = faults.move_aside(part, path, reason, sidecars=SQLITE_SIDECARS)
    if moved is None:
        return None
    return OldStore(None, f"damaged ({reason}); moved aside to {moved.name}")


def remove_old(path: Path) -> None:
    """Delete the old database at ``path`` and its sidecars (those there are)."""
    for suffix in ("", *SQLITE_SIDECARS):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
