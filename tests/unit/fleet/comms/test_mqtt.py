"""A TLS file that is gone when the transport reconnects (removed after check-config and the
start passed) is one error line per attempt naming the file, never a traceback."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from edge_agent.fleet.comms.base import Backoff
from edge_agent.fleet.comms.mqtt import MqttSettings, MqttTransport, TlsSettings


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if record.levelno >= logging.ERROR:
            self.seen.set()


@pytest.mark.parametrize("missing", ["ca_file", "cert_file", "key_file"])
def test_a_missing_tls_file_at_reconnect_is_one_line_naming_it(
    tmp_path: Path, missing: str
) -> None:
    files = {key: tmp_path / f"{key}.pem" for key in ("ca_file", "cert_file", "key_file")}
    for key, path in files.items():
        if key != missing:
            path.write_text("present\n")
    tls = TlsSettings(**{key: str(path) for key, path in files.items()})
    transport = MqttTransport(
        MqttSettings(client_id="tls-test", port=8883, tls=tls),
        backoff=Backoff(initial_s=0.05, max_s=0.05),
    )
    records = _Records()
    log = logging.getLogger("edge_agent.fleet.comms.mqtt")
    log.addHandler(records)
    try:
        transport.connect()
        assert records.seen.wait(30), "no error logged"
    finally:
        transport.disconnect()
        log.removeHandler(records)
    errors = [r for r in records.records if r.levelno >= logging.ERROR]
    assert errors
    for record in errors:
        assert record.exc_info is None  # no traceback
        assert record.getMessage() == (
            f"MQTT session to 127.0.0.1:8883 failed: MQTT TLS setup failed: {missing} "
            f"{files[missing]}: cannot read: No such file or directory"
        )
