"""Crash-safe file replacement: the one "write temp, fsync, rename, fsync dir" of the project;
and the one way a damaged file is set aside (:func:`move_aside`).

After a crash or power cut at any point, ``path`` holds either its old content or the whole new
one, never a mix: the data go to a temporary file in the same directory, are flushed and
``fsync``-ed, renamed over ``path`` with ``os.replace`` (atomic on POSIX), and the directory is
``fsync``-ed so that the rename itself is on disk. ``durable=False`` skips both fsyncs, for
files on tmpfs (the status file under systemd's ``RuntimeDirectory``) where they cost SD-card
writes for nothing.

A file the daemon owns that turns out damaged (random bytes, truncated, a directory where a file
should be) is renamed to ``NAME.corrupt-YYYYmmddTHHMMSSZ`` (UTC) beside it, or in a dedicated
directory, and the newest :data:`KEEP_MOVED_ASIDE` of them are kept (:func:`move_aside`). Whether
an error means *damaged* (move aside, start fresh) or *storage unavailable* (a full disk, a
read-only file system: keep the file, retry later) is decided by :func:`is_storage_error` and
:func:`sqlite_damaged`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "KEEP_MOVED_ASIDE",
    "SQLITE_SIDECARS",
    "atomic_writer",
    "fsync_dir",
    "is_storage_error",
    "move_aside",
    "moved_aside",
    "not_a_dir",
    "not_a_file",
    "sqlite_damaged",
    "write_atomic",
]

#: How many moved-aside copies of one file :func:`move_aside` keeps (the newest).
KEEP_MOVED_ASIDE: Final = 3
#: The files SQLite keeps beside a database ``NAME``: they move (and go) with it.
SQLITE_SIDECARS: Final = ("-wal", "-shm", "-journal")
#: errno values that mean "the storage refuses writes now", not "the file is damaged".
STORAGE_ERRNOS: Final = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.EACCES, errno.EPERM}
)
_INFIX = ".corrupt-"
_MOVED_RE = re.compile(r"(?P<name>.+)\.corrupt-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?")
#: SQLite primary result codes that mean the database cannot be used *now* (full, read-only, I/O
#: error, locked, out of memory), as opposed to a damaged file (corrupt, not a database).
#: A directory in the database's place is also SQLITE_CANTOPEN: openers check
#: :func:`not_a_file` first. The numbers are SQLite's C API (https://sqlite.org/rescode.html),
#: fixed for good; written out so that this module does not load SQLite into a daemon: none
#: keeps a database (the fleet's stores are record logs, fleet/record_log.py); SQLite is loaded
#: only to migrate an old one (2.1 MB resident, docs/memory.md).
_SQLITE_UNAVAILABLE: Final = frozenset(
    {
        3,  # SQLITE_PERM
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        7,  # SQLITE_NOMEM
        8,  # SQLITE_READONLY
        9,  # SQLITE_INTERRUPT
        10,  # SQLITE_IOERR
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
        23,  # SQLITE_AUTH
    }
)
_SQLITE_DAMAGED: Final = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB


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
    bits (default 0600, as ``mkstemp`` gives); ``prefix``/``suffix``: the temporary file's name
    (default ``.NAME.XXXX.tmp``), for owners that sweep leftovers of a crash."""
    dest = Path(path)
    if mkdir:
        dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        suffix, prefix if prefix is not None else f".{dest.name}.", dest.parent
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


def is_storage_error(err: BaseException) -> bool:
    """True when ``err`` says the storage refuses the operation now (full, over quota,
    read-only, an I/O error, no permission) rather than that the file's content is damaged."""
    sqlite3 = sys.modules.get("sqlite3")  # not imported: err cannot be one of its errors
    if sqlite3 is not None and isinstance(err, sqlite3.DatabaseError):
        code = getattr(err, "sqlite_errorcode", None)
        return code is not None and (code & 0xFF) in _SQLITE_UNAVAILABLE
    return isinstance(err, OSError) and err.errno in STORAGE_ERRNOS


def not_a_file(path: str | os.PathLike[str]) -> bool:
    """True when something that is not a regular file (a directory, a FIFO, a dangling symlink)
    sits where the file ``path`` should be: it is in the way and must be moved aside."""
    return os.path.lexists(path) and not os.path.isfile(path)


def not_a_dir(path: str | os.PathLike[str]) -> bool:
    """True when something that is not a directory (a file, a dangling symlink) sits where the
    directory ``path`` should be."""
    return os.path.lexists(path) and not os.path.isdir(path)


def sqlite_damaged(err: sqlite3.DatabaseError, *, opening: bool) -> bool:
    """True when ``err`` means the database file is damaged and must be moved aside.

    While ``opening``, anything but a storage error counts (a schema that is not ours, a file
    that is not a database, a directory in its place); once open, only SQLite's own verdicts
    (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``) do, so a query bug never deletes data.
    """
    if is_storage_error(err):
        return False
    if opening:
        return True
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _SQLITE_DAMAGED


def move_aside(
    path: str | os.PathLike[str],
    *,
    into: str | os.PathLike[str] | None = None,
    keep: int = KEEP_MOVED_ASIDE,
    sidecars: Iterable[str] = (),
    clock: Callable[[], float] = time.time,
) -> Path:
    """Rename the damaged ``path`` (a file, a directory, anything) to ``NAME.corrupt-STAMP``.

    The new name is beside ``path``, or in the directory ``into`` (created if needed); STAMP is
    the UTC time, ``YYYYmmddTHHMMSSZ``, with ``-1``, ``-2`` ... when that name is taken.
    ``sidecars`` (e.g. :data:`SQLITE_SIDECARS`) move with it: ``path + s`` -> ``new + s``. The
    directory is fsync-ed, then all but the newest ``keep`` moved-aside copies are deleted: of
    this ``NAME`` beside it, or of any name in ``into``. Returns the new path; raises
    :class:`OSError` when ``path`` could not be renamed (it is then untouched).
    """
    src = Path(path)
    dest_dir = Path(into) if into is not None else src.parent
    if into is not None:
        dest_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
    dest = dest_dir / f"{src.name}{_INFIX}{stamp}"
    n = 0
    while os.path.lexists(dest):
        n += 1
        dest = dest_dir / f"{src.name}{_INFIX}{stamp}-{n}"
    sidecars = tuple(sidecars)
    os.replace(src, dest)
    for suffix in sidecars:
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{src}{suffix}", f"{dest}{suffix}")
    with contextlib.suppress(OSError):
        fsync_dir(dest_dir)
        if dest_dir != src.parent:
            fsync_dir(src.parent)
    _prune_moved(dest_dir, None if into is not None else src.name, keep, sidecars)
    return dest


def moved_aside(directory: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """The moved-aside copies in ``directory`` (of ``name`` only, if given), oldest first."""
    found: list[tuple[str, int, str, Path]] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        match = _MOVED_RE.fullmatch(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        found.append((match["stamp"], int(match["n"] or 0), entry.name, Path(entry.path)))
    found.sort()
    return [path for *_, path in found]


def _prune_moved(directory: Path, name: str | None, keep: int, sidecars: tuple[str, ...]) -> None:
    """Delete all but the newest ``keep`` moved-aside copies; failures are left for next time."""
    doomed = moved_aside(directory, name)
    for path in doomed[: max(0, len(doomed) - keep)]:
        for victim in (path, *(Path(f"{path}{s}") for s in sidecars)):
            with contextlib.suppress(OSError):
                if victim.is_dir() and not victim.is_symlink():
                    shutil.rmtree(victim)
                else:
                    victim.unlink(missing_ok=True)
