"""Logging of a service: to stderr, with syslog priorities under journald.

The one place logging is configured is a command line's ``main`` (``edge-agent``,
``edge-agentd``, ``edge-agent-hub``); this is what those call.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["JournalFormatter", "configure_logging"]


class JournalFormatter(logging.Formatter):
    """Under systemd (``JOURNAL_STREAM`` set) every line starts with its syslog priority,
    ``<3>`` for errors to ``<7>`` for debug, which journald reads (``SyslogLevelPrefix=``, on by
    default) so that ``journalctl -p warning`` filters; journald adds its own timestamps. Every
    line of a multi-line record (a traceback) carries the prefix."""

    PRIORITY = {  # noqa: RUF012 - a constant table
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{self.PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if os.environ.get("JOURNAL_STREAM"):  # under systemd: priorities for journald
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JournalFormatter())
