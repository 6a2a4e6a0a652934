"""A tiny landmark network for the pose scenes: the three corners of one triangle, as ``[1, 6]``.

The network predicts a heatmap per keypoint at 1/4 of the input, turns each into a distribution
with a softmax over its cells, and outputs the distribution's expected position (a "soft-argmax",
a fixed 1x1 convolution holding the cells' centres). So the output is ``[1, K*2]`` x0, y0, x1, y1, ...
in 0-1 of the input, what the runtime's ``landmarks`` decoder reads, while the network learns
where things are (heatmaps) rather than regressing numbers from pooled features: it trains in
seconds and stays accurate in int8. Built from stock Keras layers, so the ``.keras`` file loads
anywhere and converts to TFLite and OpenVINO.

Keypoints are the corners of a triangle turned at most ``shapes.POSE_MAX_TURN`` (see
``edge_sdk.samples.shapes``): apex, right base corner, left base corner.
"""

from __future__ import annotations

import numpy as np

from edge_sdk.samples import shapes

INPUT_SIZE = 64
STRIDE = 4
NUM_KEYPOINTS = len(shapes.KEYPOINT_NAMES)
DECODER_OPTIONS = {"num_keypoints": NUM_KEYPOINTS, "dims": 2, "normalized": True, "presence_output": None,
                   "keypoint_names": list(shapes.KEYPOINT_NAMES), "skeleton": [list(edge) for edge in shapes.SKELETON]}


def build(*, size: int = INPUT_SIZE, seed: int = 0):
    """An untrained landmark network (about 160k parameters) for ``size`` x ``size`` RGB images in [0, 1]."""
    from edge_sdk.converters import _tf

    keras = _tf.keras3()
    L = keras.layers
    keras.utils.set_random_seed(seed)
    side = size // STRIDE

    def conv(x, filters, stride=1):
        x = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        return L.ReLU(max_value=6.0)(x)

    image = keras.Input((size, size, 3), name="image")
    x = conv(image, 16, 2)         # /2
    fine = conv(conv(x, 32, 2), 32)  # /4
    x = conv(conv(fine, 48, 2), 48)  # /8
    x = conv(conv(x, 64, 2), 64)     # /16: sees the whole triangle, so it knows which corner is which
    x = L.UpSampling2D(4, interpolation="bilinear")(x)  # nearest becomes TILE, which the Edge TPU refuses
    x = L.Concatenate()([fine, x])
    x = conv(x, 48)
    heat = L.Conv2D(NUM_KEYPOINTS, 1, name="heatmaps")(x)                      # [s, s, K]
    heat = L.Permute((3, 1, 2))(heat)                                          # [K, s, s]
    heat = L.Reshape((NUM_KEYPOINTS, 1, side * side))(heat)
    probs = L.Softmax(axis=-1, name="where")(heat)
    # A fixed 1x1 convolution rather than a Dense layer: the Edge TPU takes no FULLY_CONNECTED with a 3-D output.
    expect = L.Conv2D(2, 1, use_bias=False, trainable=False, name="expected_position")
    xy = expect(probs)                                                         # [K, 1, 2]
    expect.set_weights([_cell_centres(side)[None, None]])
    out = L.Flatten(name="landmarks")(xy)
    return keras.Model(image, out, name="shapes_landmarks")


def _cell_centres(side: int) -> np.ndarray:
    """``[side*side, 2]`` x, y of each heatmap cell's centre in 0-1, in the heatmap's row-major order."""
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    return np.stack([(cols.ravel() + 0.5) / side, (rows.ravel() + 0.5) / side], axis=1).astype(np.float32)


def training_data(count: int, *, seed: int, photos: tuple[str, ...] = shapes.TRAIN_PHOTOS,
                  size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` one-triangle scenes: RGB floats ``[n, size, size, 3]``, keypoints ``[n, K*2]`` in 0-1
    and each triangle's box diagonal (0-1) for PCK."""
    rng = np.random.default_rng(seed)
    loaded = shapes.photographs(photos)
    images = np.empty((count, size, size, 3), dtype=np.float32)
    points = np.empty((count, NUM_KEYPOINTS * 2), dtype=np.float32)
    extent = np.empty(count, dtype=np.float32)
    for i in range(count):
        image, (triangle,) = shapes.pose_scene(rng, loaded, width=size, height=size)
        images[i] = image[:, :, ::-1] / 255.0
        points[i] = (triangle.keypoints[:, :2] / size).ravel()
        extent[i] = np.hypot(triangle.box.x2 - triangle.box.x1, triangle.box.y2 - triangle.box.y1) / size
    return images, points, extent


def train(images: np.ndarray, points: np.ndarray, *, epochs: int = 10, seed: int = 0, batch_size: int = 16,
          learning_rate: float = 4e-3):
    """A landmark network trained on ``images`` / ``points`` (L1 on the 0-1 coordinates, cosine-decayed Adam)."""
    from edge_sdk.converters import _tf

    keras = _tf.keras3()
    model = build(size=images.shape[1], seed=seed)
    steps = epochs * -(-len(images) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mean_absolute_error")
    model.fit(images, points, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return model


def pck(predicted: np.ndarray, truth: np.ndarray, extent: np.ndarray, *, threshold: float = 0.1) -> float:
    """Share of keypoints (``[n, K*2]`` in 0-1) within ``threshold`` x the object's box diagonal of the
    truth: PCK@0.1, as the converter scores landmarks."""
    p = np.asarray(predicted, np.float64).reshape(len(truth), -1, 2)
    t = np.asarray(truth, np.float64).reshape(len(truth), -1, 2)
    distance = np.linalg.norm(p - t, axis=-1)
    return float(np.mean(distance <= threshold * np.asarray(extent, np.float64)[:, None]))
