"""The ``edge-sdk`` command line. Each command is a typed function; its docstring is its help."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from edge_sdk.errors import EdgeSDKError

app = typer.Typer(
    name="edge-sdk",
    help="Take image-recognition models from a workstation to the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
profiles_app = typer.Typer(help="List and show device profiles.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")

console = Console()


@profiles_app.command("list")
def profiles_list() -> None:
    """List the built-in device profiles."""
    from edge_sdk.profiles import list_profiles
    from edge_sdk.render import profiles_table

    console.print(profiles_table(list_profiles()))


@profiles_app.command("show")
def profiles_show(name: str = typer.Argument(..., help="Built-in profile name, or a path to a profile .yaml.")) -> None:
    """Show every field of one profile (built-in name or path to a .yaml file)."""
    from edge_sdk.profiles import load_profile
    from edge_sdk.render import profile_table

    console.print(profile_table(load_profile(name)))


@app.command()
def inspect(
    bundle: Path = typer.Argument(..., help="Bundle folder (holds edge-bundle.json)."),
    json_output: bool = typer.Option(False, "--json", help="Print the manifest as JSON instead of tables."),
) -> None:
    """Verify a bundle (schema and every file's sha256) and print its manifest and report."""
    from edge_sdk.bundle import open_bundle
    from edge_sdk.render import manifest_tables

    opened = open_bundle(bundle)
    if json_output:
        typer.echo(opened.manifest.model_dump_json(indent=2))
        return
    console.print(manifest_tables(opened.manifest, verified=True))


def _floats(text: Optional[str], option: str) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"expected comma-separated numbers, got '{text}'", param_hint=option) from exc


@app.command()
def convert(
    model: Path = typer.Argument(..., help=".keras or .h5 Keras file, a SavedModel folder, an .onnx or a .tflite file."),
    profile: str = typer.Option(..., "--profile", "-p", help="Device profile name (see 'profiles list') or .yaml path."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to write (absent, empty, or an old bundle)."),
    calib: Optional[Path] = typer.Option(None, help="Folder of representative images for int8 calibration."),
    val: Optional[Path] = typer.Option(None, help="Validation images: one sub-folder per class; a YOLO dataset (detection, -seg polygons, pose); "
                                        "images/ + masks/ (semantic segmentation)."),
    train: Optional[Path] = typer.Option(None, help="Training images, one sub-folder per class (for --prune)."),
    prune: Optional[float] = typer.Option(None, help="Target sparsity in [0, 1), e.g. 0.5."),
    epochs: int = typer.Option(2, help="Fine-tuning epochs while pruning."),
    precision: Optional[str] = typer.Option(None, help="int8, fp16, fp32 or dynamic (default: the profile's)."),
    max_drop: float = typer.Option(1.0, "--max-drop", help="Largest drop of the headline (top-1, mAP@0.5, mean IoU, mask/keypoint mAP@0.5:0.95, PCK), in points."),
    max_drop_map50_95: float = typer.Option(2.0, "--max-drop-map50-95",
                                            help="Detectors, instance and pose models: largest box mAP@0.5:0.95 drop allowed, in points."),
    labels: Optional[Path] = typer.Option(None, help="Class names, one per line (default: folder names)."),
    resize: str = typer.Option("stretch", help="stretch, letterbox or crop."),
    color: str = typer.Option("rgb", help="Channel order the model expects: rgb or bgr."),
    norm: str = typer.Option("unit", help="unit [0,1], symmetric [-1,1], mean_std or raw."),
    mean: Optional[str] = typer.Option(None, help="Per-channel mean on the [0,1] scale, e.g. 0.485,0.456,0.406."),
    std: Optional[str] = typer.Option(None, help="Per-channel std on the [0,1] scale, e.g. 0.229,0.224,0.225."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="Per-tensor weight scales instead of per-channel."),
    calib_limit: int = typer.Option(200, help="Most calibration images used on the first attempt."),
    min_calib: int = typer.Option(50, help="Fewest calibration images accepted."),
    learning_rate: float = typer.Option(1e-4, help="Fine-tuning learning rate while pruning."),
    edgetpu_compiler: Optional[str] = typer.Option(
        None, "--edgetpu-compiler", help="Path of edgetpu_compiler (default: the one on PATH)."
    ),
    no_compile: bool = typer.Option(
        False, "--no-compile", help="Edge TPU: write the Edge-TPU-ready model and pre-check only."
    ),
    min_tpu_ops: float = typer.Option(
        1.0, "--min-tpu-ops", help="Edge TPU: share of ops that must run on the TPU, 0-1."
    ),
    name: Optional[str] = typer.Option(None, help="Model name in the manifest (default: file name)."),
    imgsz: Optional[str] = typer.Option(None, help="Input size for a model with dynamic sizes: 640 or 480x640 (HxW)."),
    task: Optional[str] = typer.Option(
        None, help="classification, detection, segmentation, instance-segmentation, pose or custom (default: read off the outputs)."
    ),
    keypoints: Optional[int] = typer.Option(
        None, help="With --task pose: keypoints per object (K of a [1, 4+C+K*D, N] head, or a [1, K*D] landmark output)."
    ),
    decoder: Optional[str] = typer.Option(
        None, help="plugin:module:function decoding outputs that match no known head (used for the accuracy check too)."
    ),
) -> None:
    """Prune, quantize and compile MODEL (.keras, .h5, SavedModel, .onnx, .tflite) into a verified bundle."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edge_sdk.converters import convert as run_convert
    from edge_sdk.errors import AccuracyBudgetError
    from edge_sdk.render import report_tables

    import warnings

    # TensorFlow and Keras warn about their own internals (deprecations, data adapters); the report
    # below is what a user of this command needs to read.
    warnings.filterwarnings("ignore", module=r"(tensorflow|keras|tf_keras|tensorflow_model_optimization)(\.|$)")
    warnings.filterwarnings("ignore", category=UserWarning, message=r".*(Interpreter|quantized inputs).*")
    import os

    # Progress goes to a duplicate of stderr: the converter silences the real descriptor while
    # TensorFlow's native code talks, and the bars must keep moving through that.
    err = Console(file=os.fdopen(os.dup(2), "w", buffering=1), stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True,
    ) as bars:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks or (done == 1 and bars.tasks[tasks[phase]].finished):
                tasks[phase] = bars.add_task(phase, total=total)
            bars.update(tasks[phase], completed=done, total=total)

        try:
            result = run_convert(
                model, profile=profile, out=out, calib=calib, val=val, train=train, prune=prune, epochs=epochs,
                precision=precision, max_drop=max_drop, max_drop_map50_95=max_drop_map50_95, labels=labels, resize=resize, color=color,
                normalization=norm, mean=_floats(mean, "--mean"), std=_floats(std, "--std"),
                per_channel=not per_tensor, calib_limit=calib_limit, min_calib=min_calib,
                learning_rate=learning_rate, edgetpu_compiler=edgetpu_compiler, compile=not no_compile,
                min_tpu_ops=min_tpu_ops, name=name, imgsz=imgsz, task=task, decoder=decoder, keypoints=keypoints,
                progress=progress,
            )
        except AccuracyBudgetError as exc:
            if exc.report is not None:
                console.print(report_tables(exc.report))
            raise
    console.print(report_tables(result.report))
    console.print(f"bundle written to {result.bundle.path}")


@app.command("run")
def run_command(
    bundle: Path = typer.Argument(..., help="Bundle folder to run."),
    source: Optional[str] = typer.Option(None, "--source", "-s", help="Camera index, /dev/videoN, file, rtsp:// or http:// URL, folder, glob, GStreamer pipeline, picamera2 (one camera; several: 'cameras:' in --config)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run configuration; flags override it."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after this many frames."),
    fps: Optional[float] = typer.Option(None, help="Live: process at most F frames/s. Files: real-time playback at F."),
    threshold: Optional[float] = typer.Option(None, help="Minimum score (default 0.25)."),
    jsonl: Optional[Path] = typer.Option(None, help="Append results as JSON lines to this file (default: stdout)."),
    labels: Optional[str] = typer.Option(None, help="Comma-separated label allow-list."),
    loop: Optional[bool] = typer.Option(None, "--loop/--no-loop", help="Restart files and folders at their end."),
    stride: Optional[int] = typer.Option(None, help="Process every Nth frame."),
    threads: Optional[int] = typer.Option(None, help="Inference threads (default: the profile's)."),
    device: Optional[str] = typer.Option(None, help="OpenVINO device override: CPU, GPU, NPU, AUTO."),
    cpu_fallback: Optional[bool] = typer.Option(None, "--cpu-fallback/--no-cpu-fallback", help="Edge TPU / ONNX GPU providers: run on the CPU if they are missing."),
    broker: Optional[str] = typer.Option(None, help="Publish to this MQTT broker: mqtt://host[:port], mqtts://, ws://, wss://."),
    device_id: Optional[str] = typer.Option(None, "--device-id", help="Device id in MQTT topics (default: the host name)."),
    http: Optional[str] = typer.Option(
        None, "--http", metavar="[HOST]:PORT",
        help="Serve the live view, /metrics and /healthz: ':8080' on every interface (needs a token or password, "
        "e.g. $EDGE_SDK_HTTP_TOKEN; without one it listens on 127.0.0.1), '127.0.0.1:8080' on this machine only.",
    ),
    isolate_engine: Optional[bool] = typer.Option(
        None, "--isolate-engine/--no-isolate-engine",
        help="Run the engine in a child process, so a hang is killed and a crash survived (watchdog.isolate).",
    ),
) -> None:
    """Run a bundle on one camera (--source) or several (cameras: in --config); JSON lines per frame (stdout, or MQTT with --broker), a summary on stderr."""
    import faulthandler
    import json
    import signal

    from edge_sdk.config import load_config
    from edge_sdk.runtime import Runtime

    settings = load_config(
        config, source=source, max_frames=max_frames, fps=fps, threshold=threshold, jsonl=jsonl,
        labels=[x.strip() for x in labels.split(",") if x.strip()] if labels else None, loop=loop, stride=stride,
        threads=threads, device=device, cpu_fallback=cpu_fallback, broker=broker, device_id=device_id, http=http,
        isolate_engine=isolate_engine,
    )
    err = Console(stderr=True)
    if hasattr(signal, "SIGUSR1") and sys.__stderr__ is not None:
        # `kill -USR1 <pid>`: every thread's stack on stderr, for a run that seems stuck.
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    runtime = Runtime(bundle, settings, notify=lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True))
    sink, opened = None, False
    try:
        with runtime:
            opened = True
            sink = open(settings.jsonl, "a", encoding="utf-8") if settings.jsonl else (sys.stdout if runtime.link is None else None)
            for result in runtime.results():
                if sink is not None:
                    sink.write(json.dumps(result.to_json()) + "\n")
                    sink.flush()
    finally:
        if sink is not None and sink is not sys.stdout:
            sink.close()
        if opened:
            err.print(_summary(runtime), highlight=False, markup=False, soft_wrap=True)


def _summary(runtime) -> str:
    """The run in one line per camera, then the engine and MQTT, for stderr."""
    stats = runtime.stats()
    lines = []
    for camera in stats.cameras:
        s = camera.stats
        line = (f"frames {s.frames_done} ({s.frames_skipped} skipped, {s.frame_errors} bad), {s.fps:.1f} fps, "
                f"latency p50 {s.latency_ms_p50 or 0:.1f} ms p99 {s.latency_ms_p99 or 0:.1f} ms, {s.detections} detections")
        for name, totals in (camera.counts or {}).get("lines", {}).items():
            line += f"; line {name}: in {totals['in']}, out {totals['out']}"
        if len(stats.cameras) > 1 or camera.state == "failed":
            line = f"camera {camera.id} {camera.state}: {line}"
        lines.append(line)
    engine = stats.engine
    tail = ""
    if engine.restarts or engine.state != "ok":
        tail += f"; engine {engine.state}, {engine.restarts} restarts ({engine.hangs} hangs)"
    if runtime.link is not None:
        sent = runtime.link.publisher.stats()
        tail += (f"; mqtt: {sent.acked} acked, {sent.outbox_depth} kept in the outbox, "
                 f"{sent.outbox_dropped_overflow} dropped, {sent.refused} refused")
    return "\n".join(lines) + tail


@app.command()
def bench(
    bundle: Path = typer.Argument(..., help="Bundle folder to benchmark."),
    frames: int = typer.Option(200, help="Timed invocations."),
    threads: Optional[int] = typer.Option(None, help="Inference threads (default: the profile's)."),
    device: Optional[str] = typer.Option(None, help="OpenVINO device override."),
    cpu_fallback: bool = typer.Option(False, "--cpu-fallback", help="Edge TPU / ONNX GPU providers: run on the CPU if they are missing."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    plot: Optional[Path] = typer.Option(None, help="Write a latency histogram PNG here."),
) -> None:
    """Time the bundle's engine on this machine: p50/p90/p99 latency, FPS, peak memory, engine and delegate."""
    import json

    from edge_sdk.bench import histogram_png, run_bench
    from edge_sdk.config import load_config
    from edge_sdk.errors import ConfigError
    from edge_sdk.pipeline import open_pipeline

    if frames < 1:
        raise ConfigError(f"--frames must be at least 1, not {frames}")
    pipeline = open_pipeline(bundle, config=load_config(None, threads=threads, device=device, cpu_fallback=cpu_fallback))
    result, latencies = run_bench(pipeline, frames=frames)
    if plot is not None:
        plot.write_bytes(histogram_png(latencies, title=f"{pipeline.bundle.manifest.name}: {result.engine}, {frames} runs"))
    if json_output:
        typer.echo(json.dumps(result.to_json()))
        return
    from rich.table import Table

    table = Table(title=f"bench {pipeline.bundle.manifest.name}", show_header=False)
    for key, value in result.to_json().items():
        table.add_row(key, str(value))
    console.print(table)


@app.command()
def doctor(bundle: Optional[Path] = typer.Argument(None, help="Also check that this bundle can run here.")) -> None:
    """Report what this machine can run: Python, engines, OpenVINO devices, Edge TPU, OpenCV, cameras.

    Every failed check names the README troubleshooting entry that explains it.
    """
    from rich.table import Table
    from rich.text import Text

    from edge_sdk.doctor import diagnose

    checks = diagnose(bundle)
    table = Table(title="edge-sdk doctor")
    table.add_column("check")
    table.add_column("")
    # fold, not ellipsis: a cut-off README anchor would point nowhere
    table.add_column("detail", overflow="fold")
    for check in checks:
        # Text, not markup: error messages may hold brackets that rich would eat
        detail = Text(f"{check.detail}\n{check.pointer}" if check.pointer else check.detail)
        table.add_row(check.name, "ok" if check.ok else "-", detail)
    console.print(table)
    broken = [c for c in checks if c.name.startswith("engine plugin ") and not c.ok]
    if broken:  # an installed plugin that cannot load is a fault of this install, like bad input
        from edge_sdk.errors import EngineError

        raise EngineError(broken[0].detail + (f" (and {len(broken) - 1} more broken plugins)" if len(broken) > 1 else ""))
    if bundle is not None and not all(c.ok for c in checks if c.name in ("bundle", "can run bundle")):
        raise typer.Exit(1)


def _register_fleet_commands() -> None:
    from edge_sdk.cli_fleet import ingest, listen, push
    from edge_sdk.cli_ota import keys_app, sign

    app.add_typer(keys_app, name="keys")
    app.command("sign")(sign)
    app.command("push")(push)
    app.command("listen")(listen)
    app.command("ingest")(ingest)
    _register_rollout_commands()


def _register_rollout_commands() -> None:
    from edge_sdk.cli_rollout import fleet, rollout

    app.command("rollout")(rollout)
    app.command("fleet")(fleet)


def _register_demo_command() -> None:
    from edge_sdk.cli_annotate import annotate
    from edge_sdk.cli_demo import demo

    app.command("demo")(demo)
    app.command("annotate")(annotate)


_register_fleet_commands()
_register_demo_command()


# Typer has moved from depending on click to vendoring it; find click's base classes either way.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line on stderr and exit code 2 for every expected failure."""
    try:
        # Without standalone mode, click returns a typer.Exit's code instead of raising it.
        code = app(args=argv, standalone_mode=False, prog_name="edge-sdk")
    except EdgeSDKError as exc:
        print(f"edge-sdk: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except _CLICK_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message(), file=sys.stderr)
            return 2
        print(f"edge-sdk: error: {exc.format_message()}", file=sys.stderr)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        print("edge-sdk: interrupted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", getattr(exc, "code", 0)) or 0)
    return code if isinstance(code, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
