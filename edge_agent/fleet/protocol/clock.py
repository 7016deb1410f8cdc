"""Whether this machine's wall clock is synchronised to a time source (an envelope's
``clock_synced``)."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Final

TIMESYNC_FLAG: Final = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR: Final = 5  # adjtimex(2) return value while the kernel clock is unsynchronised
_TIMEX_BYTES: Final = 512  # struct timex is 208 bytes on LP64; ``modes`` (offset 0) = 0 reads only


def clock_synced() -> bool:
    """Whether the wall clock is synchronised to a time source.

    True when systemd-timesyncd has written ``/run/systemd/timesync/synchronized``, or when the
    kernel's NTP state (``adjtimex(2)`` read-only, which chrony, ntpd and timesyncd all maintain)
    is not ``TIME_ERROR``. False when neither says so or the call is unavailable. In a container
    the kernel answer is the host's.
    """
    if TIMESYNC_FLAG.exists():
        return True
    state = _adjtimex_state()
    return state is not None and state != _TIME_ERROR


def _adjtimex_state() -> int | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    buf = ctypes.create_string_buffer(_TIMEX_BYTES)
    state = int(adjtimex(buf))
    return None if state < 0 else state
