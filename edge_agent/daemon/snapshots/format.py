"""The snapshot file, ``snapshot-<seq>.eas``: a container of named arrays and a small meta map,
written by :func:`write_body` and read back by :func:`read_snapshot`.

Format v3 (little-endian, no pickle anywhere)::

    magic     8 bytes   b"EASNAP" + format version as u16 big-endian (b"\\x00\\x03")
    hlen      u32       length of the header, its padding included: the data starts at 12 + hlen,
                        a multiple of 64
    header    hlen      a JSON object (UTF-8, keys sorted, no whitespace inside it), then spaces
                        up to where the data starts: format_version, created (wall clock, s),
                        monotonic (the writer's time.monotonic(), s), meta (the caller's object),
                        data_nbytes, arrays: [{name, dtype (numpy dtype str, e.g. "<f4"), shape,
                        offset, nbytes, codec ("raw" or "zlib"), stored (bytes at offset)}]
    data      each array's C-order bytes at data start + offset (offsets 64-byte aligned): raw,
              or zlib-compressed (``nbytes`` once inflated)
    trailer   32 bytes  sha256 of every byte before it

The header is JSON, which the standard library reads and writes: a daemon that does not talk to
a fleet imports no MessagePack codec (msgspec costs 1.2 MB resident, docs/memory.md, "Memory
tricks"). ``meta`` therefore holds what JSON gives back unchanged: None, bool, 64-bit int,
finite float, str, lists and str-keyed objects of them (the daemon writes str and int).

Arrays of 4 KiB and more are zlib-compressed (level 1, ~25 ms for 7 MB) when that saves a tenth:
a belief history is mostly zeros, and an SD card wears with every byte (1,000 grid10 agents
with 64-step histories: 7.4 MB raw, 0.38 MB stored). The arrays are written as they are, 4 MB
at a time, compressed once, as they are written: a snapshot of a large group holds no copy of
it, compressed or not. They are written from where the header would end with every offset and
size unknown (the widest integers); the header, once they are known, is padded with spaces to
the same length and written over the start, and the trailer's sha256 is of the file read back.

Formats v2 and v1, which earlier versions wrote, are still read (an upgraded daemon restores
their snapshot): the same layout with a MessagePack header (v2 padded by a ``pad`` field and
zeros, v1 without ``codec`` and ``stored``: every array raw), decoded by msgspec, imported only
to read one.

A snapshot is mapped and verified (its sha256, every compressed array inflated once); a compressed
array is inflated only when asked for, or copied straight into an array of its own 4 MB at a time
(:meth:`SnapshotArrays.read_into`: a daemon restoring a million agents holds no inflated copy of
them). The file's pages are given back as they are read (``madvise(MADV_DONTNEED)``, where the
system has it): what a restore holds besides the state is a few chunks of the file, not all of
it.

Only bool, signed and unsigned integer and float (up to 64-bit) arrays are stored; anything else
is refused with :class:`~edge_agent.errors.SnapshotError`. Where the files live, how many are kept
and what happens to a damaged one is :mod:`edge_agent.daemon.snapshots.store`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import mmap
import os
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np
import numpy.typing as npt

from edge_agent.errors import SnapshotError

logger = logging.getLogger(__name__)


__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "SNAPSHOT_NAME",
    "LoadedSnapshot",
    "SnapshotArrays",
    "check_arrays",
    "placeholder_header",
    "read_snapshot",
    "read_verified",
    "write_body",
]

FORMAT_VERSION = 3
_READS = frozenset({1, 2, 3})
_SIGNATURE = b"EASNAP"
MAGIC = _SIGNATURE + FORMAT_VERSION.to_bytes(2, "big")
_COMPRESS_MIN_BYTES = 4096
_COMPRESS_LEVEL = 1
#: Arrays are compressed (and files read) this many bytes at a time: a snapshot of a large
#: group never holds a compressed copy of its state (a million agents), written or read.
_CHUNK_BYTES = 4 << 20
_HEADER_LEN = struct.Struct("<I")
_PREFIX_SIZE = len(MAGIC) + _HEADER_LEN.size
_DIGEST_SIZE = hashlib.sha256().digest_size
_ALIGN = 64
_MAX_HEADER_BYTES = 16 * 1024 * 1024
_INT_RANGE = range(-(2**63), 2**64)  # meta's integers: 64 bits, as every JSON reader keeps them
_ALLOWED_KINDS = frozenset("biuf")
_MAX_ITEMSIZE = 8  # no long double: its layout differs between x86 and arm64

#: The file's bytes as read: mapped (pages read from the file as they are used, and given back
#: once read: a large snapshot is never resident whole), or in memory (an empty file).
_Buffer = bytearray | mmap.mmap
_PAGE = mmap.PAGESIZE
_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)

SNAPSHOT_NAME = re.compile(r"snapshot-(\d+)\.eas")


@dataclass(frozen=True, slots=True)
class LoadedSnapshot:
    """A verified snapshot.

    ``arrays`` are writable views into a private mapping of the file (no second copy), a
    compressed one inflated when first asked for (:class:`SnapshotArrays`); ``monotonic``
    is the writer's ``time.monotonic()`` and means nothing after a reboot; ``seq`` is -1 when the
    file name is not ``snapshot-<seq>.eas``.
    """

    path: Path
    seq: int
    created: float
    monotonic: float
    meta: dict[str, Any]
    arrays: SnapshotArrays
    nbytes: int


def read_snapshot(path: Path) -> LoadedSnapshot:
    """Read and verify one snapshot file; raise :class:`SnapshotError` naming the path if bad."""
    try:
        return read_verified(path)
    except SnapshotError as err:
        raise SnapshotError(f"{path}: {err}") from err


# --- encoding ------------------------------------------------------------------------------------


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _deflate(array: npt.NDArray[Any]) -> Iterator[bytes]:
    """The array's C-order bytes zlib-compressed, ``_CHUNK_BYTES`` of input at a time (one zlib
    stream, as ``zlib.compress`` gives, byte for byte the same each time)."""
    data = _c_bytes(array)
    packer = zlib.compressobj(_COMPRESS_LEVEL)
    for start in range(0, len(data), _CHUNK_BYTES):
        out = packer.compress(data[start : start + _CHUNK_BYTES])
        if out:
            yield out
    yield packer.flush()


def check_arrays(arrays: Mapping[str, npt.NDArray[Any]]) -> list[tuple[str, npt.NDArray[Any]]]:
    """``arrays`` as ``(name, array)``, every one checked (names, types, dtypes)."""
    checked = []
    for name, array in arrays.items():
        if not isinstance(name, str) or not name:
            raise SnapshotError(f"array names must be non-empty strings, got {name!r}")
        if not isinstance(array, np.ndarray):
            raise SnapshotError(
                f"arrays[{name!r}] is {type(array).__name__}, expected numpy.ndarray"
            )
        problem = _dtype_problem(array.dtype)
        if problem is not None:
            raise SnapshotError(f"arrays[{name!r}]: {problem}")
        checked.append((name, array))
    return checked


#: Stands for an offset or a size not known yet: wider than any real one (20 digits), so that
#: the header with the real ones is never longer.
_UNKNOWN = 2**64 - 1


def _entry(name: str, array: npt.NDArray[Any], offset: int, codec: str, stored: int) -> \
        dict[str, Any]:
    return {
        "name": name,
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "offset": offset,
        "nbytes": array.nbytes,
        "codec": codec,
        "stored": stored,
    }


def placeholder_header(header: dict[str, Any], arrays: list[tuple[str, npt.NDArray[Any]]]) -> int:
    """The length of ``header`` packed with every offset and size unknown (checked: meta that
    JSON would not give back, a header too long): the real one is not longer."""
    directory = [_entry(name, a, _UNKNOWN, "zlib", _UNKNOWN) for name, a in arrays]
    return len(_pack_header({**header, "data_nbytes": _UNKNOWN, "arrays": directory}))


def _c_bytes(array: npt.NDArray[Any]) -> memoryview:
    """The array's C-order bytes: a view for a C-contiguous array, else a copy of this one."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def _dtype_problem(dtype: np.dtype[Any]) -> str | None:
    if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        return f"dtype {dtype} is not allowed (only bool, integers and floats)"
    if dtype.itemsize > _MAX_ITEMSIZE:
        return f"dtype {dtype} is not allowed (wider than 64 bits)"
    return None


def _check_meta(value: Any, where: str) -> None:
    """Refuse what JSON would not give back unchanged (tuples, bytes, non-str keys, numpy
    scalars, integers beyond 64 bits, NaN and infinities)."""
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if value not in _INT_RANGE:
            raise SnapshotError(f"{where} is {value}, beyond 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SnapshotError(f"{where} is {value}; JSON has no NaN or infinity")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_meta(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SnapshotError(f"{where} has a non-str key {key!r}")
            _check_meta(item, f"{where}[{key!r}]")
        return
    raise SnapshotError(
        f"{where} is {type(value).__name__}; meta holds only None, bool, int, float, str, lists"
        " and str-keyed dicts"
    )


def _pack_header(header: dict[str, Any], length: int | None = None) -> bytes:
    """``header`` as canonical JSON (UTF-8, keys sorted, no whitespace); with ``length``,
    padded with spaces to that many bytes (so the data starts where it was written)."""
    _check_meta(header["meta"], "meta")
    try:
        text = json.dumps(
            header, ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
        )
    except ValueError as err:  # a time that is not finite (meta is checked above)
        raise SnapshotError(f"snapshot header: {err}") from err
    packed = text.encode()
    if length is not None:
        packed = packed.ljust(length)
    if len(packed) > _MAX_HEADER_BYTES:
        raise SnapshotError(f"snapshot header is {len(packed)} bytes, limit {_MAX_HEADER_BYTES}")
    return packed


def write_body(
    f: BinaryIO, header: dict[str, Any], arrays: list[tuple[str, npt.NDArray[Any]]], compress: bool
) -> int:
    """Write magic, header, data and trailer to ``f`` (``compress=False``: every array raw);
    return the number of bytes.

    Each array is written as it is compressed (or raw: small, or when compressing does not
    save a tenth), from where a header with every offset unknown would end: nothing compressed
    is kept. The header, once every offset is known, is padded to end at the same place and
    written over the start; the trailer is the sha256 of the file read back."""
    data_start = _align(_PREFIX_SIZE + placeholder_header(header, arrays))
    f.write(bytes(data_start))  # the prefix's and the header's room, written last
    directory, offset = [], 0
    for name, array in arrays:
        gap = _align(offset) - offset
        f.write(bytes(gap))
        offset += gap
        stored, codec = _write_array(f, data_start + offset, array, compress=compress)
        directory.append(_entry(name, array, offset, codec, stored))
        offset += stored
    end = data_start + offset
    f.flush()
    os.ftruncate(f.fileno(), end)  # past the end: what a raw rewrite left of its compression
    packed = _pack_header(
        {**header, "data_nbytes": offset, "arrays": directory}, data_start - _PREFIX_SIZE
    )
    if _PREFIX_SIZE + len(packed) != data_start:
        raise SnapshotError("the snapshot header does not fit its room")  # cannot happen
    f.seek(0)
    f.write(MAGIC + _HEADER_LEN.pack(len(packed)) + packed)
    f.flush()
    digest = hashlib.sha256()
    for start in range(0, end, _CHUNK_BYTES):
        digest.update(os.pread(f.fileno(), min(_CHUNK_BYTES, end - start), start))
    f.seek(end)
    f.write(digest.digest())
    return end + _DIGEST_SIZE


def _write_array(
    f: BinaryIO, at: int, array: npt.NDArray[Any], *, compress: bool
) -> tuple[int, str]:
    """Write ``array`` at ``at`` (``f``'s position): ``(bytes stored, codec)``."""
    if compress and array.nbytes >= _COMPRESS_MIN_BYTES:
        stored = 0
        for chunk in _deflate(array):
            f.write(chunk)
            stored += len(chunk)
        if stored <= 0.9 * array.nbytes:
            return stored, "zlib"
        f.seek(at)  # does not save a tenth: raw, over it
    data = _c_bytes(array)
    for start in range(0, len(data), _CHUNK_BYTES):
        f.write(data[start : start + _CHUNK_BYTES])
    return array.nbytes, "raw"


# --- decoding ------------------------------------------------------------------------------------


def read_verified(path: Path) -> LoadedSnapshot:
    """Read and verify one snapshot file (its ``seq`` from its name, -1 if it has none); raise
    :class:`SnapshotError` saying what is wrong (without the path: :func:`read_snapshot` adds
    it)."""
    seq_match = SNAPSHOT_NAME.fullmatch(path.name)
    seq = int(seq_match.group(1)) if seq_match is not None else -1
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            # private: an array's view may be written (copy on write), never the file
            buf: _Buffer = (
                mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) if size else bytearray()
            )
    except (OSError, ValueError) as err:
        raise SnapshotError(f"unreadable: {err}") from err
    return _decode(buf, path, seq)


def _release(buf: _Buffer, start: int, stop: int) -> None:
    """Give back the resident pages of a mapped file that lie wholly within ``[start, stop)``
    (read from the file again if they are used again): bytes read hold no memory."""
    if _DONTNEED is None or not isinstance(buf, mmap.mmap):
        return
    first, last = -(-start // _PAGE) * _PAGE, stop // _PAGE * _PAGE
    if last > first:
        buf.madvise(_DONTNEED, first, last - first)


def _sha256(buf: _Buffer, stop: int) -> bytes:
    """The sha256 of ``buf[:stop]``, read a chunk at a time (each given back once read)."""
    digest, view = hashlib.sha256(), memoryview(buf)
    for start in range(0, stop, _CHUNK_BYTES):
        end = min(stop, start + _CHUNK_BYTES)
        digest.update(view[start:end])
        _release(buf, start, end)
    return digest.digest()


def _decode(buf: _Buffer, path: Path, seq: int) -> LoadedSnapshot:
    size = len(buf)
    if size < len(MAGIC):
        raise SnapshotError(f"truncated: {size} bytes")
    if buf[: len(_SIGNATURE)] != _SIGNATURE:
        raise SnapshotError("not a snapshot (bad magic)")
    version = int.from_bytes(buf[len(_SIGNATURE) : len(MAGIC)], "big")
    if version not in _READS:
        raise SnapshotError(
            f"unknown format version {version} (this build reads {sorted(_READS)})"
        )
    if size < _PREFIX_SIZE + _DIGEST_SIZE:
        raise SnapshotError(f"truncated: {size} bytes")

    if _sha256(buf, size - _DIGEST_SIZE) != buf[size - _DIGEST_SIZE :]:
        raise SnapshotError(_diagnose_mismatch(buf))

    header, data_start = _unpack_header(buf, version)
    data_nbytes = _field(header, "data_nbytes", int)
    if data_nbytes < 0 or data_start + data_nbytes + _DIGEST_SIZE != size:
        raise SnapshotError(f"size {size} does not match the header's data size {data_nbytes}")
    created = float(_field(header, "created", (int, float)))
    monotonic = float(_field(header, "monotonic", (int, float)))
    meta = _field(header, "meta", dict)
    entries = _field(header, "arrays", list)

    stored: dict[str, _Stored] = {}
    for entry in entries:
        name, item = _decode_array(buf, entry, data_start, data_nbytes, version)
        if name in stored:
            raise SnapshotError(f"array {name!r} appears twice")
        stored[name] = item
    return LoadedSnapshot(
        path=path,
        seq=seq,
        created=created,
        monotonic=monotonic,
        meta=meta,
        arrays=SnapshotArrays(buf, stored, keep={}),
        nbytes=size,
    )


def _diagnose_mismatch(buf: _Buffer) -> str:
    """Why the checksum failed, as far as the (untrusted) header can tell: truncation or not."""
    size = len(buf)
    (header_len,) = _HEADER_LEN.unpack_from(buf, len(MAGIC))
    needed = _PREFIX_SIZE + header_len + _DIGEST_SIZE
    if needed > size:
        return f"truncated or corrupt: {size} bytes, but the header length field needs {needed}"
    try:
        version = int.from_bytes(buf[len(_SIGNATURE) : len(MAGIC)], "big")
        header, data_start = _unpack_header(buf, version)
        data_nbytes: int = _field(header, "data_nbytes", int)
    except SnapshotError:
        return "sha256 mismatch (corrupt header)"
    declared = data_start + data_nbytes + _DIGEST_SIZE
    if declared != size:
        return f"truncated or extended: {size} bytes, but the header says {declared}"
    return "sha256 mismatch (corrupt)"


def _unpack_header(buf: _Buffer, version: int) -> tuple[dict[str, Any], int]:
    (header_len,) = _HEADER_LEN.unpack_from(buf, len(MAGIC))
    end = _PREFIX_SIZE + header_len
    if header_len > _MAX_HEADER_BYTES or end > len(buf) - _DIGEST_SIZE:
        raise SnapshotError(f"header length {header_len} out of range")
    header = _parse_header(bytes(buf[_PREFIX_SIZE:end]), version)
    if not isinstance(header, dict):
        raise SnapshotError("header is not a map")
    if header.get("format_version") != version:
        raise SnapshotError(
            f"header format_version {header.get('format_version')!r} does not match the magic"
        )
    return header, _align(end)


def _parse_header(raw: bytes, version: int) -> Any:
    """The header's value: JSON (v3), MessagePack (v1 and v2, whose codec is imported only
    here: a daemon imports it only to restore a snapshot an earlier version wrote)."""
    if version < 3:
        import msgspec.msgpack  # noqa: PLC0415 - only for a file of format v2 or v1

        try:
            return msgspec.msgpack.decode(raw)
        except (ValueError, TypeError, OverflowError) as err:  # DecodeError is a ValueError
            raise SnapshotError(f"header is not valid msgpack: {err}") from err
    try:
        return json.loads(
            raw.decode(), object_pairs_hook=_json_object, parse_constant=_json_constant
        )
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise SnapshotError(f"header is not valid JSON: {err}") from err


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object of the header; one that names a key twice is refused (which one counts
    would be up to the reader)."""
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise ValueError(f"key {key!r} appears twice")
        value[key] = item
    return value


def _json_constant(name: str) -> NoReturn:
    """NaN and the infinities, which Python's reader takes and JSON does not have: refused."""
    raise ValueError(f"{name} is not JSON")


def _field(mapping: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = mapping.get(key)
    # bool is an int subclass; no field of the format is a bool.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SnapshotError(f"header field {key!r} is missing or of the wrong type")
    return value


def _decode_array(
    buf: _Buffer, entry: Any, data_start: int, data_nbytes: int, version: int
) -> tuple[str, _Stored]:
    if not isinstance(entry, dict):
        raise SnapshotError("array directory entry is not a map")
    name = _field(entry, "name", str)
    shape_list = _field(entry, "shape", list)
    offset = _field(entry, "offset", int)
    nbytes = _field(entry, "nbytes", int)
    try:
        dtype = np.dtype(_field(entry, "dtype", str))
    except (TypeError, ValueError) as err:
        raise SnapshotError(f"array {name!r}: bad dtype: {err}") from err
    problem = _dtype_problem(dtype)
    if problem is not None:
        raise SnapshotError(f"array {name!r}: {problem}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape_list):
        raise SnapshotError(f"array {name!r}: bad shape {shape_list!r}")
    count = math.prod(shape_list)
    codec, stored = "raw", nbytes
    if version >= 2:
        codec = _field(entry, "codec", str)
        stored = _field(entry, "stored", int)
        if codec not in ("raw", "zlib") or (codec == "raw" and stored != nbytes):
            raise SnapshotError(f"array {name!r}: codec {codec!r} with {stored} bytes stored")
    if nbytes != count * dtype.itemsize or offset < 0 or offset + stored > data_nbytes:
        raise SnapshotError(f"array {name!r}: offset/size out of range")
    item = _Stored(name, dtype, tuple(shape_list), data_start + offset, stored, codec == "zlib")
    if item.compressed:  # inflated once here, chunk by chunk and kept nowhere: a bad one is found
        filled = 0
        for chunk in item.inflate(buf):
            filled += len(chunk)
        if filled != nbytes:
            raise SnapshotError(f"array {name!r}: inflates to other than {nbytes} bytes")
    return name, item


@dataclass(frozen=True, slots=True)
class _Stored:
    """Where one array of a verified snapshot is in its file's bytes, and how."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    start: int
    stored: int
    compressed: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def inflate(self, buf: _Buffer) -> Iterator[bytes]:
        """The array's bytes, at most ``_CHUNK_BYTES`` at a time (``compressed`` only), read
        from the file a quarter of that at a time (each given back once read)."""
        inflater = zlib.decompressobj()
        view, end = memoryview(buf), self.start + self.stored
        start = self.start
        try:
            while start < end and not inflater.eof:
                # a quarter of a chunk in: what it does not take yet is copied (unconsumed_tail)
                stop = min(end, start + _CHUNK_BYTES // 4)
                pending: bytes | memoryview = view[start:stop]
                while pending and not inflater.eof:
                    chunk = inflater.decompress(pending, _CHUNK_BYTES)
                    pending = inflater.unconsumed_tail  # a copy: the file's bytes are free
                    if chunk:
                        yield chunk
                _release(buf, start, stop)
                start = stop
            while not inflater.eof:  # what the last of the input still gives
                chunk = inflater.decompress(b"", _CHUNK_BYTES)
                if not chunk:
                    break
                yield chunk
        except zlib.error as err:
            raise SnapshotError(f"array {self.name!r}: cannot inflate: {err}") from err
        if not inflater.eof or inflater.unused_data or start < end:
            raise SnapshotError(f"array {self.name!r}: inflates to other than {self.nbytes} bytes")

    def array(self, buf: _Buffer) -> npt.NDArray[Any]:
        """The whole array: a writable view into ``buf`` (raw), or inflated into new memory."""
        count = math.prod(self.shape)
        if not self.compressed:
            flat = np.frombuffer(buf, dtype=self.dtype, count=count, offset=self.start)
            return flat.reshape(self.shape)
        raw = bytearray(self.nbytes)
        filled = 0
        for chunk in self.inflate(buf):
            raw[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        return np.frombuffer(raw, dtype=self.dtype, count=count).reshape(self.shape)

    def read_into(self, buf: _Buffer, out: npt.NDArray[Any], *, release: bool = False) -> None:
        """Copy the array into ``out`` (same shape, C-contiguous; its dtype converts), inflating
        ``_CHUNK_BYTES`` at a time: no whole copy of the array is ever made. ``release``: a raw
        array's pages are given back afterwards (no view of them was handed out)."""
        if out.shape != self.shape:
            raise SnapshotError(f"{self.name!r} has shape {self.shape}, expected {out.shape}")
        if not out.flags.c_contiguous:
            np.copyto(out, self.array(buf), casting="unsafe")
            return
        flat = out.reshape(-1)
        size = self.dtype.itemsize
        carry = b""  # the start of a value split between two chunks
        done = 0
        chunks = self.inflate(buf) if self.compressed else self._raw_chunks(buf, release)
        for chunk in chunks:
            data = memoryview(chunk)
            if carry:
                need = size - len(carry)
                carry += bytes(data[:need])
                data = data[need:]
                if len(carry) < size:
                    continue
                flat[done] = np.frombuffer(carry, dtype=self.dtype)[0]
                done, carry = done + 1, b""
            whole = len(data) // size
            if whole:
                values = np.frombuffer(data, dtype=self.dtype, count=whole)
                np.copyto(flat[done : done + whole], values, casting="unsafe")
                done += whole
            carry = bytes(data[whole * size :])

    def _raw_chunks(self, buf: _Buffer, release: bool) -> Iterator[memoryview]:
        """A raw array's bytes, ``_CHUNK_BYTES`` at a time (each given back once read if
        ``release``)."""
        view, end = memoryview(buf), self.start + self.stored
        for start in range(self.start, end, _CHUNK_BYTES):
            stop = min(end, start + _CHUNK_BYTES)
            yield view[start:stop]
            if release:
                _release(buf, start, stop)

    def iter_rows(self, buf: _Buffer, rows: int) -> Iterator[npt.NDArray[Any]]:
        """The array's rows (along its first axis), ``rows`` at a time, inflated as they go."""
        if not self.compressed:
            whole = self.array(buf)
            for start in range(0, len(whole), rows):
                yield whole[start : start + rows]
            return
        rest = self.shape[1:]
        row_bytes = math.prod(rest) * self.dtype.itemsize
        want = max(1, rows) * row_bytes
        pending = bytearray()
        for chunk in self.inflate(buf):
            pending += chunk
            while row_bytes and len(pending) >= want:
                yield np.frombuffer(bytes(pending[:want]), dtype=self.dtype).reshape(-1, *rest)
                del pending[:want]
        if pending:
            yield np.frombuffer(bytes(pending), dtype=self.dtype).reshape(-1, *rest)


class SnapshotArrays(Mapping[str, npt.NDArray[Any]]):
    """The arrays of a verified snapshot, by name, inflated only when one is asked for.

    ``arrays[name]`` gives the whole array (a compressed one is inflated once and kept, so that
    what is written into it stays); :meth:`read_into` copies one straight into an array of its
    own, chunk by chunk, keeping nothing (a daemon restoring a million agents: 1.3 GB inflated
    otherwise); :meth:`under` gives the arrays under a prefix, that keep nothing either.
    """

    def __init__(
        self,
        buf: _Buffer,
        stored: dict[str, _Stored],
        prefix: str = "",
        keep: dict[str, npt.NDArray[Any]] | None = None,
        viewed: set[str] | None = None,
    ) -> None:
        self._buf = buf
        self._stored = stored
        self._prefix = prefix
        self._keep = keep
        self._viewed = set() if viewed is None else viewed  # raw arrays handed out as views
        self._names = [k[len(prefix) :] for k in stored if k.startswith(prefix)]

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        key = self._prefix + name
        if self._keep is not None and key in self._keep:
            return self._keep[key]
        item = self._stored.get(key)
        if item is None:
            raise KeyError(name)
        array = item.array(self._buf)
        if not item.compressed:
            self._viewed.add(key)
        if self._keep is not None:
            self._keep[key] = array
        return array

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (self._prefix + name) in self._stored

    def under(self, prefix: str) -> SnapshotArrays:
        """The arrays whose names start with ``prefix``, named without it."""
        return SnapshotArrays(
            self._buf, self._stored, self._prefix + prefix, viewed=self._viewed
        )

    def spec(self, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
        """Shape and dtype of array ``name``, nothing inflated."""
        item = self._stored.get(self._prefix + name)
        if item is None:
            raise KeyError(name)
        return item.shape, item.dtype

    def read_into(self, name: str, out: npt.NDArray[Any]) -> None:
        """Copy array ``name`` into ``out`` (same shape), inflating a chunk at a time."""
        key = self._prefix + name
        if self._keep is not None and key in self._keep:
            np.copyto(out, self._keep[key], casting="unsafe")
            return
        item = self._stored.get(key)
        if item is None:
            raise KeyError(name)
        if item.shape != out.shape:
            raise SnapshotError(f"{name!r} has shape {item.shape}, expected {out.shape}")
        item.read_into(self._buf, out, release=key not in self._viewed)

    def iter_rows(self, name: str, rows: int) -> Iterator[npt.NDArray[Any]]:
        """Array ``name``'s rows, ``rows`` at a time, inflated as they go (keeping nothing)."""
        key = self._prefix + name
        if self._keep is not None and key in self._keep:
            whole = self._keep[key]
            for start in range(0, len(whole), rows):
                yield whole[start : start + rows]
            return
        item = self._stored.get(key)
        if item is None:
            raise KeyError(name)
        yield from item.iter_rows(self._buf, rows)

