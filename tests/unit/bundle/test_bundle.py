"""Bundle format v1: round trips, and every way the loader refuses a bundle."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.bundle.loader import Bundle, load_bundle
from edge_agent.bundle.manifest import (
    MAX_RANGE_FEATURES,
    AifSpec,
    Manifest,
    NeuralSpec,
    ObservationRange,
    TensorSpec,
    canonical_manifest_bytes,
)
from edge_agent.bundle.signing import (
    TrustedKeys,
    encode_signature,
    key_id,
    sign_bytes,
    verify_bytes,
)
from edge_agent.bundle.writer import pack_tar, sign_bundle, write_bundle
from edge_agent.errors import BundleError, SignatureError

A = np.arange(12, dtype=np.uint8).reshape(3, 4)
B = np.linspace(-1.0, 1.0, 8, dtype=">f4").reshape(2, 4)  # big-endian on purpose
MODEL = b"\x08\x07fake-onnx-model-bytes"
CREATED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _aif() -> AifSpec:
    return AifSpec(
        num_obs=[3],
        num_states=[4],
        num_controls=[2],
        quant_scheme="logu8-v1",
        settings={"gamma": 16.0, "policy_len": 1},
        arrays={"A": "A.npy", "B": "sub/B.npy"},
    )


def _neural() -> NeuralSpec:
    return NeuralSpec(
        backend="onnxruntime",
        model_file="model.onnx",
        inputs=[TensorSpec(name="x", shape=[None, 4, 3], dtype="int8", scale=0.05, zero_point=0)],
        outputs=[TensorSpec(name="y", shape=[-1, 2], dtype="float32")],
        window=4,
        output_kind="continuous",
        action_low=[-1.0, 0.0],
        action_high=[1.0, 2.0],
    )


def make_bundle(out: Path) -> Path:
    write_bundle(
        out,
        name="demo",
        version="1.0.0",
        kind="aif+perception",
        arrays={"A.npy": A, "sub/B.npy": B},
        files={"model.onnx": MODEL},
        aif=_aif(),
        neural=_neural(),
        quantization={"scheme": "logu8-v1", "max_abs_error": 0.004},
        created=CREATED,
    )
    return out


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def trusted(key: Ed25519PrivateKey) -> TrustedKeys:
    return TrustedKeys([key.public_key()])


@pytest.fixture
def signed_dir(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    root = make_bundle(tmp_path / "bundle")
    sign_bundle(root, key, signer="unit-test")
    return root


@pytest.fixture
def signed_tar(tmp_path: Path, signed_dir: Path) -> Path:
    tar_path = tmp_path / "bundle.tar"
    pack_tar(signed_dir, tar_path)
    return tar_path


def read_manifest(root: Path) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((root / "manifest.json").read_text())
    return raw


def write_manifest(root: Path, raw: dict[str, Any]) -> None:
    """Write manifest.json in the canonical form the loader requires."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    (root / "manifest.json").write_text(text + "\n", encoding="utf-8")


def resign(root: Path, key: Ed25519PrivateKey, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit manifest.json and sign it again by hand (sign_bundle would refuse a broken payload)."""
    raw = read_manifest(root)
    edit(raw)
    raw["signature"] = None
    signature = sign_bytes(key, canonical_manifest_bytes(raw))
    raw["signature"] = {
        "algorithm": "ed25519",
        "key_id": key_id(key.public_key()),
        "value": encode_signature(signature),
    }
    write_manifest(root, raw)


def replace_payload(
    root: Path, rel: str, data: bytes, key: Ed25519PrivateKey, **entry: Any
) -> None:
    """Swap a payload file and list its new hash and size (plus ``entry`` fields) in a signed
    manifest, so that only the payload's content is wrong."""
    (root / rel).write_bytes(data)

    def edit(raw: dict[str, Any]) -> None:
        raw["files"][rel].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data), **entry)

    resign(root, key, edit)


def npy_bytes(array: np.ndarray[Any, Any], *, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def dir_members(root: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size = len(data)
            members.append((info, data))
    return members


def build_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return path


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def assert_same_content(bundle: Bundle) -> None:
    np.testing.assert_array_equal(bundle.arrays["A.npy"], A)
    np.testing.assert_array_equal(bundle.arrays["sub/B.npy"], B)
    assert bundle.file_bytes("model.onnx") == MODEL


# --- round trips -------------------------------------------------------------------------------


def test_directory_round_trip(
    signed_dir: Path, key: Ed25519PrivateKey, trusted: TrustedKeys
) -> None:
    bundle = load_bundle(signed_dir, trusted_keys=trusted)
    assert_same_content(bundle)
    assert bundle.signature_verified
    assert bundle.key_id == key_id(key.public_key())
    assert bundle.manifest.signer == "unit-test"
    assert bundle.manifest.kind == "aif+perception"
    assert bundle.manifest.created == CREATED
    assert bundle.arrays["A.npy"].dtype == np.dtype("uint8")
    assert bundle.arrays["sub/B.npy"].dtype.str == "<f4"  # stored little-endian
    assert not bundle.arrays["A.npy"].flags.writeable
    sizes = {rel: (signed_dir / rel).stat().st_size for rel in ("A.npy", "sub/B.npy", "model.onnx")}
    assert bundle.nbytes == sum(sizes.values())
    assert {rel: e.size for rel, e in bundle.manifest.files.items()} == sizes
    aif_arrays = bundle.aif_arrays()
    assert set(aif_arrays) == {"A", "B"}
    np.testing.assert_array_equal(aif_arrays["A"], A)
    assert bundle.manifest.neural is not None
    assert bundle.manifest.neural.inputs[0].shape == (-1, 4, 3)
    assert bundle.manifest.quantization == {"scheme": "logu8-v1", "max_abs_error": 0.004}
    with pytest.raises(BundleError, match=re.escape("no file 'nope.bin'")):
        bundle.file_bytes("nope.bin")


def test_tar_round_trip_has_the_same_identity(
    signed_dir: Path, signed_tar: Path, trusted: TrustedKeys
) -> None:
    from_dir = load_bundle(signed_dir, trusted_keys=trusted)
    from_tar = load_bundle(signed_tar, trusted_keys=trusted)
    assert_same_content(from_tar)
    assert from_tar.signature_verified
    assert from_tar.sha256 == from_dir.sha256
    assert from_tar.manifest == from_dir.manifest


def test_tar_gz_round_trip(signed_dir: Path, tmp_path: Path, trusted: TrustedKeys) -> None:
    tgz = tmp_path / "bundle.tar.gz"
    pack_tar(signed_dir, tgz)
    assert tgz.read_bytes()[:2] == b"\x1f\x8b"
    bundle = load_bundle(tgz, trusted_keys=trusted)
    assert_same_content(bundle)
    assert bundle.sha256 == load_bundle(signed_dir, trusted_keys=trusted).sha256


def test_pack_tar_is_deterministic(signed_dir: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "1.tar", tmp_path / "2.tar"
    pack_tar(signed_dir, first)
    os.utime(signed_dir / "A.npy", (1_000_000, 1_000_000))
    pack_tar(signed_dir, second)
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["manifest.json", "A.npy", "model.onnx", "sub/B.npy"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.isreg() for m in members)


def test_identity_is_the_canonical_manifest_and_survives_re_signing(
    tmp_path: Path, key: Ed25519PrivateKey, trusted: TrustedKeys
) -> None:
    root = make_bundle(tmp_path / "b")
    unsigned = load_bundle(root, trusted_keys=None, require_signature=False)
    assert not unsigned.signature_verified
    assert unsigned.key_id is None
    sign_bundle(root, key)
    signed = load_bundle(root, trusted_keys=trusted)
    assert signed.sha256 == unsigned.sha256
    raw = read_manifest(root)
    raw["signature"] = None
    expected = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical_manifest_bytes(read_manifest(root)) == expected
    assert signed.sha256 == hashlib.sha256(expected).hexdigest()


def test_signature_covers_the_canonical_manifest(signed_dir: Path, key: Ed25519PrivateKey) -> None:
    raw = read_manifest(signed_dir)
    signature = base64.b64decode(raw["signature"]["value"])
    verify_bytes(key.public_key(), canonical_manifest_bytes(raw), signature)
    raw["version"] = "1.0.1"
    with pytest.raises(SignatureError, match="bad signature"):
        verify_bytes(key.public_key(), canonical_manifest_bytes(raw), signature)


def test_manifest_written_by_write_bundle_validates_as_the_model(tmp_path: Path) -> None:
    manifest = write_bundle(
        tmp_path / "n",
        name="perception-only",
        version="0.1",
        kind="neural",
        files={"net.tflite": b"tflite"},
        neural=NeuralSpec(
            backend="litert",
            model_file="net.tflite",
            inputs=[TensorSpec(name="in", shape=[1, 8], dtype="uint8")],
            outputs=[TensorSpec(name="out", shape=[1, 3], dtype="float32")],
            output_kind="discrete",
        ),
    )
    on_disk = Manifest.model_validate_json((tmp_path / "n" / "manifest.json").read_bytes())
    assert on_disk == manifest
    assert manifest.created.tzinfo is not None
    bundle = load_bundle(tmp_path / "n", trusted_keys=None, require_signature=False)
    assert bundle.arrays == {}
    assert bundle.file_bytes("net.tflite") == b"tflite"
    with pytest.raises(BundleError, match="has no aif model"):
        bundle.aif_arrays()


def test_fortran_order_npy_loads_in_the_right_order(
    signed_dir: Path, key: Ed25519PrivateKey, trusted: TrustedKeys
) -> None:
    replace_payload(signed_dir, "A.npy", npy_bytes(np.asfortranarray(A)), key)
    np.testing.assert_array_equal(load_bundle(signed_dir, trusted_keys=trusted).arrays["A.npy"], A)


def test_require_signature_needs_trusted_keys(signed_dir: Path) -> None:
    with pytest.raises(ValueError, match="needs trusted_keys"):
        load_bundle(signed_dir, trusted_keys=None)


# --- signature refusals ------------------------------------------------------------------------


def test_unsigned_bundle_is_refused_when_a_signature_is_required(
    tmp_path: Path, trusted: TrustedKeys
) -> None:
    root = make_bundle(tmp_path / "b")
    with pytest.raises(SignatureError, match="bundle is unsigned"):
        load_bundle(root, trusted_keys=trusted)
    assert not load_bundle(root, trusted_keys=trusted, require_signature=False).signature_verified


def test_bundle_signed_by_an_untrusted_key_is_refused(tmp_path: Path, trusted: TrustedKeys) -> None:
    root = make_bundle(tmp_path / "b")
    stranger = Ed25519PrivateKey.generate()
    sign_bundle(root, stranger)
    with pytest.raises(
        SignatureError, match=f"bundle signed by untrusted key {key_id(stranger.public_key())}"
    ):
        load_bundle(root, trusted_keys=trusted)
    # Not required and not checkable: the signature is reported as not verified.
    loaded = load_bundle(root, trusted_keys=None, require_signature=False)
    assert not loaded.signature_verified
    # A present signature is still checked when keys are given, even if not required.
    with pytest.raises(SignatureError, match="untrusted key"):
        load_bundle(root, trusted_keys=trusted, require_signature=False)


@pytest.mark.parametrize(
    ("field", "value"),
    [("version", "1.0.1"), ("signer", "mallory"), ("name", "other")],
)
def test_manifest_field_tampered_after_signing_is_refused(
    signed_dir: Path, trusted: TrustedKeys, field: str, value: str
) -> None:
    raw = read_manifest(signed_dir)
    raw[field] = value
    write_manifest(signed_dir, raw)
    with pytest.raises(SignatureError, match="bad signature"):
        load_bundle(signed_dir, trusted_keys=trusted)


def test_tampered_file_hash_in_manifest_breaks_the_signature(
    signed_dir: Path, trusted: TrustedKeys
) -> None:
    data = b"evil model"
    (signed_dir / "model.onnx").write_bytes(data)
    raw = read_manifest(signed_dir)
    raw["files"]["model.onnx"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    write_manifest(signed_dir, raw)
    with pytest.raises(SignatureError, match="bad signature"):
        load_bundle(signed_dir, trusted_keys=trusted)


def test_malformed_signature_value_is_refused(signed_dir: Path, trusted: TrustedKeys) -> None:
    raw = read_manifest(signed_dir)
    raw["signature"]["value"] = "A" * 86 + "=="
    write_manifest(signed_dir, raw)
    with pytest.raises(SignatureError, match="bad signature"):
        load_bundle(signed_dir, trusted_keys=trusted)


# --- manifest refusals -------------------------------------------------------------------------


def test_missing_manifest_is_refused(signed_dir: Path, trusted: TrustedKeys) -> None:
    (signed_dir / "manifest.json").unlink()
    with pytest.raises(BundleError, match=re.escape("manifest.json: missing")):
        load_bundle(signed_dir, trusted_keys=trusted)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "invalid JSON"),
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ('{"x": NaN}', "NaN is not allowed"),
        ("[1, 2]", "must be a JSON object"),
        ('{"format_version": 2}', "unsupported format_version 2"),
        ('{"format_version": true}', "unsupported format_version True"),
    ],
)
def test_invalid_manifest_json_is_refused(
    signed_dir: Path, trusted: TrustedKeys, text: str, reason: str
) -> None:
    (signed_dir / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match=reason) as excinfo:
        load_bundle(signed_dir, trusted_keys=trusted)
    assert "manifest.json" in str(excinfo.value)


def test_non_canonical_manifest_is_refused_and_signing_rewrites_it(
    signed_dir: Path, key: Ed25519PrivateKey, trusted: TrustedKeys
) -> None:
    canonical = (signed_dir / "manifest.json").read_bytes()
    raw = read_manifest(signed_dir)
    assert canonical == json.dumps(raw, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    (signed_dir / "manifest.json").write_text(json.dumps(raw, indent=2, sort_keys=True))
    with pytest.raises(BundleError, match=re.escape("manifest.json: not in canonical form")):
        load_bundle(signed_dir, trusted_keys=trusted)
    (signed_dir / "manifest.json").write_bytes(canonical.replace(b":", b": ", 1))
    with pytest.raises(BundleError, match="not in canonical form"):
        load_bundle(signed_dir, trusted_keys=trusted)
    # A hand-edited (indented) manifest can be signed: the signer rewrites it canonically.
    raw["version"] = "1.0.2"
    (signed_dir / "manifest.json").write_text(json.dumps(raw, indent=4))
    sign_bundle(signed_dir, key)
    assert load_bundle(signed_dir, trusted_keys=trusted).manifest.version == "1.0.2"


def test_manifest_not_utf8_is_refused(signed_dir: Path, trusted: TrustedKeys) -> None:
    (signed_dir / "manifest.json").write_bytes(b'{"name": "\xff"}')
    with pytest.raises(BundleError, match=re.escape("manifest.json: not UTF-8")):
        load_bundle(signed_dir, trusted_keys=trusted)


@pytest.mark.parametrize(
    ("edit", "field_path"),
    [
        (lambda raw: raw["files"]["A.npy"].update(sha256="xyz"), "files.A.npy.sha256"),
        (lambda raw: raw.update(surprise=1), "surprise"),
        (lambda raw: raw.pop("created"), "created"),
        (lambda raw: raw.update(kind="robot"), "kind"),
        (lambda raw: raw["files"]["A.npy"].update(size="140"), "files.A.npy.size"),
        (lambda raw: raw["files"]["A.npy"].update(dtype="object"), "files.A.npy.dtype"),
        (lambda raw: raw["aif"].update(num_controls=[2, 2]), "aif"),
        (lambda raw: raw.update(neural=None), "needs 'neural'"),
        (lambda raw: raw["files"].update({"../x": raw["files"]["model.onnx"]}), "files.../x"),
        (lambda raw: raw["aif"]["arrays"].update(C="C.npy"), "aif.arrays.C"),
    ],
)
def test_schema_errors_name_the_field(
    signed_dir: Path,
    key: Ed25519PrivateKey,
    trusted: TrustedKeys,
    edit: Callable[[dict[str, Any]], None],
    field_path: str,
) -> None:
    resign(signed_dir, key, edit)
    with pytest.raises(BundleError, match="schema error") as excinfo:
        load_bundle(signed_dir, trusted_keys=trusted)
    assert field_path in str(excinfo.value)
    assert not isinstance(excinfo.value, SignatureError)


def test_oversized_manifest_is_refused(signed_dir: Path, trusted: TrustedKeys) -> None:
    (signed_dir / "manifest.json").write_bytes(b" " * (1024 * 1024 + 1))
    with pytest.raises(
        BundleError, match=re.escape("manifest.json: 1048577 bytes exceeds the limit")
    ):
        load_bundle(signed_dir, trusted_keys=trusted)


# --- payload refusals (directory) --------------------------------------------------------------


def test_missing_file_is_refused(signed_dir: Path, trusted: TrustedKeys) -> None:
    (signed_dir / "sub" / "B.npy").unlink()
    with pytest.raises(
        BundleError, match=re.escape("sub/B.npy: listed in manifest.json but missing")
    ):
        load_bundle(signed_dir, trusted_keys=trusted)


def test_extra_file_is_refused(signed_dir: Path, trusted: TrustedKeys) -> None:
    (signed_dir / "evil.sh").write_text("rm -rf /")
    with pytest.raises(
        BundleError, match=re.escape("evil.sh: present in the bundle but not listed")
    ):
        load_bundle(signed_dir, trusted_keys=trusted)


def test_tampered_payload_byte_is_refused(signed_dir: Path, trusted: TrustedKeys) -> None:
    data = bytearray((signed_dir / "A.npy").read_bytes())
    data[-1] ^= 0x01
    (signed_dir / "A.npy").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=re.escape("A.npy: sha256 mismatch")):
        load_bundle(signed_dir, trusted_keys=trusted)


def test_size_mismatch_is_refused(signed_dir: Path, trusted: TrustedKeys) -> None:
    with (signed_dir / "model.onnx").open("ab") as fh:
        fh.write(b"!")
    with pytest.raises(BundleError, match=re.escape("model.onnx: size mismatch")):
        load_bundle(signed_dir, trusted_keys=trusted)


def test_object_dtype_npy_is_refused(
    signed_dir: Path, key: Ed25519PrivateKey, trusted: TrustedKeys
) -> None:
    pickled = npy_bytes(np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    replace_payload(signed_dir, "A.npy", pickled, key, shape=[2])
    with pytest.raises(BundleError, match=re.escape("A.npy: object dtype is not allowed")):
        load_bundle(signed_dir, trusted_keys=trusted)


@pytest.mark.parametrize(
    ("array", "entry", "reason"),
    [
        (A.astype(np.int8), {}, "A.npy: dtype mismatch"),
        (A.astype(">u2"), {"dtype": "uint16"}, "A.npy: dtype mismatch: file has >u2"),
        (A.reshape(12), {}, r"A.npy: shape mismatch: file has \(12,\)"),
        (np.zeros(2, dtype=[("x", "u1")]), {"shape": [2]}, "A.npy: structured dtype"),
    ],
)
def test_npy_that_disagrees_with_the_manifest_is_refused(
    *,
    signed_dir: Path,
    key: Ed25519PrivateKey,
    trusted: TrustedKeys,
    array: np.ndarray[Any, Any],
    entry: dict[str, Any],
    reason: str,
) -> None:
    replace_payload(signed_dir, "A.npy", npy_bytes(array), key, **entry)
    with pytest.raises(BundleError, match=reason):
        load_bundle(signed_dir, trusted_keys=trusted)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (npy_bytes(A) + b"\x00", "A.npy: array data is 13 bytes, expected 12"),
        (npy_bytes(A)[:-1], "A.npy: array data is 11 bytes, expected 12"),
        (b"PK\x03\x04 not an npy file at all", "A.npy: not a valid .npy file"),
    ],
)
def test_malformed_npy_is_refused(
    signed_dir: Path, key: Ed25519PrivateKey, trusted: TrustedKeys, data: bytes, reason: str
) -> None:
    replace_payload(signed_dir, "A.npy", data, key)
    with pytest.raises(BundleError, match=reason):
        load_bundle(signed_dir, trusted_keys=trusted)


def test_symlink_in_directory_is_refused(signed_dir: Path, trusted: TrustedKeys) -> None:
    target = signed_dir / "model.onnx"
    moved = signed_dir.parent / "model.onnx"
    target.rename(moved)
    target.symlink_to(moved)
    with pytest.raises(BundleError, match=re.escape("model.onnx: symlinks are not allowed")):
        load_bundle(signed_dir, trusted_keys=trusted)


def test_symlinked_directory_is_refused(signed_dir: Path, trusted: TrustedKeys) -> None:
    (signed_dir / "sub").rename(signed_dir.parent / "elsewhere")
    (signed_dir / "sub").symlink_to(signed_dir.parent / "elsewhere")
    with pytest.raises(BundleError, match="sub: symlinks are not allowed"):
        load_bundle(signed_dir, trusted_keys=trusted)


def test_fifo_in_directory_is_refused(signed_dir: Path, trusted: TrustedKeys) -> None:
    os.mkfifo(signed_dir / "pipe")
    with pytest.raises(BundleError, match="pipe: not a regular file"):
        load_bundle(signed_dir, trusted_keys=trusted)


def test_oversized_file_total_and_count_are_refused(signed_dir: Path, trusted: TrustedKeys) -> None:
    a_size = (signed_dir / "A.npy").stat().st_size
    with pytest.raises(BundleError, match=f"A.npy: {a_size} bytes exceeds the per-file limit"):
        load_bundle(signed_dir, trusted_keys=trusted, max_file_bytes=a_size - 1)
    with pytest.raises(BundleError, match="over the limit of 200"):
        load_bundle(signed_dir, trusted_keys=trusted, max_total_bytes=200)
    with pytest.raises(BundleError, match="more than 2 payload files"):
        load_bundle(signed_dir, trusted_keys=trusted, max_files=2)


def test_manifest_claiming_more_than_the_limits_is_refused(
    signed_dir: Path, key: Ed25519PrivateKey, trusted: TrustedKeys
) -> None:
    resign(signed_dir, key, lambda raw: raw["files"]["model.onnx"].update(size=10**9))
    with pytest.raises(
        BundleError, match=re.escape("model.onnx: 1000000000 bytes exceeds the per-file")
    ):
        load_bundle(signed_dir, trusted_keys=trusted)


def test_no_such_bundle(tmp_path: Path, trusted: TrustedKeys) -> None:
    with pytest.raises(BundleError, match="no such bundle"):
        load_bundle(tmp_path / "missing", trusted_keys=trusted)


# --- tar refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (file_member("../evil", b"x"), r"'\.\./evil': unsafe path: '\.\.' escapes the bundle"),
        (file_member("./sub/../../evil", b"x"), "escapes the bundle"),
        (file_member("/etc/evil", b"x"), "'/etc/evil': unsafe path: absolute"),
        (special_member("link", tarfile.SYMTYPE, "/etc/passwd"), "link: symlink members"),
        (special_member("hard", tarfile.LNKTYPE, "manifest.json"), "hard: hard link members"),
        (special_member("tty", tarfile.CHRTYPE), "tty: device and FIFO members"),
        (special_member("disk", tarfile.BLKTYPE), "disk: device and FIFO members"),
        (special_member("fifo", tarfile.FIFOTYPE), "fifo: device and FIFO members"),
        (file_member("A.npy", b"second copy"), "A.npy: duplicate tar member"),
        (file_member("evil.sh", b"rm -rf /"), "evil.sh: present in the bundle but not listed"),
    ],
)
def test_malicious_tar_members_are_refused(
    signed_dir: Path,
    tmp_path: Path,
    trusted: TrustedKeys,
    member: tuple[tarfile.TarInfo, bytes | None],
    reason: str,
) -> None:
    tar_path = build_tar(tmp_path / "evil.tar", [*dir_members(signed_dir), member])
    with pytest.raises(BundleError, match=reason):
        load_bundle(tar_path, trusted_keys=trusted)


def test_tar_made_by_other_tools_with_dot_prefix_and_dirs_loads(
    signed_dir: Path, tmp_path: Path, trusted: TrustedKeys
) -> None:
    with tarfile.open(tmp_path / "gnu.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(signed_dir, arcname=".")
    assert_same_content(load_bundle(tmp_path / "gnu.tar", trusted_keys=trusted))


def test_tar_missing_file_and_manifest_are_refused(
    signed_dir: Path, tmp_path: Path, trusted: TrustedKeys
) -> None:
    members = dir_members(signed_dir)
    no_model = build_tar(tmp_path / "a.tar", [m for m in members if m[0].name != "model.onnx"])
    with pytest.raises(
        BundleError, match=re.escape("model.onnx: listed in manifest.json but missing")
    ):
        load_bundle(no_model, trusted_keys=trusted)
    no_manifest = build_tar(
        tmp_path / "b.tar", [m for m in members if m[0].name != "manifest.json"]
    )
    with pytest.raises(BundleError, match=re.escape("manifest.json: missing")):
        load_bundle(no_manifest, trusted_keys=trusted)


def test_oversized_tar_member_is_refused(signed_tar: Path, trusted: TrustedKeys) -> None:
    with pytest.raises(
        BundleError, match=re.escape("A.npy: 140 bytes exceeds the per-file limit of 100")
    ):
        load_bundle(signed_tar, trusted_keys=trusted, max_file_bytes=100)
    with pytest.raises(BundleError, match="more than 1 payload files"):
        load_bundle(signed_tar, trusted_keys=trusted, max_files=1)


def test_tampered_payload_in_tar_is_refused(signed_tar: Path, trusted: TrustedKeys) -> None:
    data = bytearray(signed_tar.read_bytes())
    offset = data.index(MODEL)
    data[offset] ^= 0xFF
    signed_tar.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=re.escape("model.onnx: sha256 mismatch")):
        load_bundle(signed_tar, trusted_keys=trusted)


def test_trailing_garbage_and_dirty_padding_are_refused(
    signed_tar: Path, tmp_path: Path, trusted: TrustedKeys
) -> None:
    clean = signed_tar.read_bytes()
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(clean + b"hidden payload")
    with pytest.raises(BundleError, match="unexpected data after the last valid tar member"):
        load_bundle(garbage, trusted_keys=trusted)
    padded = bytearray(clean)
    padded[padded.index(MODEL) + len(MODEL)] = 0x41
    dirty = tmp_path / "dirty.tar"
    dirty.write_bytes(bytes(padded))
    with pytest.raises(BundleError, match=re.escape("model.onnx: non-zero padding")):
        load_bundle(dirty, trusted_keys=trusted)


def test_truncated_and_non_tar_files_are_refused(
    signed_tar: Path, tmp_path: Path, trusted: TrustedKeys
) -> None:
    data = signed_tar.read_bytes()
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(data[: data.index(MODEL) + 4])
    with pytest.raises(BundleError, match="truncated tar member"):
        load_bundle(truncated, trusted_keys=trusted)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive" * 100)
    with pytest.raises(BundleError, match="not a valid tar archive"):
        load_bundle(junk, trusted_keys=trusted)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(BundleError, match="not a valid tar archive"):
        load_bundle(empty, trusted_keys=trusted)


def _set_header_field(data: bytearray, header: int, start: int, value: bytes) -> None:
    """Overwrite a tar header field and fix the header checksum, as a forger would."""
    data[header + start : header + start + len(value)] = value
    block = data[header : header + tarfile.BLOCKSIZE]
    block[148:156] = b" " * 8
    data[header + 148 : header + 156] = b"%06o\x00 " % sum(block)


@pytest.mark.parametrize(
    "size_field",
    [
        b"\x80" + b"\x00" * 3 + b"\xff" * 8,  # base-256: about 2**64 bytes
        b"\xff" * 12,  # base-256: negative
        b"77777777777\x00",  # octal: 8 GiB
    ],
)
@pytest.mark.parametrize("member", ["manifest.json", "A.npy"])
def test_hostile_tar_size_fields_are_refused(
    signed_tar: Path, trusted: TrustedKeys, member: str, size_field: bytes
) -> None:
    with tarfile.open(signed_tar) as tar:
        header = tar.getmember(member).offset
    data = bytearray(signed_tar.read_bytes())
    _set_header_field(data, header, 124, size_field)
    signed_tar.write_bytes(bytes(data))
    # Python 3.11's tarfile reads the hostile size and the member comes up short; 3.13's (newer
    # base-256 parsing) refuses that header: as the first member the archive is no tar, later
    # what follows is data after the last valid member. Either way the bundle is refused in one
    # line that says where.
    refused = (
        f"{re.escape(member)}.*truncated tar member"
        "|unexpected data after the last valid tar member"
        "|not a valid tar archive"
    )
    with pytest.raises(BundleError, match=refused):
        load_bundle(signed_tar, trusted_keys=trusted)


def test_pax_header_with_a_huge_size_is_refused(
    signed_dir: Path, tmp_path: Path, trusted: TrustedKeys
) -> None:
    members = dir_members(signed_dir)
    info, data = file_member("x" * 120, b"long name forces a pax header")
    tar_path = tmp_path / "pax.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member_info, member_data in [*members, (info, data)]:
            tar.addfile(member_info, io.BytesIO(member_data or b""))
    raw = bytearray(tar_path.read_bytes())
    with tarfile.open(tar_path) as tar:
        pax_header = tar.getmember("x" * 120).offset
    assert raw[pax_header + 156 : pax_header + 157] == b"x"
    _set_header_field(raw, pax_header, 124, b"\x80" + b"\x00" * 3 + b"\xff" * 8)
    tar_path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="not a valid tar archive"):
        load_bundle(tar_path, trusted_keys=trusted)


def test_gzip_bomb_is_stopped_while_decompressing(tmp_path: Path, trusted: TrustedKeys) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb") as fh:
        chunk = b"\x00" * (1024 * 1024)
        for _ in range(16):
            fh.write(chunk)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(BundleError, match="tar is larger than"):
        load_bundle(bomb, trusted_keys=trusted, max_total_bytes=1000, max_files=4)


def test_corrupt_gzip_is_refused(signed_dir: Path, tmp_path: Path, trusted: TrustedKeys) -> None:
    tgz = tmp_path / "b.tar.gz"
    pack_tar(signed_dir, tgz)
    data = bytearray(tgz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tgz.write_bytes(bytes(data))
    with pytest.raises(BundleError):
        load_bundle(tgz, trusted_keys=trusted)


# --- byte flips in a signed tar ----------------------------------------------------------------


@pytest.fixture(scope="module")
def flip_case(
    tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey
) -> tuple[bytes, Path, Bundle]:
    root = tmp_path_factory.mktemp("flip")
    bundle_dir = make_bundle(root / "b")
    sign_bundle(bundle_dir, key)
    pack_tar(bundle_dir, root / "b.tar")
    original = load_bundle(root / "b.tar", trusted_keys=TrustedKeys([key.public_key()]))
    return (root / "b.tar").read_bytes(), root / "mutated.tar", original


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(data=st.data())
def test_any_single_byte_flip_in_a_signed_tar_is_refused(
    flip_case: tuple[bytes, Path, Bundle], trusted: TrustedKeys, data: st.DataObject
) -> None:
    clean, path, _ = flip_case
    offset = data.draw(st.integers(0, len(clean) - 1), label="offset")
    mask = data.draw(st.integers(1, 255), label="mask")
    mutated = bytearray(clean)
    mutated[offset] ^= mask
    path.write_bytes(bytes(mutated))
    with pytest.raises(BundleError):
        load_bundle(path, trusted_keys=trusted)


@pytest.mark.slow
def test_every_single_byte_flip_is_refused_exhaustively(
    flip_case: tuple[bytes, Path, Bundle], trusted: TrustedKeys
) -> None:
    """Hypothesis samples; this walks every header, data and padding byte once (masks rotate)
    so none is missed. The end-of-archive zeros are all alike, so they are sampled."""
    clean, path, _ = flip_case
    with tarfile.open(fileobj=io.BytesIO(clean)) as tar:
        last = tar.getmembers()[-1]
    end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    assert 0 < end < len(clean)
    # Low bit, high bit, and the masks that turn JSON whitespace into other whitespace.
    masks = (0x01, 0x80, 0x29, 0x2A, 0x2D, 0x07)
    accepted = []
    for offset in [*range(end), *range(end, len(clean), 61), len(clean) - 1]:
        mutated = bytearray(clean)
        mutated[offset] ^= masks[offset % len(masks)]
        path.write_bytes(bytes(mutated))
        try:
            load_bundle(path, trusted_keys=trusted)
        except BundleError:
            continue
        accepted.append(offset)
    assert accepted == []


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_byte_changes_never_change_what_loads(
    flip_case: tuple[bytes, Path, Bundle], trusted: TrustedKeys, data: st.DataObject
) -> None:
    """With several changed bytes a tar header checksum can in principle balance out, but
    nothing that loads can differ from what was signed."""
    clean, path, original = flip_case
    edits = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(clean) - 1), st.integers(1, 255)), min_size=1, max_size=4
        ),
        label="edits",
    )
    mutated = bytearray(clean)
    for offset, mask in edits:
        mutated[offset] ^= mask
    path.write_bytes(bytes(mutated))
    try:
        loaded = load_bundle(path, trusted_keys=trusted)
    except BundleError:
        return
    assert loaded.sha256 == original.sha256
    for rel in original.manifest.files:
        assert loaded.file_bytes(rel) == original.file_bytes(rel)


# --- writer and signer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"arrays": {"../A.npy": A}}, "files.../A.npy"),
        ({"arrays": {"/abs/A.npy": A}}, "files./abs/A.npy"),
        ({"arrays": {"A.bin": A}}, "A.bin: array payload paths must end in .npy"),
        ({"arrays": {"O.npy": np.array([None, 1])}}, "O.npy: dtype object is not allowed"),
        ({"files": {"x.npy": b"raw"}}, "pass .npy arrays through arrays="),
        ({"files": {"manifest.json": b"{}"}}, "cannot list itself"),
        ({"name": "Bad Name"}, "name"),
        ({"kind": "neural"}, "kind 'neural' forbids 'aif'"),
        ({"aif": None}, "kind 'aif' needs 'aif'"),
        ({"quantization": {"error": float("nan")}}, "manifest.json: cannot be written"),
    ],
)
def test_write_bundle_refuses_bad_input_before_writing(
    tmp_path: Path, kwargs: dict[str, Any], reason: str
) -> None:
    args: dict[str, Any] = {
        "name": "demo",
        "version": "1",
        "kind": "aif",
        "arrays": {"A.npy": A, "sub/B.npy": B},
        "aif": _aif(),
    }
    args.update(kwargs)
    with pytest.raises(BundleError, match=reason):
        write_bundle(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_write_bundle_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.npy").write_bytes(b"old")
    with pytest.raises(BundleError, match="exists and is not an empty directory"):
        make_bundle(tmp_path / "out")


def test_sign_bundle_refuses_a_broken_bundle(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    root = make_bundle(tmp_path / "b")
    (root / "model.onnx").write_bytes(b"X" * len(MODEL))
    with pytest.raises(BundleError, match=re.escape("model.onnx: sha256 mismatch")):
        sign_bundle(root, key)
    assert read_manifest(root)["signature"] is None


def test_sign_bundle_in_place_on_a_tar_keeps_compression(
    tmp_path: Path, key: Ed25519PrivateKey, trusted: TrustedKeys
) -> None:
    root = make_bundle(tmp_path / "b")
    tgz = tmp_path / "b.tar.gz"
    pack_tar(root, tgz)
    with pytest.raises(SignatureError, match="unsigned"):
        load_bundle(tgz, trusted_keys=trusted)
    manifest = sign_bundle(tgz, key, signer="ci")
    assert manifest.signature is not None
    assert manifest.signer == "ci"
    assert tgz.read_bytes()[:2] == b"\x1f\x8b"
    bundle = load_bundle(tgz, trusted_keys=trusted)
    assert bundle.signature_verified
    assert bundle.manifest.signer == "ci"


def test_spec_validators() -> None:
    with pytest.raises(ValidationError, match="continuous output needs action_low"):
        NeuralSpec(
            backend="onnxruntime",
            model_file="m.onnx",
            inputs=[TensorSpec(name="x", shape=[1], dtype="float32")],
            outputs=[TensorSpec(name="y", shape=[1], dtype="float32")],
            output_kind="continuous",
        )
    with pytest.raises(ValidationError, match=re.escape("low 2.0 is above high 1.0")):
        NeuralSpec(
            backend="onnxruntime",
            model_file="m.onnx",
            inputs=[TensorSpec(name="x", shape=[1], dtype="float32")],
            outputs=[TensorSpec(name="y", shape=[1], dtype="float32")],
            output_kind="continuous",
            action_low=[2.0],
            action_high=[1.0],
        )
    with pytest.raises(ValidationError, match="only allowed for continuous output"):
        NeuralSpec(
            backend="litert",
            model_file="m.tflite",
            inputs=[TensorSpec(name="x", shape=[1], dtype="float32")],
            outputs=[TensorSpec(name="y", shape=[1], dtype="float32")],
            output_kind="discrete",
            action_low=[0.0],
            action_high=[1.0],
        )
    with pytest.raises(ValidationError, match="scale and zero_point must be given together"):
        TensorSpec(name="x", shape=[1], dtype="int8", scale=0.1)
    with pytest.raises(ValidationError, match="shared factor 3 does not exist"):
        AifSpec(
            num_obs=[2],
            num_states=[2],
            num_controls=[1],
            quant_scheme="logu8-v1",
            arrays={"A": "A.npy"},
            shared_factors=[3],
        )
    assert TensorSpec(name="x", shape=[None, 3], dtype="int8").shape == (-1, 3)


def test_an_observation_range_travels_in_the_manifest_and_old_manifests_load(
    tmp_path: Path, key: Ed25519PrivateKey, trusted: TrustedKeys
) -> None:
    """``neural.observation_range``: what the converter saw in its calibration data, signed with
    the rest; a manifest without it (every bundle before it was recorded) loads as ``None``."""
    bounds = ObservationRange(low=(-1.0, 0.0, 0.5), high=(1.0, 0.0, 2.0), samples=400)
    root = tmp_path / "b"
    write_bundle(
        root, name="demo", version="1.0.0", kind="neural", files={"model.onnx": MODEL},
        neural=_neural().model_copy(update={"observation_range": bounds}), created=CREATED,
    )
    sign_bundle(root, key, signer="ci")
    loaded = load_bundle(root, trusted_keys=trusted)
    assert loaded.manifest.neural is not None
    assert loaded.manifest.neural.observation_range == bounds
    assert read_manifest(root)["neural"]["observation_range"] == {
        "low": [-1.0, 0.0, 0.5], "high": [1.0, 0.0, 2.0], "samples": 400,
    }
    # Without a range the key is not written: the manifest is what it was before the key
    # existed, which every device, an older one too, loads.
    old = make_bundle(tmp_path / "old")
    assert "observation_range" not in read_manifest(old)["neural"]
    sign_bundle(old, key, signer="ci")
    assert "observation_range" not in read_manifest(old)["neural"]
    manifest = load_bundle(old, trusted_keys=trusted).manifest
    assert manifest.neural is not None
    assert manifest.neural.observation_range is None
    with pytest.raises(ValidationError, match=re.escape("feature 1: low 0.5 is above high 0.0")):
        ObservationRange(low=(0.0, 0.5), high=(1.0, 0.0), samples=1)
    with pytest.raises(ValidationError, match="low has 2 values, high has 1"):
        ObservationRange(low=(0.0, 0.5), high=(1.0,), samples=1)
    with pytest.raises(ValidationError, match="finite number"):
        ObservationRange(low=(float("-inf"),), high=(1.0,), samples=1)
    with pytest.raises(ValidationError, match="at most 4096 items"):
        ObservationRange(low=(0.0,) * (MAX_RANGE_FEATURES + 1), high=(1.0,) * 4097, samples=1)
