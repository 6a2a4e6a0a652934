"""ONNX Runtime engine: an ONNX model (fp32, fp16 or int8 QDQ) on the first execution provider that loads.

A profile lists its providers in order (TensorRT, then CUDA, on a Jetson); ONNX Runtime itself
falls back silently to the CPU when a GPU provider fails to initialise, so the provider it really
got is read back from the session and reported. A profile that names GPU providers refuses to run
on the CPU unless it (or ``--cpu-fallback``) allows it: a Jetson quietly running on its CPU is a
fault a user should hear about at start, not find in a latency graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_sdk.errors import EngineError

NAME = "onnx"
CPU = "CPUExecutionProvider"
# The package a provider comes in, for the one-line error when it is missing.
_PACKAGE = {
    "TensorrtExecutionProvider": "onnxruntime-gpu (with TensorRT)",
    "CUDAExecutionProvider": "onnxruntime-gpu",
    "OpenVINOExecutionProvider": "onnxruntime-openvino",
    "DmlExecutionProvider": "onnxruntime-directml",
    "CoreMLExecutionProvider": "onnxruntime (macOS build)",
}
_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EngineError('ONNX Runtime is not installed: pip install "edge-sdk[onnx]" (or onnxruntime-gpu on a GPU)') from exc
    return ort


def version() -> str | None:
    """The installed ONNX Runtime's version, or None when it does not import."""
    try:
        return _ort().__version__
    except EngineError:
        return None


def available_providers() -> list[str]:
    """The execution providers this ONNX Runtime build has, in its own order of preference."""
    try:
        return list(_ort().get_available_providers())
    except EngineError:
        return []


def choose_providers(wanted: list[str], available: list[str], *, allow_cpu_fallback: bool) -> list[str]:
    """The providers to open a session with: the wanted ones this build has, in order, and the CPU last.

    Raises EngineError naming the package when none of the wanted providers exists here and CPU
    fallback is not allowed.
    """
    wanted = list(wanted) or [CPU]
    fallback = allow_cpu_fallback or CPU in wanted  # a list ending in the CPU says it may run there
    gpu = [p for p in wanted if p != CPU]
    if gpu and not any(p in available for p in gpu) and not fallback:
        raise EngineError(
            f"ONNX Runtime here has no {gpu[0]} (available: {', '.join(available) or 'none'}); install "
            f"{_PACKAGE.get(gpu[0], 'an onnxruntime build with it')}, or allow CPU fallback "
            "(allow_cpu_fallback: true in the profile, or --cpu-fallback)"
        )
    present = [p for p in wanted if p in available]
    return present + ([CPU] if CPU not in present else [])


class ONNXRuntimeEngine:
    """One ``InferenceSession`` on the first provider of the profile's list that loads."""

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        providers: list[str] | None = None,
        provider_options: dict[str, dict] | None = None,
        threads: int | None = None,
        allow_cpu_fallback: bool = False,
    ) -> None:
        ort = _ort()
        self.available = available_providers()
        chosen = choose_providers(providers or [], self.available, allow_cpu_fallback=allow_cpu_fallback)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        provider_options = provider_options or {}
        for name, opts in provider_options.items():
            cache = opts.get("trt_engine_cache_path")
            if name in chosen and cache:  # TensorRT does not create its cache folder
                Path(str(cache)).mkdir(parents=True, exist_ok=True)
        listed = [(name, {k: str(v) if isinstance(v, bool) else v for k, v in provider_options.get(name, {}).items()})
                  for name in chosen]
        source = model if isinstance(model, bytes) else str(model)
        try:
            self._session = ort.InferenceSession(source, options, providers=listed)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/RuntimeException classes
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"ONNX Runtime cannot load the model: {first[:300]}") from exc
        used = self._session.get_providers()
        self.provider = used[0] if used else CPU
        gpu_wanted = [p for p in (providers or []) if p != CPU]
        if gpu_wanted and self.provider == CPU and not (allow_cpu_fallback or CPU in (providers or [])):
            # The provider exists in this build but did not initialise (no GPU, no CUDA libraries).
            raise EngineError(
                f"ONNX Runtime could not start {', '.join(gpu_wanted)} here and fell back to the CPU; check the "
                "GPU drivers and CUDA/TensorRT libraries, or allow CPU fallback (allow_cpu_fallback: true, or --cpu-fallback)"
            )
        self.device = self.provider  # what bench and doctor print for every engine
        self.threads = threads
        self._inputs = self._session.get_inputs()
        self._outputs = self._session.get_outputs()
        self._input_names = [i.name for i in self._inputs]

    @staticmethod
    def _spec(arg) -> dict:
        return {
            "name": arg.name,
            "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape],
            "dtype": np.dtype(_DTYPES.get(arg.type, np.float32)),
            "quantization": None,  # QDQ models take and give float; the integer part is inside
        }

    def input_specs(self) -> list[dict]:
        return [self._spec(a) for a in self._inputs]

    def output_specs(self) -> list[dict]:
        return [self._spec(a) for a in self._outputs]

    @property
    def session(self):
        """The ``InferenceSession`` itself (benchmarks time a bare ``run`` on it against the pipeline)."""
        return self._session

    def info(self) -> dict:
        """What ``doctor``, ``bench`` and the birth message say about this engine."""
        return {"onnxruntime": version(), "provider": self.provider, "available_providers": self.available}

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(None, dict(zip(self._input_names, inputs)))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"ONNX Runtime cannot run the model: {first[:300]}") from exc

    def close(self) -> None:
        self._session = None
