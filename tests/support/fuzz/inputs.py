"""Malformed images, run configs and fleet commands for tests/test_fuzz.py.

Seed images are encoded by OpenCV; each fixed case is named for what makes it nasty.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import tarfile
import zlib

import numpy as np
from hypothesis import strategies as st

from support.fuzz.corpus import INTERESTING_INTS, VALUES, generate


# -- images -------------------------------------------------------------------------------------------

def seed_images() -> dict[str, bytes]:
    """A small real image in every supported format, encoded by OpenCV."""
    import cv2

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    gray = image[:, :, 0]
    out = {}
    for suffix, pixels in ((".png", image), (".jpg", image), (".bmp", image), (".webp", image), (".tiff", image),
                           (".pgm", gray), (".ppm", image)):
        ok, encoded = cv2.imencode(suffix, pixels)
        assert ok, suffix
        out[suffix] = encoded.tobytes()
    return out


def _png(width: int, height: int, *, color: int = 2, depth: int = 8, idat: bytes | None = None) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    if idat is None:
        idat = zlib.compress(b"\x00" * 1024)
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _png_bomb(side: int) -> bytes:
    """A complete, valid grayscale PNG of side x side zeros: ~100 KB on disk for 100 MP."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return _png(side, side, color=0, idat=body)


def _jpeg_declaring(seed_jpeg: bytes, width: int, height: int) -> bytes:
    data = bytearray(seed_jpeg)
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def image_fixed_cases() -> dict[str, tuple[str, bytes]]:
    """Named images as (suffix, bytes); each must be refused with a DatasetError, quickly."""
    import cv2

    seeds = seed_images()
    png, jpeg, bmp = seeds[".png"], seeds[".jpg"], seeds[".bmp"]
    bmp_huge = bytearray(bmp)
    struct.pack_into("<ii", bmp_huge, 18, 100_000, 100_000)
    tiff_huge = bytearray(seeds[".tiff"])
    order = "<" if tiff_huge[:2] == b"II" else ">"
    ifd = struct.unpack_from(order + "I", tiff_huge, 4)[0]
    for k in range(struct.unpack_from(order + "H", tiff_huge, ifd)[0]):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack_from(order + "HH", tiff_huge, entry)
        if tag in (256, 257):
            struct.pack_into(order + ("H" if kind == 3 else "I"), tiff_huge, entry + 8, 60_000)
    ok, float_tiff = cv2.imencode(".tiff", np.ones((8, 8), np.float32))
    ok2, int_tiff = cv2.imencode(".tiff", np.ones((8, 8), np.int32))
    ok3, hdr = cv2.imencode(".hdr", np.ones((8, 8, 3), np.float32))
    assert ok and ok2 and ok3
    return {
        "empty file": (".png", b""),
        "one byte": (".jpg", b"\xff"),
        "text named .png": (".png", b"definitely not an image\n" * 10),
        "random bytes": (".jpg", np.random.default_rng(5).integers(0, 256, 3000, dtype=np.uint8).tobytes()),
        "PNG signature only": (".png", png[:8]),
        "PNG truncated in the header": (".png", png[:20]),
        "PNG truncated in the data": (".png", png[: len(png) // 2]),
        "PNG with a broken CRC": (".png", png[:29] + bytes([png[29] ^ 0xFF]) + png[30:]),
        "PNG of zero size": (".png", _png(0, 0)),
        "PNG 1 x 0": (".png", _png(1, 0)),
        "PNG declaring 50000 x 50000": (".png", _png(50_000, 50_000)),
        "PNG declaring 2^31-1 x 2^31-1": (".png", _png(2**31 - 1, 2**31 - 1)),
        "PNG bomb: 100 MP of zeros in ~100 KB": (".png", _png_bomb(10_000)),
        "JPEG SOI only": (".jpg", b"\xff\xd8"),
        "JPEG SOI + EOI": (".jpg", b"\xff\xd8\xff\xd9"),
        "JPEG truncated": (".jpg", jpeg[: len(jpeg) // 2]),
        "JPEG of zero size": (".jpg", _jpeg_declaring(jpeg, 0, 0)),
        "JPEG declaring 30000 x 30000 in 600 bytes": (".jpg", _jpeg_declaring(jpeg[:600], 30_000, 30_000)),
        "JPEG declaring 65535 x 65535": (".jpg", _jpeg_declaring(jpeg, 65_535, 65_535)),
        "JPEG with 1 MB of comment segments": (".jpg", jpeg[:2] + b"\xff\xfe\x00\x02" * 250_000),
        "BMP declaring 100000 x 100000": (".bmp", bytes(bmp_huge)),
        "BMP header only": (".bmp", bmp[:30]),
        "WebP declaring 16384 x 16384": (".webp", b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8X" + struct.pack("<I", 10)
                                         + b"\x00" * 4 + (16383).to_bytes(3, "little") * 2),
        "TIFF declaring 60000 x 60000": (".tiff", bytes(tiff_huge)),
        "TIFF with a bad IFD offset": (".tiff", b"II*\x00" + struct.pack("<I", 2**31) + b"\x00" * 64),
        "TIFF of float pixels": (".tiff", float_tiff.tobytes()),
        "TIFF of int32 pixels": (".tiff", int_tiff.tobytes()),
        "PGM declaring 100000 x 100000": (".pgm", b"P5\n100000 100000\n255\n" + b"\x00" * 100),
        "PAM declaring 100000 x 100000": (".ppm", b"P7\nWIDTH 100000\nHEIGHT 100000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n"),
        "Radiance HDR named .png": (".png", hdr.tobytes()),
        "GIF named .jpg": (".jpg", b"GIF89a\x10\x27\x10\x27\x80\x00\x00" + b"\x00" * 64),
    }


def image_generated(count: int) -> list[tuple[str, bytes]]:
    """Byte mutations of every seed format (big- and little-endian words, since formats differ)."""
    seeds = seed_images()
    strategies = []
    for suffix, seed in seeds.items():
        n = len(seed)
        flip = st.lists(st.tuples(st.integers(0, min(n, 64) - 1), st.integers(0, 255)), min_size=1, max_size=6)
        word = st.tuples(st.integers(0, min(n, 64) - 4), st.sampled_from(INTERESTING_INTS), st.sampled_from("<>"))
        cut = st.integers(0, n - 1)

        def mutate(kind, arg, seed=seed, suffix=suffix):
            data = bytearray(seed)
            if kind == "flip":
                for position, value in arg:
                    data[position] = value
            elif kind == "word":
                position, value, order = arg
                struct.pack_into(order + "I", data, position, value & 0xFFFFFFFF)
            else:
                del data[arg:]
            return suffix, bytes(data)

        strategies += [flip.map(lambda a, m=mutate: m("flip", a)), word.map(lambda a, m=mutate: m("word", a)),
                       cut.map(lambda a, m=mutate: m("cut", a))]
    return generate(st.one_of(strategies), count, key=lambda case: case[1])


# -- run configs (YAML) ---------------------------------------------------------------------------------

def _laughs_yaml(key: str) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines) + f"\n{key}: *a8\n"


def config_fixed_cases(tmp) -> dict[str, str]:
    """Named run configs; every one must fail ``edge-sdk run`` with one line and exit 2.

    ``tmp`` holds the files some of them point at (a binary password file)."""
    (tmp / "binary-password").write_bytes(bytes(range(128, 256)))
    polygon = "[" + ", ".join(["[0.5, 0.5]"] * 3000) + "]"
    merge = "m0: &m0 {k0: 1, k1: 2, k2: 3}\n" + "".join(
        f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}], z{i}: 1}}\n" for i in range(1, 9)
    ) + "labels: *m8\n"
    mqtt = "source: x.mp4\nmqtt:\n  broker: mqtt://127.0.0.1:1\n  device_id: fuzz\n"
    return {
        "empty file": "",
        "a list, not a mapping": "- a\n- b\n",
        "a number": "42\n",
        "unclosed flow list": "labels: [a, b\n",
        "tab indentation": "mqtt:\n\tbroker: x\n",
        "mapping in a scalar": "a: b: c\n",
        "unknown field": "threshhold: 0.5\n",
        "threshold is text": "threshold: high\n",
        "threshold above 1": "threshold: 2\n",
        "threshold is NaN": "threshold: .nan\n",
        "fps negative": "fps: -5\n",
        "stride zero": "stride: 0\n",
        "stride fractional": "stride: 1.5\n",
        "labels is a string": "labels: person\n",
        "labels nested": "labels: [[a], [b]]\n",
        "zone outside the frame": "zones: [[[0, 0], [2, 0], [0, 1]]]\n",
        "zone with two points": "zones: [[[0, 0], [1, 1]]]\n",
        "max_frames zero": "max_frames: 0\n",
        "loop is a word": "loop: sometimes\n",
        "mqtt is a number": "mqtt: 5\n",
        "mqtt broker ftp://": "mqtt: {broker: 'ftp://h'}\n",
        "mqtt broker port 99999": "mqtt: {broker: 'mqtt://h:99999'}\n",
        "mqtt device id with a slash": "mqtt: {broker: 'mqtt://h', device_id: 'a/b'}\n",
        "mqtt device id with a wildcard": "mqtt: {broker: 'mqtt://h', device_id: 'cam+'}\n",
        "mqtt QoS 2": mqtt + "  qos: {detections: 2}\n",
        "mqtt cert without key": mqtt + "  tls: {cert_file: /tmp/c.pem}\n",
        "mqtt password file is binary": mqtt + f"  password_file: {tmp / 'binary-password'}\n",
        "mqtt password file is /dev/zero": mqtt + "  password_file: /dev/zero\n",
        "mqtt update key missing": mqtt + "  update_keys: [/nonexistent/fleet.pub]\n",
        "http address nonsense": "http: 'not an address'\n",
        "http cert without key": "http: {listen: ':0', cert_file: /tmp/c.pem}\n",
        "http token and password files": "http: {token_file: /tmp/t, password_file: /tmp/p}\n",
        "http username with a colon": "http: {username: 'a:b'}\n",
        "billion laughs in an unknown key": _laughs_yaml("lol"),
        "billion laughs in labels": _laughs_yaml("labels"),
        "billion laughs in zones": _laughs_yaml("zones"),
        "quadratic alias bomb in zones": f"p: &p {polygon}\nzones: [" + ", ".join(["*p"] * 3000) + "]\n",
        "merge-key bomb": merge,
        "list that contains itself": "labels: &a [*a]\n",
        "mapping that contains itself": "mqtt: &m {broker: 'mqtt://h', x: *m}\n",
        "nested 20000 lists deep": "labels: " + "[" * 20_000 + "]" * 20_000 + "\n",
        "nested 20000 mappings deep": "labels: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n",
        "python object tag": "labels: !!python/object/apply:os.system ['echo pwned']\n",
        "python name tag": "source: !!python/name:os.system\n",
        "unhashable key": "? [a, b]\n: c\n",
        "NUL byte": "source: \x00\n",
        "key with a newline and control characters": '"a\\nb\\x1b[31m": 1\n',
        "a 100 KB key": "? " + "k" * 100_000 + "\n: 1\n",
        "a 1 MB config": "labels: [" + ", ".join(["x" * 30] * 33_000) + "]\n",
    }


CONFIG_FIELDS = ["source", "max_frames", "fps", "stride", "threshold", "labels", "zones", "min_area", "loop", "jsonl",
                 "threads", "device", "cpu_fallback", "retries", "mqtt", "http"]
MQTT_FIELDS = ["broker", "device_id", "prefix", "protocol", "keepalive", "qos", "publish", "max_rate", "outbox", "tls",
               "update_keys", "command_max_bytes", "password_env"]

def config_generated(count: int) -> list[str]:
    """YAML documents: mappings of real and made-up keys to values of any type, and raw YAML-ish text."""
    import yaml

    mqtt = st.dictionaries(st.sampled_from(MQTT_FIELDS) | st.text(max_size=6), VALUES, max_size=5)
    document = st.dictionaries(st.sampled_from(CONFIG_FIELDS) | st.text(max_size=10), VALUES | mqtt, min_size=1, max_size=6)
    dumped = document.map(lambda d: yaml.safe_dump(d, allow_unicode=True))
    raw = st.text(alphabet="[]{}:,-&*!|>'\"#%@`? \n\tabcz019.~", max_size=80)
    return generate(st.one_of(dumped, raw), count, key=lambda text: text)


# -- fleet commands ------------------------------------------------------------------------------------

def _b64_tar(members: list[tuple[str, bytes | None, bytes]]) -> bytes:
    """{"archive_b64": ...} for a .tar.gz with (name, tar type, content) members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, kind, content in members:
            info = tarfile.TarInfo(name)
            info.type = kind or tarfile.REGTYPE
            if kind == tarfile.SYMTYPE:
                info.linkname = content.decode()
                tar.addfile(info)
            elif kind == tarfile.DIRTYPE:
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return json.dumps({"archive_b64": base64.b64encode(buffer.getvalue()).decode()}).encode()


def command_fixed_cases(command_max_bytes: int) -> list[tuple[str, str, bytes, str]]:
    """(case name, command, payload, a phrase the error must contain); all must be answered ok=false."""
    big = command_max_bytes + 1
    return [
        ("unknown command", "reboot", b"{}", "unknown command 'reboot'"),
        ("unknown command, empty JSON", "shell", b'{"cmd": "rm -rf /"}', "unknown command"),
        ("unknown command with a 1000-character name", "x" * 1000, b"{}", "unknown command"),
        ("unknown command, unicode name", "конфиг", b"{}", "unknown command"),
        ("not JSON", "config", b"{not json", "not valid JSON"),
        ("truncated JSON", "config", b'{"threshold": 0.5', "not valid JSON"),
        ("trailing garbage", "config", b'{"threshold": 0.5}}', "not valid JSON"),
        ("invalid UTF-8", "config", b'{"labels": ["\xff\xfe"]}', "not valid JSON"),
        ("a JSON list", "config", b"[1, 2]", "JSON object"),
        ("JSON null", "config", b"null", "JSON object"),
        ("a JSON string", "config", b'"threshold"', "JSON object"),
        ("a JSON number", "config", b"0.5", "JSON object"),
        ("threshold is text", "config", b'{"threshold": "high"}', "field 'threshold'"),
        ("threshold above 1", "config", b'{"threshold": 2}', "field 'threshold'"),
        ("threshold NaN", "config", b'{"threshold": NaN}', "field 'threshold'"),
        ("fps Infinity", "config", b'{"fps": Infinity}', "field 'fps'"),
        ("fps 1e999", "config", b'{"fps": 1e999}', "field 'fps'"),
        ("max_rate -Infinity", "config", b'{"max_rate": -Infinity}', "field 'max_rate'"),
        ("stride zero", "config", b'{"stride": 0}', "field 'stride'"),
        ("stride fractional", "config", b'{"stride": 1.5}', "field 'stride'"),
        ("labels a string", "config", b'{"labels": "person"}', "field 'labels'"),
        ("labels of numbers", "config", b'{"labels": [1, 2]}', "field 'labels"),
        ("zone outside the frame", "config", b'{"zones": [[[0, 0], [2, 0], [0, 1]]]}', "outside the frame"),
        ("zone of one point", "config", b'{"zones": [[[0, 0]]]}', "at least 3 points"),
        ("publish mode unknown", "config", b'{"publish": "sometimes"}', "field 'publish'"),
        ("unknown field", "config", b'{"shell": "rm -rf /"}', "field 'shell': unknown field"),
        ("dunder field", "config", b'{"__class__": {}}', "unknown field"),
        ("request_id an object", "config", b'{"request_id": {"a": 1}}', "field 'request_id"),
        ("an integer of 5000 digits", "config", b'{"request_id": ' + b"9" * 5000 + b"}", "not valid JSON"),
        ("nested 5000 deep", "config", b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        ("objects nested 5000 deep", "config", b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested too deeply"),
        ("1 MB of brackets", "config", b"[" * 2**20 + b"]" * 2**20, "too large"),
        ("one byte over the limit", "config", b'{"labels": ["' + b"x" * (big - 16) + b'"]}', "too large"),
        ("1 MB snapshot request", "snapshot", b" " * 2**20, "too large"),
        ("snapshot with an unknown field", "snapshot", b'{"size": 1}', "unknown field"),
        ("snapshot with a list", "snapshot", b"[]", "JSON object"),
        ("model url over http", "model", b'{"url": "http://example.com/b.tar.gz"}', "https"),
        ("model url file://", "model", b'{"url": "file:///etc/passwd"}', "https"),
        ("model url not a string", "model", b'{"url": 5}', "field 'url'"),
        ("model url and archive", "model", b'{"url": "https://x/b", "archive_b64": "AA=="}', "exactly one"),
        ("model with neither", "model", b"{}", "exactly one"),
        ("model archive not base64", "model", b'{"archive_b64": "!!!"}', "not valid base64"),
        ("model archive empty", "model", b'{"archive_b64": ""}', "empty"),
        ("model archive is not gzip", "model", b'{"archive_b64": "aGVsbG8="}', "not a .tar.gz"),
        ("raw gzip garbage", "model", b"\x1f\x8b" + b"\x00" * 100, "damaged"),
        ("raw gzip of text", "model", gzip.compress(b"just text, not a tar"), "damaged"),
        ("archive with ../", "model", _b64_tar([("../evil", None, b"x")]), "outside the bundle"),
        ("archive with an absolute path", "model", _b64_tar([("/etc/evil", None, b"x")]), "absolute path"),
        ("archive with a symlink", "model", _b64_tar([("link", tarfile.SYMTYPE, b"/etc/passwd")]), "link"),
        ("archive with a '.' member only", "model", _b64_tar([(".", tarfile.DIRTYPE, b"")]), "not signed"),
        ("archive with a duplicate", "model", _b64_tar([("a", None, b"1"), ("a", None, b"2")]), "twice"),
        ("archive with 100 files", "model", _b64_tar([(f"f{i}", None, b"") for i in range(100)]), "more than"),
        ("unsigned archive of random files", "model", _b64_tar([("edge-bundle.json", None, b"{}")]), "not signed"),
    ]


def _json_payload(data) -> bytes:
    return json.dumps(data, allow_nan=True).encode()


def command_generated(count: int, *, command_max_bytes: int) -> list[tuple[str, bytes]]:
    """(command, payload): well-formed and mangled JSON of the right and wrong shapes, random bytes,
    deep nesting and sizes around the limit."""
    change_fields = ["threshold", "fps", "stride", "labels", "zones", "min_area", "publish", "max_rate", "request_id"]
    fieldVALUES = st.one_of(
        VALUES, st.floats(0, 1), st.integers(0, 10), st.sampled_from(["every_frame", "on_change", "on_detection"]),
        st.lists(st.text(max_size=6), max_size=4),
        st.lists(st.lists(st.tuples(st.floats(-1, 2), st.floats(-1, 2)).map(list), min_size=0, max_size=5), max_size=3),
    )
    change = st.dictionaries(st.sampled_from(change_fields) | st.text(max_size=8), fieldVALUES, max_size=5)
    names = st.sampled_from(["config", "config", "config", "snapshot", "model"]) | st.text(min_size=1, max_size=12).filter(
        lambda s: "/" not in s and "+" not in s and "#" not in s)
    shaped = st.tuples(names, change.map(_json_payload))
    mangled = st.tuples(names, st.tuples(change.map(_json_payload), st.integers(0, 200)).map(lambda p: p[0][: p[1]]))
    any_json = st.tuples(names, VALUES.map(_json_payload))
    raw = st.tuples(names, st.binary(max_size=200))
    deep = st.tuples(st.just("config"), st.tuples(st.integers(1, 20_000), st.sampled_from([b"[", b'{"a":'])).map(
        lambda p: p[1] * p[0] + (b"1" if p[1] != b"[" else b"") + (b"]" if p[1] == b"[" else b"}") * p[0]))
    sized = st.tuples(st.sampled_from(["config", "snapshot"]), st.integers(command_max_bytes - 64, command_max_bytes + 64).map(
        lambda n: b'{"labels": ["' + b"a" * max(0, n - 16) + b'"]}'))
    model = st.tuples(st.just("model"), st.one_of(
        st.binary(max_size=300).map(lambda b: b"\x1f\x8b" + b),
        st.binary(max_size=300).map(lambda b: _json_payload({"archive_b64": base64.b64encode(b).decode()})),
        st.text(max_size=40).map(lambda t: _json_payload({"archive_b64": t})),
        st.sampled_from(["http://x/b", "ftp://x/b", "https://", "https://127.0.0.1:1/b.tar.gz", "", "//x"]).map(
            lambda u: _json_payload({"url": u})),
    ))
    strategy = st.one_of(shaped, shaped, mangled, any_json, raw, deep, sized, model)
    return generate(strategy, count, key=lambda case: case)
