"""Whether a broker's port speaks TLS: what a client without TLS settings is told when the broker
closes its plain connection.

A client that sends a plain MQTT CONNECT to a TLS listener (the one ``edge-agent-host broker
init`` writes) sees only its connection reset, attempt after attempt. :func:`tls_wanted` asks the
port once, with a TLS handshake that trusts any certificate and offers none: a plain broker
resets it (it reads the ClientHello as a malformed packet), a TLS one answers, and one that wants
a client certificate says so with an alert (``certificate required``; ``handshake failure``
under TLS 1.2). :class:`TlsOptions` says, in the words of the client's user, what to give.
Nothing is sent beyond the handshake; the probe is made once, after a failed attempt, by
:class:`~edge_agent.fleet.comms.mqtt.MqttTransport`.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Final

__all__ = ["CONFIG_TLS_OPTIONS", "TLS", "TLS_WITH_CLIENT_CERTIFICATE", "TlsOptions", "tls_wanted"]

TLS: Final = "TLS"
TLS_WITH_CLIENT_CERTIFICATE: Final = "TLS with a client certificate"
#: The alerts by which a TLS server refuses a client that offered no certificate.
_CERTIFICATE_ALERTS: Final = ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE", "BAD_CERTIFICATE")


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How a client's user gives it TLS: its CA, certificate and key options by name, and where
    they are written (``note``)."""

    ca: str
    cert: str
    key: str
    note: str = ""

    def advice(self, wanted: str) -> str:
        """What to give for ``wanted`` (:func:`tls_wanted`'s answer)."""
        names = self.ca if wanted == TLS else f"{self.ca}, {self.cert} and {self.key}"
        return f"give {names}" + (f" ({self.note})" if self.note else "")


CONFIG_TLS_OPTIONS: Final = TlsOptions(
    "[mqtt.tls] enabled, ca_file",
    "cert_file",
    "key_file",
    "edge-agent-host broker init writes them into each client's mqtt.toml or hub.toml",
)
"""The config files' words (the daemon's and the hub service's ``[mqtt.tls]``)."""


def tls_wanted(host: str, port: int, timeout_s: float = 3.0) -> str:
    """:data:`TLS_WITH_CLIENT_CERTIFICATE` when ``host:port`` answers a TLS handshake and refuses
    it without a client certificate, :data:`TLS` when it answers one, ``""`` when it does not (a
    plain broker, nothing listening, no answer within ``timeout_s``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only whether it speaks TLS: nothing is trusted or sent
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            # TLS 1.3 refuses a missing certificate after the handshake: the alert is the first
            # thing the server sends, before any MQTT byte (it waits for our CONNECT).
            try:
                tls.recv(1)
            except ssl.SSLError as err:
                return _alert(err) or TLS
            except OSError:
                return TLS  # it spoke TLS, then waited or went away
            return TLS
    except ssl.SSLError as err:  # an alert is a TLS server refusing us; other bytes are not TLS
        return _alert(err)
    except OSError:  # reset, refused, timed out: not a TLS server we can tell of
        return ""


def _alert(err: ssl.SSLError) -> str:
    """What a TLS alert from the server says it wants; ``""`` for an error that is no alert (the
    peer sent something that is not TLS, or closed)."""
    reason = str(getattr(err, "reason", None) or err).upper()
    if "ALERT" not in reason:
        return ""
    return TLS_WITH_CLIENT_CERTIFICATE if any(a in reason for a in _CERTIFICATE_ALERTS) else TLS
