"""Malformed models for tests/test_fuzz.py: LiteRT (.tflite), OpenVINO IR and ONNX, and a runnable bundle.

Every seed is built here from scratch (no TensorFlow): a three-op LiteRT classifier written with the
flatbuffer schema that ai-edge-litert ships, and an IR and an ONNX model made with their own Python
APIs. Each fixed case is named for what makes it nasty.
"""

from __future__ import annotations

import copy
import gzip
import io
import re
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from support.fuzz.corpus import INTERESTING_INTS, generate


TFLITE_HEADER = b"\x1c\x00\x00\x00TFL3"


# -- LiteRT (.tflite) -------------------------------------------------------------------------------

def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def tiny_model_object(height: int = 8, width: int = 8, classes: int = 3):
    """image [1,H,W,3] float32 -> RESHAPE -> FULLY_CONNECTED -> SOFTMAX -> [1, classes], as a ModelT."""
    s = _schema()
    pixels = height * width * 3
    weights = (np.arange(classes * pixels, dtype=np.float32).reshape(classes, pixels) % 7 - 3) / 50

    def buffer(array=None):
        b = s.BufferT()
        if array is not None:
            b.data = list(np.ascontiguousarray(array).tobytes())
        return b

    def tensor(name, shape, kind, index):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), kind, index
        return t

    def code(builtin):
        c = s.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = builtin
        c.version = 1
        return c

    def op(index, inputs, outputs, options_type=0, options=None):
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = index, inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        return o

    f32, i32 = s.TensorType.FLOAT32, s.TensorType.INT32
    softmax = s.SoftmaxOptionsT()
    softmax.beta = 1.0
    graph = s.SubGraphT()
    graph.name, graph.inputs, graph.outputs = "main", [0], [6]
    graph.tensors = [
        tensor("image", (1, height, width, 3), f32, 1), tensor("shape", (2,), i32, 2),
        tensor("flat", (1, pixels), f32, 3), tensor("weights", (classes, pixels), f32, 4),
        tensor("bias", (classes,), f32, 5), tensor("logits", (1, classes), f32, 6),
        tensor("probs", (1, classes), f32, 7),
    ]
    graph.operators = [
        op(0, [0, 1], [2]),
        op(1, [2, 3, 4], [5], s.BuiltinOptions.FullyConnectedOptions, s.FullyConnectedOptionsT()),
        op(2, [5], [6], s.BuiltinOptions.SoftmaxOptions, softmax),
    ]
    model = s.ModelT()
    model.version, model.description = 3, "edge-sdk fuzz seed"
    model.operatorCodes = [code(s.BuiltinOperator.RESHAPE), code(s.BuiltinOperator.FULLY_CONNECTED),
                           code(s.BuiltinOperator.SOFTMAX)]
    model.subgraphs = [graph]
    model.buffers = [buffer(), buffer(), buffer(np.array([1, pixels], np.int32)), buffer(), buffer(weights),
                     buffer(np.zeros(classes, np.float32)), buffer(), buffer()]
    return model


def pack(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tiny_tflite(**kwargs) -> bytes:
    return pack(tiny_model_object(**kwargs))


def _edited(edit: Callable) -> bytes:
    model = tiny_model_object()
    edit(model, _schema())
    return pack(model)


def _set(path: str, value) -> Callable:
    """An edit that sets one field, addressed like 'subgraphs.0.tensors.3.shape'."""
    def edit(model, _s) -> None:
        *parents, last = path.split(".")
        target = model
        for part in parents:
            target = target[int(part)] if part.isdigit() else getattr(target, part)
        if last.isdigit():
            target[int(last)] = value
        else:
            setattr(target, last, value)
    return edit


def _external_buffer(name: str) -> Callable:
    def edit(model, s) -> None:
        group = s.ExternalBufferGroupT()
        group.name = name
        external = s.ExternalBufferT()
        external.id, external.group, external.offset, external.length = 1, 0, 0, 768
        model.externalBufferGroups, model.externalBuffers = [group], [external]
        model.subgraphs[0].tensors[3].buffer = 0
        model.subgraphs[0].tensors[3].externalBuffer = 1
    return edit


def _bad_quantization(model, s) -> None:
    q = s.QuantizationParametersT()
    q.scale, q.zeroPoint, q.quantizedDimension = [0.5, 0.25, 0.125], [0], 7
    model.subgraphs[0].tensors[0].quantization = q


def _bad_sparsity(model, s) -> None:
    sparsity = s.SparsityParametersT()
    sparsity.traversalOrder, sparsity.blockMap = [5, 9], [3]
    model.subgraphs[0].tensors[3].sparsity = sparsity


def _custom_op(model, s) -> None:
    model.operatorCodes[2].builtinCode = model.operatorCodes[2].deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
    model.operatorCodes[2].customCode = "NoSuchOp"


def _many_subgraphs(model, _s) -> None:
    model.subgraphs = [copy.deepcopy(model.subgraphs[0]) for _ in range(64)]


def _self_loop(model, _s) -> None:
    model.subgraphs[0].operators[1].inputs = [5, 3, 4]  # reads the tensor it writes


def _wrong_signature(model, s) -> None:
    tensor_map = s.TensorMapT()
    tensor_map.name, tensor_map.tensorIndex = "image", 4242
    signature = s.SignatureDefT()
    signature.inputs, signature.outputs, signature.signatureKey, signature.subgraphIndex = [tensor_map], [tensor_map], "serving_default", 9
    model.signatureDefs = [signature]


# Odd but well-formed: they may load, as long as nothing crashes.
TFLITE_HARMLESS = frozenset({"64 subgraphs", "signature naming missing tensors"})


def tflite_fixed_cases() -> dict[str, bytes]:
    """Named malformed .tflite files; every one but TFLITE_HARMLESS must be refused with an EngineError."""
    seed = tiny_tflite()
    rng = np.random.default_rng(7)
    big = 2**31 - 1
    cases = {
        "empty": b"",
        "one byte": b"\x00",
        "header only": TFLITE_HEADER,
        "wrong file identifier": seed[:4] + b"XXXX" + seed[8:],
        "zeros": bytes(1024),
        "all 0xff": b"\xff" * 1024,
        "random 4 KB": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "header then garbage": TFLITE_HEADER + rng.integers(0, 256, 600, dtype=np.uint8).tobytes(),
        "text": b"this is not a model\n" * 20,
        "a zip file": _zip_bytes(),
        "the seed gzipped": gzip.compress(seed),
        "root offset past the end": struct.pack("<I", 0xFFFFFFF0) + b"TFL3" + seed[8:],
        "root offset inside the header": struct.pack("<I", 2) + seed[4:],
        "truncated to a quarter": seed[: len(seed) // 4],
        "truncated to a half": seed[: len(seed) // 2],
        "truncated by one byte": seed[:-1],
        "no subgraphs": _edited(_set("subgraphs", [])),
        "no buffers": _edited(_set("buffers", [])),
        "no operator codes": _edited(_set("operatorCodes", [])),
        "tensor buffer index out of range": _edited(_set("subgraphs.0.tensors.3.buffer", 4242)),
        "tensor buffer index 2^32-1": _edited(_set("subgraphs.0.tensors.4.buffer", 2**32 - 1)),
        "opcode index out of range": _edited(_set("subgraphs.0.operators.1.opcodeIndex", 99)),
        "op input index out of range": _edited(_set("subgraphs.0.operators.1.inputs", [2, 999, 4])),
        "op input index negative": _edited(_set("subgraphs.0.operators.1.inputs", [2, -7, 4])),
        "op output index out of range": _edited(_set("subgraphs.0.operators.2.outputs", [77])),
        "graph input index out of range": _edited(_set("subgraphs.0.inputs", [12345])),
        "graph output index negative": _edited(_set("subgraphs.0.outputs", [-3])),
        "no graph inputs": _edited(_set("subgraphs.0.inputs", [])),
        "no graph outputs": _edited(_set("subgraphs.0.outputs", [])),
        "negative dimension": _edited(_set("subgraphs.0.tensors.0.shape", [1, -8, 8, 3])),
        "huge dimensions": _edited(_set("subgraphs.0.tensors.0.shape", [big, big, big, 3])),
        "rank 64 input": _edited(_set("subgraphs.0.tensors.0.shape", [1] * 64)),
        "weights shorter than their shape": _edited(_set("buffers.4.data", [0, 0, 128, 63])),
        "buffer offset past the end of the file": _edited(lambda m, s: (setattr(m.buffers[4], "data", None),
                                                                         setattr(m.buffers[4], "offset", 1 << 40),
                                                                         setattr(m.buffers[4], "size", 768))),
        "buffer size past the end of the file": _edited(lambda m, s: (setattr(m.buffers[4], "data", None),
                                                                       setattr(m.buffers[4], "offset", 16),
                                                                       setattr(m.buffers[4], "size", 2**63))),
        "unknown builtin operator": _edited(_set("operatorCodes.1.builtinCode", 9999)),
        "unknown custom operator": _edited(_custom_op),
        "operator version 999": _edited(_set("operatorCodes.1.version", 999)),
        "unknown tensor type": _edited(_set("subgraphs.0.tensors.3.type", 120)),
        "string weights": _edited(_set("subgraphs.0.tensors.3.type", _schema().TensorType.STRING)),
        "op reads its own output": _edited(_self_loop),
        "reshape to a wrong size": _edited(_set("buffers.2.data", list(np.array([7, 7], np.int32).tobytes()))),
        "weights of the wrong shape": _edited(_set("subgraphs.0.tensors.3.shape", [3, 5])),
        "external weights at ../../etc/passwd": _edited(_external_buffer("../../../../etc/passwd")),
        "per-channel scales on a per-tensor input": _edited(_bad_quantization),
        "garbage sparsity": _edited(_bad_sparsity),
        "64 subgraphs": _edited(_many_subgraphs),
        "signature naming missing tensors": _edited(_wrong_signature),
    }
    return cases


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.tflite", b"not really")
    return buffer.getvalue()


def byte_mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """The seed with bytes flipped, 32-bit words overwritten with boundary values, cut or spliced."""
    n = len(seed)
    flip = st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=1, max_size=8))
    word = st.tuples(st.just("word"), st.lists(st.tuples(st.integers(0, n // 4 - 1), st.sampled_from(INTERESTING_INTS)),
                                              min_size=1, max_size=3))
    cut = st.tuples(st.just("cut"), st.integers(0, n - 1))
    splice = st.tuples(st.just("splice"), st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=64)))

    def apply(mutation) -> bytes:
        kind, arg = mutation
        data = bytearray(seed)
        if kind == "flip":
            for position, value in arg:
                data[position] = value
        elif kind == "word":
            for index, value in arg:
                struct.pack_into("<I", data, index * 4, value & 0xFFFFFFFF)
        elif kind == "cut":
            del data[arg:]
        else:
            position, extra = arg
            data[position:position] = extra
        return bytes(data)

    return st.one_of(flip, word, cut, splice).map(apply)


def tflite_field_edits() -> st.SearchStrategy[bytes]:
    """The seed's object tree with one index, dimension, type or opcode set to a boundary value."""
    fields = [
        "subgraphs.0.tensors.{t}.buffer", "subgraphs.0.tensors.{t}.type", "subgraphs.0.operators.{o}.opcodeIndex",
        "operatorCodes.{o}.builtinCode", "operatorCodes.{o}.deprecatedBuiltinCode", "operatorCodes.{o}.version",
    ]
    lists = ["subgraphs.0.tensors.{t}.shape", "subgraphs.0.operators.{o}.inputs", "subgraphs.0.operators.{o}.outputs",
             "subgraphs.0.inputs", "subgraphs.0.outputs"]
    ints = st.sampled_from(INTERESTING_INTS)
    scalar = st.tuples(st.sampled_from(fields), st.integers(0, 6), st.integers(0, 2), ints)
    vector = st.tuples(st.sampled_from(lists), st.integers(0, 6), st.integers(0, 2), st.lists(ints, max_size=6))
    limits = {"buffer": 2**32 - 1, "type": 127, "opcodeIndex": 2**32 - 1, "builtinCode": 2**31 - 1,
              "deprecatedBuiltinCode": 127, "version": 2**31 - 1}

    def apply(edit) -> bytes:
        template, t, o, value = edit
        path = template.format(t=t, o=o)
        limit = limits.get(path.rsplit(".", 1)[-1])
        if limit is not None:  # keep the value inside the field's flatbuffer type so it packs
            low = 0 if path.endswith(("buffer", "opcodeIndex")) else -limit - 1
            value = min(max(value, low), limit)
        elif path.endswith("shape") or path.endswith(("inputs", "outputs")):
            value = [min(max(v, -(2**31)), 2**31 - 1) for v in value]
        return _edited(_set(path, value))

    return st.one_of(scalar, vector).map(apply)


def tflite_generated(count: int) -> list[bytes]:
    seed = tiny_tflite()
    return generate(st.one_of(byte_mutations(seed), tflite_field_edits()), count, key=bytes)


# -- OpenVINO IR (.xml + .bin) ------------------------------------------------------------------------

def tiny_ir(folder) -> tuple[bytes, bytes]:
    """image [1,8,8,3] -> Reshape -> MatMul -> SoftMax -> [1,3] as an IR (xml, bin)."""
    import openvino as ov
    from openvino import opset13 as ops

    image = ops.parameter([1, 8, 8, 3], np.float32, name="image")
    weights = ops.constant((np.arange(192 * 3, dtype=np.float32).reshape(192, 3) % 7 - 3) / 50)
    flat = ops.reshape(image, ops.constant(np.array([1, 192], np.int64)), False)
    probs = ops.softmax(ops.matmul(flat, weights, False, False), 1)
    probs.output(0).get_tensor().set_names({"probs"})
    ov.save_model(ov.Model([probs], [image], "tiny"), str(folder / "tiny.xml"), compress_to_fp16=False)
    return (folder / "tiny.xml").read_bytes(), (folder / "tiny.bin").read_bytes()


def _laughs(levels: int = 9) -> bytes:
    entities = ['<!ENTITY a0 "lol">'] + [
        f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, levels + 1)
    ]
    return ("<!DOCTYPE net [\n" + "\n".join(entities) + "\n]>\n").encode()


IR_HARMLESS = frozenset({"xml in UTF-16", "a 1 MB attribute"})


def ir_fixed_cases(xml: bytes, weights: bytes) -> dict[str, tuple[bytes, bytes | None]]:
    """Named malformed IRs as (xml, bin), a bin of None meaning no .bin file; every one but
    IR_HARMLESS must be refused with an EngineError."""
    head, body = xml.split(b"\n", 1)
    const = re.search(rb'element_type="f32" shape="192, 3" offset="(\d+)" size="(\d+)"', xml)
    offset, size = const.group(1), const.group(2)

    def const_attrs(new_offset: bytes, new_size: bytes) -> bytes:
        return xml.replace(b'offset="' + offset + b'" size="' + size + b'"', b'offset="' + new_offset + b'" size="' + new_size + b'"')

    first_edge = re.search(rb"<edge [^>]*/>", xml).group(0)
    return {
        "entity bomb in an attribute": (head + b"\n" + _laughs() + body.replace(b'name="tiny"', b'name="&a9;"'), weights),
        "entity bomb declared, unused": (head + b"\n" + _laughs() + body, weights),
        "external entity file:///etc/passwd": (
            head + b'\n<!DOCTYPE net [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n' + body.replace(b'name="tiny"', b'name="&x;"'), weights),
        "parameter entity": (head + b'\n<!DOCTYPE net [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>\n' + body, weights),
        "bin missing": (xml, None),
        "bin empty": (xml, b""),
        "bin truncated": (xml, weights[: len(weights) // 2]),
        "bin truncated by one byte": (xml, weights[:-1]),
        "weights offset past the end": (const_attrs(b"100000000", size), weights),
        "weights size 2^64-1": (const_attrs(offset, b"18446744073709551615"), weights),
        "weights offset 2^64-16": (const_attrs(b"18446744073709551600", size), weights),
        "negative weights offset": (const_attrs(b"-16", size), weights),
        "constant shape 10^5 x 10^5": (xml.replace(b'shape="192, 3"', b'shape="100000, 100000"'), weights),
        "input shape 10^5 x 10^5 x 10^5": (xml.replace(b'shape="1,8,8,3"', b'shape="100000,100000,100000,3"'), weights),
        "edge cycle": (xml.replace(first_edge, b'<edge from-layer="5" from-port="1" to-layer="2" to-port="0" />'), weights),
        "edge from a layer to itself": (xml.replace(b"</edges>", b'<edge from-layer="4" from-port="2" to-layer="4" to-port="0" /></edges>'), weights),
        "edge to a missing layer": (xml.replace(first_edge, first_edge.replace(b'to-layer="2"', b'to-layer="4242"')), weights),
        "unknown layer type": (xml.replace(b'type="MatMul"', b'type="NoSuchOp"'), weights),
        "IR version 99999": (xml.replace(b'version="11"', b'version="99999"', 1), weights),
        "xml truncated": (xml[: len(xml) // 2], weights),
        "xml empty": (b"", weights),
        "xml is binary": (bytes(range(256)) * 4, weights),
        "xml nested 200000 deep": (b'<?xml version="1.0"?>' + b"<a>" * 200_000 + b"</a>" * 200_000, weights),
        "no layers": (b'<?xml version="1.0"?>\n<net name="x" version="11"><layers/><edges/></net>\n', weights),
        "duplicate layer ids": (xml.replace(b'layer id="3"', b'layer id="2"'), weights),
        "negative dimension": (xml.replace(b"<dim>192</dim>", b"<dim>-5</dim>", 1), weights),
        "dimension is text": (xml.replace(b"<dim>192</dim>", b"<dim>lots</dim>", 1), weights),
        "unknown element type": (xml.replace(b'element_type="f32" shape="192, 3"', b'element_type="q99" shape="192, 3"'), weights),
        "string constant": (xml.replace(b'element_type="f32" shape="192, 3"', b'element_type="string" shape="192, 3"'), weights),
        "xml in UTF-16": (xml.decode().replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>').encode("utf-16"), weights),
        "a 1 MB attribute": (xml.replace(b'name="tiny"', b'name="' + b"x" * 2**20 + b'"'), weights),
        "NUL bytes in the xml": (xml.replace(b"<layers>", b"<layers>\x00\x00\x00"), weights),
    }


_ATTRIBUTE = re.compile(rb'([\w-]+)="([^"]*)"')
IR_VALUES = [b"", b"-1", b"0", b"18446744073709551615", b"99999999999999999999999", b"nan", b"1e309", b"abc",
             b"1,2,3,4,5,6,7,8,9", b"f64", b"u1", b"dynamic", b"&amp;", b"\xc3\x28"]


def ir_generated(xml: bytes, weights: bytes, count: int) -> list[tuple[bytes, bytes | None]]:
    """The seed IR with one attribute set to a boundary value, a line dropped, or the .bin cut."""
    attributes = [m.span(2) for m in _ATTRIBUTE.finditer(xml)]
    lines = xml.split(b"\n")
    attribute = st.tuples(st.just("attribute"), st.integers(0, len(attributes) - 1), st.sampled_from(IR_VALUES))
    drop = st.tuples(st.just("drop line"), st.integers(1, len(lines) - 1), st.just(b""))
    cut = st.tuples(st.just("cut bin"), st.integers(0, len(weights) - 1), st.just(b""))

    def apply(mutation) -> tuple[bytes, bytes | None]:
        kind, index, value = mutation
        if kind == "attribute":
            start, end = attributes[index]
            return xml[:start] + value + xml[end:], weights
        if kind == "drop line":
            return b"\n".join(lines[:index] + lines[index + 1:]), weights
        return xml, weights[:index]

    return generate(st.one_of(attribute, drop, cut).map(apply), count, key=lambda pair: (pair[0], pair[1]))


# -- ONNX with external data -----------------------------------------------------------------------

def _onnx_model(*, location: str | None = None, offset: int | None = None, length: int | None = None,
                op: str = "Add", opset: int = 13, dims: tuple = (3,), outputs: bool = True) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones(dims, np.float32), "w")
    if location is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", offset), ("length", length)):
            if value is not None:
                entry = weight.external_data.add()
                entry.key, entry.value = key, str(value)
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])] if outputs else [], [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def onnx_fixed_cases() -> dict[str, dict]:
    """Named ONNX cases. Each is a folder: ``files`` (relative path -> bytes, the model at
    'model/m.onnx'), ``links`` (relative path -> target) and ``fifos`` (relative paths)."""
    secret = np.arange(3, dtype=np.float32).tobytes()

    def external(location, **kwargs) -> dict:
        return {"files": {"model/m.onnx": _onnx_model(location=location, **kwargs), "secret/w.bin": secret}}

    return {
        "external data ../secret/w.bin": external("../secret/w.bin"),
        "external data ../../../../../../etc/passwd": external("../../../../../../etc/passwd", length=12),
        "external data at an absolute path": external("/etc/passwd", length=12),
        "external data /dev/zero": external("/dev/zero", length=12),
        "external data symlink out of the folder": {**external("w.bin"), "links": {"model/w.bin": "../secret/w.bin"}},
        "external data is a folder": {**external("sub"), "dirs": ["model/sub"]},
        "external data is a named pipe": {**external("pipe", length=12), "fifos": ["model/pipe"]},
        "external data missing": external("missing.bin"),
        "external data offset past the end": {**external("w.bin", offset=4096, length=12), "copy": {"model/w.bin": "secret/w.bin"}},
        "external data length past the end": {**external("w.bin", length=1 << 40), "copy": {"model/w.bin": "secret/w.bin"}},
        "external data negative offset": {**external("w.bin", offset=-8), "copy": {"model/w.bin": "secret/w.bin"}},
        "external data location empty": external(""),
        "garbage": {"files": {"model/m.onnx": bytes(range(256)) * 8}},
        "unknown operator": {"files": {"model/m.onnx": _onnx_model(op="NoSuchOp")}},
        "no outputs": {"files": {"model/m.onnx": _onnx_model(outputs=False)}},
    }


def onnx_generated(count: int) -> list[dict]:
    """External data locations built from '..', '/', and names, so some climb out of the folder."""
    parts = st.sampled_from(["..", ".", "..", "secret", "w.bin", "etc", "passwd", "model", "", "/"])
    location = st.lists(parts, min_size=1, max_size=8).map("/".join).filter(lambda s: ".." in s or s.startswith("/"))
    numbers = st.one_of(st.none(), st.sampled_from([0, 4, 12, 4096, 2**31, 2**63 - 1]))
    secret = np.arange(3, dtype=np.float32).tobytes()
    case = st.builds(
        lambda loc, offset, length: {"files": {"model/m.onnx": _onnx_model(location=loc, offset=offset, length=length),
                                               "secret/w.bin": secret}, "location": loc},
        location, numbers, numbers,
    )
    return generate(case, count, key=lambda c: c["files"]["model/m.onnx"])


def materialize(case: dict, root) -> Path:
    """Write an ONNX case's folder under ``root``; returns the model's path."""
    import os

    root = Path(root)
    for relative, data in case.get("files", {}).items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    for relative in case.get("dirs", []):
        (root / relative).mkdir(parents=True, exist_ok=True)
    for relative, source in case.get("copy", {}).items():
        (root / relative).write_bytes((root / source).read_bytes())
    for relative, target in case.get("links", {}).items():
        os.symlink(target, root / relative)
    for relative in case.get("fifos", []):
        os.mkfifo(root / relative)
    return root / "model" / "m.onnx"


# -- a runnable bundle of the tiny model ----------------------------------------------------------------

def write_tiny_bundle(out, *, classes: int = 3, scale: float = 1.0):
    """A real, runnable LiteRT bundle of the seed model (``scale`` changes its weights, so its hash)."""
    from edge_sdk.bundle import Decoder, Task, TensorSpec, write_bundle
    from edge_sdk.preprocess import Preprocessing
    from edge_sdk.profiles import IODtype, load_profile

    model = tiny_model_object(classes=classes)
    weights = np.frombuffer(bytes(model.buffers[4].data), np.float32) * scale
    model.buffers[4].data = list(weights.astype(np.float32).tobytes())
    labels = [f"class{i}" for i in range(classes)]
    profile = load_profile("x86-cpu")
    return write_bundle(
        out,
        files={"model.tflite": pack(model), "labels.txt": ("\n".join(labels) + "\n").encode()},
        roles={"model.tflite": "model", "labels.txt": "labels"},
        manifest_fields=dict(
            name="fuzz-tiny", target=profile.target, precision="fp32", model_file="model.tflite",
            labels_file="labels.txt", num_classes=classes, task=Task.CLASSIFICATION,
            decoder=Decoder(kind="classification", options={"top_k": 1}),
            preprocessing=Preprocessing(width=8, height=8, channels=3),
            inputs=[TensorSpec(name="image", shape=[1, 8, 8, 3], dtype=IODtype.FLOAT32)],
            outputs=[TensorSpec(name="probs", shape=[1, classes], dtype=IODtype.FLOAT32)],
            profile=profile,
        ),
    )
