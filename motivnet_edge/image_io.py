"""Turns what a user hands us (array, path, bytes) into a BGR or gray uint8 array, safely.

Encoded images are measured from their header before decoding, so a decompression bomb
(a tiny file that claims a gigantic canvas) is refused without allocating it; a format
whose header we cannot measure is refused, so ``max_pixels`` always holds.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np

import cv2

from .errors import InvalidImageError

#: Largest image we decode, in pixels (width * height). Decoded as 8-bit gray or BGR, 100 MP
#: is at most 300 MB; detection and cropping then work on small copies (detectors, preprocess).
MAX_PIXELS = 100_000_000
#: Largest image file we read: a 100 MP 24-bit BMP is 300 MB; anything bigger is not a photo.
MAX_FILE_BYTES = 400 * 2**20
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, JPEG, GIF, BMP or WebP header, or None if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if kind == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if data[:4] in (b"II*\x00", b"MM\x00*") and len(data) >= 8:
        return _tiff_size(data)
    if data[:1] == b"P" and data[1:2] in b"123456" and len(data) >= 3:
        # A PNM comment ends at CR or LF (netpbm and OpenCV both stop there).
        fields = re.sub(rb"#[^\n\r]*", b" ", data[2:1024]).split()
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            return int(fields[0]), int(fields[1])
        return None
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


#: Start-of-frame markers (baseline, progressive, lossless, arithmetic), not DHT/JPG/DAC.
_SOF = re.compile(rb"\xff[\xc0-\xc3\xc5-\xc7\xc9-\xcb\xcd-\xcf]")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The largest frame any start-of-frame marker in the file declares.

    A decoder may use a frame other than the first (a decoy 1x1 frame before the real one), and
    no walk of segment lengths agrees with every decoder on damaged files; so every byte pair
    that looks like a frame header is read, and the largest canvas counts. Entropy-coded data
    cannot hold such a pair (FF there is followed by 00 or a restart marker)."""
    best = None
    for m in _SOF.finditer(data):
        at = m.start()
        if at + 9 > len(data):
            break
        h, w = struct.unpack(">HH", data[at + 5:at + 9])
        if best is None or w * h > best[0] * best[1]:
            best = (w, h)
    return best


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first IFD of a classic TIFF (tags 256/257); where a tag is
    repeated, the largest value counts (libtiff keeps the first, other readers the last)."""
    end = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", data[4:8])
    if ifd + 2 > len(data):
        return None
    (count,) = struct.unpack(end + "H", data[ifd:ifd + 2])
    size: dict[int, int] = {}
    for i in range(count):
        at = ifd + 2 + 12 * i
        if at + 12 > len(data):
            break
        tag, kind = struct.unpack(end + "HH", data[at:at + 4])
        if tag in (256, 257):
            fmt = "H" if kind == 3 else "I"
            size[tag] = max(size.get(tag, 0), struct.unpack(end + fmt, data[at + 8:at + 8 + struct.calcsize(fmt)])[0])
    return (size[256], size[257]) if len(size) == 2 else None


def decode(data: bytes, *, source: str = "image bytes", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decodes encoded image bytes to BGR (or gray) uint8, refusing bombs and corrupt data.

    Raises:
        InvalidImageError: empty, corrupt, truncated, or larger than ``max_pixels``.
    """
    if not data:
        raise InvalidImageError(f"{source} is empty: pass a JPEG/PNG/BMP/WebP image")
    size = header_size(data)
    if size is None:
        # Without a size from the header OpenCV would allocate whatever the file claims.
        raise InvalidImageError(f"{source} is not a JPEG, PNG, BMP, WebP, GIF, TIFF or PNM image "
                                "(or its header is damaged); re-save it as JPEG or PNG")
    if size[0] * size[1] > max_pixels:
        raise InvalidImageError(
            f"{source} claims {size[0]}x{size[1]} pixels, above the limit of {max_pixels:,}; "
            "downscale it first or raise max_pixels")
    if data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        # No End-Of-Image after the last scan: libjpeg would fill the missing rows with gray
        # and return a "valid" image whose lower part the classifier never really saw.
        raise InvalidImageError(f"{source} is a truncated JPEG (the file ends inside its image data); "
                                "copy or download it again")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        # ANYCOLOR: 8-bit gray stays gray; 16-bit, alpha and palette images decode straight
        # to 8-bit BGR, never to a 16-bit RGBA canvas 8 bytes a pixel.
        image = cv2.imdecode(buf, cv2.IMREAD_ANYCOLOR)
    except cv2.error as exc:
        raise InvalidImageError(f"{source} could not be decoded ({exc.msg.strip()}); "
                                "is it larger than the pixel limit or corrupt?") from None
    if image is None or image.size == 0:
        raise InvalidImageError(f"{source} is not a readable image (corrupt, truncated or "
                                "an unsupported format); re-save it as JPEG or PNG")
    return check_array(image, source=source, max_pixels=max_pixels)


def check_array(image: np.ndarray, *, source: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Validates a decoded array and returns it as BGR (HxWx3) or gray (HxW) uint8.

    Raises:
        InvalidImageError: wrong type, dtype, rank, channel count, or zero size.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"{source} is a {type(image).__name__}; pass a numpy array, "
                                "a file path or encoded bytes")
    if image.dtype != np.uint8:
        raise InvalidImageError(f"{source} has dtype {image.dtype}; convert it to uint8 "
                                "(0..255), e.g. (img * 255).clip(0, 255).astype(np.uint8)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InvalidImageError(f"{source} has shape {image.shape}; expected HxW (gray), "
                                "HxWx3 (BGR) or HxWx4 (BGRA)")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"{source} has zero size {image.shape}")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise InvalidImageError(f"{source} has {image.shape[0] * image.shape[1]:,} pixels, above "
                                f"the limit of {max_pixels:,}; downscale it first")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of an image file; refuses what is not a regular file (a folder, FIFO or device
    would block or never end) and files above ``MAX_FILE_BYTES``, before reading them.

    Raises:
        InvalidImageError: missing, not a regular file, too large, or unreadable.
    """
    import stat

    path = Path(path)
    try:
        st = path.stat()
    except (OSError, ValueError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else getattr(exc, "strerror", None) or str(exc)
        raise InvalidImageError(f"cannot read {path}: {reason}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (FIFO, device or socket)"
        raise InvalidImageError(f"cannot read {path}: it is {kind}; pass an image file")
    if st.st_size > MAX_FILE_BYTES:
        raise InvalidImageError(f"{path} is {st.st_size / 2**20:,.0f} MB, above the {MAX_FILE_BYTES >> 20} MB limit "
                                "for an image file; is it the right file?")
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidImageError(f"cannot read {path}: {exc.strerror}") from None


def load_image(image, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Accepts a numpy array (BGR, BGRA or gray uint8), a path, or encoded bytes.

    Raises:
        InvalidImageError: the input cannot be turned into an image (see the message).
    """
    if isinstance(image, np.ndarray):
        return check_array(image, max_pixels=max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode(bytes(image), max_pixels=max_pixels)
    if isinstance(image, (str, os.PathLike)):
        return decode(read_image_file(image), source=str(image), max_pixels=max_pixels)
    raise InvalidImageError(f"unsupported image type {type(image).__name__}; pass a numpy uint8 "
                            "array (BGR), a file path or encoded image bytes")
