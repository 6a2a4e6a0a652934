"""A small, valid bundle for tests of the bundle format (no TensorFlow needed).

The bundle layer never parses the model, so the "model" here is placeholder bytes, named as such.
"""

from __future__ import annotations

from pathlib import Path

from edge_sdk.bundle import Bundle, Decoder, Task, TensorSpec, write_bundle
from edge_sdk.preprocess import Preprocessing
from edge_sdk.profiles import IODtype, load_profile
from edge_sdk.report import ConversionReport

# Not a real .tflite flatbuffer: only bundle-format tests use it, and they never load it into an engine.
PLACEHOLDER_MODEL_BYTES = b"NOT-A-REAL-TFLITE-MODEL:" + bytes(range(256)) * 4
LABELS = ["cat", "dog", "bird"]
BUNDLE_NAME = "tiny-placeholder-classifier"


def bundle_files() -> tuple[dict[str, bytes], dict[str, str]]:
    files = {
        "model.tflite": PLACEHOLDER_MODEL_BYTES,
        "labels.txt": ("\n".join(LABELS) + "\n").encode(),
    }
    roles = {"model.tflite": "model", "labels.txt": "labels"}
    return files, roles


def manifest_fields(**overrides) -> dict:
    profile = load_profile("x86-cpu")
    fields = dict(
        name=BUNDLE_NAME,
        target=profile.target,
        precision=profile.precision,
        model_file="model.tflite",
        labels_file="labels.txt",
        num_classes=len(LABELS),
        task=Task.CLASSIFICATION,
        decoder=Decoder(kind="classification", options={"top_k": 3}),
        preprocessing=Preprocessing(width=32, height=32, channels=3),
        inputs=[TensorSpec(name="serving_default_input:0", shape=[1, 32, 32, 3], dtype=IODtype.FLOAT32)],
        outputs=[TensorSpec(name="StatefulPartitionedCall:0", shape=[1, len(LABELS)], dtype=IODtype.FLOAT32)],
        profile=profile,
        report=ConversionReport(
            source_model="tiny.keras",
            source_format="keras3",
            parameters=1234,
            float_bytes=4936,
            float_gzip_bytes=4000,
            converted_bytes=len(PLACEHOLDER_MODEL_BYTES),
            converted_gzip_bytes=900,
            seconds={"convert": 1.5, "total": 2.0},
            warnings=["placeholder model: not runnable"],
        ),
    )
    fields.update(overrides)
    return fields


def make_bundle(out: Path, **overrides) -> Bundle:
    files, roles = bundle_files()
    return write_bundle(out, files=files, roles=roles, manifest_fields=manifest_fields(**overrides))
