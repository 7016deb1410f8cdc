"""Bundle format v1: the manifest schema and the one loader the device uses.

A bundle is a directory, or a ``.tar`` (optionally ``.tar.gz``) of that directory's contents,
holding ``manifest.json`` and payload files: ``.npy`` arrays and opaque model files (``.onnx``,
``.tflite``). The manifest lists every payload file with its sha256 and size, so an Ed25519
signature over the canonical manifest bytes (see :func:`canonical_manifest_bytes`) covers the whole
bundle. ``docs/bundle-format.md`` describes the format for people; this module is the reference
(:mod:`edge_agent.bundle.writer` writes bundles, on the host).

:func:`load_bundle` is the only way the device reads a bundle. It refuses anything unsigned (unless
told otherwise), signed by an untrusted key, altered, oversized, or holding paths that escape the
bundle, with a :class:`BundleError` or :class:`SignatureError` that names the file and the reason.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import math
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, get_args

import numpy as np
import numpy.typing as npt
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_agent.bundle import signing
from edge_agent.errors import BundleError, SignatureError
from edge_agent.lean_dataclass import dataclass

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

__all__ = [
    "ARRAY_DTYPES",
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_TOTAL_BYTES",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "MAX_RANGE_FEATURES",
    "AifSpec",
    "Bundle",
    "BundleKind",
    "FileEntry",
    "Manifest",
    "NeuralSpec",
    "ObservationRange",
    "Signature",
    "TensorSpec",
    "canonical_manifest_bytes",
    "load_bundle",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1024 * 1024
DEFAULT_MAX_TOTAL_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_FILES = 256

# A tar may be larger than its payload by its headers, padding and end-of-archive records.
_TAR_OVERHEAD_BYTES = 1024 * 1024
_TAR_BYTES_PER_MEMBER = 2048
_TAR_BLOCK = tarfile.BLOCKSIZE
_MAX_DIR_DEPTH = 8
_NPY_HEADER_PEEK = 16 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
# The 8-byte header checksum field: 6 octal digits then NUL and space (what Python, GNU tar and
# bsdtar write), or 6 digits, space, NUL, or 7 digits and NUL. Anything else, such as a changed
# byte after the NUL that tarfile itself ignores, is refused.
_CHKSUM_OFFSET = 148
_CHKSUM_LEN = 8

BundleKind = Literal["aif", "neural", "aif+perception"]
ArrayDType = Literal[
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
]
ARRAY_DTYPES: tuple[str, ...] = get_args(ArrayDType)
"""dtype names a ``.npy`` payload may have (stored little-endian)."""

TensorDType = Literal["bool", "int8", "uint8", "int16", "int32", "int64", "float16", "float32"]

_SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_COMPONENT = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}"
_REL_PATH_PATTERN = rf"^(?:{_COMPONENT}/){{0,{_MAX_DIR_DEPTH - 1}}}{_COMPONENT}$"

RelPath = Annotated[str, StringConstraints(pattern=_REL_PATH_PATTERN, max_length=200)]
"""A payload path inside the bundle: relative POSIX, no ``..``, no hidden or empty components."""

#: Logical names of Dirichlet counts in ``aif.arrays`` (pymdp's ``pA0``, ``pB0``, ``pD0`` ...).
_COUNT_NAME = re.compile(r"^p([ABD])(\d+)$")
ArrayName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.\[\]-]{0,63}$")]
Dim = Annotated[int, Field(ge=0, le=2**31 - 1)]
Count = Annotated[int, Field(ge=1, le=65535)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Schema(BaseModel):
    """Strict base: unknown keys are refused and models are immutable after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Schema):
    """One payload file: its hash and size, and for ``.npy`` arrays the dtype and shape."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Lowercase hex sha256 of the file.")
    size: int = Field(ge=0, le=2**40, description="File size in bytes.")
    dtype: ArrayDType | None = Field(
        None, description="numpy dtype name of a .npy array (stored little-endian); else null."
    )
    shape: Annotated[tuple[Dim, ...], Field(max_length=32)] | None = Field(
        None, description="Shape of a .npy array; else null."
    )

    @model_validator(mode="after")
    def _dtype_with_shape(self) -> FileEntry:
        if (self.dtype is None) != (self.shape is None):
            raise ValueError("dtype and shape must be given together")
        return self


class TensorSpec(_Schema):
    """A neural model input or output tensor."""

    name: str = Field(min_length=1, max_length=128, description="Tensor name in the model file.")
    shape: Annotated[tuple[int, ...], Field(max_length=8)] = Field(
        description="Dimensions; -1 (or null, stored as -1) marks a dynamic one such as batch."
    )
    dtype: TensorDType = Field(description="Element type the model expects or produces.")
    scale: FiniteFloat | None = Field(
        None, gt=0, description="Quantization scale: real = scale * (q - zero_point)."
    )
    zero_point: int | None = Field(
        None, ge=-(2**31), le=2**31 - 1, description="Quantization zero point."
    )

    @field_validator("shape", mode="before")
    @classmethod
    def _null_is_dynamic(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(-1 if dim is None else dim for dim in value)
        return value

    @field_validator("shape")
    @classmethod
    def _dims_in_range(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for dim in value:
            if dim < -1 or dim > 2**31 - 1:
                raise ValueError(f"dimension {dim} is out of range (-1 for dynamic, else >= 0)")
        return value

    @model_validator(mode="after")
    def _scale_with_zero_point(self) -> TensorSpec:
        if (self.scale is None) != (self.zero_point is None):
            raise ValueError("scale and zero_point must be given together")
        return self


#: The most features an :class:`ObservationRange` lists one by one (a larger observation, a
#: camera frame, gets one range for all its values).
MAX_RANGE_FEATURES = 4096


class ObservationRange(_Schema):
    """The range of each observation feature in the data the converter calibrated the model on
    (static int8), or checked it on (a dynamic or float model): a bundle written before it was
    recorded has none; it loads, and its group counts nothing."""

    low: Annotated[tuple[FiniteFloat, ...], Field(min_length=1, max_length=MAX_RANGE_FEATURES)] = (
        Field(description="Smallest value seen, per feature (one value: for every feature).")
    )
    high: Annotated[tuple[FiniteFloat, ...], Field(min_length=1, max_length=MAX_RANGE_FEATURES)] = (
        Field(description="Largest value seen, per feature (one value: for every feature).")
    )
    samples: int = Field(ge=1, le=2**40, description="Samples the range was taken from.")

    @model_validator(mode="after")
    def _ordered(self) -> ObservationRange:
        if len(self.low) != len(self.high):
            raise ValueError(f"low has {len(self.low)} values, high has {len(self.high)}")
        for i, (low, high) in enumerate(zip(self.low, self.high, strict=True)):
            if low > high:
                raise ValueError(f"feature {i}: low {low} is above high {high}")
        return self


class NeuralSpec(_Schema):
    """How to run the bundle's neural model."""

    backend: Literal["onnxruntime", "litert"] = Field(description="Inference backend to use.")
    model_file: RelPath = Field(description="Payload path of the model file (.onnx, .tflite).")
    inputs: Annotated[tuple[TensorSpec, ...], Field(min_length=1, max_length=16)] = Field(
        description="Model inputs."
    )
    outputs: Annotated[tuple[TensorSpec, ...], Field(min_length=1, max_length=16)] = Field(
        description="Model outputs."
    )
    window: int = Field(1, ge=1, le=4096, description="History window T: time steps per input.")
    output_kind: Literal["discrete", "continuous", "observation"] = Field(
        description="Outputs are action logits, continuous actions, or observations for an agent."
    )
    action_low: Annotated[tuple[FiniteFloat, ...], Field(min_length=1, max_length=256)] | None = (
        Field(None, description="Lower action bounds (continuous output only).")
    )
    action_high: Annotated[tuple[FiniteFloat, ...], Field(min_length=1, max_length=256)] | None = (
        Field(None, description="Upper action bounds (continuous output only).")
    )
    observation_range: ObservationRange | None = Field(
        None,
        description="The range of each observation feature the model was calibrated on; the "
        "device counts observations outside it (none: not counted).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> NeuralSpec:
        for label, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [t.name for t in tensors]
            if len(set(names)) != len(names):
                raise ValueError(f"{label}: tensor names must be unique, got {names}")
        if self.output_kind == "continuous":
            if self.action_low is None or self.action_high is None:
                raise ValueError("continuous output needs action_low and action_high")
            if len(self.action_low) != len(self.action_high):
                raise ValueError(
                    f"action_low has {len(self.action_low)} values, "
                    f"action_high has {len(self.action_high)}"
                )
            for i, (low, high) in enumerate(zip(self.action_low, self.action_high, strict=True)):
                if low > high:
                    raise ValueError(f"action bound {i}: low {low} is above high {high}")
        elif self.action_low is not None or self.action_high is not None:
            raise ValueError(
                f"action bounds are only allowed for continuous output, not {self.output_kind}"
            )
        return self


class AifSpec(_Schema):
    """An Active Inference generative model: factor sizes, quantization and array payloads."""

    num_obs: Annotated[tuple[Count, ...], Field(min_length=1, max_length=64)] = Field(
        description="Outcomes per observation modality."
    )
    num_states: Annotated[tuple[Count, ...], Field(min_length=1, max_length=64)] = Field(
        description="States per hidden-state factor."
    )
    num_controls: Annotated[tuple[Count, ...], Field(min_length=1, max_length=64)] = Field(
        description="Actions per hidden-state factor (1 for uncontrolled factors)."
    )
    quant_scheme: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]{0,31}$",
        description="How the arrays are quantized, e.g. 'logu8-v1' (see edge_agent.aif.quant).",
    )
    settings: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Agent settings; validated by edge_agent.aif.settings.AifSettings on use.",
    )
    arrays: dict[ArrayName, RelPath] = Field(
        min_length=1, description="Logical array name (A, B, C, D, ...) -> .npy payload path."
    )
    shared_factors: tuple[Annotated[int, Field(ge=0)], ...] = Field(
        (), description="Hidden-state factors shared by all agents of a group."
    )

    @model_validator(mode="after")
    def _consistent(self) -> AifSpec:
        if len(self.num_controls) != len(self.num_states):
            raise ValueError(
                f"num_controls has {len(self.num_controls)} factors, "
                f"num_states has {len(self.num_states)}"
            )
        if len(set(self.shared_factors)) != len(self.shared_factors):
            raise ValueError(f"shared_factors has duplicates: {list(self.shared_factors)}")
        for factor in self.shared_factors:
            if factor >= len(self.num_states):
                raise ValueError(
                    f"shared factor {factor} does not exist ({len(self.num_states)} factors)"
                )
        return self


class Signature(_Schema):
    """An Ed25519 signature over the canonical manifest bytes."""

    algorithm: Literal["ed25519"] = Field(description="Signature algorithm.")
    key_id: str = Field(
        pattern=r"^[0-9a-f]{16}$", description="First 16 hex chars of sha256(raw public key)."
    )
    value: str = Field(
        pattern=r"^[A-Za-z0-9+/]{86}==$", description="Base64 of the 64-byte signature."
    )


class Manifest(_Schema):
    """``manifest.json`` of a bundle, format version 1."""

    format_version: Literal[1] = Field(description="Bundle format version; this is version 1.")
    name: str = Field(pattern=_SLUG_PATTERN, description="Model name: a lowercase slug.")
    version: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$",
        description="Model version, e.g. '1.2.0'.",
    )
    created: AwareDatetime = Field(description="When the bundle was written (ISO 8601, with zone).")
    kind: BundleKind = Field(description="Which model specs the bundle carries.")
    files: dict[RelPath, FileEntry] = Field(description="Every payload file, by relative path.")
    aif: AifSpec | None = Field(None, description="Active Inference model (kinds with 'aif').")
    neural: NeuralSpec | None = Field(
        None, description="Neural model ('neural' and 'aif+perception')."
    )
    quantization: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Quantization report from the host tool: scheme, error bounds, calibration.",
    )
    signer: str | None = Field(
        None, min_length=1, max_length=128, description="Who signed, for people; not trusted."
    )
    signature: Signature | None = Field(None, description="Ed25519 signature; null if unsigned.")

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        wants_aif = self.kind in ("aif", "aif+perception")
        wants_neural = self.kind in ("neural", "aif+perception")
        if wants_aif != (self.aif is not None):
            raise ValueError(f"kind {self.kind!r} {'needs' if wants_aif else 'forbids'} 'aif'")
        if wants_neural != (self.neural is not None):
            raise ValueError(
                f"kind {self.kind!r} {'needs' if wants_neural else 'forbids'} 'neural'"
            )
        for rel, entry in self.files.items():
            if rel == MANIFEST_NAME:
                raise ValueError(f"files.{rel}: the manifest cannot list itself")
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent in self.files:
                    raise ValueError(f"files.{rel}: {parent} is listed as a file")
            is_npy = rel.endswith(".npy")
            if is_npy and entry.dtype is None:
                raise ValueError(f"files.{rel}: .npy files need dtype and shape")
            if not is_npy and entry.dtype is not None:
                raise ValueError(f"files.{rel}: dtype and shape are only for .npy files")
        if self.aif is not None:
            for logical, rel in self.aif.arrays.items():
                if rel not in self.files or not rel.endswith(".npy"):
                    raise ValueError(f"aif.arrays.{logical}: {rel} is not a .npy file in files")
        if self.neural is not None:
            rel = self.neural.model_file
            if rel not in self.files or rel.endswith(".npy"):
                raise ValueError(f"neural.model_file: {rel} is not a model file in files")
        return self


def _canonical_json(obj: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")
    except (TypeError, ValueError) as err:
        raise BundleError(f"{MANIFEST_NAME}: cannot be written as canonical JSON: {err}") from err


def canonical_manifest_bytes(manifest: Manifest | Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the manifest as JSON with ``signature`` set to null.

    ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    allow_nan=False)`` encoded as UTF-8. Pass the parsed ``manifest.json`` object (what the loader
    and signer use) or a :class:`Manifest` (dumped in JSON mode first).
    """
    raw = manifest.model_dump(mode="json") if isinstance(manifest, Manifest) else dict(manifest)
    raw["signature"] = None
    return _canonical_json(raw)


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
            match = _COUNT_NAME.match(logical)
            if match:
                out.setdefault(match.group(1), {})[int(match.group(2))] = array
        return out


@dataclass(frozen=True)
class _Limits:
    max_total_bytes: int
    max_file_bytes: int
    max_files: int

    def __post_init__(self) -> None:
        for name in ("max_total_bytes", "max_file_bytes", "max_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def max_tar_bytes(self) -> int:
        return (
            self.max_total_bytes
            + MAX_MANIFEST_BYTES
            + _TAR_OVERHEAD_BYTES
            + (self.max_files + 1) * _TAR_BYTES_PER_MEMBER
        )


_DEFAULT_LIMITS = _Limits(DEFAULT_MAX_TOTAL_BYTES, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_FILES)


class _Source(Protocol):
    """Where a bundle's bytes come from: a directory or a tar already held in memory."""

    label: str
    compressed: bool
    manifest_bytes: bytes
    sizes: dict[str, int]

    def read(self, rel: str, size: int) -> bytes | memoryview: ...


def _check_size(label: str, rel: str, size: int, limits: _Limits, total: int) -> None:
    if size > limits.max_file_bytes:
        raise BundleError(
            f"{label}: {rel}: {size} bytes exceeds the per-file limit of {limits.max_file_bytes}"
        )
    if total > limits.max_total_bytes:
        raise BundleError(
            f"{label}: {rel}: payload total reaches {total} bytes, "
            f"over the limit of {limits.max_total_bytes}"
        )


def _check_manifest_size(label: str, size: int) -> None:
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{label}: {MANIFEST_NAME}: {size} bytes exceeds the limit of {MAX_MANIFEST_BYTES}"
        )


class _DirSource:
    """A bundle directory: walked without following symlinks, files read on demand."""

    compressed = False

    def __init__(self, root: Path, limits: _Limits) -> None:
        self.root = root
        self.label = str(root)
        self.sizes: dict[str, int] = {}
        manifest_size = self._walk(limits)
        if manifest_size is None:
            raise BundleError(f"{self.label}: {MANIFEST_NAME}: missing")
        _check_manifest_size(self.label, manifest_size)
        self.manifest_bytes = bytes(self._read_file(MANIFEST_NAME, manifest_size))

    def _walk(self, limits: _Limits) -> int | None:
        manifest_size: int | None = None
        total = 0
        entries = 0
        pending: list[tuple[Path, str, int]] = [(self.root, "", 0)]
        while pending:
            directory, prefix, depth = pending.pop()
            try:
                with os.scandir(directory) as it:
                    listing = sorted(it, key=lambda entry: entry.name)
            except OSError as err:
                raise BundleError(f"{self.label}: {prefix or '.'}: cannot list: {err}") from err
            for entry in listing:
                entries += 1
                if entries > 2 * limits.max_files + 16:
                    raise BundleError(
                        f"{self.label}: too many entries (limit {limits.max_files} files)"
                    )
                rel = prefix + entry.name
                if entry.is_symlink():
                    raise BundleError(f"{self.label}: {rel}: symlinks are not allowed in a bundle")
                if entry.is_dir(follow_symlinks=False):
                    if depth + 1 >= _MAX_DIR_DEPTH:
                        raise BundleError(
                            f"{self.label}: {rel}: nested deeper than {_MAX_DIR_DEPTH} levels"
                        )
                    pending.append((Path(entry.path), rel + "/", depth + 1))
                    continue
                if not entry.is_file(follow_symlinks=False):
                    raise BundleError(
                        f"{self.label}: {rel}: not a regular file (device, socket or FIFO)"
                    )
                size = entry.stat(follow_symlinks=False).st_size
                if rel == MANIFEST_NAME:
                    manifest_size = size
                    continue
                if len(self.sizes) >= limits.max_files:
                    raise BundleError(
                        f"{self.label}: {rel}: more than {limits.max_files} payload files"
                    )
                total += size
                _check_size(self.label, rel, size, limits, total)
                self.sizes[rel] = size
        return manifest_size

    def _read_file(self, rel: str, size: int) -> bytes:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.root / rel, flags)
        except OSError as err:
            raise BundleError(f"{self.label}: {rel}: cannot open: {err.strerror or err}") from err
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BundleError(f"{self.label}: {rel}: not a regular file")
            chunks: list[bytes] = []
            remaining = size + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1024 * 1024))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        except OSError as err:
            raise BundleError(f"{self.label}: {rel}: cannot read: {err.strerror or err}") from err
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) != size:
            raise BundleError(f"{self.label}: {rel}: changed size while being read")
        return data

    def read(self, rel: str, size: int) -> bytes:
        return self._read_file(rel, size)


def _tar_rel(label: str, name: str) -> str | None:
    """The bundle-relative path of a tar member, ``None`` for the root, or raise if it escapes."""
    if "\x00" in name or "\\" in name:
        raise BundleError(f"{label}: {name!r}: unsafe path (NUL or backslash)")
    if name.startswith("/"):
        raise BundleError(f"{label}: {name!r}: unsafe path: absolute paths escape the bundle")
    parts = name.split("/")
    while parts and parts[0] == ".":
        parts.pop(0)
    if parts and parts[-1] == "":
        parts.pop()
    if not parts:
        return None
    if ".." in parts:
        raise BundleError(f"{label}: {name!r}: unsafe path: '..' escapes the bundle")
    if "" in parts or "." in parts:
        raise BundleError(f"{label}: {name!r}: unsafe path: empty or '.' component")
    return "/".join(parts)


def _round_up(size: int) -> int:
    return -(-size // _TAR_BLOCK) * _TAR_BLOCK


def _valid_chksum_field(field_bytes: bytes) -> bool:
    digits, tail = field_bytes[:6], field_bytes[6:]
    if not all(0x30 <= b <= 0x37 for b in digits):
        return False
    if tail in (b"\x00 ", b" \x00"):
        return True
    return 0x30 <= tail[0] <= 0x37 and tail[1] == 0


class _TarSource:
    """A tar (or gzip-compressed tar) read into memory with its size bounded before parsing.

    Members are never extracted: payloads are memoryviews into the tar bytes. Every byte of the tar
    must be a member header, member data, or zero padding; anything else is refused.
    """

    def __init__(self, path: Path, limits: _Limits) -> None:
        self.label = str(path)
        self.sizes: dict[str, int] = {}
        self._spans: dict[str, tuple[int, int]] = {}
        self._buf, self.compressed = self._read_bounded(path, limits.max_tar_bytes)
        self._view = memoryview(self._buf)
        manifest_span = self._index(limits)
        if manifest_span is None:
            raise BundleError(f"{self.label}: {MANIFEST_NAME}: missing")
        start, size = manifest_span
        self.manifest_bytes = bytes(self._view[start : start + size])

    def _read_bounded(self, path: Path, limit: int) -> tuple[bytes, bool]:
        try:
            with path.open("rb") as fh:
                compressed = fh.read(2) == _GZIP_MAGIC
                fh.seek(0)
                if compressed:
                    with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
                        data = gz.read(limit + 1)
                else:
                    data = fh.read(limit + 1)
        except (OSError, EOFError, zlib.error) as err:
            raise BundleError(f"{self.label}: cannot read tar: {err}") from err
        if len(data) > limit:
            raise BundleError(
                f"{self.label}: tar is larger than {limit} bytes "
                f"(the size limits allow at most that much)"
            )
        return data, compressed

    def _check_header(self, offset: int) -> None:
        field_bytes = self._buf[offset + _CHKSUM_OFFSET : offset + _CHKSUM_OFFSET + _CHKSUM_LEN]
        if not _valid_chksum_field(field_bytes):
            raise BundleError(f"{self.label}: malformed tar header checksum at offset {offset}")

    def _is_zero(self, start: int, end: int) -> bool:
        return self._buf.count(0, start, end) == end - start

    def _index(self, limits: _Limits) -> tuple[int, int] | None:
        """Walk the members; return the manifest's (offset, size) or ``None`` if absent."""
        try:
            with tarfile.open(fileobj=io.BytesIO(self._buf), mode="r:") as tar:
                return self._walk_members(tar, limits)
        # tarfile is not hardened against hostile headers: a huge or malformed size field can
        # surface as OverflowError or ValueError rather than TarError.
        except (tarfile.TarError, ValueError, OverflowError, UnicodeError, EOFError) as err:
            raise BundleError(f"{self.label}: not a valid tar archive: {err}") from err

    def _walk_members(self, tar: tarfile.TarFile, limits: _Limits) -> tuple[int, int] | None:
        label = self.label
        manifest_span: tuple[int, int] | None = None
        seen: set[str] = set()
        members = 0
        total = 0
        expected = 0
        while (member := tar.next()) is not None:
            members += 1
            if members > 2 * limits.max_files + 16:
                raise BundleError(f"{label}: too many tar members (limit {limits.max_files} files)")
            if member.offset != expected:
                raise BundleError(f"{label}: unexpected data at tar offset {expected}")
            if member.size < 0 or member.offset_data + member.size > len(self._buf):
                raise BundleError(f"{label}: {member.name!r}: truncated tar member")
            self._check_header(member.offset)
            self._check_header(member.offset_data - _TAR_BLOCK)
            rel = _tar_rel(label, member.name)
            name = rel if rel is not None else member.name
            if member.issym():
                raise BundleError(f"{label}: {name}: symlink members are not allowed")
            if member.islnk():
                raise BundleError(f"{label}: {name}: hard link members are not allowed")
            if member.ischr() or member.isblk() or member.isfifo():
                raise BundleError(f"{label}: {name}: device and FIFO members are not allowed")
            if rel is not None and rel in seen:
                raise BundleError(f"{label}: {rel}: duplicate tar member")
            if member.isdir():
                if member.size != 0:
                    raise BundleError(f"{label}: {name}: directory member carries data")
                if rel is not None:
                    seen.add(rel)
                expected = member.offset_data
                continue
            if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                raise BundleError(f"{label}: {name}: unsupported tar member type {member.type!r}")
            if rel is None:
                raise BundleError(f"{label}: {member.name!r}: file member without a name")
            seen.add(rel)
            start, size = member.offset_data, member.size
            if rel == MANIFEST_NAME:
                _check_manifest_size(label, size)
                manifest_span = (start, size)
            else:
                if len(self.sizes) >= limits.max_files:
                    raise BundleError(f"{label}: {rel}: more than {limits.max_files} payload files")
                total += size
                _check_size(label, rel, size, limits, total)
                self.sizes[rel] = size
                self._spans[rel] = (start, size)
            end = start + _round_up(size)
            if end > len(self._buf):
                raise BundleError(f"{label}: {rel}: truncated tar member")
            if not self._is_zero(start + size, end):
                raise BundleError(f"{label}: {rel}: non-zero padding after the member data")
            expected = end
        if not self._is_zero(expected, len(self._buf)):
            raise BundleError(
                f"{label}: unexpected data after the last valid tar member at offset {expected} "
                f"(corrupt header or trailing garbage)"
            )
        return manifest_span

    def read(self, rel: str, size: int) -> memoryview:
        start, stored = self._spans[rel]
        if stored != size:
            raise BundleError(f"{self.label}: {rel}: size changed")
        return self._view[start : start + size]


def _open_source(path: Path, limits: _Limits) -> _Source:
    if path.is_dir():
        return _DirSource(path, limits)
    if path.is_file():
        return _TarSource(path, limits)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    raise BundleError(f"{path}: a bundle must be a directory or a tar file")


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _format_validation_error(err: ValidationError, limit: int = 20) -> str:
    lines = []
    for problem in err.errors(include_url=False)[:limit]:
        loc = ".".join(str(part) for part in problem["loc"]) or "(manifest)"
        lines.append(f"{loc}: {problem['msg']}")
    if err.error_count() > limit:
        lines.append(f"... and {err.error_count() - limit} more")
    return "; ".join(lines)


def _parse_manifest(
    label: str, data: bytes, *, require_canonical: bool = True
) -> tuple[dict[str, Any], Manifest]:
    """Parse ``manifest.json`` into its raw JSON object (what is signed) and the validated model.

    With ``require_canonical`` the file must be exactly its canonical JSON (signature included)
    plus at most one newline, so a manifest has one byte form and no byte can change unnoticed.
    """
    _check_manifest_size(label, len(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BundleError(f"{label}: {MANIFEST_NAME}: not UTF-8: {err}") from err
    try:
        raw = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
        )
    except ValueError as err:  # JSONDecodeError, duplicate keys, NaN/Infinity
        raise BundleError(f"{label}: {MANIFEST_NAME}: invalid JSON: {err}") from err
    except RecursionError as err:
        raise BundleError(f"{label}: {MANIFEST_NAME}: JSON nested too deeply") from err
    if not isinstance(raw, dict):
        raise BundleError(f"{label}: {MANIFEST_NAME}: must be a JSON object")
    version = raw.get("format_version")
    if "format_version" in raw and (type(version) is not int or version != FORMAT_VERSION):
        raise BundleError(
            f"{label}: {MANIFEST_NAME}: unsupported format_version {version!r}; "
            f"this runtime reads format_version {FORMAT_VERSION}"
        )
    if require_canonical:
        canonical = _canonical_json(raw)
        if data not in (canonical, canonical + b"\n"):
            raise BundleError(
                f"{label}: {MANIFEST_NAME}: not in canonical form (sorted keys, no spaces or "
                f"indentation, at most one trailing newline); sign the bundle again to rewrite it"
            )
    try:
        manifest = Manifest.model_validate_json(data, strict=True)
    except ValidationError as err:
        raise BundleError(
            f"{label}: {MANIFEST_NAME}: schema error: {_format_validation_error(err)}"
        ) from err
    return raw, manifest


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
    label: str, manifest: Manifest, sizes: Mapping[str, int], limits: _Limits
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
        _check_size(label, rel, entry.size, limits, total)
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


def _load(
    source: _Source,
    path: Path,
    limits: _Limits,
    trusted_keys: signing.TrustedKeys | None,
    require_signature: bool,
    *,
    require_canonical: bool = True,
) -> Bundle:
    label = source.label
    raw, manifest = _parse_manifest(
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
    limits = _Limits(max_total_bytes, max_file_bytes, max_files)
    bundle_path = Path(path)
    source = _open_source(bundle_path, limits)
    return _load(source, bundle_path, limits, trusted_keys, require_signature)
