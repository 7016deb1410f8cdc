"""Fixtures for tests against a real mosquitto, and for the docs' blocks.

``mosquitto`` gives each test its own broker (a :class:`tests.support.broker.MosquittoBroker`),
started on a free loopback port with persistence off, and kills it afterwards. A machine without
mosquitto fails these tests (it does not skip them): install it with ``apt-get install mosquitto``.

``readme_venv`` is the README's venv (:mod:`tests.support.readme_venv`): made once per run, as
the README makes it, for the blocks of the pages that name it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import MosquittoBroker, MosquittoMissingError
from tests.support.readme_venv import ReadmeVenv
from tests.support.readme_venv import readme_venv as build_readme_venv


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


@pytest.fixture(scope="session")
def readme_venv(tmp_path_factory: pytest.TempPathFactory) -> ReadmeVenv:
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # every worker's
    try:
        return build_readme_venv(shared)
    except RuntimeError as err:
        pytest.fail(f"the README's venv could not be made as the README says:\n{err}")
