"""The width and height an image file declares, read from its header before anything is decoded.

OpenCV allocates the whole frame a header declares (up to 2^30 pixels) before it finds out the data
is missing: a 631-byte JPEG declaring 30000x30000 took 12 s and 5 GB to decode. Reading the size
first lets :func:`edge_sdk.imagefolder.read_image` refuse such a file in microseconds.
"""

from __future__ import annotations

import re
import struct

FORMATS = "JPEG, PNG, BMP, WebP, TIFF, PGM/PPM"

# JPEG start-of-frame markers (all but DHT 0xC4, JPG 0xC8 and DAC 0xCC) and markers without a length.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}
_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n?)*(\d+)")


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a supported format; None for anything else or a header
    too damaged to say."""
    for signature, reader in _READERS:
        if data.startswith(signature):
            try:
                return reader(data)
            except (struct.error, IndexError, ValueError):
                return None
    return None


def is_supported(data: bytes) -> bool:
    return any(data.startswith(signature) for signature, _ in _READERS)


def _png(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _jpeg(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:  # libjpeg skips stray bytes between segments, so must we
            i = data.find(b"\xff", i)
            if i < 0:
                return None
            continue
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker in _STANDALONE:
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return None
        length = struct.unpack(">H", data[i:i + 2])[0]
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 3:i + 7])
            return width, height
        i += max(length, 2)
    return None


def _bmp(data: bytes) -> tuple[int, int]:
    header = struct.unpack("<I", data[14:18])[0]
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _webp(data: bytes) -> tuple[int, int] | None:
    if data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[ifd:ifd + 2])[0]
    found: dict[int, int] = {}
    for k in range(count):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack(order + "HH", data[entry:entry + 4])
        if tag in (256, 257):
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), data[entry + 8:entry + (10 if kind == 3 else 12)])[0]
    if 256 not in found or 257 not in found:
        return None
    return found[256], found[257]


def _pnm(data: bytes) -> tuple[int, int] | None:
    if data[:2] == b"P7":  # PAM: "WIDTH n" and "HEIGHT n" lines
        header = data[: data.find(b"ENDHDR")]
        width, height = re.search(rb"WIDTH\s+(\d+)", header), re.search(rb"HEIGHT\s+(\d+)", header)
        return (int(width.group(1)), int(height.group(1))) if width and height else None
    first = _PNM_TOKEN.match(data, 2)
    second = _PNM_TOKEN.match(data, first.end()) if first else None
    return (int(first.group(1)), int(second.group(1))) if second else None


_READERS = [
    (b"\x89PNG\r\n\x1a\n", _png),
    (b"\xff\xd8", _jpeg),
    (b"BM", _bmp),
    (b"RIFF", _webp),
    (b"II*\x00", _tiff),
    (b"MM\x00*", _tiff),
    *((f"P{k}".encode(), _pnm) for k in range(1, 8)),
]
