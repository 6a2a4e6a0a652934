"""Readable rich renderings of profiles, manifests and conversion reports."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from edge_sdk.bundle import Manifest
from edge_sdk.profiles import DeviceProfile
from edge_sdk.report import ConversionReport


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# Accuracy rows by the reference's headline field: (label, Metrics field) rows, and the agreement's label.
_BOX_ROWS = (("box mAP@0.5", "map50"), ("box mAP@0.5:0.95", "map50_95"), ("precision @0.25", "precision"),
             ("recall @0.25", "recall"))
_ACCURACY_ROWS = {
    "top1": ((("top-1", "top1"), ("macro precision", "macro_precision"), ("macro recall", "macro_recall"),
              ("macro F1", "macro_f1")), "top-1 agreement"),
    "miou": ((("mean IoU", "miou"), ("pixel accuracy", "pixel_accuracy")), "pixel agreement"),
    "mask_map50_95": ((("mask mAP@0.5", "mask_map50"), ("mask mAP@0.5:0.95", "mask_map50_95"), *_BOX_ROWS),
                      "box agreement"),
    "kpt_map50_95": ((("keypoint mAP@0.5 (OKS)", "kpt_map50"), ("keypoint mAP@0.5:0.95", "kpt_map50_95"), *_BOX_ROWS),
                     "box agreement"),
    "pck": ((("PCK", "pck"),), "landmark agreement (PCK)"),
    "map50": ((("mAP@0.5", "map50"), ("mAP@0.5:0.95", "map50_95"), ("precision @0.25", "precision"),
               ("recall @0.25", "recall")), "box agreement"),
}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def profiles_table(profiles: list[DeviceProfile]) -> Table:
    table = Table(title="Device profiles")
    longest = max((len(p.name) for p in profiles), default=4)
    table.add_column("name", no_wrap=True, min_width=longest)
    table.add_column("device", min_width=12)
    for column in ("target", "precision", "I/O", "threads", "max input", "memory"):
        table.add_column(column, no_wrap=True)
    for p in profiles:
        table.add_row(
            p.name, p.title, p.target.value, p.precision.value, p.io_dtype.value, str(p.threads),
            f"{p.max_input_size} px", f"{p.memory_budget_mb} MB",
        )
    return table


def profile_table(profile: DeviceProfile) -> Table:
    table = Table(title=f"Profile {profile.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in profile.model_dump(mode="json").items():
        table.add_row(key, "-" if value is None else str(value))
    return table


def report_tables(report: ConversionReport) -> Group:
    size = Table(title="Conversion report")
    size.add_column("")
    size.add_column("float32", justify="right")
    size.add_column("converted", justify="right")
    size.add_column("ratio", justify="right")
    size.add_row("file size", _size(report.float_bytes), _size(report.converted_bytes),
                 f"{report.converted_bytes / max(1, report.float_bytes):.2f}x")
    size.add_row("gzip size", _size(report.float_gzip_bytes), _size(report.converted_gzip_bytes),
                 f"{report.converted_gzip_bytes / max(1, report.float_gzip_bytes):.2f}x")
    parts: list = [size]
    facts = Table(show_header=False)
    facts.add_column("", style="bold")
    facts.add_column("")
    facts.add_row("source", f"{report.source_model} ({report.source_format}, {report.parameters:,} parameters)")
    if report.head is not None:
        facts.add_row("head", report.head)
    if report.sparsity is not None:
        s = report.sparsity
        facts.add_row("sparsity", f"{_pct(s.prunable)} of prunable kernels, {_pct(s.overall)} of all weights "
                                  f"(target {_pct(s.target)}, {s.method}, {s.epochs} epochs)")
    if report.quantization is not None:
        q = report.quantization
        facts.add_row("int8", f"{'per-channel' if q.per_channel else 'per-tensor'}, "
                              f"{q.calibration_images} calibration images")
        if q.float_ops:
            facts.add_row("float ops", ", ".join(q.float_ops[:8]) + (" ..." if len(q.float_ops) > 8 else ""))
        if q.decode is not None:
            facts.add_row("detector decode", {
                "float": "kept in float (the ops after the last convolution)",
                "host": "on the host: the int8 model ends at the head's sigmoids, the decoder does the grid decode",
                "cpu": "in float after the last convolution, on the CPU after the Edge TPU part",
            }.get(q.decode, q.decode))
        if q.float_layers:
            shown = [name.split(";")[0] for name in q.float_layers[:8]]
            facts.add_row("kept float", ", ".join(shown) + (f" ... ({len(q.float_layers)} in all)" if len(q.float_layers) > 8 else ""))
    if report.openvino is not None:
        o = report.openvino
        scope = f", float: {', '.join(o.ignored_scope)}" if o.ignored_scope else ""
        facts.add_row("openvino", f"{o.weights} IR for {o.device} via {o.method}{scope}")
    if report.edgetpu is not None:
        e = report.edgetpu
        if e.compiled:
            placed = f"{e.ops_on_tpu} ops on the Edge TPU, {e.ops_on_cpu} on the CPU (compiler {e.compiler_version})"
        else:
            placed = "not compiled (Edge-TPU-ready model; run edgetpu_compiler on it)"
        facts.add_row("edge tpu", placed)
        check = "passed" if e.precheck_passed else "FAILED"
        facts.add_row("pre-check", f"{check}; {e.parameter_bytes / 2**20:.2f} MB of parameters (8 MB on-chip cache)")
        for issue in e.precheck:
            facts.add_row(issue.severity, f"{issue.rule}: {issue.message}")
        for line in e.placement:
            if not line.on_tpu:
                facts.add_row("on CPU", f"{line.count} x {line.op}: {line.status}")
    for output in report.fidelity or ():
        facts.add_row("fidelity", f"{output.name}: SQNR {output.sqnr_db:.1f} dB, cosine {output.cosine:.4f}")
    facts.add_row("time", ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items()))
    for warning in report.warnings:
        facts.add_row("warning", warning)
    parts.append(facts)
    if report.accuracy is not None:
        a = report.accuracy
        acc = Table(title=f"Accuracy on {a.images} validation images")
        acc.add_column("")
        columns = [("original", a.original)] if a.original is not None else []
        columns += [("pruned" if a.original is not None else "reference", a.reference), ("converted", a.converted)]
        for title, _ in columns:
            acc.add_column(title, justify="right")
        kind = next((k for k in _ACCURACY_ROWS if getattr(a.reference, k) is not None), "map50")
        rows, agreement = _ACCURACY_ROWS[kind]
        for label, key in rows:
            acc.add_row(label, *(_pct(getattr(m, key)) for _, m in columns))
        if kind == "pck":
            acc.add_row("PCK radius", *[f"{m.pck_threshold:g} x box diagonal" if m.pck_threshold else "" for _, m in columns])
        pad = [""] * (len(columns) - 1)
        acc.add_row(agreement, *pad, _pct(a.agreement))
        if a.pruning_drop_points is not None:
            acc.add_row("pruning drop", *[""] * (len(columns) - 2), f"{a.pruning_drop_points:.2f} pts", "")
        verdict = "within" if a.within_budget else "OVER"
        if a.drop_map50_95_points is None:
            acc.add_row("conversion drop", *pad, f"{a.drop_points:.2f} pts {a.reference.score_name} ({verdict} budget {a.max_drop:g})")
        else:  # a detector is judged on both figures
            headline = "mAP@0.5 / @0.5:0.95" if kind == "map50" else f"{a.reference.score_name} / box mAP@0.5:0.95"
            acc.add_row("conversion drop", *pad,
                        f"{a.drop_points:.2f} / {a.drop_map50_95_points:.2f} pts {headline} "
                        f"({verdict} budget {a.max_drop:g} / {a.max_drop_map50_95:g})")
        parts.append(acc)
        if len(a.remedies) > 1 or not a.within_budget:
            rem = Table(title="Remedies tried")
            rem.add_column("attempt")
            rem.add_column(a.reference.score_name, justify="right")
            boxes = any(r.map50_95 is not None for r in a.remedies)
            if boxes:
                rem.add_column("mAP@0.5:0.95" if kind == "map50" else "box mAP@0.5:0.95", justify="right")
            rem.add_column("note")
            for r in a.remedies:
                marker = " (used)" if r.name == a.remedy_used else ""
                rem.add_row(r.name + marker, _pct(r.top1), *([_pct(r.map50_95)] if boxes else []), r.note)
            parts.append(rem)
    return Group(*parts)


def manifest_tables(manifest: Manifest, *, verified: bool) -> Group:
    head = Table(title=f"Bundle {manifest.name}", show_header=False)
    head.add_column("", style="bold")
    head.add_column("")
    pre = manifest.preprocessing
    rows = {
        "verified": "every file matches its sha256" if verified else "not verified",
        "schema": str(manifest.schema_version),
        "created": f"{manifest.created} by edge-sdk {manifest.sdk_version}",
        "target": f"{manifest.target.value} / {manifest.precision.value} for profile {manifest.profile.name}",
        "task": f"{manifest.task.value}, decoder {manifest.decoder.kind}, {manifest.num_classes} classes",
        "preprocessing": f"{pre.width}x{pre.height}x{pre.channels} {pre.layout} {pre.color.value}, "
                         f"{pre.resize.value} resize, {pre.normalization.value} normalisation",
    }
    for key, value in rows.items():
        head.add_row(key, value)
    for kind, tensors in (("input", manifest.inputs), ("output", manifest.outputs)):
        for t in tensors:
            quant = f" scale={t.quant.scale:.6g} zero_point={t.quant.zero_point}" if t.quant else ""
            head.add_row(kind, f"{t.name} {t.shape} {t.dtype.value}{quant}")
    files = Table(title="Files")
    files.add_column("path")
    files.add_column("role")
    files.add_column("size", justify="right")
    files.add_column("sha256")
    for f in manifest.files:
        files.add_row(f.path, f.role, _size(f.bytes), f.sha256[:16] + "...")
    parts: list = [head, files]
    if manifest.report is not None:
        parts.append(report_tables(manifest.report))
    return Group(*parts)
