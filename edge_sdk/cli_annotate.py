"""``edge-sdk annotate``: a bundle's results drawn on images or a video, to look at what a model sees.

Boxes, instance masks (translucent), semantic class maps (tinted by class) and keypoint skeletons
are drawn by :func:`edge_sdk.annotate.annotate`, the same drawing the live view and snapshots use.
Images keep their names (as PNG) under ``--out``; a video becomes one annotated video file. The
output is written beside its destination and moved into place at the end, so an interrupted or
failed run leaves nothing half-written, and an existing file or non-empty folder is never replaced.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from edge_sdk.errors import ConfigError, SourceError

VIDEO_OUT = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


def annotate(
    bundle: Path = typer.Argument(..., help="Bundle folder to run."),
    source: str = typer.Argument(..., help="An image, a folder or glob of images, or a video file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the annotated images, or a .mp4/.avi/.mkv file for a video."),
    threshold: Optional[float] = typer.Option(None, help="Minimum score (default 0.25)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="A video: stop after this many frames."),
) -> None:
    """Draw a bundle's results (boxes, masks, class maps, skeletons) on images or a video."""
    from edge_sdk.config import load_config
    from edge_sdk.pipeline import open_pipeline
    from edge_sdk.sources.spec import SourceKind, parse_spec

    kind = parse_spec(source).kind
    if kind not in (SourceKind.IMAGES, SourceKind.VIDEO):
        raise ConfigError(f"annotate reads images or a video file, not a {kind.value} source ({source})")
    video = kind is SourceKind.VIDEO
    _check_out(out, video=video)
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames must be at least 1, not {max_frames}")
    settings = load_config(None, threshold=threshold)
    pipeline = open_pipeline(bundle, config=settings)
    try:
        if video:
            count = _video(pipeline, source, out, max_frames)
        else:
            count = _images(pipeline, source, out)
    finally:
        pipeline.close()
    typer.echo(f"{count} {'frames' if video else 'images'} annotated into {out}")


def _check_out(out: Path, *, video: bool) -> None:
    if video:
        if out.suffix.lower() not in VIDEO_OUT:
            raise ConfigError(f"--out {out}: a video is written to a {', '.join(VIDEO_OUT)} file")
        if out.exists():
            raise ConfigError(f"--out {out} exists; refusing to overwrite it")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; refusing to overwrite it")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: {out.parent} is not a folder")


def _drawn(pipeline, frame: np.ndarray, index: int) -> tuple[np.ndarray, str]:
    """The frame with its results drawn, and a one-line summary of them."""
    from edge_sdk.annotate import Overlay, annotate as draw

    result = pipeline.infer(frame, index=index)
    overlay = Overlay(segmentation=result.segmentation) if result.segmentation is not None else None
    if result.segmentation is not None:
        areas = result.segmentation.areas()
        summary = ", ".join(f"{label} {100 * share:.0f} %" for label, share in list(areas.items())[:6])
    else:
        summary = ", ".join(f"{d.label} {d.score:.2f}" for d in result.detections[:8]) or "nothing found"
        if len(result.detections) > 8:
            summary += f", and {len(result.detections) - 8} more"
    return draw(frame, result.detections, overlay), summary


def _images(pipeline, source: str, out: Path) -> int:
    import cv2

    from edge_sdk.imagefolder import read_image
    from edge_sdk.sources.images import find_images

    paths = find_images(source)
    root = Path(source) if Path(source).is_dir() else None
    names = [(p.relative_to(root) if root is not None else Path(p.name)).with_suffix(".png") for p in paths]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: two images would be written to the same name (for example a.jpg and a.png)")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for index, (path, name) in enumerate(zip(paths, names)):
            image, summary = _drawn(pipeline, read_image(path), index)
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), image):
                raise SourceError(f"cannot write {out / name}")
            typer.echo(f"{name}: {summary}")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(paths)


def _video(pipeline, source: str, out: Path, max_frames: int | None) -> int:
    import cv2

    from edge_sdk.sources import open_source

    fd, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    staging = Path(name)
    writer = None
    count = 0
    try:
        capture = cv2.VideoCapture(source)
        rate = capture.get(cv2.CAP_PROP_FPS)
        capture.release()
        fps = rate if 0 < rate < 1000 else 15.0  # the input's own rate, so the output plays at its speed
        with open_source(source) as feed:
            for frame in feed.frames():
                image, summary = _drawn(pipeline, frame.image, frame.index)
                if writer is None:
                    height, width = image.shape[:2]
                    writer = cv2.VideoWriter(str(staging), cv2.VideoWriter_fourcc(*VIDEO_OUT[out.suffix.lower()]),
                                             float(fps), (width, height))
                    if not writer.isOpened():
                        raise SourceError(f"OpenCV cannot write a {out.suffix} video here")
                writer.write(image)
                count += 1
                typer.echo(f"frame {frame.index}: {summary}")
                if max_frames is not None and count >= max_frames:
                    break
        if writer is None:
            raise SourceError(f"{source} holds no frame")
        writer.release()
        writer = None
        os.replace(staging, out)
    except BaseException:
        if writer is not None:
            writer.release()
        staging.unlink(missing_ok=True)
        raise
    return count
