"""The ``tracking:``, ``zones:`` and ``lines:`` sections of a run config (pydantic, no I/O)."""

from __future__ import annotations

import math
import re
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Point = tuple[float, float]

# A zone or line name is a JSON key in counts and part of a Home Assistant entity id.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class Anchor(str, Enum):
    """Which point of a box stands for the object in zones and on lines."""

    CENTER = "center"
    BOTTOM = "bottom"  # the middle of the bottom edge: where a person or a car touches the ground


class Side(str, Enum):
    """A direction of travel in picture terms (y grows downwards)."""

    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    DOWN = "down"

    @property
    def vector(self) -> Point:
        return {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}[self.value]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_points(points, *, what: str):
    for x, y in points:
        if not (0 <= x <= 1 and 0 <= y <= 1):
            raise ValueError(f"{what} has a point ({x:g}, {y:g}) outside the frame (use normalised 0-1 coordinates)")
    return points


class ZoneSettings(_Section):
    """A named polygon: objects entering, leaving and lingering in it become events."""

    points: list[Point] = Field(description="At least 3 normalised (x, y) points.")
    loiter_s: float | None = Field(default=None, gt=0, description="Send a 'loiter' event once an object has stayed this many seconds (default: never).")
    labels: list[str] | None = Field(default=None, description="Only these labels count in this zone (default: all).")
    anchor: Anchor = Field(default=Anchor.CENTER, description="The point of a box that must be inside: center or bottom.")

    @field_validator("points")
    @classmethod
    def _points(cls, points):
        if len(points) < 3:
            raise ValueError(f"a zone needs at least 3 points, got {len(points)}")
        return check_points(points, what="the zone")


class LineSettings(_Section):
    """A named line: objects crossing it are counted in or out."""

    points: list[Point] = Field(description="Exactly 2 normalised (x, y) points.")
    in_: Side = Field(alias="in", description="The direction of travel counted as 'in' (left, right, up or down); the other way is 'out'.")
    labels: list[str] | None = Field(default=None, description="Only these labels are counted (default: all).")
    anchor: Anchor = Field(default=Anchor.CENTER, description="The point of a box whose path is followed: center or bottom.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("points")
    @classmethod
    def _points(cls, points):
        if len(points) != 2:
            raise ValueError(f"a line needs exactly 2 points, got {len(points)}")
        return check_points(points, what="the line")

    @model_validator(mode="after")
    def _direction(self):
        (x1, y1), (x2, y2) = self.points
        length = math.hypot(x2 - x1, y2 - y1)
        if length < 1e-3:
            raise ValueError("the line's 2 points are the same point")
        vx, vy = self.in_.vector
        # The normal's share along the 'in' direction; a line along that direction cannot be crossed that way.
        if abs(-(y2 - y1) * vx + (x2 - x1) * vy) / length < 0.2:
            raise ValueError(f"the line runs {self.in_.value}wards, so nothing crosses it going {self.in_.value}; "
                             f"use {'up or down' if self.in_ in (Side.LEFT, Side.RIGHT) else 'left or right'}")
        return self

    def in_normal(self) -> Point:
        """The unit normal of the line pointing to the side an 'in' crossing ends on."""
        (x1, y1), (x2, y2) = self.points
        length = math.hypot(x2 - x1, y2 - y1)
        nx, ny = -(y2 - y1) / length, (x2 - x1) / length
        vx, vy = self.in_.vector
        return (nx, ny) if nx * vx + ny * vy > 0 else (-nx, -ny)


class TrackingSettings(_Section):
    """The multi-object tracker and the events it drives."""

    low_threshold: float = Field(
        default=0.1, ge=0, le=1,
        description="Detections from this score up to the run's threshold only extend existing tracks (the second, "
        "low-score association pass); at or above the run's threshold they also start tracks.",
    )
    min_hits: int = Field(default=3, ge=1, le=100, description="Matched frames before a track is confirmed (and its 'new' event sent).")
    max_lost_s: float = Field(default=1.5, gt=0, le=3600, description="How long a lost track is kept for re-association before it ends.")
    match_iou: float = Field(default=0.2, gt=0, lt=1, description="Least IoU between a predicted track box and a detection to match them.")
    stationary_s: float = Field(default=10.0, gt=0, description="An object that moved less than stationary_motion for this long is stationary.")
    stationary_motion: float = Field(
        default=0.1, gt=0, le=10, description="Movement that still counts as staying put, as a share of the box's larger side.")
    stationary_keep_s: float = Field(
        default=300.0, gt=0, description="How long a lost stationary object is kept (a parked car the detector misses for a while keeps its id).")
    update_s: float = Field(
        default=30.0, gt=0,
        description="A moving track's 'update' event is sent at least this often (besides one at each change of its zones "
        "or of its stationary state).",
    )
    zone_inertia: int = Field(default=3, ge=1, le=100, description="Consecutive frames inside (or outside) a zone before 'enter' (or 'exit').")
    line_margin: float = Field(
        default=0.02, ge=0, le=0.5,
        description="How far past a line (share of the frame) the anchor must go to count a crossing; jitter on the line counts nothing.",
    )

    @model_validator(mode="after")
    def _keep(self):
        if self.stationary_keep_s < self.max_lost_s:
            raise ValueError("stationary_keep_s must be at least max_lost_s")
        return self


def parse_zones(value):
    """``zones:`` is a list of polygons (the filter it always was) or a mapping of named zones; a
    named zone is its points, or a mapping with points and options. Named zones are validated
    here, so an error names the zone rather than both forms of the field."""
    if value is not None and not isinstance(value, (dict, list)):
        raise ValueError("expected a mapping of named zones, or a list of polygons")
    if not isinstance(value, dict):
        return value
    zones = {}
    for name, zone in value.items():
        try:
            zones[name] = ZoneSettings.model_validate({"points": zone} if isinstance(zone, (list, tuple)) else zone)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            if first["type"] == "extra_forbidden":
                raise ValueError(f"zone {str(name)[:64]!r}: unknown field {where[:64]!r}") from None
            problem = first["msg"].removeprefix("Value error, ")
            raise ValueError(f"zone {str(name)[:64]!r}" + (f" {where}" if where else "") + f": {problem}") from None
    return zones


def check_names(zones: dict | None, lines: dict | None) -> None:
    for kind, names in (("zone", zones or {}), ("line", lines or {})):
        for name in names:
            if not isinstance(name, str) or not NAME.match(name):
                raise ValueError(f"{kind} name {name!r} must be 1-64 letters, digits, '_' or '-', starting with a letter or digit")
    both = set(zones or {}) & set(lines or {})
    if both:
        raise ValueError(f"{sorted(both)[0]!r} names both a zone and a line; give each its own name")
