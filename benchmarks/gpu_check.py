"""The GPU half of the onnx target, for a machine with an NVIDIA GPU (a Jetson, a workstation): not in the test run.

For TensorRT and then CUDA alone, opens the engine as the jetson-orin-nano-gpu profile does, checks
that ONNX Runtime really got that provider (not a silent CPU fallback), that its outputs match the
CPU provider's on the same input (fp16 tolerance), and times it. TensorRT builds its engine on the
first run into a cache folder; the second open must reuse it (and is timed, to show it).
Without a GPU it prints one line saying why it skipped and exits 0.

    python benchmarks/gpu_check.py [model.onnx]      # default: the shipped detector as a YOLOv8-layout ONNX file
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _model(argv: list[str], folder: Path) -> Path:
    if argv:
        return Path(argv[0])
    sys.path.insert(0, str(HERE.parent / "tests"))
    from support.models import onnx_detectors

    return onnx_detectors.yolov8_onnx_of_shipped_detector(folder / "shapes_v8.onnx")


def _time(engine, x: np.ndarray, runs: int = 200) -> float:
    for _ in range(10):
        engine.run([x])
    t0 = time.perf_counter()
    for _ in range(runs):
        engine.run([x])
    return (time.perf_counter() - t0) * 1e3 / runs


def main(argv: list[str]) -> int:
    try:
        import onnxruntime as ort
    except ImportError:
        print("gpu_check: skipped: onnxruntime is not installed (pip install onnxruntime-gpu)")
        return 0
    available = ort.get_available_providers()
    present = [p for p in GPU_PROVIDERS if p in available]
    if not present:
        print(f"gpu_check: skipped: this onnxruntime {ort.__version__} has no GPU provider (available: "
              f"{', '.join(available)}); install onnxruntime-gpu on a machine with an NVIDIA GPU")
        return 0
    from edge_sdk.backends.onnxrt import CPU, ONNXRuntimeEngine
    from edge_sdk.errors import EngineError

    failures = 0
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        model = _model(argv, Path(tmp))
        cpu = ONNXRuntimeEngine(model, providers=[CPU])
        shape = [d if d > 0 else 1 for d in cpu.input_specs()[0]["shape"]]
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        reference = cpu.run([x])
        print(f"CPU: {_time(cpu, x):.3f} ms/run")
        for provider in present:
            options = {}
            if provider == "TensorrtExecutionProvider":
                options = {provider: {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                      "trt_engine_cache_path": str(Path(tmp) / "trt")}}
            for attempt in ("first open", "cached open"):
                t0 = time.perf_counter()
                try:
                    engine = ONNXRuntimeEngine(model, providers=[provider], provider_options=options)
                except EngineError as exc:
                    print(f"{provider}: FAILED to start: {exc}")
                    failures += 1
                    break
                opened = time.perf_counter() - t0
                outputs = engine.run([x])
                worst = max(float(np.max(np.abs(a - b))) / (float(np.max(np.abs(b))) + 1e-6) for a, b in zip(outputs, reference))
                ok = engine.provider == provider and worst < 2e-2
                failures += not ok
                print(f"{provider} ({attempt} {opened:.1f} s): got {engine.provider}, {_time(engine, x):.3f} ms/run, "
                      f"max relative difference to CPU {worst:.2e}: {'OK' if ok else 'FAILED'}")
                if provider != "TensorrtExecutionProvider":
                    break
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
