"""Generated detection data: coloured shapes on photographs, with exact boxes (no downloads).

The shipped detector is trained on these scenes, the demo's video is made of them, and the tests
measure mAP on them. Backgrounds are crops of the sample photographs scikit-image ships; a few
photographs are kept out of training so the held-out set, and the demo, show the detector scenes it
never saw. Boxes are the tight bounds of the drawn pixels, so ground truth is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from edge_sdk.errors import DatasetError

CLASSES = ("circle", "square", "triangle", "star")
# Photographs (scikit-image sample names) split once: training never sees the held-out ones.
TRAIN_PHOTOS = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "camera", "coins",
                "horse", "moon", "grass", "gravel", "clock", "page", "text", "colorwheel")
HELD_OUT_PHOTOS = ("coffee", "chelsea", "brick")


@dataclass(frozen=True)
class Box:
    """A ground-truth box in pixels of its image."""

    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float
    track: int | None = None  # which object this is, in a video (its identity from frame to frame)


@dataclass
class Shape:
    """One object in a scene: what it is, where, how big, turned how far, and its colour (BGR)."""

    class_id: int
    cx: float
    cy: float
    size: float
    angle: float
    colour: tuple[int, int, int]
    aspect: float = 1.0  # width / height stretch, so the detector also meets squashed frames


def photographs(names: tuple[str, ...]) -> list[np.ndarray]:
    """scikit-image's sample photographs as BGR images."""
    try:
        import skimage.data
    except ImportError as exc:
        raise DatasetError('generated scenes need scikit-image for their backgrounds: pip install "edge-sdk[examples]"') from exc
    images = []
    for name in names:
        image = np.asarray(getattr(skimage.data, name)())
        if image.dtype != np.uint8:
            image = (255 * (image.astype(np.float64) / max(1.0, float(image.max())))).astype(np.uint8)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGR)
        else:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        images.append(image)
    return images


def background(rng: np.random.Generator, photos: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """A random crop of a random photograph, flipped, tinted and brightened at random."""
    photo = photos[int(rng.integers(len(photos)))]
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.3, 1.0)
    cw, ch = max(16, int(pw * scale)), max(16, int(ph * scale))
    x, y = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = cv2.resize(photo[y : y + ch, x : x + cw], (width, height), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gain = rng.uniform(0.6, 1.3)
    tint = rng.uniform(-25, 25, size=3)
    return np.clip(crop.astype(np.float32) * gain + tint, 0, 255).astype(np.uint8)


def _polygon(shape: Shape) -> np.ndarray | None:
    """The outline of a square, triangle or star; None for a circle (drawn as an ellipse)."""
    kind = CLASSES[shape.class_id]
    if kind == "circle":
        return None
    if kind == "square":
        angles, radii = np.arange(4) * math.pi / 2 + math.pi / 4, np.full(4, shape.size / 2 * math.sqrt(2) * 0.8)
    elif kind == "triangle":
        angles, radii = np.arange(3) * 2 * math.pi / 3 - math.pi / 2, np.full(3, shape.size / 2)
    else:
        angles = np.arange(10) * math.pi / 5 - math.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, shape.size / 2, shape.size / 5)
    angles = angles + shape.angle
    xs = shape.cx + radii * np.cos(angles) * shape.aspect
    ys = shape.cy + radii * np.sin(angles)
    return np.stack([xs, ys], axis=1)


def _mask(shape: Shape, height: int, width: int) -> np.ndarray:
    """The shape's anti-aliased coverage, 0-255."""
    mask = np.zeros((height, width), dtype=np.uint8)
    outline = _polygon(shape)
    if outline is None:
        axes = (max(1, int(round(shape.size / 2 * shape.aspect))), max(1, int(round(shape.size / 2))))
        cv2.ellipse(mask, (int(round(shape.cx)), int(round(shape.cy))), axes, 0, 0, 360, 255, -1, cv2.LINE_AA)
    else:
        cv2.fillPoly(mask, [np.round(outline * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return mask


def _box(class_id: int, visible: np.ndarray) -> Box | None:
    ys, xs = np.nonzero(visible)
    if xs.size == 0:
        return None
    return Box(class_id, float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def _paint(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    alpha = mask.astype(np.float32)[:, :, None] / 255.0
    image[:] = (image.astype(np.float32) * (1 - alpha) + np.array(colour, dtype=np.float32) * alpha).astype(np.uint8)


def draw(image: np.ndarray, shape: Shape) -> Box:
    """Draw ``shape`` on ``image`` (in place) and return its tight box, clipped to the image."""
    mask = _mask(shape, *image.shape[:2])
    _paint(image, mask, shape.colour)
    return _box(shape.class_id, mask > 127) or Box(shape.class_id, shape.cx, shape.cy, shape.cx, shape.cy)


def draw_all(image: np.ndarray, shapes: list[Shape], *, min_visible: float = 0.5) -> list[Box]:
    """Draw ``shapes`` in order (later ones on top) and box what stays visible of each.

    A shape mostly hidden behind later ones (less than ``min_visible`` of it showing) is not in the
    truth: no detector can be asked to find it.
    """
    return [box for box in _draw_visible(image, shapes, min_visible=min_visible) if box is not None]


def _draw_visible(image: np.ndarray, shapes: list[Shape], *, min_visible: float) -> list[Box | None]:
    """``draw_all``'s boxes, one per shape in order: None for a shape hidden behind later ones."""
    return [None if visible is None else _box(shape.class_id, visible)
            for shape, visible in zip(shapes, _paint_visible(image, shapes, min_visible=min_visible))]


def _paint_visible(image: np.ndarray, shapes: list[Shape], *, min_visible: float) -> list[np.ndarray | None]:
    """Draw ``shapes`` in order; each one's visible pixels (bool, whole image), None when mostly hidden."""
    masks = [_mask(shape, *image.shape[:2]) for shape in shapes]
    for shape, mask in zip(shapes, masks):
        _paint(image, mask, shape.colour)
    visibles: list[np.ndarray | None] = []
    covered = np.zeros(image.shape[:2], dtype=bool)
    for mask in reversed(masks):
        solid = mask > 127
        visible = solid & ~covered
        covered |= solid
        visibles.append(visible if solid.any() and visible.sum() >= min_visible * solid.sum() else None)
    return visibles[::-1]


def _colour(rng: np.random.Generator, image: np.ndarray, cx: float, cy: float, size: float) -> tuple[int, int, int]:
    """A saturated colour that stands out from the background around the shape."""
    height, width = image.shape[:2]
    r = int(size / 2)
    patch = image[max(0, int(cy) - r) : int(cy) + r + 1, max(0, int(cx) - r) : int(cx) + r + 1]
    local = patch.reshape(-1, 3).mean(axis=0) if patch.size else np.full(3, 128.0)
    for _ in range(20):
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(150, 256)]]])
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)
        if np.abs(colour - local).mean() > 70:
            break
    return tuple(int(c) for c in colour)


def random_shapes(rng: np.random.Generator, image: np.ndarray, *, count: int, min_size: float, max_size: float) -> list[Shape]:
    """Up to ``count`` shapes placed inside the image, their boxes overlapping little."""
    height, width = image.shape[:2]
    shapes: list[Shape] = []
    for _ in range(count * 10):
        if len(shapes) == count:
            break
        size = rng.uniform(min_size, max_size)
        aspect = rng.uniform(0.75, 1.33)
        half_w, half_h = size / 2 * aspect + 1, size / 2 + 1
        cx, cy = rng.uniform(half_w, width - half_w), rng.uniform(half_h, height - half_h)
        if any(abs(cx - s.cx) < (half_w + s.size / 2 * s.aspect) * 0.8 and abs(cy - s.cy) < (half_h + s.size / 2) * 0.8 for s in shapes):
            continue
        shapes.append(Shape(int(rng.integers(len(CLASSES))), cx, cy, size, rng.uniform(0, 2 * math.pi),
                            _colour(rng, image, cx, cy, size), aspect))
    return shapes


def scene(rng: np.random.Generator, photos: list[np.ndarray], *, width: int = 160, height: int = 160,
          max_objects: int = 4) -> tuple[np.ndarray, list[Box]]:
    """One BGR image with 0 to ``max_objects`` shapes and their boxes."""
    image = background(rng, photos, width, height)
    short = min(width, height)
    count = int(rng.integers(0, max_objects + 1)) if rng.random() < 0.9 else 0
    shapes = random_shapes(rng, image, count=count, min_size=0.1 * short, max_size=0.4 * short)
    boxes = [draw(image, shape) for shape in shapes]
    return _camera(rng, image), boxes


def _camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A little blur now and then and some sensor noise, as a camera adds."""
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (3, 3), 0)
    noise = rng.normal(0, rng.uniform(0, 6), image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def write_yolo(root: str | Path, count: int, *, seed: int, photos: tuple[str, ...], width: int = 160, height: int = 160) -> Path:
    """A YOLO-format dataset: ``images/*.png``, ``labels/*.txt`` (class cx cy w h, 0-1) and ``classes.txt``."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    loaded = photographs(photos)
    for i in range(count):
        image, boxes = scene(rng, loaded, width=width, height=height)
        cv2.imwrite(str(root / "images" / f"{i:05d}.png"), image)
        lines = [
            f"{b.class_id} {(b.x1 + b.x2) / 2 / width:.6f} {(b.y1 + b.y2) / 2 / height:.6f} "
            f"{(b.x2 - b.x1) / width:.6f} {(b.y2 - b.y1) / height:.6f}"
            for b in boxes
        ]
        (root / "labels" / f"{i:05d}.txt").write_text("".join(line + "\n" for line in lines))
    (root / "classes.txt").write_text("".join(name + "\n" for name in CLASSES))
    return root


# -- beyond boxes: exact masks and keypoints -------------------------------------------------------

SEGMENTATION_CLASSES = ("background", *CLASSES)  # class id in a semantic mask = shape class + 1
# Pose objects are triangles turned at most POSE_MAX_TURN either way from apex-up: a triangle looks the
# same every 120 degrees, so only a limited turn gives its corners a well-defined order (apex, then the
# base corner on the apex's right, then the one on its left) that a network can learn.
POSE_CLASSES = ("triangle",)
KEYPOINT_NAMES = ("apex", "right", "left")
SKELETON = ((0, 1), (1, 2), (2, 0))
POSE_MAX_TURN = math.radians(35)


@dataclass(frozen=True, eq=False)
class Instance:
    """One object of a scene: its class, tight box and exact visible pixels, and the corners of a pose object."""

    class_id: int
    box: Box
    mask: np.ndarray  # bool, the whole image: the pixels of this object that nothing drawn later covers
    keypoints: np.ndarray | None = None  # [K, 3] x, y (pixels), visibility (2 visible, 1 hidden); pose scenes only


def instance_scene(rng: np.random.Generator, photos: list[np.ndarray], *, width: int = 160, height: int = 160,
                   max_objects: int = 4, min_size: float = 0.1, max_size: float = 0.4) -> tuple[np.ndarray, list[Instance]]:
    """One BGR image with up to ``max_objects`` shapes, each with its exact visible mask.

    Sizes are shares of the short side. A shape mostly hidden behind later ones is left out of the truth.
    """
    image = background(rng, photos, width, height)
    short = min(width, height)
    count = int(rng.integers(0, max_objects + 1)) if rng.random() < 0.9 else 0
    shapes = random_shapes(rng, image, count=count, min_size=min_size * short, max_size=max_size * short)
    visibles = _paint_visible(image, shapes, min_visible=0.5)
    instances = [Instance(s.class_id, _box(s.class_id, v), v) for s, v in zip(shapes, visibles) if v is not None]
    return _camera(rng, image), instances


def class_map(instances: list[Instance], height: int, width: int) -> np.ndarray:
    """The semantic truth of a scene: per pixel 0 for background, else the shape's class + 1."""
    out = np.zeros((height, width), dtype=np.uint8)
    for instance in instances:
        out[instance.mask] = instance.class_id + 1
    return out


def pose_scene(rng: np.random.Generator, photos: list[np.ndarray], *, width: int = 96, height: int = 96,
               objects: int = 1, min_size: float = 0.3, max_size: float = 0.6,
               distractors: int = 0) -> tuple[np.ndarray, list[Instance]]:
    """One BGR image with ``objects`` triangles whose corners are keypoints (``KEYPOINT_NAMES``).

    Each triangle is turned at most ``POSE_MAX_TURN``; ``distractors`` other shapes (not triangles,
    no keypoints) are drawn first, underneath. A corner covered by a later triangle is marked hidden
    (visibility 1); one outside the image cannot happen (triangles are placed inside).
    """
    image = background(rng, photos, width, height)
    short = min(width, height)
    placed = random_shapes(rng, image, count=objects + distractors, min_size=min_size * short, max_size=max_size * short)
    others = [replace(s, class_id=int(rng.choice([0, 1, 3]))) for s in placed[objects:]]
    triangles = [replace(s, class_id=CLASSES.index("triangle"), angle=rng.uniform(-POSE_MAX_TURN, POSE_MAX_TURN))
                 for s in placed[:objects]]
    visibles = _paint_visible(image, others + triangles, min_visible=0.0)[len(others):]
    instances = []
    for k, (shape, visible) in enumerate(zip(triangles, visibles)):
        if visible is None:
            continue
        corners = _polygon(shape)  # apex, lower right, lower left (angles -90, 30, 150 degrees from the centre)
        later = np.zeros((height, width), dtype=bool)
        for other in triangles[k + 1:]:
            later |= _mask(other, height, width) > 127
        seen = [2 if not later[min(height - 1, int(y)), min(width - 1, int(x))] else 1 for x, y in corners]
        points = np.column_stack([corners, seen]).astype(np.float32)
        instances.append(Instance(0, _box(0, visible), visible, points))
    return _camera(rng, image), instances


def _dataset_dirs(root: str | Path) -> Path:
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    return root


def write_semantic(root: str | Path, count: int, *, seed: int, photos: tuple[str, ...], width: int = 96,
                   height: int = 96, max_objects: int = 4, min_size: float = 0.15, max_size: float = 0.55) -> Path:
    """A semantic segmentation dataset: ``images/*.png``, ``masks/*.png`` (pixel = class id, 0 background) and ``classes.txt``."""
    root = _dataset_dirs(root)
    (root / "masks").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    loaded = photographs(photos)
    for i in range(count):
        image, instances = instance_scene(rng, loaded, width=width, height=height, max_objects=max_objects,
                                          min_size=min_size, max_size=max_size)
        cv2.imwrite(str(root / "images" / f"{i:05d}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{i:05d}.png"), class_map(instances, height, width))
    (root / "classes.txt").write_text("".join(name + "\n" for name in SEGMENTATION_CLASSES))
    return root


def outline(mask: np.ndarray) -> np.ndarray:
    """The outer contour of a mask's largest piece, ``[n, 2]`` pixel x, y (corners of the pixel grid's cells)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2), dtype=np.float32)
    return max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float32)


def write_yolo_seg(root: str | Path, count: int, *, seed: int, photos: tuple[str, ...], width: int = 160,
                   height: int = 160) -> Path:
    """A YOLO instance segmentation dataset: ``labels/*.txt`` lines ``class x1 y1 ... xn yn`` (0-1), the
    outline of each object's visible pixels (pixel centres, so filling the polygon gives the mask back)."""
    root = _dataset_dirs(root)
    (root / "labels").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    loaded = photographs(photos)
    for i in range(count):
        image, instances = instance_scene(rng, loaded, width=width, height=height)
        cv2.imwrite(str(root / "images" / f"{i:05d}.png"), image)
        lines = []
        for instance in instances:
            points = (outline(instance.mask) + 0.5) / np.array([width, height], dtype=np.float32)
            if len(points) >= 3:
                lines.append(f"{instance.class_id} " + " ".join(f"{v:.6f}" for v in points.reshape(-1)))
        (root / "labels" / f"{i:05d}.txt").write_text("".join(line + "\n" for line in lines))
    (root / "classes.txt").write_text("".join(name + "\n" for name in CLASSES))
    return root


def write_yolo_pose(root: str | Path, count: int, *, seed: int, photos: tuple[str, ...], width: int = 96,
                    height: int = 96, objects: int = 1, distractors: int = 0, min_size: float = 0.3,
                    max_size: float = 0.6) -> Path:
    """A YOLO pose dataset of triangles: ``labels/*.txt`` lines ``0 cx cy w h x1 y1 v1 x2 y2 v2 x3 y3 v3``
    (0-1) and ``data.yaml`` (``kpt_shape: [3, 3]``, names, keypoint names, skeleton).

    With ``objects=1`` (the default) it is a landmarks dataset: one object per image.
    """
    root = _dataset_dirs(root)
    (root / "labels").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    loaded = photographs(photos)
    scale = np.array([width, height], dtype=np.float32)
    for i in range(count):
        image, instances = pose_scene(rng, loaded, width=width, height=height, objects=objects,
                                      distractors=distractors, min_size=min_size, max_size=max_size)
        cv2.imwrite(str(root / "images" / f"{i:05d}.png"), image)
        lines = []
        for o in instances:
            b = o.box
            box = (f"{(b.x1 + b.x2) / 2 / width:.6f} {(b.y1 + b.y2) / 2 / height:.6f} "
                   f"{(b.x2 - b.x1) / width:.6f} {(b.y2 - b.y1) / height:.6f}")
            xy = o.keypoints[:, :2] / scale
            points = " ".join(f"{x:.6f} {y:.6f} {int(v)}" for (x, y), v in zip(xy, o.keypoints[:, 2]))
            lines.append(f"0 {box} {points}")
        (root / "labels" / f"{i:05d}.txt").write_text("".join(line + "\n" for line in lines))
    (root / "data.yaml").write_text(
        f"kpt_shape: [{len(KEYPOINT_NAMES)}, 3]\n"
        f"names: {{0: {POSE_CLASSES[0]}}}\n"
        f"kpt_names: [{', '.join(KEYPOINT_NAMES)}]\n"
        f"skeleton: [{', '.join(f'[{a}, {b}]' for a, b in SKELETON)}]\n"
        f"flip_idx: [0, 2, 1]\n"
    )
    (root / "classes.txt").write_text(POSE_CLASSES[0] + "\n")
    return root


@dataclass
class _Mover:
    shape: Shape
    vx: float
    vy: float
    spin: float
    band: tuple[float, float] | None = None  # the y range it keeps to (lanes)


def moving_video(path: str | Path, *, frames: int, seed: int = 7, width: int = 640, height: int = 480,
                 fps: float = 15.0, objects: int = 3, lanes: bool = False) -> list[list[Box]]:
    """A video of shapes gliding over a held-out photograph; returns each frame's true boxes, each
    with the ``track`` (the shape's index) it belongs to. A shape mostly hidden behind another is
    not in its frame's truth.

    ``lanes``: each shape keeps to a horizontal band of its own, bouncing between the left and
    right edges (so it crosses the middle again and again and never hides another), in a colour
    that stands out along its whole band. Otherwise shapes roam the frame and pass over each other.

    Written as MJPG in an .avi, which every OpenCV build reads.
    """
    rng = np.random.default_rng(seed)
    base = background(rng, photographs(HELD_OUT_PHOTOS), width, height)
    short = min(width, height)
    if lanes:
        movers = _lane_movers(rng, base, objects)
    else:
        movers = [
            _Mover(shape, rng.uniform(-1, 1) * width / 60, rng.uniform(-1, 1) * height / 60, rng.uniform(-0.05, 0.05))
            for shape in random_shapes(rng, base, count=objects, min_size=0.15 * short, max_size=0.3 * short)
        ]

    def frame(_: int) -> tuple[np.ndarray, list[Box]]:
        image = base.copy()
        drawn = _draw_visible(image, [mover.shape for mover in movers], min_visible=0.5)
        for mover in movers:
            _advance(mover, width, height)
        return image, [replace(box, track=i) for i, box in enumerate(drawn) if box is not None]

    return _write_video(path, frames, fps, frame)


def _write_video(path: str | Path, frames: int, fps: float, frame) -> list[list[Box]]:
    """``frames`` images made by ``frame(index) -> (image, true boxes)``, written as MJPG; the boxes."""
    first, boxes = frame(0)
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise DatasetError(f"cannot write the video {path}")
    truth = [boxes]
    try:
        writer.write(first)
        for index in range(1, frames):
            image, boxes = frame(index)
            writer.write(image)
            truth.append(boxes)
    finally:
        writer.release()
    return truth


def _lane_movers(rng: np.random.Generator, image: np.ndarray, count: int) -> list[_Mover]:
    height, width = image.shape[:2]
    lane = height / count
    first = int(rng.integers(len(CLASSES)))  # one of each class, as far as the lanes go
    movers = []
    for i in range(count):
        size = rng.uniform(0.7, 0.9) * min(lane, 0.3 * min(width, height))
        top, bottom = i * lane, (i + 1) * lane
        cx, cy = rng.uniform(size, width - size), (top + bottom) / 2
        band = image[int(top):int(bottom)]
        shape = Shape((first + i) % len(CLASSES), cx, cy, size, rng.uniform(0, 2 * math.pi), _band_colour(rng, band))
        speed = rng.uniform(width / 200, width / 120) * rng.choice([-1, 1])  # 3-5 px a frame at 640: walking pace
        movers.append(_Mover(shape, speed, rng.uniform(-1, 1) * lane / 40, rng.uniform(-0.05, 0.05), band=(top, bottom)))
    return movers


def _band_colour(rng: np.random.Generator, band: np.ndarray) -> tuple[int, int, int]:
    """Of 40 saturated colours, the one farthest from the darkest-to-brightest patches of ``band``."""
    patches = np.array_split(band, 8, axis=1)
    means = np.array([p.reshape(-1, 3).mean(axis=0) for p in patches])
    best, best_gap = None, -1.0
    for _ in range(40):
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(150, 256)]]])
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)
        gap = float(np.abs(means - colour).mean(axis=1).min())
        if gap > best_gap:
            best, best_gap = colour, gap
    return tuple(int(c) for c in best)


def _advance(mover: _Mover, width: int, height: int) -> None:
    """Move one step, bouncing off the frame's edges (and a lane's bounds)."""
    s = mover.shape
    half_w, half_h = s.size / 2 * s.aspect + 2, s.size / 2 + 2
    top, bottom = mover.band if mover.band is not None else (0, height)
    s.cx += mover.vx
    s.cy += mover.vy
    s.angle += mover.spin
    if not half_w <= s.cx <= width - half_w:
        mover.vx = -mover.vx
        s.cx = min(max(s.cx, half_w), width - half_w)
    if not top + half_h <= s.cy <= bottom - half_h:
        mover.vy = -mover.vy
        s.cy = min(max(s.cy, top + half_h), bottom - half_h)


def line_crossings(truth: list[list[Box]], *, x: float, margin: float = 0.0) -> dict[str, int]:
    """How often the true objects' box centres cross the vertical line at ``x`` pixels, rightwards
    and leftwards: the counts a perfect line counter reports. A side counts once the centre is more
    than ``margin`` pixels from the line (a counter's hysteresis: an object that ends the video on
    the line has not crossed it yet); a crossing while hidden counts when the object is next seen
    on the other side."""
    side: dict[int, bool] = {}
    counts = {"right": 0, "left": 0}
    for boxes in truth:
        for box in boxes:
            centre = (box.x1 + box.x2) / 2
            if abs(centre - x) <= margin:
                continue
            right = centre > x
            before = side.get(box.track)
            if before is not None and before != right:
                counts["right" if right else "left"] += 1
            side[box.track] = right
    return counts


def lanes_video(path: str | Path, *, frames: int, seed: int = 11, width: int = 640, height: int = 480,
                fps: float = 15.0, lanes: int = 3, crossings: int = 6) -> list[list[Box]]:
    """A video of ``crossings`` shapes, each gliding once across the whole frame along one of
    ``lanes`` horizontal lanes (alternately rightwards and leftwards), entering and leaving at the
    edges; shapes in one lane follow each other at a distance. Returns each frame's true boxes
    with their ``track``: an object per crossing, so a line through the middle is crossed exactly
    ``crossings`` times and every object appears once and leaves once.
    """
    rng = np.random.default_rng(seed)
    base = background(rng, photographs(HELD_OUT_PHOTOS), width, height)
    size = 0.16 * min(width, height)
    travel = width + 2 * size  # from fully outside the left edge to fully outside the right
    span = frames / max(1, -(-crossings // lanes))  # frames between starts in one lane
    plans = []
    for i in range(crossings):
        lane = i % lanes
        rightwards = lane % 2 == 0
        start = (i // lanes) * span + rng.uniform(0, 0.2 * span)
        duration = rng.uniform(0.6, 0.8) * span
        cy = (lane + 0.5) * height / lanes
        shape = Shape(int(rng.integers(len(CLASSES))), 0.0, cy, size, rng.uniform(0, 2 * math.pi),
                      _colour(rng, base, width / 2, cy, size))
        plans.append((shape, start, duration, rightwards))

    def frame(f: int) -> tuple[np.ndarray, list[Box]]:
        image = base.copy()
        shown, ids = [], []
        for i, (shape, start, duration, rightwards) in enumerate(plans):
            progress = (f - start) / duration
            if not 0 <= progress <= 1:
                continue
            x = -size + progress * travel
            shape.cx = x if rightwards else width - x
            shown.append(shape)
            ids.append(i)
        drawn = _draw_visible(image, shown, min_visible=0.5)
        # a sliver at the edge is no object yet
        return image, [replace(box, track=ids[k]) for k, box in enumerate(drawn) if box is not None and box.x2 - box.x1 >= 0.3 * size]

    return _write_video(path, frames, fps, frame)
