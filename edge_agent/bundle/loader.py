"""The one loader the device uses: :func:`load_bundle` reads a bundle directory or ``.tar``
(:mod:`edge_agent.bundle.sources`), parses its manifest (:mod:`edge_agent.bundle.manifest`),
checks the signature, the listing and every file's sha256, and decodes ``.npy`` payloads without
ever unpickling.

It refuses anything unsigned (unless told otherwise), signed by an untrusted key, altered,
oversized, or holding paths that escape the bundle, with a :class:`BundleError` or
:class:`SignatureError` that names the file and the reason.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge_agent.bundle import signing
from edge_agent.bundle.manifest import (
    COUNT_NAME,
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    canonical_manifest_bytes,
    parse_manifest,
)
from edge_agent.bundle.sources import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_TOTAL_BYTES,
    Limits,
    Source,
    check_size,
    open_source,
)
from edge_agent.errors import BundleError, SignatureError

logger = logging.getLogger(__name__)

__all__ = ["Bundle", "load_bundle", "load_source"]

#: Bytes read to decode a ``.npy`` header (its magic, version and the dict that follows).
_NPY_HEADER_PEEK = 16 * 1024


@dataclass(frozen=True, eq=False)
class Bundle:
    """A verified bundle held in memory.

    ``arrays`` maps payload path -> read-only array; ``sha256`` is the hex sha256 of the canonical
    manifest bytes (the bundle's identity, unchanged by re-signing); ``nbytes`` is the payload size.
    """

    manifest: Manifest
    path: Path
    sha256: str
    signature_verified: bool
    arrays: dict[str, npt.NDArray[Any]]
    _payloads: Mapping[str, bytes | memoryview] = field(repr=False)

    @property
    def nbytes(self) -> int:
        """Total bytes of all payload files (the manifest is not counted)."""
        return sum(entry.size for entry in self.manifest.files.values())

    @property
    def key_id(self) -> str | None:
        """Id of the signing key, or ``None`` if unsigned."""
        sig = self.manifest.signature
        return None if sig is None else sig.key_id

    def file_bytes(self, rel: str) -> bytes:
        """The verified bytes of payload file ``rel`` (any payload, including ``.npy`` files)."""
        data = self._payloads.get(rel)
        if data is None:
            raise BundleError(f"{self.path}: bundle has no file {rel!r}")
        return bytes(data)

    def aif_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The Active Inference arrays by logical name (``manifest.aif.arrays``)."""
        aif = self.manifest.aif
        if aif is None:
            raise BundleError(
                f"{self.path}: bundle of kind {self.manifest.kind!r} has no aif model"
            )
        return {logical: self.arrays[rel] for logical, rel in aif.arrays.items()}

    def aif_counts(self) -> dict[str, dict[int, npt.NDArray[Any]]]:
        """The Dirichlet counts a learning model carries (logical names ``pA0``.., ``pB0``..,
        ``pD0``..), by kind and modality/factor: ``{"A": {1: pA1}}``; empty for a frozen model.
        A learning group checks them against the model's tables (``LearningSpec``)."""
        out: dict[str, dict[int, npt.NDArray[Any]]] = {}
        for logical, array in self.aif_arrays().items():
            match = COUNT_NAME.match(logical)
            if match:
                out.setdefault(match.group(1), {})[int(match.group(2))] = array
        return out




def _check_signature(
    label: str,
    manifest: Manifest,
    canonical: bytes,
    trusted_keys: signing.TrustedKeys | None,
    require_signature: bool,
) -> bool:
    sig = manifest.signature
    if sig is None:
        if require_signature:
            raise SignatureError(
                f"{label}: bundle is unsigned ({MANIFEST_NAME} has no signature) "
                f"and a signature is required"
            )
        return False
    if trusted_keys is None:
        return False
    try:
        trusted_keys.verify(sig.key_id, canonical, signing.decode_signature(sig.value))
    except SignatureError as err:
        raise SignatureError(f"{label}: {err}") from err
    return True


def _check_listing(
    label: str, manifest: Manifest, sizes: Mapping[str, int], limits: Limits
) -> None:
    files = manifest.files
    if len(files) > limits.max_files:
        raise BundleError(
            f"{label}: {MANIFEST_NAME} lists {len(files)} files, "
            f"over the limit of {limits.max_files}"
        )
    total = 0
    for rel, entry in sorted(files.items()):
        total += entry.size
        check_size(label, rel, entry.size, limits, total)
    missing = sorted(files.keys() - sizes.keys())
    if missing:
        raise BundleError(
            f"{label}: {missing[0]}: listed in {MANIFEST_NAME} but missing from the bundle"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    extra = sorted(sizes.keys() - files.keys())
    if extra:
        raise BundleError(
            f"{label}: {extra[0]}: present in the bundle but not listed in {MANIFEST_NAME}"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    for rel, entry in sorted(files.items()):
        if sizes[rel] != entry.size:
            raise BundleError(
                f"{label}: {rel}: size mismatch: {MANIFEST_NAME} says {entry.size} bytes, "
                f"the file has {sizes[rel]}"
            )


def _parse_npy(
    label: str, rel: str, data: bytes | memoryview, entry: FileEntry
) -> npt.NDArray[Any]:
    """Decode a ``.npy`` payload without ever unpickling; dtype and shape must match ``entry``."""
    view = memoryview(data)
    head = io.BytesIO(bytes(view[:_NPY_HEADER_PEEK]))
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(head)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(head)
        else:
            raise ValueError(f"unsupported .npy version {version[0]}.{version[1]}")
    except (ValueError, TypeError, SyntaxError, OverflowError) as err:
        raise BundleError(f"{label}: {rel}: not a valid .npy file: {err}") from err
    if dtype.hasobject:
        raise BundleError(f"{label}: {rel}: object dtype is not allowed (it would need pickle)")
    if dtype.fields is not None or dtype.subdtype is not None:
        raise BundleError(f"{label}: {rel}: structured dtype {dtype} is not allowed")
    if entry.dtype is None or entry.shape is None:
        raise BundleError(f"{label}: {rel}: {MANIFEST_NAME} gives no dtype and shape")
    expected = np.dtype(entry.dtype).newbyteorder("<")
    if dtype.str != expected.str:
        raise BundleError(
            f"{label}: {rel}: dtype mismatch: file has {dtype.str} ({dtype}), "
            f"{MANIFEST_NAME} says {entry.dtype} ({expected.str})"
        )
    if tuple(shape) != entry.shape:
        raise BundleError(
            f"{label}: {rel}: shape mismatch: file has {tuple(shape)}, "
            f"{MANIFEST_NAME} says {entry.shape}"
        )
    offset = head.tell()
    count = math.prod(shape)
    if len(view) - offset != count * dtype.itemsize:
        raise BundleError(
            f"{label}: {rel}: array data is {len(view) - offset} bytes, expected "
            f"{count * dtype.itemsize} for {dtype} {tuple(shape)}"
        )
    order: Literal["C", "F"] = "F" if fortran_order else "C"
    if count == 0:
        array: npt.NDArray[Any] = np.empty(shape, dtype=dtype, order=order)
        array.flags.writeable = False
        return array
    return np.frombuffer(view[offset:], dtype=dtype, count=count).reshape(shape, order=order)


def load_source(
    source: Source,
    path: Path,
    limits: Limits,
    trusted_keys: signing.TrustedKeys | None,
    require_signature: bool,
    *,
    require_canonical: bool = True,
) -> Bundle:
    label = source.label
    raw, manifest = parse_manifest(
        label, source.manifest_bytes, require_canonical=require_canonical
    )
    canonical = canonical_manifest_bytes(raw)
    verified = _check_signature(label, manifest, canonical, trusted_keys, require_signature)
    _check_listing(label, manifest, source.sizes, limits)
    payloads: dict[str, bytes | memoryview] = {}
    arrays: dict[str, npt.NDArray[Any]] = {}
    for rel, entry in sorted(manifest.files.items()):
        data = source.read(rel, entry.size)
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.sha256:
            raise BundleError(
                f"{label}: {rel}: sha256 mismatch: {MANIFEST_NAME} says {entry.sha256[:16]}…, "
                f"the file hashes to {digest[:16]}…"
            )
        payloads[rel] = data
        if entry.dtype is not None:
            arrays[rel] = _parse_npy(label, rel, data, entry)
    bundle = Bundle(
        manifest=manifest,
        path=path,
        sha256=hashlib.sha256(canonical).hexdigest(),
        signature_verified=verified,
        arrays=arrays,
        _payloads=payloads,
    )
    logger.info(
        "loaded bundle %s %s %s (%s, %d files, %d bytes, sha256 %s, signature %s)",
        label,
        manifest.name,
        manifest.version,
        manifest.kind,
        len(manifest.files),
        bundle.nbytes,
        bundle.sha256[:16],
        "verified" if verified else ("unsigned" if bundle.key_id is None else "not checked"),
    )
    return bundle


def load_bundle(
    path: str | os.PathLike[str],
    *,
    trusted_keys: signing.TrustedKeys | None,
    require_signature: bool = True,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> Bundle:
    """Load, verify and decode a bundle directory or tar.

    The signature is checked whenever one is present and ``trusted_keys`` is given; a missing
    signature is refused when ``require_signature`` (which then needs ``trusted_keys``). Limits
    count payload bytes; the manifest may add up to :data:`MAX_MANIFEST_BYTES`.

    Raises :class:`SignatureError` for signature problems, :class:`BundleError` for everything else
    the bundle gets wrong, and ``ValueError`` if ``require_signature`` is set without keys.
    """
    if require_signature and trusted_keys is None:
        raise ValueError("require_signature=True needs trusted_keys")
    limits = Limits(max_total_bytes, max_file_bytes, max_files)
    bundle_path = Path(path)
    source = open_source(bundle_path, limits)
    return load_source(source, bundle_path, limits, trusted_keys, require_signature)
