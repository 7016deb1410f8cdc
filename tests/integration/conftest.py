"""Fixtures for tests against a real mosquitto.

``mosquitto`` gives each test its own broker (a :class:`tests.support.broker.MosquittoBroker`),
started on a free loopback port with persistence off, and kills it afterwards. A machine without
mosquitto fails these tests (it does not skip them): install it with ``apt-get install mosquitto``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import MosquittoBroker, MosquittoMissingError


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    try:
        broker = MosquittoBroker(tmp_path / "mosquitto")
    except MosquittoMissingError as err:
        pytest.fail(str(err))
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()
