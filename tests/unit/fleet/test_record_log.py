"""The append-only file of framed records under the fleet's small stores (fleet/record_log.py)."""

from __future__ import annotations

import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.fleet.record_log import (
    FRAME,
    MAGIC_BYTES,
    LogDamagedError,
    RecordLog,
    frames,
    write_log,
)

MAGIC = b"EATEST01"


def test_records_come_back_in_order_after_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log, payloads = RecordLog.open(path, MAGIC)
    assert payloads == []
    assert path.read_bytes() == MAGIC
    log.append([b"one", b""], sync=False)
    log.append([b"three" * 100], sync=True)
    log.append([], sync=True)  # nothing: nothing written
    assert log.records == 3
    assert log.size == path.stat().st_size == MAGIC_BYTES + 3 * FRAME.size + 3 + 500
    log.close()
    again, payloads = RecordLog.open(path, MAGIC)
    assert payloads == [b"one", b"", b"three" * 100]
    assert again.records == 3
    assert again.dropped_bytes == 0
    again.close()


def test_the_frame_is_a_length_and_a_crc32(tmp_path: Path) -> None:
    assert frames([b"abc"]) == FRAME.pack(3, zlib.crc32(b"abc")) + b"abc"


@pytest.mark.parametrize("cut", [1, FRAME.size - 1, FRAME.size, FRAME.size + 3])
def test_a_torn_tail_is_reported_and_dropped(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "x.log"
    log, _ = RecordLog.open(path, MAGIC)
    log.append([b"kept-1", b"kept-2"], sync=False)
    good = log.size
    log.append([b"torn-record"], sync=False)
    log.close()
    path.write_bytes(path.read_bytes()[: good + cut])  # a crash in the middle of the append
    log, payloads = RecordLog.open(path, MAGIC)
    assert payloads == [b"kept-1", b"kept-2"]
    assert (log.size, log.dropped_bytes) == (good, cut)
    with pytest.raises(RuntimeError, match="drop_tail first"):
        log.append([b"after"], sync=False)  # never after garbage
    log.drop_tail()
    log.append([b"after"], sync=False)
    log.close()
    _, payloads = RecordLog.open(path, MAGIC)
    assert payloads == [b"kept-1", b"kept-2", b"after"]


def test_a_record_failing_its_crc_ends_the_readable_part(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log, _ = RecordLog.open(path, MAGIC)
    log.append([b"first"], sync=False)
    good = log.size
    log.append([b"second", b"third"], sync=False)
    log.close()
    data = bytearray(path.read_bytes())
    data[good + FRAME.size] ^= 0x01  # one bit of "second"
    path.write_bytes(bytes(data))
    log, payloads = RecordLog.open(path, MAGIC)
    assert payloads == [b"first"]
    assert log.dropped_bytes == len(data) - good
    log.close()
    # A length no record has is damage too, not a request to read 4 GiB.
    data = bytearray(path.read_bytes())
    data[MAGIC_BYTES : MAGIC_BYTES + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    log, payloads = RecordLog.open(path, MAGIC)
    assert payloads == []
    assert log.size == MAGIC_BYTES
    log.close()


@pytest.mark.parametrize("content", [b"SQLite format 3\x00" + b"\x00" * 84, b"EATEST02", b"x"])
def test_a_file_of_another_kind_is_damaged(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(content)
    with pytest.raises(LogDamagedError, match="not a EATEST01 record log"):
        RecordLog.open(path, MAGIC)
    assert path.read_bytes() == content  # untouched: the owner moves it aside


def test_a_magic_cut_short_at_creation_starts_the_log_again(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(MAGIC[:3])
    log, payloads = RecordLog.open(path, MAGIC)
    assert payloads == []
    assert path.read_bytes() == MAGIC
    log.close()


def test_rewrite_keeps_only_what_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log, _ = RecordLog.open(path, MAGIC)
    log.append([b"a" * 100] * 50, sync=False)
    log.rewrite([b"live"])
    assert (log.records, log.size) == (1, MAGIC_BYTES + FRAME.size + 4)
    log.append([b"next"], sync=True)  # the new file is the one appended to
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["x.log"]  # no temporary left
    _, payloads = RecordLog.open(path, MAGIC)
    assert payloads == [b"live", b"next"]


def test_an_append_the_storage_refuses_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    # A real refused write: the file size limit (RLIMIT_FSIZE) lets part of the append through,
    # then write() fails with EFBIG, as a disk that fills up in the middle of a write does.
    path = tmp_path / "x.log"
    code = f"""
import errno, resource, signal
from edge_agent.fleet.record_log import RecordLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
log, _ = RecordLog.open({str(path)!r}, {MAGIC!r})
log.append([b"kept"], sync=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (log.size + 20, resource.RLIM_INFINITY))
try:
    log.append([b"x" * 100], sync=True)
except OSError as err:
    print("refused", errno.errorcode.get(err.errno, err.errno))
log.append([b"fits"], sync=True)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == ["refused", "ENOSPC"]  # a short write, said as a full disk
    _, payloads = RecordLog.open(path, MAGIC)
    assert payloads == [b"kept", b"fits"]


def test_write_log_makes_a_whole_log_in_one_step(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    write_log(path, MAGIC, [b"a", b"bc"])
    assert [p.name for p in tmp_path.iterdir()] == ["x.log"]
    log, payloads = RecordLog.open(path, MAGIC)
    assert payloads == [b"a", b"bc"]
    log.close()

    def failing() -> Iterator[bytes]:
        yield b"partial"
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):  # a writer that fails leaves the old file
        write_log(path, MAGIC, failing())
    assert [p.name for p in tmp_path.iterdir()] == ["x.log"]
    _, payloads = RecordLog.open(path, MAGIC)
    assert payloads == [b"a", b"bc"]
