"""The reliability report: each gate's figures and checks as Markdown, with line plots drawn by OpenCV.

The long tier always writes it (``reliability-report.md`` in the current directory, or
``$EDGE_SDK_REPORT``); the fast tier writes the same structure only when ``EDGE_SDK_REPORT`` is set.
The file is rewritten after every gate, so a run that stops half-way still leaves the gates it did.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

DEFAULT_NAME = "reliability-report.md"
_COLOURS = [(180, 100, 30), (40, 120, 230), (60, 160, 60), (40, 40, 200), (150, 60, 150)]  # BGR


@dataclass(frozen=True)
class Check:
    """One pass/fail statement of a gate, with the figure it rests on."""

    what: str
    ok: bool
    figure: str

    def __str__(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}: {self.what} ({self.figure})"


@dataclass(frozen=True)
class Series:
    label: str
    xs: list[float]
    ys: list[float]


@dataclass(frozen=True)
class Plot:
    """A line plot: ``name`` becomes ``<report stem>-<name>.png`` next to the report."""

    name: str
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    limits: dict[str, float] = field(default_factory=dict)  # label -> a horizontal bound line
    points: bool = False


@dataclass
class Section:
    """One gate's part of the report."""

    title: str
    gate: str
    sizes: str
    checks: list[Check]
    tables: list[tuple[list[str], list[list[object]]]] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def failures(self) -> list[str]:
        return [str(check) for check in self.checks if not check.ok]


class Report:
    """The sections recorded so far in this test session, written to one Markdown file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sections: dict[str, Section] = {}

    def add(self, section: Section) -> None:
        self.sections[section.title] = section
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            "# edge-sdk reliability report", "",
            f"{time.strftime('%Y-%m-%d %H:%M:%S %z')} on {platform.node()} ({platform.machine()}, "
            f"{os.cpu_count()} CPUs), Python {platform.python_version()}.", "",
        ]
        for section in self.sections.values():
            lines += self._section(section)
        self.path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _section(self, section: Section) -> list[str]:
        lines = [f"## {section.title}: {'PASS' if section.ok else 'FAIL'}", "", f"Gate: {section.gate}", "",
                 f"Size: {section.sizes}", ""]
        lines += [f"- {'PASS' if c.ok else '**FAIL**'}: {c.what}: {c.figure}" for c in section.checks]
        lines.append("")
        for header, rows in section.tables:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
            lines.append("")
        lines += [*section.notes, ""] if section.notes else []
        for plot in section.plots:
            image = self.path.with_name(f"{self.path.stem}-{plot.name}.png")
            draw(plot, image)
            lines += [f"![{plot.title}]({image.name})", ""]
        return lines


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "—" if value != value else f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return "—" if value is None else str(value)


def report_path(*, long_tier: bool) -> Path | None:
    """Where the report goes: ``$EDGE_SDK_REPORT``; else, for the long tier only, the default name."""
    configured = os.environ.get("EDGE_SDK_REPORT")
    if configured:
        return Path(configured).resolve()
    return Path(DEFAULT_NAME).resolve() if long_tier else None


_REPORTS: dict[Path, Report] = {}


def session_report(*, long_tier: bool) -> Report | None:
    """One Report per file for the whole session, shared by the fast and the long tier's modules."""
    path = report_path(long_tier=long_tier)
    if path is None:
        return None
    return _REPORTS.setdefault(path, Report(path))


# -- plots ----------------------------------------------------------------------------------------
def _ticks(low: float, high: float, *, whole: bool) -> list[float]:
    """About five round values (1, 2 or 5 times a power of ten apart) between ``low`` and ``high``."""
    raw = (high - low) / 5
    power = 10.0 ** np.floor(np.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1.0) if whole else step
    first = np.ceil(low / step) * step
    return [round(float(v), 10) for v in np.arange(first, high + step * 1e-9, step)]


def draw(plot: Plot, path: Path, *, size: tuple[int, int] = (900, 420)) -> None:
    """A plain line plot (matplotlib is not a dependency): axes, five ticks each, legend, bounds."""
    width, height = size
    left, right, top, bottom = 80, 20, 60, 50
    canvas = np.full((height, width, 3), 255, np.uint8)
    xs = [x for s in plot.series for x in s.xs]
    ys = [y for s in plot.series for y in s.ys] + list(plot.limits.values())
    if not xs:
        xs, ys = [0.0, 1.0], [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1.0
    y0, y1 = min(ys), max(ys)
    # From zero when zero is near (times, counts); a band around the data when not (RSS in MB).
    y0 = 0.0 if 0 <= y0 < 0.5 * y1 else y0 - 0.1 * max(y1 - y0, 1.0)
    y1 = y1 + 0.1 * max(y1 - y0, 1e-9) if y1 > y0 else y0 + 1.0

    def at(x: float, y: float) -> tuple[int, int]:
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return int(round(px)), int(round(py))

    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.rectangle(canvas, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    for xv in _ticks(x0, x1, whole=all(float(x).is_integer() for x in xs)):
        px, _ = at(xv, y0)
        cv2.line(canvas, (px, height - bottom), (px, height - bottom + 4), (0, 0, 0), 1)
        cv2.putText(canvas, f"{xv:g}", (px - 10, height - bottom + 18), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for yv in _ticks(y0, y1, whole=False):
        _, py = at(x0, yv)
        cv2.line(canvas, (left - 4, py), (left, py), (0, 0, 0), 1)
        cv2.line(canvas, (left + 1, py), (width - right - 1, py), (230, 230, 230), 1)
        cv2.putText(canvas, f"{yv:g}", (5, py + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, plot.title, (left, 25), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, plot.xlabel, (width // 2 - 60, height - 12), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, plot.ylabel, (5, top - 14), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    legend = left
    for label, bound in plot.limits.items():
        _, py = at(x0, bound)
        cv2.line(canvas, (left, py), (width - right, py), (0, 0, 230), 1, cv2.LINE_AA)
        cv2.putText(canvas, label, (width - right - 8 * len(label) - 10, py - 4), font, 0.4, (0, 0, 230), 1, cv2.LINE_AA)
    for i, series in enumerate(plot.series):
        colour = _COLOURS[i % len(_COLOURS)]
        points = np.array([at(x, y) for x, y in zip(series.xs, series.ys)], np.int32)
        if len(points) > 1 and not plot.points:
            cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
        if plot.points or len(points) == 1:
            for point in points:
                cv2.circle(canvas, tuple(int(v) for v in point), 4, colour, -1, cv2.LINE_AA)
        # The legend runs along the top margin, where it never hides a line.
        cv2.line(canvas, (legend, top - 18), (legend + 20, top - 18), colour, 3)
        cv2.putText(canvas, series.label, (legend + 26, top - 14), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        legend += 26 + cv2.getTextSize(series.label, font, 0.45, 1)[0][0] + 24
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"cv2.imwrite could not write {path}")


def record(section: Section, *, long_tier: bool) -> None:
    """Print a gate's checks, add it to the session's report (if one is written), then assert it."""
    print(f"\n{section.title}: {section.sizes}")
    for check in section.checks:
        print(f"  {check}")
    report = session_report(long_tier=long_tier)
    if report is not None:
        report.add(section)
        print(f"  report: {report.path}")
    assert section.ok, "\n".join(section.failures())
