"""Crash-safe file replacement: the one "write temp, fsync, rename, fsync dir" of the project.

After a crash or power cut at any point, ``path`` holds either its old content or the whole new
one, never a mix: the data go to a temporary file in the same directory, are flushed and
``fsync``-ed, renamed over ``path`` with ``os.replace`` (atomic on POSIX), and the directory is
``fsync``-ed so that the rename itself is on disk. ``durable=False`` skips both fsyncs, for
files on tmpfs (the status file under systemd's ``RuntimeDirectory``) where they cost SD-card
writes for nothing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_writer", "fsync_dir", "write_atomic"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """``fsync`` a directory, so that renames and deletions in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str],
    *,
    durable: bool = True,
    mode: int | None = None,
    mkdir: bool = False,
    prefix: str | None = None,
    suffix: str = ".tmp",
) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; it replaces ``path`` when the block
    ends without an exception (and is deleted when it raises). ``mode``: the file's permission
    bits (default: what ``mkstemp`` gives, 0600); ``prefix``/``suffix``: the temporary file's
    name (default ``.NAME.XXXX.tmp``), for owners that sweep leftovers of a crash."""
    dest = Path(path)
    if mkdir:
        dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=dest.parent, prefix=prefix if prefix is not None else f".{dest.name}.", suffix=suffix
    )
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp_name, mode)
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(dest.parent)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    durable: bool = True,
    mode: int | None = None,
    mkdir: bool = False,
) -> None:
    """Replace ``path`` with ``data`` crash-safely (see the module docstring)."""
    with atomic_writer(path, durable=durable, mode=mode, mkdir=mkdir) as fh:
        fh.write(data)
