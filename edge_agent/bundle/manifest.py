"""Bundle format v1: the manifest schema (``manifest.json``) and its one byte form.

The manifest lists every payload file with its sha256 and size, so an Ed25519 signature over the
canonical manifest bytes (:func:`canonical_manifest_bytes`) covers the whole bundle.
:func:`parse_manifest` reads the file strictly: UTF-8, no duplicate keys, no NaN, the canonical
form, then the schema. ``docs/bundle-format.md`` describes the format for people.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

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

from edge_agent.errors import BundleError

__all__ = [
    "ARRAY_DTYPES",
    "COUNT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_DIR_DEPTH",
    "MAX_MANIFEST_BYTES",
    "MAX_RANGE_FEATURES",
    "AifSpec",
    "BundleKind",
    "FileEntry",
    "Manifest",
    "NeuralSpec",
    "ObservationRange",
    "Signature",
    "TensorSpec",
    "canonical_json",
    "canonical_manifest_bytes",
    "check_manifest_size",
    "format_validation_error",
    "parse_manifest",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_DIR_DEPTH = 8

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
_REL_PATH_PATTERN = rf"^(?:{_COMPONENT}/){{0,{MAX_DIR_DEPTH - 1}}}{_COMPONENT}$"

RelPath = Annotated[str, StringConstraints(pattern=_REL_PATH_PATTERN, max_length=200)]
"""A payload path inside the bundle: relative POSIX, no ``..``, no hidden or empty components."""

#: Logical names of Dirichlet counts in ``aif.arrays`` (pymdp's ``pA0``, ``pB0``, ``pD0`` ...).
COUNT_NAME = re.compile(r"^p([ABD])(\d+)$")
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


def canonical_json(obj: Mapping[str, Any]) -> bytes:
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
    return canonical_json(raw)




def check_manifest_size(label: str, size: int) -> None:
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{label}: {MANIFEST_NAME}: {size} bytes exceeds the limit of {MAX_MANIFEST_BYTES}"
        )



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


def format_validation_error(err: ValidationError, limit: int = 20) -> str:
    lines = []
    for problem in err.errors(include_url=False)[:limit]:
        loc = ".".join(str(part) for part in problem["loc"]) or "(manifest)"
        lines.append(f"{loc}: {problem['msg']}")
    if err.error_count() > limit:
        lines.append(f"... and {err.error_count() - limit} more")
    return "; ".join(lines)


def parse_manifest(
    label: str, data: bytes, *, require_canonical: bool = True
) -> tuple[dict[str, Any], Manifest]:
    """Parse ``manifest.json`` into its raw JSON object (what is signed) and the validated model.

    With ``require_canonical`` the file must be exactly its canonical JSON (signature included)
    plus at most one newline, so a manifest has one byte form and no byte can change unnoticed.
    """
    check_manifest_size(label, len(data))
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
        canonical = canonical_json(raw)
        if data not in (canonical, canonical + b"\n"):
            raise BundleError(
                f"{label}: {MANIFEST_NAME}: not in canonical form (sorted keys, no spaces or "
                f"indentation, at most one trailing newline); sign the bundle again to rewrite it"
            )
    try:
        manifest = Manifest.model_validate_json(data, strict=True)
    except ValidationError as err:
        raise BundleError(
            f"{label}: {MANIFEST_NAME}: schema error: {format_validation_error(err)}"
        ) from err
    return raw, manifest

