"""A broker directory: ``init`` writes it whole, ``issue`` adds an identity or gives one a new
key, ``revoke`` locks one out (the files each writes are listed in
:mod:`edge_agent_host.broker`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from edge_agent.errors import InputError
from edge_agent.fsutil import write_atomic
from edge_agent_host.broker.certs import (
    cert_pem,
    crl_pem,
    issue_cert,
    key_pem,
    load_ca,
    make_ca,
    utc_now,
)
from edge_agent_host.broker.identities import Auth, BrokerState, Identity, Role, check_identity
from edge_agent_host.broker.mosquitto import (
    SALT_BYTES,
    acl_text,
    client_snippet,
    mosquitto_conf,
    password_line,
    snippet_name,
)


# --------------------------------------------------------------------------------------- files
def write_file(path: Path, data: bytes | str, *, private: bool = False) -> Path:
    raw = data.encode() if isinstance(data, str) else data
    write_atomic(path, raw, mode=0o600 if private else 0o644, mkdir=True)
    return path


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def load_state(out: Path) -> BrokerState:
    path = out / "broker.json"
    try:
        return BrokerState.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputError(f"{path} not found: run 'edge-agent-host broker init' first") from err
    except ValidationError as err:
        raise InputError(f"{path}: {err.errors()[0]['msg']}") from err


def save_state(out: Path, state: BrokerState) -> None:
    write_file(out / "broker.json", state.model_dump_json(indent=2) + "\n")


def _device_path(state: BrokerState, out: Path, name: str, file: str) -> str:
    base = Path(state.device_dir) if state.device_dir else (out / "clients" / name).resolve()
    return str(base / file)


def _issue_files(
    state: BrokerState,
    out: Path,
    name: str,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None,
) -> list[Path]:
    """Write ``clients/NAME/`` and record the identity's serial; returns the files written."""
    cdir = _private_dir(out / "clients" / name)
    written = [write_file(cdir / "ca.crt", (out / "ca" / "ca.crt").read_bytes())]
    files = {"ca": _device_path(state, out, name, "ca.crt")}
    ident = state.identities[name]
    if state.auth is Auth.CERT:
        if ca is None:
            raise InputError("certificate authentication needs the CA (ca/ca.key)")
        key, cert = issue_cert(*ca, name, days=state.validity_days)
        written += [
            write_file(cdir / f"{name}.crt", cert_pem(cert)),
            write_file(cdir / f"{name}.key", key_pem(key), private=True),
        ]
        ident.serial = format(cert.serial_number, "x")
        files |= {
            "cert": _device_path(state, out, name, f"{name}.crt"),
            "key": _device_path(state, out, name, f"{name}.key"),
        }
    else:
        password = secrets.token_urlsafe(32)
        written.append(write_file(cdir / "password", password + "\n", private=True))
        _set_password(out, name, password_line(name, password, salt=os.urandom(SALT_BYTES)))
        files["password"] = _device_path(state, out, name, "password")
    written.append(write_file(cdir / snippet_name(ident.role), client_snippet(state, name, files)))
    return written


def _set_password(out: Path, name: str, line: str | None) -> None:
    """Replace (or with ``line`` None remove) ``name``'s entry of ``passwords``."""
    path = out / "passwords"
    old = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [entry for entry in old if entry.split(":", 1)[0] != name]
    if line is not None:
        kept.append(line)
    write_file(path, "".join(f"{entry}\n" for entry in kept), private=True)


def _server_names(host: str, bind: str, sans: Iterable[str]) -> list[str]:
    names = [host, *sans]
    if bind not in ("0.0.0.0", "::", host):
        names.append(bind)
    if "127.0.0.1" in names or "localhost" in names:
        names += ["127.0.0.1", "localhost"]
    return list(dict.fromkeys(names))


def init_broker(state: BrokerState, out: Path) -> list[Path]:
    """Write everything for a new broker into ``out`` (which must not hold one already)."""
    if not state.names(Role.NODE):
        raise InputError("a broker needs at least one node (--node ID)")
    if (out / "broker.json").exists() or (out / "ca").exists():
        raise InputError(f"{out} already holds a broker: use 'broker issue' or another --out")
    _check_roles(state)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    ca_key, ca_cert = make_ca(state.fleet, state.validity_days)
    ca_dir = _private_dir(out / "ca")
    written = [
        write_file(ca_dir / "ca.key", key_pem(ca_key), private=True),
        write_file(ca_dir / "ca.crt", cert_pem(ca_cert)),
    ]
    ca_dir.chmod(0o755)  # the broker (maybe another user) reads ca.crt and crl.pem
    if state.auth is Auth.CERT:
        written.append(write_file(ca_dir / "crl.pem", crl_pem(ca_key, ca_cert, {})))
    else:
        write_file(out / "passwords", "", private=True)
        written.append(out / "passwords")
    server_names = _server_names(state.host, state.bind, state.sans)
    key, cert = issue_cert(
        ca_key, ca_cert, "broker", days=state.validity_days, server_names=server_names
    )
    written += [
        write_file(out / "broker" / "broker.crt", cert_pem(cert)),
        write_file(out / "broker" / "broker.key", key_pem(key), private=True),
    ]
    for name in state.identities:
        written += _issue_files(state, out, name, (ca_key, ca_cert))
    written += [
        write_file(out / "acl", acl_text(state)),
        write_file(out / "mosquitto.conf", mosquitto_conf(state, out)),
    ]
    save_state(out, state)
    written.append(out / "broker.json")
    return written


def _check_roles(state: BrokerState) -> None:
    for name in state.identities:
        check_identity(name)
    if "broker" in state.identities:
        raise InputError("'broker' is the listener's certificate: choose another identity name")


def issue_identity(out: Path, name: str, role: Role, *, rotate: bool = False) -> list[Path]:
    """Add an identity to an existing broker directory, or with ``rotate`` give one a new key
    (its old certificate is revoked; a new password replaces the old one)."""
    state = load_state(out)
    check_identity(name)
    current = state.identities.get(name)
    if current is not None and not current.revoked and not rotate:
        raise InputError(f"{name!r} exists ({current.role.value}): --rotate gives it a new key")
    if current is not None and current.role is not role:
        raise InputError(f"{name!r} is a {current.role.value}, not a {role.value}")
    if current is not None and current.serial and not current.revoked:
        state.revoked_serials[current.serial] = utc_now().isoformat()
    state.identities[name] = Identity(role=role, issued_at=utc_now().isoformat())
    _check_roles(state)
    ca = load_ca(out) if state.auth is Auth.CERT else None
    written = _issue_files(state, out, name, ca)
    if ca is not None:
        written.append(write_file(out / "ca" / "crl.pem", crl_pem(*ca, state.revoked_serials)))
    written.append(write_file(out / "acl", acl_text(state)))
    save_state(out, state)
    return written


def revoke_identity(out: Path, name: str) -> list[Path]:
    """Lock ``name`` out: its certificate into the CRL, or its password entry removed (new
    connections fail), and every topic denied to it in the ACL (a session still open loses
    every right). Takes effect when mosquitto reloads (SIGHUP)."""
    state = load_state(out)
    ident = state.identities.get(name)
    if ident is None or ident.revoked:
        raise InputError(f"no live identity {name!r} in {out / 'broker.json'}")
    ident.revoked = True
    written = [write_file(out / "acl", acl_text(state))]
    if state.auth is Auth.CERT:
        state.revoked_serials[ident.serial] = utc_now().isoformat()
        written.append(
            write_file(out / "ca" / "crl.pem", crl_pem(*load_ca(out), state.revoked_serials))
        )
    else:
        _set_password(out, name, None)
        written.append(out / "passwords")
    save_state(out, state)
    return written
