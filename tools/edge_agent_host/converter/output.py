"""Writing a converter's bundle: a directory or a tar, optionally signed, then verified.

The bundle is written through :func:`edge_agent.bundle.writer.write_bundle`, packed with
:func:`edge_agent.bundle.writer.pack_tar` when ``out`` ends in ``.tar``, ``.tar.gz`` or ``.tgz``,
signed with :func:`edge_agent.bundle.writer.sign_bundle`, and finally loaded back exactly as a
device would (with the signer's public key as the only trusted key), so what the tool reports is
what loads. A converter's ``device_check`` runs on the loaded bundle *before* it is signed (the
neural converters build and step the device's agent group there); if it raises, the bundle is
removed and nothing is signed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle.loader import Bundle, load_bundle
from edge_agent.bundle.manifest import AifSpec, BundleKind, NeuralSpec
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.bundle.writer import pack_tar, sign_bundle, write_bundle
from edge_agent.errors import BundleError

logger = logging.getLogger(__name__)

__all__ = ["TAR_SUFFIXES", "check_output", "write_output"]

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def _is_tar(path: Path) -> bool:
    return path.name.endswith(TAR_SUFFIXES)


def check_output(out: str | os.PathLike[str]) -> None:
    """Fail before any work if ``out`` cannot take a new bundle (an existing tar or a non-empty
    directory)."""
    dest = Path(out)
    if _is_tar(dest):
        if dest.exists():
            raise BundleError(f"{dest}: already exists; choose a new path or remove it")
    elif dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BundleError(f"{dest}: exists and is not an empty directory")
    where = dest.parent if _is_tar(dest) or not dest.exists() else dest
    while not where.exists() and where != where.parent:
        where = where.parent  # the directory the new one will be made in
    if not os.access(where, os.W_OK | os.X_OK):
        raise BundleError(f"{dest}: cannot write it: {where}: Permission denied")


def write_output(
    out: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    kind: BundleKind,
    arrays: Mapping[str, np.ndarray] | None = None,
    files: Mapping[str, bytes | Path] | None = None,
    aif: AifSpec | None = None,
    neural: NeuralSpec | None = None,
    quantization: Mapping[str, Any] | None = None,
    sign_key: Ed25519PrivateKey | None = None,
    signer: str | None = None,
    device_check: Callable[[Bundle], None] | None = None,
) -> dict[str, Any]:
    """Write (and sign) a bundle at ``out``; returns ``{path, sha256, nbytes, key_id, signer}``.

    ``out`` is a directory (which must not exist or be empty) or a tar path (which must not
    exist). ``device_check`` gets the written bundle, loaded as a device loads it, before it is
    signed. Nothing is left behind if writing, the check or signing fails.
    """
    dest = Path(out)
    if _is_tar(dest):
        if dest.exists():
            raise BundleError(f"{dest}: already exists; choose a new path or remove it")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".bundle-", dir=dest.parent) as tmp:
            staging = Path(tmp) / "bundle"
            write_bundle(
                staging,
                name=name,
                version=version,
                kind=kind,
                arrays=arrays,
                files=files,
                aif=aif,
                neural=neural,
                quantization=dict(quantization or {}),
            )
            pack_tar(staging, dest)
    else:
        existed = dest.exists()
        write_bundle(
            dest,
            name=name,
            version=version,
            kind=kind,
            arrays=arrays,
            files=files,
            aif=aif,
            neural=neural,
            quantization=dict(quantization or {}),
        )
        if not existed:
            logger.debug("created bundle directory %s", dest)
    try:
        if device_check is not None:
            device_check(load_bundle(dest, trusted_keys=None, require_signature=False))
        trusted = None
        if sign_key is not None:
            sign_bundle(dest, sign_key, signer=signer)
            trusted = TrustedKeys([sign_key.public_key()])
        bundle = load_bundle(dest, trusted_keys=trusted, require_signature=sign_key is not None)
    except BaseException:
        if dest.is_dir():
            shutil.rmtree(dest, ignore_errors=True)
        else:
            dest.unlink(missing_ok=True)
        raise
    return {
        "path": str(dest),
        "sha256": bundle.sha256,
        "nbytes": bundle.nbytes,
        "key_id": bundle.key_id,
        "signer": bundle.manifest.signer,
        "kind": kind,
        "name": name,
        "version": version,
    }
