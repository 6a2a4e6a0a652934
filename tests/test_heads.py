"""Which head a model's outputs form: shapes first, values where shapes cannot tell."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.bundle import Task
from edge_sdk.converters.heads import as_pose, recognise, settle
from edge_sdk.errors import ConfigError, ModelError


@pytest.mark.parametrize("shapes, decoder, layout, classes", [
    ([(1, 10)], "classification", "classification", 10),
    ([(None, 10)], "classification", "classification", 10),
    ([(1, 25200, 85)], "yolo", "v5", 80),
    ([(1, 84, 8400)], "yolo", "v8", 80),
    ([(1, 300, 6)], "yolo", "e2e", None),
    ([(1, 8400, 4), (1, 8400, 80)], "yolo", "split", 80),
    ([(1, 8400, 80), (1, 8400, 4)], "yolo", "split", 80),
    ([(1, 4, 8400), (1, 80, 8400)], "yolo", "split", 80),
    ([(1, 10, 4), (1, 10), (1, 10), (1,)], "ssd", "ssd", None),
])
def test_known_heads_are_recognised_from_their_shapes(shapes, decoder, layout, classes):
    head = recognise(shapes)
    assert head is not None and head.decoder == decoder and head.layout == layout and head.num_classes == classes
    assert head.task is (Task.CLASSIFICATION if decoder == "classification" else Task.DETECTION)


@pytest.mark.parametrize("shapes", [
    [(1, 896, 16), (1, 896, 1)],  # MediaPipe's face detector: regressors and scores, no known head
    [(1, 64, 20, 20)],
    [(1, 1)],
    [(2, 10)],  # a batch of two is no image model's output
    [(1, 10), (1, 10), (1, 10)],
])
def test_other_outputs_match_no_head(shapes):
    assert recognise(shapes) is None


def test_split_boxes_and_scores_of_equal_shape_take_the_source_order():
    head = recognise([(1, 400, 4), (1, 400, 4)])
    assert head.options["boxes_output"] == 0 and head.num_classes == 4


def _rows(k: int, *, classes: int, e2e: bool, rng) -> np.ndarray:
    x1, y1 = rng.uniform(0, 100, k), rng.uniform(0, 100, k)
    rows = np.stack([x1, y1, x1 + rng.uniform(5, 50, k), y1 + rng.uniform(5, 50, k), rng.uniform(0.1, 1, k),
                     rng.integers(0, classes, k) if e2e else rng.uniform(0, 1, k)], axis=1)
    return rows[None].astype(np.float32)


def test_a_k_by_6_head_is_end_to_end_only_when_its_values_say_so():
    rng = np.random.default_rng(0)
    head = recognise([(1, 300, 6)])
    e2e = settle(head, [_rows(300, classes=3, e2e=True, rng=rng)], labels=3)
    assert e2e.layout == "e2e" and e2e.num_classes == 3 and e2e.options["normalized"] is False
    # The same shape with a class probability in the last column is a one-class YOLOv5 head.
    v5 = settle(head, [_rows(300, classes=3, e2e=False, rng=rng)], labels=None)
    assert v5.layout == "v5" and v5.num_classes == 1
    with pytest.raises(ModelError, match="--labels"):
        settle(head, [_rows(300, classes=3, e2e=True, rng=rng)], labels=None)
    with pytest.raises(ModelError, match="predicts class 2 but only 2 labels"):
        settle(head, [_rows(300, classes=3, e2e=True, rng=np.random.default_rng(1))], labels=2)


def test_settle_reads_box_units_and_corner_format_off_the_values():
    rng = np.random.default_rng(0)
    v8 = recognise([(1, 6, 50)])
    pixels = rng.uniform(0, 160, (1, 6, 50)).astype(np.float32)
    assert settle(v8, [pixels], labels=None).options["normalized"] is False
    assert settle(v8, [pixels / 160], labels=None).options["normalized"] is True

    split = recognise([(1, 50, 4), (1, 50, 2)])
    corners = _rows(50, classes=2, e2e=True, rng=rng)[..., :4]
    scores = rng.uniform(0, 1, (1, 50, 2)).astype(np.float32)
    assert settle(split, [corners, scores], labels=None).options["box_format"] == "xyxy"
    centres = np.concatenate([rng.uniform(40, 150, (1, 50, 2)), rng.uniform(5, 30, (1, 50, 2))], axis=2).astype(np.float32)
    assert settle(split, [centres, scores], labels=None).options["box_format"] == "cxcywh"


# ---------------------------------------------------------------- segmentation, instance segmentation, pose

@pytest.mark.parametrize("shapes, input_size, proto_output, layout, masks, classes", [
    ([(1, 116, 8400), (1, 32, 160, 160)], (640, 640), 1, "nchw", 32, 80),
    ([(1, 32, 160, 160), (1, 116, 8400)], (640, 640), 0, "nchw", 32, 80),
    ([(1, 116, 8400), (1, 160, 160, 32)], (640, 640), 1, "nhwc", 32, 80),
    # 64x64 input: protos 16x16x32, where axis 1 is 16 and would leave 21 "classes": the aspect settles it
    ([(1, 37, 336), (1, 16, 16, 32)], (64, 64), 1, "nhwc", 32, 1),
    ([(1, 37, 336), (1, 16, 16, 32)], None, 1, "nhwc", 32, 1),  # without the input size, M = 32 does
    ([(1, 7, 2100), (1, 2, 80, 80)], (320, 320), 1, "nchw", 2, 1),
])
def test_ultralytics_seg_heads_are_recognised_in_either_order_and_layout(shapes, input_size, proto_output, layout, masks, classes):
    head = recognise(shapes, input_size=input_size)
    assert head.task is Task.INSTANCE_SEGMENTATION and head.decoder == "yolo-seg" and head.num_classes == classes
    assert head.options == {"num_masks": masks, "proto_output": proto_output, "proto_layout": layout}


@pytest.mark.parametrize("shape, input_size, layout, classes", [
    ((1, 256, 256, 21), (256, 256), "nhwc", 21),
    ((1, 21, 64, 64), (256, 256), "nchw", 21),
    ((1, 65, 65, 21), (513, 513), "nhwc", 21),  # DeepLab at 1/8
    ((1, 1, 96, 128), (128, 96), "nchw", 2),  # a foreground map: background and foreground
    ((1, 64, 64), (64, 64), None, None),  # class ids, argmaxed in the model
])
def test_segmentation_maps_covering_the_input_are_recognised(shape, input_size, layout, classes):
    head = recognise([shape], input_size=input_size)
    assert head.task is Task.SEGMENTATION and head.decoder == "segmentation" and head.num_classes == classes
    assert head.options.get("layout") == layout and (layout is not None or head.options["activation"] == "argmax")


@pytest.mark.parametrize("shape, input_size", [
    ((1, 64, 20, 20), (640, 640)),  # a 1/32 feature map
    ((1, 84, 8400), (640, 640)),  # a v8 head stays one
    ((1, 256, 256, 21), (512, 256)),  # not the input's aspect
])
def test_feature_maps_and_heads_are_not_taken_for_segmentation(shape, input_size):
    head = recognise([shape], input_size=input_size)
    assert head is None or head.task is not Task.SEGMENTATION


def test_settle_reads_a_score_maps_activation_and_wants_labels_for_a_class_map():
    rng = np.random.default_rng(0)
    nhwc = recognise([(1, 32, 32, 4)], input_size=(64, 64))
    logits = rng.normal(0, 3, (2, 32, 32, 4)).astype(np.float32)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    assert settle(nhwc, [logits], labels=None).options["activation"] == "logits"
    assert settle(nhwc, [softmax], labels=None).options["activation"] == "softmax"
    one = recognise([(1, 1, 32, 32)], input_size=(64, 64))
    assert settle(one, [1 / (1 + np.exp(-logits[:, None, :, :, 0]))], labels=None).options["activation"] == "sigmoid"
    assert settle(one, [logits[:, None, :, :, 0]], labels=None).options["activation"] == "logits"
    ids = recognise([(1, 64, 64)], input_size=(64, 64))
    assert settle(ids, [np.zeros((1, 64, 64))], labels=5).num_classes == 5
    with pytest.raises(ModelError, match="--labels"):
        settle(ids, [np.zeros((1, 64, 64))], labels=None)


def test_settle_reads_seg_and_pose_box_units():
    rng = np.random.default_rng(0)
    seg = recognise([(1, 32, 16, 16), (1, 38, 84)], input_size=(64, 64))
    pixels = rng.uniform(0, 64, (1, 38, 84)).astype(np.float32)
    assert settle(seg, [np.zeros((1, 32, 16, 16)), pixels], labels=None).options["normalized"] is False
    assert settle(seg, [np.zeros((1, 32, 16, 16)), pixels / 64], labels=None).options["normalized"] is True
    pose = as_pose(recognise([(1, 56, 84)]), [(1, 56, 84)], keypoints=None, labels=None)
    assert settle(pose, [rng.uniform(0, 1, (1, 56, 84))], labels=None).options["normalized"] is True


@pytest.mark.parametrize("keypoints, labels, kpt_shape, expected", [
    (None, None, None, (1, [17, 3])),  # one class: 51 = 17 x 3
    (17, None, None, (1, [17, 3])),
    (None, 1, (17, 3), (1, [17, 3])),  # from Ultralytics' metadata
    (None, 3, None, (3, [17, 2])),  # 41 - 4 - 3 = 34: pairs, not triples
])
def test_a_v8_shaped_head_reads_as_pose_when_told(keypoints, labels, kpt_shape, expected):
    shapes = [(1, 56, 8400)] if expected[0] == 1 else [(1, 4 + 3 + 34, 8400)]
    head = as_pose(recognise(shapes), shapes, keypoints=keypoints, labels=labels, kpt_shape=kpt_shape)
    assert head.task is Task.POSE and head.decoder == "yolo-pose"
    assert (head.num_classes, head.options["kpt_shape"]) == expected


def test_landmark_regressors_read_as_pose_with_keypoints():
    hand = [(1, 63), (1, 1), (1, 1), (1, 63)]  # MediaPipe's hand landmarks: landmarks, presence, handedness, world
    head = as_pose(recognise(hand), hand, keypoints=21, labels=None)
    assert head.decoder == "landmarks" and head.task is Task.POSE
    assert head.options == {"num_keypoints": 21, "dims": 3, "landmarks_output": 0, "presence_output": 1}
    flat = [(1, 1, 1, 10)]
    assert as_pose(recognise(flat), flat, keypoints=5, labels=None).options["dims"] == 2
    with pytest.raises(ConfigError, match="needs --keypoints"):
        as_pose(recognise([(1, 42)]), [(1, 42)], keypoints=None, labels=None)
    with pytest.raises(ModelError, match="holds 4 landmarks"):
        as_pose(recognise([(1, 42)]), [(1, 42)], keypoints=4, labels=None)
    with pytest.raises(ModelError, match="not 4 \\+ C \\+ K\\*D for 5 keypoints"):
        as_pose(recognise([(1, 84, 8400)]), [(1, 84, 8400)], keypoints=5, labels=80)


def _pose_shaped_onnx(path, *, metadata: dict[str, str]):
    """A 32x32 model whose output [1, 56, 1024] has a one-class v8 pose head's shape, with Ultralytics-style metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.1, (56, 3, 1, 1)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 56, 1024], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["features"]), helper.make_node("Reshape", ["features", "shape"], ["output0"])],
        "pose", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 56, 1024])], [weight, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_an_ultralytics_pose_onnx_is_read_as_pose_from_its_metadata_or_the_users_word(tmp_path):
    from edge_sdk.converters.api import convert

    tagged = _pose_shaped_onnx(tmp_path / "tagged.onnx", metadata={"task": "pose", "kpt_shape": "[17, 3]"})
    bundle = convert(tagged, profile="intel-cpu", precision="fp16", out=tmp_path / "tagged").bundle
    assert bundle.manifest.task is Task.POSE and bundle.manifest.decoder.kind == "yolo-pose"
    assert bundle.manifest.decoder.options["kpt_shape"] == [17, 3] and bundle.manifest.num_classes == 1

    plain = _pose_shaped_onnx(tmp_path / "plain.onnx", metadata={})
    detector = convert(plain, profile="intel-cpu", precision="fp16", out=tmp_path / "plain").bundle
    assert detector.manifest.decoder.kind == "yolo" and detector.manifest.num_classes == 52
    told = convert(plain, profile="intel-cpu", precision="fp16", out=tmp_path / "told", task="pose", keypoints=17).bundle
    assert told.manifest.decoder.kind == "yolo-pose" and told.manifest.decoder.options["kpt_shape"] == [17, 3]
    with pytest.raises(ConfigError, match="--keypoints goes with --task pose"):
        convert(plain, profile="intel-cpu", precision="fp16", out=tmp_path / "no", keypoints=17)
