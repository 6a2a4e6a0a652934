"""A tiny semantic segmenter for the shapes scenes: architecture, training data and a short training run.

Fully convolutional, so it runs at any input side that is a multiple of 8: an encoder to 1/8, one
skip at 1/4 where the per-class probabilities are computed (``probs``, softmax over background and
the four shapes), then a bilinear x4 upsampling to the input's size. The output is ``[1, H, W, 5]``
softmax in NHWC, what the runtime's ``segmentation`` decoder reads with its defaults. The 1/4 map is
named so the tests' instance segmentation ONNX can use it as mask prototypes.

TensorFlow is imported (through ``edge_sdk.converters._tf``) only when a model is built or trained.
"""

from __future__ import annotations

import numpy as np

from edge_sdk.samples import shapes

INPUT_SIZE = 64
CLASSES = shapes.SEGMENTATION_CLASSES
DECODER_OPTIONS = {"layout": "nhwc", "activation": "softmax"}
# Layers in order, as the tests' ONNX writer reads them: (name, filters, stride); BatchNorm follows each.
ENCODER = (("enc1", 16, 2), ("enc2", 32, 2), ("enc3", 32, 1), ("enc4", 48, 2), ("enc5", 48, 1))
SKIP, DECODE = "enc3", ("dec1", 32, 1)


def build(*, size: int | None = INPUT_SIZE, seed: int = 0):
    """An untrained segmenter (about 70k parameters) for RGB images in [0, 1]; ``size=None`` leaves the side open."""
    from edge_sdk.converters import _tf

    keras = _tf.keras3()
    L = keras.layers
    keras.utils.set_random_seed(seed)

    def conv(x, name, filters, stride):
        x = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=name)(x)
        x = L.BatchNormalization(name=name + "_bn")(x)
        return L.ReLU(max_value=6.0, name=name + "_relu")(x)

    image = keras.Input((size, size, 3), name="image")
    x, skip = image, None
    for name, filters, stride in ENCODER:
        x = conv(x, name, filters, stride)
        if name == SKIP:
            skip = x
    x = L.UpSampling2D(2, interpolation="bilinear", name="up")(x)  # nearest becomes TILE, which the Edge TPU refuses
    x = L.Concatenate(name="merge")([skip, x])
    x = conv(x, *DECODE)
    logits = L.Conv2D(len(CLASSES), 1, name="logits")(x)
    probs = L.Softmax(name="probs")(logits)
    out = L.UpSampling2D(4, interpolation="bilinear", name="segmentation")(probs)
    return keras.Model(image, out, name="shapes_segmenter")


def training_data(count: int, *, seed: int, photos: tuple[str, ...] = shapes.TRAIN_PHOTOS,
                  size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``count`` scenes as RGB floats in [0, 1] ``[n, size, size, 3]`` and their class maps ``[n, size, size]``."""
    rng = np.random.default_rng(seed)
    loaded = shapes.photographs(photos)
    images = np.empty((count, size, size, 3), dtype=np.float32)
    maps = np.empty((count, size, size), dtype=np.uint8)
    for i in range(count):
        image, instances = shapes.instance_scene(rng, loaded, width=size, height=size, min_size=0.15, max_size=0.55)
        images[i] = image[:, :, ::-1] / 255.0
        maps[i] = shapes.class_map(instances, size, size)
    return images, maps


def train(images: np.ndarray, maps: np.ndarray, *, epochs: int = 10, seed: int = 0, batch_size: int = 16,
          learning_rate: float = 4e-3):
    """A segmenter trained on ``images`` / ``maps``: pixel cross-entropy, shape pixels weighted up,
    Adam with a cosine decay (about 30 s for 2,000 64 x 64 scenes and 10 epochs on two cores)."""
    from edge_sdk.converters import _tf

    keras = _tf.keras3()
    model = build(size=images.shape[1], seed=seed)
    # Shapes cover a small share of the pixels: weight them so the network does not settle for background.
    weights = np.where(maps > 0, 3.0, 1.0).astype(np.float32)
    steps = epochs * -(-len(images) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy")
    model.fit(images, maps[..., None], sample_weight=weights, epochs=epochs, batch_size=batch_size, verbose=0,
              shuffle=True)
    return model


def mean_iou(predicted: np.ndarray, truth: np.ndarray, *, num_classes: int = len(CLASSES)) -> float:
    """Mean over classes present in truth or prediction of the class's IoU, over all pixels of all images."""
    ious = []
    for c in range(num_classes):
        p, t = predicted == c, truth == c
        union = np.logical_or(p, t).sum()
        if union:
            ious.append(np.logical_and(p, t).sum() / union)
    return float(np.mean(ious))
