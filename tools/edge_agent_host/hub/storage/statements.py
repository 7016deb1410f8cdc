"""What the storage's parts need of the database inside a transaction the data layer holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["Statements"]


class Statements(Protocol):
    """Statements inside the caller's transaction (:class:`~.database.HubDatabase` is one):
    database errors reach the transaction's owner as they are, which tells an unavailable
    database from a message it refused."""

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The rows of one query."""
        ...

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """One statement; the rows it changed."""
        ...

    def execute_many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """One statement for each of ``rows``."""
        ...
