"""``edge-sdk demo``: the whole project working on one machine, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def demo(
    broker: Optional[str] = typer.Option(None, help="Publish to this MQTT broker (default: start Mosquitto, else an embedded broker, on loopback)."),
    workdir: Optional[Path] = typer.Option(None, help="Where the converted bundle is cached and the run's files go (default: ~/.cache/edge-sdk/demo)."),
    frames: int = typer.Option(200, min=10, max=100_000, help="Frames of generated video to run."),
    fps: float = typer.Option(15.0, min=1.0, max=240.0, help="Frame rate of the generated video."),
    fast: bool = typer.Option(False, "--fast", help="Run the video as fast as the model goes instead of in real time."),
    reconvert: bool = typer.Option(False, "--reconvert", help="Convert the detector again even if a cached bundle exists."),
    embedded_broker: bool = typer.Option(False, "--embedded-broker", help="Use the embedded pure-Python broker even if Mosquitto is installed."),
    quiet: bool = typer.Option(False, "--quiet", help="Do not print each message as it arrives."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the summary as JSON to this file."),
) -> None:
    """Convert the shipped detector, run it on a generated video, publish over MQTT, and score what arrives."""
    from rich.console import Console

    from edge_sdk.demo.run import default_workdir, run_demo, summary_table

    console = Console()
    summary = run_demo(
        workdir=workdir or default_workdir(), console=console, broker_url=broker, frames=frames, fps=fps,
        realtime=not fast, reconvert=reconvert, embedded=embedded_broker, quiet=quiet,
    )
    console.print(summary_table(summary))
    if json_out is not None:
        import dataclasses
        import json

        data = dataclasses.asdict(summary)
        data["pngs"] = [str(p) for p in summary.pngs]
        json_out.write_text(json.dumps(data, indent=2) + "\n")
