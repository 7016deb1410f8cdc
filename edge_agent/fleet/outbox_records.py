"""The outbox's records in its file (a :class:`~edge_agent.fleet.record_log.RecordLog` of magic
:data:`MAGIC`): a message put (:func:`put_record`), messages deleted (:func:`delete_record`), a
probe write (:data:`PROBE`, nothing); and :class:`Reader`, which reads them into the outbox's
index as the file is opened. The outbox (:mod:`edge_agent.fleet.outbox`) decides what is written
when.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from typing import Final

import numpy as np

from edge_agent.fleet.outbox_index import OutboxIndex
from edge_agent.fleet.record_log import LogDamagedError

__all__ = ["HEAD", "MAGIC", "PROBE", "PUT_HEAD", "Reader", "delete_record", "put_record"]

MAGIC: Final = b"EAOUTBX1"
PUT: Final = b"P"  # + PUT_HEAD + class + topic + payload
DELETE: Final = b"D"  # + ids (u64 LE each)
PROBE: Final = b"N"  # nothing: a probe write while the storage refuses commits
#: id, created, expires, retain, len(class), len(topic)
PUT_HEAD: Final = struct.Struct("<QddBBH")
HEAD: Final = 1 + PUT_HEAD.size
"""A put record's bytes before its class, topic and payload."""


def put_record(
    row_id: int,
    cls: str,
    topic: str,
    payload: bytes,
    *,
    retain: bool,
    created: float,
    expires: float,
) -> bytes:
    """The record that puts message ``row_id`` in the file."""
    cls_b, topic_b = cls.encode(), topic.encode()
    head = PUT_HEAD.pack(row_id, created, expires, retain, len(cls_b), len(topic_b))
    return b"".join((PUT, head, cls_b, topic_b, payload))


class Reader:
    """Decodes the file's records into a fresh index as they are read (no object kept per
    message): a put holds its message, a deletion drops the messages it names."""

    def __init__(self) -> None:
        self.index = OutboxIndex()

    def __call__(self, record: memoryview, at: int) -> None:
        kind = bytes(record[:1])
        if kind == PUT and len(record) >= HEAD:
            row_id, _created, expires, retain, n_cls, n_topic = PUT_HEAD.unpack_from(record, 1)
            end = HEAD + n_cls + n_topic
            if end <= len(record):
                try:
                    cls = str(record[HEAD : HEAD + n_cls], "utf-8")
                    topic = str(record[HEAD + n_cls : end], "utf-8")
                except UnicodeDecodeError as err:
                    raise LogDamagedError(f"a message record at byte {at}: {err}") from err
                size = len(record) - end + n_topic
                self.index.append(
                    row_id, cls, topic, expires=expires, at=at, size=size, retain=bool(retain)
                )
                return
        elif kind == DELETE and (len(record) - 1) % 8 == 0:
            ids = np.frombuffer(record, "<u8", offset=1).astype(np.int64)
            found = self.index.find_many(ids)
            self.index.remove(np.unique(found[found >= 0]))
            return
        elif kind == PROBE:
            return
        raise LogDamagedError(f"a record at byte {at} is not one this outbox writes")


def delete_record(ids: Collection[int]) -> bytes:
    """The record that deletes the messages ``ids``."""
    return DELETE + struct.pack(f"<{len(ids)}Q", *ids)
