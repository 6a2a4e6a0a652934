"""The bundle: a folder with ``edge-bundle.json`` and the files it names, verified on load.

The manifest is the contract between the converter and the runtime: everything the runtime needs to
reproduce the converter's view of the model is in it. Bundles are written to a temporary folder
beside the destination and renamed into place, so a failed conversion never leaves half a bundle.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_sdk.errors import BundleError
from edge_sdk.preprocess import Preprocessing
from edge_sdk.profiles import DeviceProfile, IODtype, Precision, Target
from edge_sdk.report import ConversionReport

MANIFEST_NAME = "edge-bundle.json"
SCHEMA_VERSION = 1
_HASH_CHUNK = 1 << 20


class Task(str, enum.Enum):
    """What the model's outputs mean."""

    CLASSIFICATION = "classification"
    DETECTION = "detection"
    SEGMENTATION = "segmentation"  # semantic: a class per pixel
    INSTANCE_SEGMENTATION = "instance-segmentation"  # detections, each with its mask
    POSE = "pose"  # detections with keypoints, or one object's landmarks
    CUSTOM = "custom"  # a plugin decoder's own results


class InferencePrecision(str, enum.Enum):
    """The arithmetic the device's engine must use for the model's float parts."""

    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quant(_Data):
    """Affine quantization of one tensor: ``real = (q - zero_point) * scale``."""

    scale: float = Field(description="Scale of the affine mapping.")
    zero_point: int = Field(description="Integer that represents real 0.")


class TensorSpec(_Data):
    """One model input or output tensor."""

    name: str = Field(description="Tensor name in the compiled model.")
    shape: list[int] = Field(description="Static shape; -1 marks a dynamic dimension.")
    dtype: IODtype = Field(description="Element type.")
    quant: Quant | None = Field(default=None, description="Quantization, for integer tensors.")


class FileEntry(_Data):
    """A file of the bundle with its size and hash."""

    path: str = Field(description="Bundle-relative path, '/'-separated.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the file's bytes.")
    bytes: int = Field(ge=0, description="File size.")
    role: str = Field(description="model, labels, report or artifact.")


OptionScalar = float | int | str | bool


class Decoder(_Data):
    """How raw outputs become results: a built-in decoder's name (edge_sdk.decoders.REGISTRY) or 'plugin:module:function'."""

    kind: str = Field(
        pattern=r"^(classification|ssd|yolo|segmentation|yolo-seg|yolo-pose|landmarks|plugin:[\w.]+:\w+)$",
        description="Decoder name.",
    )
    # Lists carry a pose model's kpt_shape, keypoint names and skeleton; null an absent optional output.
    options: dict[str, OptionScalar | list[OptionScalar | list[OptionScalar]] | None] = Field(
        default_factory=dict, description="Decoder settings."
    )


class Manifest(_Data):
    """Contents of ``edge-bundle.json``."""

    schema_version: int = Field(description="Manifest format version; this runtime reads version 1.")
    name: str = Field(description="Model name, from the input file unless given.")
    created: str = Field(description="UTC time of conversion, ISO 8601.")
    sdk_version: str = Field(description="edge-sdk version that wrote the bundle.")
    target: Target = Field(description="tflite, edgetpu, openvino, onnx, or plugin (the profile's engine names it).")
    precision: Precision = Field(description="fp32, fp16, dynamic or int8.")
    inference_precision: InferencePrecision | None = Field(
        default=None,
        description="Arithmetic the engine must use for float parts (OpenVINO's INFERENCE_PRECISION_HINT); the "
        "converter measured accuracy with it. Unset: f32 where the engine takes a hint.",
    )
    model_file: str = Field(description="Bundle-relative path of the model the runtime loads.")
    labels_file: str | None = Field(default=None, description="Bundle-relative path of labels.txt.")
    num_classes: int = Field(ge=1, description="Number of classes the model predicts.")
    task: Task = Field(description="classification, detection, segmentation (semantic), instance-segmentation, pose, or custom (a plugin decoder's own results).")
    decoder: Decoder = Field(description="How outputs are decoded.")
    preprocessing: Preprocessing = Field(description="Frame -> float input, shared with the converter.")
    inputs: list[TensorSpec] = Field(min_length=1, description="Model inputs as compiled.")
    outputs: list[TensorSpec] = Field(min_length=1, description="Model outputs as compiled.")
    profile: DeviceProfile = Field(description="The device profile the bundle was built for.")
    files: list[FileEntry] = Field(min_length=1, description="Every file of the bundle but the manifest.")
    report: ConversionReport | None = Field(default=None, description="What the conversion measured.")


def manifest_json_schema() -> dict:
    """The JSON Schema of ``edge-bundle.json`` (the committed copy is checked against this)."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://edge-sdk.dev/schemas/edge-bundle.schema.json"
    return schema


def schema_path() -> Path:
    """Where the packaged JSON Schema of the manifest lives."""
    return Path(__file__).resolve().parent / "schemas" / "edge-bundle.schema.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: Manifest

    def file(self, relative: str) -> Path:
        return self.path / relative

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    def labels(self) -> list[str]:
        """Class names, one per line of the labels file (index = class id)."""
        if self.manifest.labels_file is None:
            return [str(i) for i in range(self.manifest.num_classes)]
        text = self.file(self.manifest.labels_file).read_text(encoding="utf-8")
        return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _read_manifest(folder: Path) -> Manifest:
    if not folder.exists():
        raise BundleError(f"bundle {folder} does not exist")
    if not folder.is_dir():
        raise BundleError(f"bundle {folder} is not a folder")
    manifest_file = folder / MANIFEST_NAME
    if not manifest_file.is_file():
        raise BundleError(f"{folder} is not a bundle: {MANIFEST_NAME} is missing")
    try:
        data = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{manifest_file}: expected a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{manifest_file}: schema_version {version!r} is not supported by this edge-sdk "
            f"(it reads version {SCHEMA_VERSION}); upgrade edge-sdk or re-convert the model"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"{manifest_file}: field '{field}': {first['msg']}") from exc


def _safe_member(folder: Path, relative: str) -> Path:
    candidate = (folder / relative).resolve()
    if Path(relative).is_absolute() or folder.resolve() not in candidate.parents:
        raise BundleError(f"{folder / MANIFEST_NAME}: file path '{relative}' points outside the bundle")
    return candidate


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Check every listed file exists with the recorded size and SHA-256; name the first that does not."""
    for entry in manifest.files:
        path = _safe_member(folder, entry.path)
        if not path.is_file():
            raise BundleError(f"bundle {folder}: file {entry.path} is missing")
        size = path.stat().st_size
        if size != entry.bytes:
            kind = "truncated" if size < entry.bytes else "larger than recorded"
            raise BundleError(f"bundle {folder}: file {entry.path} is {kind} ({size} of {entry.bytes} bytes)")
        if sha256_file(path) != entry.sha256:
            raise BundleError(
                f"bundle {folder}: file {entry.path} does not match its sha256 in {MANIFEST_NAME} "
                "(tampered with or corrupt)"
            )
    listed = {entry.path for entry in manifest.files}
    for required in filter(None, (manifest.model_file, manifest.labels_file)):
        if required not in listed:
            raise BundleError(f"bundle {folder}: {required} is used but not listed with a hash in files")


def open_bundle(path: str | Path) -> Bundle:
    """Read, validate and verify a bundle; raise :class:`BundleError` naming the first problem."""
    folder = Path(path)
    manifest = _read_manifest(folder)
    verify_files(folder, manifest)
    return Bundle(path=folder, manifest=manifest)


def is_bundle(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file()


def check_destination(out: str | Path) -> Path:
    """Refuse an ``--out`` that would destroy something: it must be absent, empty, or an old bundle."""
    out = Path(out)
    if not out.exists():
        if out.parent.exists() and not out.parent.is_dir():
            raise BundleError(f"--out {out}: {out.parent} is not a folder")
        return out
    if not out.is_dir():
        raise BundleError(f"--out {out} exists and is a file, not a bundle folder")
    if any(out.iterdir()) and not is_bundle(out):
        raise BundleError(f"--out {out} exists, is not empty and is not an edge-sdk bundle; refusing to overwrite it")
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _validate_against_schema(data: dict) -> None:
    """Validate with the committed JSON Schema when jsonschema is installed (it is with [convert])."""
    try:
        import jsonschema
    except ImportError:
        return  # pydantic has already validated the same model the schema is generated from
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise BundleError(f"manifest does not match the bundle schema at '{where}': {exc.message}") from exc


def write_bundle(
    out: str | Path,
    *,
    files: dict[str, bytes],
    roles: dict[str, str],
    manifest_fields: dict,
) -> Bundle:
    """Write ``files`` and a manifest describing them to ``out``, atomically.

    ``manifest_fields`` are the manifest's fields but ``schema_version``, ``created``,
    ``sdk_version`` and ``files``, which are filled in here. An existing bundle at ``out`` is
    replaced only once the new one is complete.
    """
    from edge_sdk import __version__

    out = check_destination(out).absolute()
    if MANIFEST_NAME in files:
        raise BundleError(f"cannot write bundle: a file may not be named {MANIFEST_NAME}")
    for option in ("model_file", "labels_file"):
        named = manifest_fields.get(option)
        if named is not None and named not in files:
            raise BundleError(f"cannot write bundle: {option} '{named}' is not among the files written")
    entries = [
        FileEntry(path=name, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), role=roles.get(name, "artifact"))
        for name, data in sorted(files.items())
    ]
    try:
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            sdk_version=__version__,
            files=entries,
            **manifest_fields,
        )
    except ValidationError as exc:
        raise BundleError(f"cannot write bundle: invalid manifest: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
    data = json.loads(manifest.model_dump_json())
    _validate_against_schema(data)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, payload in files.items():
            target = _safe_member(staging, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
        with open(staging / MANIFEST_NAME, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(staging)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle(path=out, manifest=manifest)


def _swap_into_place(staging: Path, out: Path) -> None:
    if out.exists():
        check_destination(out)  # it may have changed while we converted
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        retired.rmdir()
        os.rename(out, retired)
        try:
            os.rename(staging, out)
        except OSError:
            os.rename(retired, out)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, out)
    _fsync_dir(out.parent)
