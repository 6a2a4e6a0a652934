"""Train the small shapes detector that ships with edge-sdk, from data it generates itself.

Scenes of circles, squares, triangles and stars on crops of scikit-image's sample photographs are
rendered fresh every epoch (no download, no fixed training set to overfit). A held-out set drawn
on photographs the training never sees measures mAP@0.5 and mAP@0.5:0.95 at the end, through the
runtime's own YOLO decoder. The model ends in a standard ``[1, N, 5 + C]`` YOLO head.

    pip install -e ".[convert,examples]"
    python examples/train_detector.py                       # about 20 minutes on 2 cores
    python examples/train_detector.py --epochs 2 --images 200 --out /tmp/det.keras   # a smoke run

It writes the ``.keras`` model and, beside it, a ``.json`` with the held-out scores and how the
model was trained. ``edge-sdk demo`` converts the shipped copy; ``edge-sdk convert`` takes it
like any Keras model (``--val`` a YOLO dataset, which ``--write-val`` produces).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from edge_sdk.converters.assets import DETECTOR, DETECTOR_INFO  # noqa: E402


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DETECTOR, help="Where to write the .keras model (default: the shipped copy).")
    parser.add_argument("--epochs", type=int, default=40, help="Training epochs (40).")
    parser.add_argument("--images", type=int, default=3000, help="Fresh scenes rendered per epoch (3000).")
    parser.add_argument("--val-images", type=int, default=500, help="Held-out scenes for the final mAP (500).")
    parser.add_argument("--batch", type=int, default=32, help="Batch size (32).")
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="Peak learning rate, cosine-decayed (3e-3).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of weights and scenes (0).")
    parser.add_argument("--write-val", type=Path, default=None, help="Also write the held-out set here as a YOLO dataset.")
    args = parser.parse_args()
    for name in ("epochs", "images", "val_images", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main() -> int:
    args = _args()
    import numpy as np

    from edge_sdk.converters import detection_eval
    from edge_sdk.converters._tf import keras3
    from edge_sdk.errors import EdgeSDKError
    from edge_sdk.preprocess import Preprocessing, fit, normalize
    from edge_sdk.samples import detector, shapes

    keras = keras3()
    spec = Preprocessing(width=detector.INPUT_SIZE, height=detector.INPUT_SIZE, channels=3)
    classes = len(shapes.CLASSES)
    try:
        photos = shapes.photographs(shapes.TRAIN_PHOTOS)
    except EdgeSDKError as exc:
        print(f"train_detector: error: {exc}", file=sys.stderr)
        return 2

    def epoch_data(seed: int, count: int):
        rng = np.random.default_rng(seed)
        x, y = [], []
        for _ in range(count):
            image, boxes = shapes.scene(rng, photos)
            x.append(normalize(fit(image, spec)[0], spec)[0])
            y.append(detector.targets(boxes, num_classes=classes, width=image.shape[1], height=image.shape[0]))
        return np.stack(x), np.stack(y)

    model = detector.build(classes, seed=args.seed)
    steps = args.epochs * -(-args.images // args.batch)
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps, alpha=0.02,
                                                      warmup_target=None, warmup_steps=0)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=detector.loss_function(classes))
    print(f"detector: {model.count_params():,} parameters, {args.epochs} epochs of {args.images} fresh scenes")
    started = time.perf_counter()
    for epoch in range(args.epochs):
        x, y = epoch_data(1000 * args.seed + epoch, args.images)
        history = model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {history.history['loss'][-1]:.4f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)

    val_dir = args.write_val or Path(os.environ.get("TMPDIR", "/tmp")) / f"edge-sdk-shapes-val-{os.getpid()}"
    shapes.write_yolo(val_dir, args.val_images, seed=10_000 + args.seed, photos=shapes.HELD_OUT_PHOTOS)
    held_out = detection_eval.load_yolo(val_dir, spec, what="held-out set")
    found = detection_eval.predict_all(lambda batch: [np.asarray(model(batch, training=False))], held_out,
                                       decoder="yolo", options=detector.DECODER_OPTIONS)
    scores = detection_eval.detection_metrics(found, held_out.truth, classes)
    print(f"held-out ({args.val_images} scenes on unseen photographs): mAP@0.5 {scores.map50:.3f}, "
          f"mAP@0.5:0.95 {scores.map50_95:.3f}, precision {scores.precision:.3f}, recall {scores.recall:.3f} at 0.25")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Saved without its optimizer state: a third of the size, and what conversion needs.
    keras.Model(model.inputs, model.outputs, name=model.name).save(args.out)
    info = {
        "model": args.out.name,
        "classes": list(shapes.CLASSES),
        "input": [detector.INPUT_SIZE, detector.INPUT_SIZE, 3],
        "head": "yolo v5 [1, N, 5+C], boxes 0-1",
        "parameters": int(model.count_params()),
        "held_out": {"images": args.val_images, "seed": 10_000 + args.seed, "photos": list(shapes.HELD_OUT_PHOTOS),
                     "map50": round(scores.map50, 4), "map50_95": round(scores.map50_95, 4),
                     "precision": round(scores.precision, 4), "recall": round(scores.recall, 4)},
        "training": {"epochs": args.epochs, "images_per_epoch": args.images, "batch": args.batch,
                     "learning_rate": args.learning_rate, "seed": args.seed, "photos": list(shapes.TRAIN_PHOTOS),
                     "seconds": round(time.perf_counter() - started)},
    }
    info_path = args.out.with_suffix(".json") if args.out != DETECTOR else DETECTOR_INFO
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out} and {info_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
