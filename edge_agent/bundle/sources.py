"""Where a bundle's bytes come from: a directory walked without following symlinks, or a tar
(optionally gzipped) read into memory and checked header by header; both within the
:class:`Limits` on files and bytes, so an oversized or escaping bundle is refused before it is
read whole.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_agent.bundle.manifest import (
    MANIFEST_NAME,
    MAX_DIR_DEPTH,
    MAX_MANIFEST_BYTES,
    check_manifest_size,
)
from edge_agent.errors import BundleError

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_TOTAL_BYTES",
    "DirSource",
    "Limits",
    "Source",
    "TarSource",
    "check_size",
    "open_source",
]

DEFAULT_MAX_TOTAL_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_FILES = 256

# A tar may be larger than its payload by its headers, padding and end-of-archive records.
_TAR_OVERHEAD_BYTES = 1024 * 1024
_TAR_BYTES_PER_MEMBER = 2048
_TAR_BLOCK = tarfile.BLOCKSIZE
_GZIP_MAGIC = b"\x1f\x8b"
# The 8-byte header checksum field: 6 octal digits then NUL and space (what Python, GNU tar and
# bsdtar write), or 6 digits, space, NUL, or 7 digits and NUL. Anything else, such as a changed
# byte after the NUL that tarfile itself ignores, is refused.
_CHKSUM_OFFSET = 148
_CHKSUM_LEN = 8


@dataclass(frozen=True)
class Limits:
    max_total_bytes: int
    max_file_bytes: int
    max_files: int

    def __post_init__(self) -> None:
        for name in ("max_total_bytes", "max_file_bytes", "max_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def max_tar_bytes(self) -> int:
        return (
            self.max_total_bytes
            + MAX_MANIFEST_BYTES
            + _TAR_OVERHEAD_BYTES
            + (self.max_files + 1) * _TAR_BYTES_PER_MEMBER
        )


DEFAULT_LIMITS = Limits(DEFAULT_MAX_TOTAL_BYTES, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_FILES)


class Source(Protocol):
    """Where a bundle's bytes come from: a directory or a tar already held in memory."""

    label: str
    compressed: bool
    manifest_bytes: bytes
    sizes: dict[str, int]

    def read(self, rel: str, size: int) -> bytes | memoryview: ...


def check_size(label: str, rel: str, size: int, limits: Limits, total: int) -> None:
    if size > limits.max_file_bytes:
        raise BundleError(
            f"{label}: {rel}: {size} bytes exceeds the per-file limit of {limits.max_file_bytes}"
        )
    if total > limits.max_total_bytes:
        raise BundleError(
            f"{label}: {rel}: payload total reaches {total} bytes, "
            f"over the limit of {limits.max_total_bytes}"
        )



class DirSource:
    """A bundle directory: walked without following symlinks, files read on demand."""

    compressed = False

    def __init__(self, root: Path, limits: Limits) -> None:
        self.root = root
        self.label = str(root)
        self.sizes: dict[str, int] = {}
        manifest_size = self._walk(limits)
        if manifest_size is None:
            raise BundleError(f"{self.label}: {MANIFEST_NAME}: missing")
        check_manifest_size(self.label, manifest_size)
        self.manifest_bytes = bytes(self._read_file(MANIFEST_NAME, manifest_size))

    def _walk(self, limits: Limits) -> int | None:
        manifest_size: int | None = None
        total = 0
        entries = 0
        pending: list[tuple[Path, str, int]] = [(self.root, "", 0)]
        while pending:
            directory, prefix, depth = pending.pop()
            try:
                with os.scandir(directory) as it:
                    listing = sorted(it, key=lambda entry: entry.name)
            except OSError as err:
                raise BundleError(f"{self.label}: {prefix or '.'}: cannot list: {err}") from err
            for entry in listing:
                entries += 1
                if entries > 2 * limits.max_files + 16:
                    raise BundleError(
                        f"{self.label}: too many entries (limit {limits.max_files} files)"
                    )
                rel = prefix + entry.name
                if entry.is_symlink():
                    raise BundleError(f"{self.label}: {rel}: symlinks are not allowed in a bundle")
                if entry.is_dir(follow_symlinks=False):
                    if depth + 1 >= MAX_DIR_DEPTH:
                        raise BundleError(
                            f"{self.label}: {rel}: nested deeper than {MAX_DIR_DEPTH} levels"
                        )
                    pending.append((Path(entry.path), rel + "/", depth + 1))
                    continue
                if not entry.is_file(follow_symlinks=False):
                    raise BundleError(
                        f"{self.label}: {rel}: not a regular file (device, socket or FIFO)"
                    )
                size = entry.stat(follow_symlinks=False).st_size
                if rel == MANIFEST_NAME:
                    manifest_size = size
                    continue
                if len(self.sizes) >= limits.max_files:
                    raise BundleError(
                        f"{self.label}: {rel}: more than {limits.max_files} payload files"
                    )
                total += size
                check_size(self.label, rel, size, limits, total)
                self.sizes[rel] = size
        return manifest_size

    def _read_file(self, rel: str, size: int) -> bytes:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.root / rel, flags)
        except OSError as err:
            raise BundleError(f"{self.label}: {rel}: cannot open: {err.strerror or err}") from err
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BundleError(f"{self.label}: {rel}: not a regular file")
            chunks: list[bytes] = []
            remaining = size + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1024 * 1024))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        except OSError as err:
            raise BundleError(f"{self.label}: {rel}: cannot read: {err.strerror or err}") from err
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) != size:
            raise BundleError(f"{self.label}: {rel}: changed size while being read")
        return data

    def read(self, rel: str, size: int) -> bytes:
        return self._read_file(rel, size)


def _tar_rel(label: str, name: str) -> str | None:
    """The bundle-relative path of a tar member, ``None`` for the root, or raise if it escapes."""
    if "\x00" in name or "\\" in name:
        raise BundleError(f"{label}: {name!r}: unsafe path (NUL or backslash)")
    if name.startswith("/"):
        raise BundleError(f"{label}: {name!r}: unsafe path: absolute paths escape the bundle")
    parts = name.split("/")
    while parts and parts[0] == ".":
        parts.pop(0)
    if parts and parts[-1] == "":
        parts.pop()
    if not parts:
        return None
    if ".." in parts:
        raise BundleError(f"{label}: {name!r}: unsafe path: '..' escapes the bundle")
    if "" in parts or "." in parts:
        raise BundleError(f"{label}: {name!r}: unsafe path: empty or '.' component")
    return "/".join(parts)


def _round_up(size: int) -> int:
    return -(-size // _TAR_BLOCK) * _TAR_BLOCK


def _valid_chksum_field(field_bytes: bytes) -> bool:
    digits, tail = field_bytes[:6], field_bytes[6:]
    if not all(0x30 <= b <= 0x37 for b in digits):
        return False
    if tail in (b"\x00 ", b" \x00"):
        return True
    return 0x30 <= tail[0] <= 0x37 and tail[1] == 0


class TarSource:
    """A tar (or gzip-compressed tar) read into memory with its size bounded before parsing.

    Members are never extracted: payloads are memoryviews into the tar bytes. Every byte of the tar
    must be a member header, member data, or zero padding; anything else is refused.
    """

    def __init__(self, path: Path, limits: Limits) -> None:
        self.label = str(path)
        self.sizes: dict[str, int] = {}
        self._spans: dict[str, tuple[int, int]] = {}
        self._buf, self.compressed = self._read_bounded(path, limits.max_tar_bytes)
        self._view = memoryview(self._buf)
        manifest_span = self._index(limits)
        if manifest_span is None:
            raise BundleError(f"{self.label}: {MANIFEST_NAME}: missing")
        start, size = manifest_span
        self.manifest_bytes = bytes(self._view[start : start + size])

    def _read_bounded(self, path: Path, limit: int) -> tuple[bytes, bool]:
        try:
            with path.open("rb") as fh:
                compressed = fh.read(2) == _GZIP_MAGIC
                fh.seek(0)
                if compressed:
                    with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
                        data = gz.read(limit + 1)
                else:
                    data = fh.read(limit + 1)
        except (OSError, EOFError, zlib.error) as err:
            raise BundleError(f"{self.label}: cannot read tar: {err}") from err
        if len(data) > limit:
            raise BundleError(
                f"{self.label}: tar is larger than {limit} bytes "
                f"(the size limits allow at most that much)"
            )
        return data, compressed

    def _check_header(self, offset: int) -> None:
        field_bytes = self._buf[offset + _CHKSUM_OFFSET : offset + _CHKSUM_OFFSET + _CHKSUM_LEN]
        if not _valid_chksum_field(field_bytes):
            raise BundleError(f"{self.label}: malformed tar header checksum at offset {offset}")

    def _is_zero(self, start: int, end: int) -> bool:
        return self._buf.count(0, start, end) == end - start

    def _index(self, limits: Limits) -> tuple[int, int] | None:
        """Walk the members; return the manifest's (offset, size) or ``None`` if absent."""
        try:
            with tarfile.open(fileobj=io.BytesIO(self._buf), mode="r:") as tar:
                return self._walk_members(tar, limits)
        # tarfile is not hardened against hostile headers: a huge or malformed size field can
        # surface as OverflowError or ValueError rather than TarError.
        except (tarfile.TarError, ValueError, OverflowError, UnicodeError, EOFError) as err:
            raise BundleError(f"{self.label}: not a valid tar archive: {err}") from err

    def _walk_members(self, tar: tarfile.TarFile, limits: Limits) -> tuple[int, int] | None:
        label = self.label
        manifest_span: tuple[int, int] | None = None
        seen: set[str] = set()
        members = 0
        total = 0
        expected = 0
        while (member := tar.next()) is not None:
            members += 1
            if members > 2 * limits.max_files + 16:
                raise BundleError(f"{label}: too many tar members (limit {limits.max_files} files)")
            if member.offset != expected:
                raise BundleError(f"{label}: unexpected data at tar offset {expected}")
            if member.size < 0 or member.offset_data + member.size > len(self._buf):
                raise BundleError(f"{label}: {member.name!r}: truncated tar member")
            self._check_header(member.offset)
            self._check_header(member.offset_data - _TAR_BLOCK)
            rel = _tar_rel(label, member.name)
            name = rel if rel is not None else member.name
            if member.issym():
                raise BundleError(f"{label}: {name}: symlink members are not allowed")
            if member.islnk():
                raise BundleError(f"{label}: {name}: hard link members are not allowed")
            if member.ischr() or member.isblk() or member.isfifo():
                raise BundleError(f"{label}: {name}: device and FIFO members are not allowed")
            if rel is not None and rel in seen:
                raise BundleError(f"{label}: {rel}: duplicate tar member")
            if member.isdir():
                if member.size != 0:
                    raise BundleError(f"{label}: {name}: directory member carries data")
                if rel is not None:
                    seen.add(rel)
                expected = member.offset_data
                continue
            if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                raise BundleError(f"{label}: {name}: unsupported tar member type {member.type!r}")
            if rel is None:
                raise BundleError(f"{label}: {member.name!r}: file member without a name")
            seen.add(rel)
            start, size = member.offset_data, member.size
            if rel == MANIFEST_NAME:
                check_manifest_size(label, size)
                manifest_span = (start, size)
            else:
                if len(self.sizes) >= limits.max_files:
                    raise BundleError(f"{label}: {rel}: more than {limits.max_files} payload files")
                total += size
                check_size(label, rel, size, limits, total)
                self.sizes[rel] = size
                self._spans[rel] = (start, size)
            end = start + _round_up(size)
            if end > len(self._buf):
                raise BundleError(f"{label}: {rel}: truncated tar member")
            if not self._is_zero(start + size, end):
                raise BundleError(f"{label}: {rel}: non-zero padding after the member data")
            expected = end
        if not self._is_zero(expected, len(self._buf)):
            raise BundleError(
                f"{label}: unexpected data after the last valid tar member at offset {expected} "
                f"(corrupt header or trailing garbage)"
            )
        return manifest_span

    def read(self, rel: str, size: int) -> memoryview:
        start, stored = self._spans[rel]
        if stored != size:
            raise BundleError(f"{self.label}: {rel}: size changed")
        return self._view[start : start + size]


def open_source(path: Path, limits: Limits) -> Source:
    if path.is_dir():
        return DirSource(path, limits)
    if path.is_file():
        return TarSource(path, limits)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    raise BundleError(f"{path}: a bundle must be a directory or a tar file")

