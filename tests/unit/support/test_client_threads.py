"""tests.support.client_threads: a test file that leaves a paho client's network thread running
fails its last teardown, naming the client; one whose module-scoped fixture stops its client
passes (a real pytest run in a subprocess, real paho clients reconnecting to a closed port)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ("pytester",)

_CLIENT = (
    "import socket\n"
    "import paho.mqtt.client as paho\n"
    "def started(name):\n"
    "    with socket.socket() as s:\n"
    "        s.bind(('127.0.0.1', 0))\n"
    "        port = s.getsockname()[1]\n"  # closed again: nothing listens there
    "    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name)\n"
    "    client.connect_async('127.0.0.1', port)\n"
    "    client.loop_start()\n"
    "    return client\n"
)


def test_a_file_that_leaves_a_client_running_fails_its_last_teardown_and_only_that(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(
        "from tests.support.client_threads import ClientThreads\n"
        "def pytest_configure(config):\n"
        "    config.pluginmanager.register(ClientThreads(), 'client-threads')\n"
    )
    pytester.makepyfile(
        test_a_leaks=_CLIENT
        + "def test_starts():\n"
        "    started('leaky')\n"
        "def test_after():\n"
        "    pass\n",
        test_b_stops=_CLIENT
        + "import pytest\n"
        "@pytest.fixture(scope='module')\n"
        "def client():\n"
        "    c = started('tidy')\n"
        "    yield c\n"
        "    c.loop_stop()\n"
        "def test_one(client):\n"
        "    pass\n"
        "def test_two(client):\n"
        "    pass\n",
    )
    root = Path(__file__).resolve().parents[3]
    monkeypatch.setenv("PYTHONPATH", str(root))  # tests.support, in the run's process
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    # Both of test_a_leaks' tests pass; its last teardown is the error. test_b_stops: clean.
    result.assert_outcomes(passed=4, errors=1)
    text = result.stdout.str()
    assert "ERROR at teardown of test_after" in text, text
    assert "paho-mqtt-client-leaky" in text, text
    assert "tidy" not in text, text
