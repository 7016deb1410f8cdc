"""Bundle format v1, the writing side: the canonical writer, packing and signing.

:func:`write_bundle` writes a bundle directory (arrays as ``.npy``, model files as given, the
manifest with every file's sha256 and size), :func:`pack_tar` packs one into a deterministic
``.tar``, :func:`sign_bundle` adds an Ed25519 signature over the canonical manifest bytes. Every
bundle written is read back through the device's own loader (:mod:`edge_agent.bundle.loader`)
before it is returned, so what is written is what a device accepts. Used by the host tool; the
device only reads.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import tarfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import (
    JsonValue,
    ValidationError,
)

from edge_agent.bundle import signing
from edge_agent.errors import BundleError
from edge_agent.fsutil import write_atomic

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edge_agent.bundle.loader import load_source
from edge_agent.bundle.manifest import (
    ARRAY_DTYPES,
    MANIFEST_NAME,
    AifSpec,
    BundleKind,
    FileEntry,
    Manifest,
    NeuralSpec,
    canonical_json,
    canonical_manifest_bytes,
    format_validation_error,
    parse_manifest,
)
from edge_agent.bundle.sources import DEFAULT_LIMITS, DirSource, open_source

logger = logging.getLogger(__name__)

__all__ = ["pack_tar", "sign_bundle", "write_bundle"]


def _encode_npy(rel: str, array: npt.ArrayLike) -> tuple[bytes, str, tuple[int, ...]]:
    arr = np.asarray(array)
    if arr.dtype.hasobject or arr.dtype.fields is not None or arr.dtype.name not in ARRAY_DTYPES:
        raise BundleError(
            f"{rel}: dtype {arr.dtype} is not allowed in a bundle; "
            f"use one of {', '.join(ARRAY_DTYPES)}"
        )
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    if not arr.flags.c_contiguous:
        arr = np.array(arr, order="C")
    buffer = io.BytesIO()
    np.save(buffer, arr, allow_pickle=False)
    return buffer.getvalue(), arr.dtype.name, tuple(int(dim) for dim in arr.shape)


def _manifest_file_bytes(raw: Mapping[str, Any]) -> bytes:
    """``manifest.json`` as written to disk: canonical JSON (signature included) and a newline."""
    return canonical_json(raw) + b"\n"


def write_bundle(
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    kind: BundleKind,
    arrays: Mapping[str, npt.ArrayLike] | None = None,
    files: Mapping[str, bytes | Path] | None = None,
    aif: AifSpec | None = None,
    neural: NeuralSpec | None = None,
    quantization: Mapping[str, JsonValue] | None = None,
    created: datetime | None = None,
) -> Manifest:
    """Write an unsigned bundle directory and return its manifest.

    ``arrays`` maps payload paths ending in ``.npy`` to arrays (saved little-endian, C order,
    without pickle); ``files`` maps other payload paths to bytes or to a file to copy. Every path is
    validated and the manifest is checked before anything is written. ``out_dir`` must not exist or
    be empty. Sign the result with :func:`sign_bundle`.
    """
    payloads: dict[str, bytes] = {}
    entries: dict[str, FileEntry] = {}
    for rel, array in (arrays or {}).items():
        if not rel.endswith(".npy"):
            raise BundleError(f"{rel}: array payload paths must end in .npy")
        data, dtype_name, shape = _encode_npy(rel, array)
        payloads[rel] = data
        entries[rel] = FileEntry(
            sha256=hashlib.sha256(data).hexdigest(), size=len(data), dtype=dtype_name, shape=shape
        )
    for rel, content in (files or {}).items():
        if rel.endswith(".npy"):
            raise BundleError(f"{rel}: pass .npy arrays through arrays=, not files=")
        if rel in payloads:
            raise BundleError(f"{rel}: given twice")
        data = content if isinstance(content, bytes) else Path(content).read_bytes()
        payloads[rel] = data
        entries[rel] = FileEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    when = created if created is not None else datetime.now(UTC).replace(microsecond=0)
    try:
        manifest = Manifest(
            format_version=1,
            name=name,
            version=version,
            created=when,
            kind=kind,
            files=entries,
            aif=aif,
            neural=neural,
            quantization=dict(quantization or {}),
        )
    except ValidationError as err:
        raise BundleError(f"invalid manifest: {format_validation_error(err)}") from err
    raw = manifest.model_dump(mode="json")
    neural_raw = raw.get("neural")
    if isinstance(neural_raw, dict) and neural_raw.get("observation_range") is None:
        # Without a range the key is left out, as before it existed: a device running an
        # older edge-agent loads the bundle (its schema knows no such key).
        del neural_raw["observation_range"]
    manifest_data = _manifest_file_bytes(raw)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out}: exists and is not an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    for rel, data in sorted(payloads.items()):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    write_atomic(out / MANIFEST_NAME, manifest_data, mode=0o644)
    logger.info("wrote bundle %s (%s %s, %d files)", out, name, version, len(entries))
    return manifest


def _tar_bytes(manifest_data: bytes, payloads: Mapping[str, bytes | memoryview]) -> bytes:
    """A deterministic tar: manifest first, then payloads by sorted name; mtime 0, root-owned."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        members = [(MANIFEST_NAME, bytes(manifest_data))]
        members += [(rel, bytes(payloads[rel])) for rel in sorted(payloads)]
        for rel, data in members:
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _write_tar(
    dest: Path, manifest_data: bytes, payloads: Mapping[str, bytes | memoryview], compress: bool
) -> None:
    data = _tar_bytes(manifest_data, payloads)
    if compress:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    write_atomic(dest, data, mode=0o644)


def pack_tar(bundle_dir: str | os.PathLike[str], tar_path: str | os.PathLike[str]) -> Manifest:
    """Verify a bundle directory's payload hashes and pack it into a deterministic tar.

    Names are sorted (``manifest.json`` first), mtime is 0, owner is 0:0. The tar is uncompressed
    unless ``tar_path`` ends in ``.tar.gz`` or ``.tgz`` (then gzip with mtime 0). A signature, if
    any, is kept as is.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory")
    source = DirSource(root, DEFAULT_LIMITS)
    bundle = load_source(source, root, DEFAULT_LIMITS, None, require_signature=False)
    dest = Path(tar_path)
    _write_tar(
        dest, source.manifest_bytes, bundle._payloads, dest.name.endswith((".tar.gz", ".tgz"))
    )
    logger.info("packed %s into %s", root, dest)
    return bundle.manifest


def sign_bundle(
    path: str | os.PathLike[str], private_key: Ed25519PrivateKey, signer: str | None = None
) -> Manifest:
    """Sign a bundle directory or tar in place and return the signed manifest.

    The payload hashes are verified first (a broken bundle is never signed). ``signer`` replaces
    the manifest's ``signer`` field (``None`` clears it) and is covered by the signature. An
    existing signature is replaced. ``manifest.json`` is rewritten in canonical form, so a
    hand-edited manifest can be signed. A tar is rewritten deterministically, keeping its
    compression.
    """
    bundle_path = Path(path)
    source = open_source(bundle_path, DEFAULT_LIMITS)
    bundle = load_source(
        source, bundle_path, DEFAULT_LIMITS, None, require_signature=False, require_canonical=False
    )
    raw, _ = parse_manifest(source.label, source.manifest_bytes, require_canonical=False)
    raw["signer"] = signer
    raw["signature"] = None
    signature = signing.sign_bytes(private_key, canonical_manifest_bytes(raw))
    raw["signature"] = {
        "algorithm": "ed25519",
        "key_id": signing.key_id(private_key.public_key()),
        "value": signing.encode_signature(signature),
    }
    manifest_data = _manifest_file_bytes(raw)
    _, manifest = parse_manifest(source.label, manifest_data)
    if isinstance(source, DirSource):
        write_atomic(bundle_path / MANIFEST_NAME, manifest_data, mode=0o644)
    else:
        _write_tar(bundle_path, manifest_data, bundle._payloads, source.compressed)
    logger.info("signed %s with key %s", bundle_path, raw["signature"]["key_id"])
    return manifest
