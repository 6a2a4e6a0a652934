"""Device profiles: what a target device can run, as validated data.

A profile is a YAML file. The built-in ones ship inside the wheel (``device_profiles/`` in the
repository); users can pass a path to their own file anywhere a profile name is accepted.
"""

from __future__ import annotations

import enum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_sdk.errors import ProfileError


class Target(str, enum.Enum):
    """The compiler/runtime pair a bundle is built for."""

    TFLITE = "tflite"
    EDGETPU = "edgetpu"
    OPENVINO = "openvino"
    ONNX = "onnx"  # ONNX Runtime, with the execution providers the profile lists
    PLUGIN = "plugin"  # a third-party engine registered under the edge_sdk.engines entry points


class Precision(str, enum.Enum):
    """Numeric precision of the converted model's weights and activations."""

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"
    INT8 = "int8"


class IODtype(str, enum.Enum):
    """Element type of the converted model's input and output tensors."""

    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"


class DeviceProfile(BaseModel):
    """What one kind of device runs best, and the limits a conversion for it must respect."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    name: str = Field(description="Short identifier, e.g. 'rpi4'; the file stem for built-in profiles.")
    title: str = Field(description="Human-readable device name.")
    target: Target = Field(description="Backend the bundle is compiled for: tflite, edgetpu, openvino, onnx or plugin.")
    precision: Precision = Field(description="Default precision when the user does not pass --precision.")
    io_dtype: IODtype = Field(description="Dtype of model inputs and outputs for int8 conversions.")
    require_full_integer: bool = Field(
        default=False,
        description="Every op must run in integer arithmetic (accelerators such as the Edge TPU).",
    )
    threads: int = Field(ge=1, le=256, description="Inference threads the runtime uses by default.")
    max_input_size: int = Field(
        ge=16, le=8192, description="Largest input side, in pixels, the device handles comfortably."
    )
    memory_budget_mb: int = Field(ge=16, description="Memory the model and runtime may use, in MiB.")
    device: str | None = Field(
        default=None, description="Engine device name (OpenVINO: CPU, GPU, NPU, AUTO)."
    )
    delegate: str | None = Field(
        default=None, description="Shared library of a TFLite delegate, e.g. libedgetpu.so.1."
    )
    providers: list[str] = Field(
        default_factory=list,
        description="onnx: ONNX Runtime execution providers in order of preference, e.g. "
        "[TensorrtExecutionProvider, CUDAExecutionProvider]; the first that loads runs the model.",
    )
    provider_options: dict[str, dict[str, str | int | float | bool]] = Field(
        default_factory=dict,
        description="onnx: options per provider name (TensorRT: trt_engine_cache_path, trt_fp16_enable, "
        "trt_int8_enable, ...), passed to ONNX Runtime as they are.",
    )
    allow_cpu_fallback: bool = Field(
        default=False,
        description="onnx: run on CPUExecutionProvider when none of the listed GPU providers is available, "
        "instead of refusing to start.",
    )
    engine: str | None = Field(
        default=None,
        description="plugin: the name of the engine under the edge_sdk.engines entry-point group.",
    )
    engine_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="plugin: options handed to the plugin engine as they are."
    )
    notes: str = Field(default="", description="One or two sentences a user should know.")

    @model_validator(mode="after")
    def _check_consistency(self) -> DeviceProfile:
        if self.target is Target.EDGETPU:
            if self.precision is not Precision.INT8:
                raise ValueError("an edgetpu profile needs precision int8")
            if self.io_dtype is IODtype.FLOAT32:
                raise ValueError("an edgetpu profile needs io_dtype int8 or uint8")
            if not self.require_full_integer:
                raise ValueError("an edgetpu profile needs require_full_integer: true")
        if self.target is Target.ONNX and self.precision is Precision.DYNAMIC:
            raise ValueError("an onnx profile takes precision fp32, fp16 or int8")
        if (self.providers or self.provider_options) and self.target is not Target.ONNX:
            raise ValueError("providers and provider_options apply to onnx profiles only")
        unknown = sorted(set(self.provider_options) - set(self.providers))
        if unknown:
            raise ValueError(f"provider_options names {', '.join(unknown)}, which 'providers' does not list")
        if any(not p.endswith("ExecutionProvider") for p in self.providers):
            raise ValueError("providers are ONNX Runtime names ending in 'ExecutionProvider', e.g. CPUExecutionProvider")
        if self.engine_options and self.target is not Target.PLUGIN:
            raise ValueError("engine_options apply to plugin profiles only")
        if (self.target is Target.PLUGIN) != (self.engine is not None):
            raise ValueError("a plugin profile names its engine ('engine: <entry point>'), and only a plugin profile does")
        if self.require_full_integer and self.precision is not Precision.INT8:
            raise ValueError("require_full_integer needs precision int8")
        return self


def _builtin_dir() -> Path:
    # In a wheel the profiles sit at edge_sdk/device_profiles; in a source checkout or editable
    # install they are the repository's top-level device_profiles/ folder.
    package = Path(__file__).resolve().parent
    for candidate in (package / "device_profiles", package.parent / "device_profiles"):
        if candidate.is_dir():
            return candidate
    raise ProfileError(f"the built-in device profiles are missing from this install ({package})")


def builtin_profile_names() -> list[str]:
    """Names of the profiles that ship with edge-sdk, sorted."""
    return sorted(p.stem for p in _builtin_dir().glob("*.yaml"))


def _format_validation_error(source: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    where = f"field '{field}': " if field else ""  # cross-field rules name their fields in the message
    return f"profile {source}: {where}{message}{tail}"


def parse_profile(data: object, *, source: str) -> DeviceProfile:
    """Validate already-parsed YAML data as a profile; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise ProfileError(f"profile {source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(_format_validation_error(source, exc)) from exc


def load_profile_file(path: str | Path) -> DeviceProfile:
    """Read and validate one profile YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ProfileError(f"profile file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"profile file {path} cannot be read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    return parse_profile(data, source=str(path))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A built-in profile by name (``rpi4``), or a user profile by path (``my/board.yaml``)."""
    text = str(name_or_path)
    looks_like_path = text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text
    if looks_like_path:
        return load_profile_file(text)
    candidate = _builtin_dir() / f"{text}.yaml"
    if not candidate.is_file():
        known = ", ".join(builtin_profile_names())
        raise ProfileError(f"unknown profile '{text}' (built-in: {known}; or pass a path to a .yaml file)")
    return load_profile_file(candidate)


def list_profiles() -> list[DeviceProfile]:
    """Every built-in profile, sorted by name."""
    return [load_profile(name) for name in builtin_profile_names()]
