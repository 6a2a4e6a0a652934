"""The conversion report: what a conversion cost in accuracy and bought in size, as data.

It is stored inside every bundle's manifest and rendered by ``edge-sdk convert`` and
``edge-sdk inspect``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sparsity(_Data):
    """Fraction of exactly-zero weights after pruning."""

    target: float = Field(description="Requested final sparsity of the prunable kernels.")
    prunable: float = Field(description="Measured sparsity over all pruned kernels.")
    overall: float = Field(description="Measured sparsity over every weight of the model.")
    layers: dict[str, float] = Field(description="Measured sparsity of each pruned kernel, by layer name.")
    method: str = Field(description="'tfmot' (tf-keras models) or 'edge-sdk' (Keras 3 models).")
    epochs: int = Field(description="Fine-tuning epochs run while pruning.")


# The headline each task's accuracy budget is kept on, in order of precedence: (Metrics field, name).
HEADLINES = (("top1", "top-1"), ("miou", "mean IoU"), ("mask_map50_95", "mask mAP@0.5:0.95"),
             ("kpt_map50_95", "keypoint mAP@0.5:0.95 (OKS)"), ("pck", "PCK"), ("map50", "mAP@0.5"))


class Metrics(_Data):
    """Quality of one model on the validation images: classification or detection fields, by task."""

    top1: float | None = Field(default=None, description="Classification: top-1 accuracy, 0-1.")
    macro_precision: float | None = Field(default=None, description="Classification: unweighted mean of per-class precision, 0-1.")
    macro_recall: float | None = Field(default=None, description="Classification: unweighted mean of per-class recall, 0-1.")
    macro_f1: float | None = Field(default=None, description="Classification: unweighted mean of per-class F1, 0-1.")
    map50: float | None = Field(default=None, description="Detection: mean average precision at IoU 0.5 (COCO 101-point), 0-1.")
    map50_95: float | None = Field(default=None, description="Detection: mAP averaged over IoU 0.5 to 0.95 in steps of 0.05, 0-1.")
    precision: float | None = Field(default=None, description="Detection: precision of boxes scoring at least 0.25, matched at IoU 0.5.")
    recall: float | None = Field(default=None, description="Detection: recall of boxes scoring at least 0.25, matched at IoU 0.5.")
    miou: float | None = Field(default=None, description="Semantic segmentation: mean over classes of the pixel IoU, 0-1.")
    pixel_accuracy: float | None = Field(default=None, description="Semantic segmentation: share of pixels given their true class, 0-1.")
    mask_map50: float | None = Field(default=None, description="Instance segmentation: mask mAP at mask IoU 0.5, 0-1.")
    mask_map50_95: float | None = Field(default=None, description="Instance segmentation: mask mAP over IoU 0.5 to 0.95, 0-1.")
    kpt_map50: float | None = Field(default=None, description="Pose: keypoint mAP at OKS 0.5, 0-1.")
    kpt_map50_95: float | None = Field(default=None, description="Pose: keypoint mAP over OKS 0.5 to 0.95 (COCO's), 0-1.")
    pck: float | None = Field(default=None, description="Landmarks: share of keypoints within the PCK radius of the truth, 0-1.")
    pck_threshold: float | None = Field(default=None, description="Landmarks: the PCK radius, as a share of the object's box diagonal.")

    @property
    def score(self) -> float:
        """The headline number the accuracy budget is kept on: top-1 (classifier), mean IoU (semantic
        segmentation), mask mAP@0.5:0.95 (instances), OKS keypoint mAP (pose), PCK (landmarks) or
        mAP@0.5 (detector)."""
        for field_name, _ in HEADLINES:
            value = getattr(self, field_name)
            if value is not None:
                return value
        return 0.0

    @property
    def score_name(self) -> str:
        return next((name for field_name, name in HEADLINES if getattr(self, field_name) is not None), "mAP@0.5")


class Remedy(_Data):
    """One attempt at bringing the converted model within the accuracy budget."""

    name: str = Field(description="Which remedy: baseline, per-channel, larger-calibration, float-fallback, ...")
    top1: float | None = Field(description="Converted headline score with this attempt (Metrics.score: top-1, mean IoU, mask or keypoint mAP@0.5:0.95, PCK, or mAP@0.5 for a detector), if it converted.")
    map50_95: float | None = Field(default=None, description="Detection, instances, pose: converted box mAP@0.5:0.95 with this attempt, if it converted.")
    note: str = Field(default="", description="What the attempt changed, or why it could not run.")


class Accuracy(_Data):
    """Reference model vs converted model on the same validation images."""

    images: int = Field(description="How many validation images were evaluated.")
    original: Metrics | None = Field(
        default=None, description="The float model as given, before pruning (present when pruned)."
    )
    reference: Metrics = Field(description="The float model that was quantized (after pruning, if pruned).")
    converted: Metrics = Field(description="The model in this bundle, run through LiteRT/OpenVINO.")
    agreement: float = Field(
        description="Classification: fraction of images on which both models give the same top-1 class. Detection, "
        "instances, pose: fraction of the reference's boxes scoring at least 0.25 that the converted model also finds "
        "(same class, IoU 0.5). Semantic segmentation: fraction of pixels given the same class. Landmarks: PCK@0.1 of "
        "the converted model's points against the reference's."
    )
    drop_points: float = Field(
        description="Reference score minus converted score (the headline, Metrics.score), in percentage points: "
        "the cost of conversion."
    )
    pruning_drop_points: float | None = Field(
        default=None, description="Original score minus pruned score, in percentage points: the cost of pruning."
    )
    drop_map50_95_points: float | None = Field(
        default=None, description="Detection, instances, pose: reference box mAP@0.5:0.95 minus converted, in "
        "percentage points (box precision, which mAP@0.5 barely sees)."
    )
    max_drop: float = Field(description="The budget, in percentage points.")
    max_drop_map50_95: float | None = Field(
        default=None, description="Detection, instances, pose: the budget for drop_map50_95_points, in percentage points."
    )
    within_budget: bool = Field(
        description="drop_points <= max_drop and, with boxes, drop_map50_95_points <= max_drop_map50_95."
    )
    remedies: list[Remedy] = Field(default_factory=list, description="Every attempt, in order.")
    remedy_used: str = Field(description="The attempt whose model is in the bundle.")
    confusion_matrix: str | None = Field(default=None, description="Bundle-relative path of the PNG (classes over "
                                         "images, or over pixels for semantic segmentation).")


class Quantization(_Data):
    """How the model was quantized."""

    per_channel: bool = Field(description="Per-channel weight scales (True) or per-tensor.")
    calibration_images: int = Field(description="Images fed to the calibrator.")
    float_ops: list[str] = Field(default_factory=list, description="Ops left in float, by op name.")
    float_layers: list[str] = Field(
        default_factory=list, description="Tensors (TFLite) or ops (OpenVINO) kept in float: the detector's decode "
        "and whatever a remedy kept."
    )
    decode: str | None = Field(
        default=None, pattern="^(float|host|cpu)$",
        description="Detection: where the head's decode (the ops after the last convolution: sigmoid, concat, grid "
        "affine, reshape) runs. 'float': kept in float inside the model; 'host': the int8 model ends at the head's "
        "sigmoid outputs and the bundle's yolo decoder applies the grid decode (options.grid), as on the Edge TPU; "
        "'cpu': a full-integer model up to the last convolution, the decode after it in float, which the Edge TPU "
        "leaves to the CPU; unset: quantized with the rest.",
    )


class PrecheckIssue(_Data):
    """One Edge TPU rule the quantized model breaks (or is close to breaking)."""

    rule: str = Field(
        description="quantized-tensors, static-shapes, supported-ops, op-version, parameter-cache or io-dtype."
    )
    severity: str = Field(pattern="^(error|warning)$", description="error: the op will run on the CPU or fail.")
    message: str = Field(description="What is wrong and the usual fix.")
    ops: list[str] = Field(default_factory=list, description="Offending ops as NAME#index, when op-specific.")


class OpPlacement(_Data):
    """One line of the Edge TPU compiler's operator table."""

    op: str = Field(description="Op type as the compiler names it, e.g. CONV_2D.")
    count: int = Field(ge=0, description="How many ops of this type.")
    on_tpu: bool = Field(description="Mapped to the Edge TPU (True) or left to the CPU.")
    status: str = Field(description="The compiler's status text for this line.")


class EdgeTPUReport(_Data):
    """What the pre-check and the Edge TPU compiler said about the model."""

    precheck_passed: bool = Field(description="No precheck issue of severity error.")
    precheck: list[PrecheckIssue] = Field(default_factory=list, description="Every rule the model breaks.")
    parameter_bytes: int = Field(description="Bytes of constant tensors (weights), against the 8 MB cache.")
    compiled: bool = Field(description="edgetpu_compiler ran and produced model_edgetpu.tflite.")
    compiler_version: str | None = Field(default=None, description="Version the compiler reported.")
    ops_on_tpu: int | None = Field(default=None, description="Ops mapped to the Edge TPU.")
    ops_on_cpu: int | None = Field(default=None, description="Ops left to the CPU.")
    placement: list[OpPlacement] = Field(default_factory=list, description="The compiler's operator table.")
    min_tpu_fraction: float = Field(description="The threshold: required share of ops on the Edge TPU.")


class OpenVINOReport(_Data):
    """How the OpenVINO IR was produced."""

    device: str = Field(description="Device the runtime should use: CPU, GPU, NPU or AUTO.")
    weights: str = Field(description="fp32, fp16 or int8 weights in the IR.")
    method: str = Field(
        description="ov.convert_model, nncf.compress_weights, nncf.quantize or nncf.quantize_with_accuracy_control."
    )
    ignored_scope: list[str] = Field(default_factory=list, description="Ops NNCF left in float.")
    activation_ranges: str | None = Field(
        default=None, description="'minmax': int8 activation ranges span the calibration set's extremes (detectors); "
        "unset: NNCF's default (mean over images of each image's extremes)."
    )


class OutputFidelity(_Data):
    """How closely one output of the converted model follows the reference, where no task metric applies."""

    name: str = Field(description="The output's name in the source model.")
    sqnr_db: float = Field(description="Signal-to-quantization-noise ratio, 10·log10(Σref² / Σ(conv−ref)²), in dB (999 = identical).")
    cosine: float = Field(description="Cosine similarity of the converted and reference values, flattened over the images.")


class ConversionReport(_Data):
    """Numbers a user needs to judge a conversion."""

    source_model: str = Field(description="File or folder name of the input model.")
    source_format: str = Field(description="keras3, tf-keras, savedmodel, onnx or tflite.")
    head: str | None = Field(default=None, description="The output head recognised (e.g. 'yolo v8'), or the plugin decoder named.")
    parameters: int = Field(description="Trainable and non-trainable parameters of the input model.")
    float_bytes: int = Field(description="Size of the float32 model in the target's format (TFLite, or the OpenVINO IR).")
    float_gzip_bytes: int = Field(description="gzip -9 size of the float32 model in the target's format.")
    converted_bytes: int = Field(description="Size of the model file in this bundle.")
    converted_gzip_bytes: int = Field(description="gzip -9 size of the model file in this bundle.")
    sparsity: Sparsity | None = Field(default=None, description="Present when the model was pruned.")
    quantization: Quantization | None = Field(default=None, description="Present for int8 conversions.")
    accuracy: Accuracy | None = Field(default=None, description="Present when --val was given.")
    edgetpu: EdgeTPUReport | None = Field(default=None, description="Present for the edgetpu target.")
    openvino: OpenVINOReport | None = Field(default=None, description="Present for the openvino target.")
    fidelity: list[OutputFidelity] | None = Field(
        default=None, description="Custom models (plugin decoder): per-output fidelity of the converted model on the "
        "validation or calibration images.",
    )
    seconds: dict[str, float] = Field(description="Wall time of each phase: prune, convert, evaluate, total.")
    warnings: list[str] = Field(default_factory=list, description="Things the user should know, e.g. limits of the profile.")
