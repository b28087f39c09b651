"""Every kind of bad image input gets a clear InvalidImageError."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from motivnet_edge.errors import InvalidImageError
from motivnet_edge.image_io import MAX_PIXELS, header_size, load_image


def _png(w, h):
    ok, buf = cv2.imencode(".png", np.zeros((h, w), np.uint8))
    return buf.tobytes()


def test_accepts_path_bytes_gray_bgra(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), img)
    assert np.array_equal(load_image(p), img)
    assert np.array_equal(load_image(p.read_bytes()), img)
    assert load_image(img[:, :, 0]).shape == (20, 30)
    assert load_image(np.dstack([img, np.full((20, 30), 255, np.uint8)])).shape == (20, 30, 3)
    assert load_image(img[:, :, :1]).shape == (20, 30)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((0, 10, 3), np.uint8), "zero size"),
    (np.zeros((10, 10, 3), np.float32), "dtype float32"),
    (np.zeros((10, 10, 2), np.uint8), "shape"),
    (np.zeros((2, 10, 10, 3), np.uint8), "shape"),
    ([[1, 2]], "unsupported image type"),
    (b"", "empty"),
    (b"not an image at all", "not a JPEG, PNG"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 64, "re-save it as JPEG or PNG"),  # JPEG 2000: size unknown
])
def test_bad_inputs(bad, match):
    with pytest.raises(InvalidImageError, match=match):
        load_image(bad)


def test_unreadable_path(tmp_path):
    with pytest.raises(InvalidImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")


def test_truncated_png_and_jpeg():
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    ok, jpg = cv2.imencode(".jpg", noise)  # noise: most of the file is scan data
    with pytest.raises(InvalidImageError):
        load_image(_png(64, 64)[:40])
    # libjpeg would hand back a gray-filled image for a JPEG cut in half: it is refused instead,
    # while a whole JPEG (also one with bytes after its End-Of-Image marker) still loads.
    with pytest.raises(InvalidImageError, match="truncated JPEG"):
        load_image(jpg.tobytes()[: len(jpg) // 2])
    with pytest.raises(InvalidImageError, match="truncated JPEG"):
        load_image(jpg.tobytes()[:-2])
    assert load_image(jpg.tobytes()).shape == (64, 64, 3)
    assert load_image(jpg.tobytes() + b"\0" * 16).shape == (64, 64, 3)


def test_header_sizes():
    assert header_size(_png(33, 17)) == (33, 17)
    ok, jpg = cv2.imencode(".jpg", np.zeros((17, 33, 3), np.uint8))
    assert header_size(jpg.tobytes()) == (33, 17)
    ok, bmp = cv2.imencode(".bmp", np.zeros((17, 33, 3), np.uint8))
    assert header_size(bmp.tobytes()) == (33, 17)


def test_decompression_bomb_refused_before_decoding():
    # A real PNG whose IHDR claims 60000 x 60000 pixels (3.6 GP): only the header is read.
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    assert 60000 * 60000 > MAX_PIXELS
    with pytest.raises(InvalidImageError, match="above the limit"):
        load_image(bomb)


def _tiff_claiming(w: int, h: int) -> bytes:
    """A classic little-endian TIFF header whose first IFD claims w x h pixels."""
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (262, 3, 1, 1), (273, 4, 1, 8), (279, 4, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def test_tiff_and_pnm_sizes_come_from_their_headers():
    gray = np.zeros((17, 33), np.uint8)
    for ext in (".tiff", ".pgm"):
        ok, buf = cv2.imencode(ext, gray)
        assert header_size(buf.tobytes()) == (33, 17), ext
        assert load_image(buf.tobytes()).shape == (17, 33)
    assert header_size(b"P6 # a comment\n 640 480\n255\n") == (640, 480)


def test_tiff_bomb_refused_before_decoding():
    # 32000 x 32000 = 1.02 GP: OpenCV's default cap (1 << 30) would let it allocate gigabytes.
    with pytest.raises(InvalidImageError, match="32000x32000 pixels, above the limit"):
        load_image(_tiff_claiming(32000, 32000))


def test_max_pixels_is_honoured_for_bytes_paths_and_arrays(tmp_path):
    png = _png(100, 100)
    (tmp_path / "a.png").write_bytes(png)
    for src in (png, tmp_path / "a.png", np.zeros((100, 100), np.uint8)):
        with pytest.raises(InvalidImageError, match="limit of 5,000"):
            load_image(src, max_pixels=5000)
        assert load_image(src, max_pixels=10_000).shape == (100, 100)


def test_16_bit_rgba_png_decodes_to_8_bit_bgr():
    rgba16 = np.full((8, 10, 4), 0x8000, np.uint16)
    rgba16[..., 2] = 0xFFFF
    ok, buf = cv2.imencode(".png", rgba16)
    out = load_image(buf.tobytes())
    assert out.dtype == np.uint8 and out.shape == (8, 10, 3)
    assert out[0, 0].tolist() == [128, 128, 255]


def _jpeg(w=8, h=8) -> bytes:
    return cv2.imencode(".jpg", np.full((h, w), 100, np.uint8))[1].tobytes()


def _sof(w, h) -> bytes:
    return b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"


def test_jpeg_decoy_frame_before_the_real_one_is_measured_by_the_largest():
    real = _jpeg()
    crafted = real[:2] + _sof(1, 1) + real[2:]
    at = crafted.index(b"\xff\xc0", 4)  # the encoder's own frame header: claim 30000 x 30000
    crafted = crafted[:at + 5] + struct.pack(">HH", 30000, 30000) + crafted[at + 9:]
    assert header_size(crafted) == (30000, 30000)
    with pytest.raises(InvalidImageError, match="30000x30000"):
        load_image(crafted)


def test_jpeg_stuffed_ff00_is_not_a_marker_that_hides_a_frame():
    real = _jpeg()
    at = real.index(b"\xff\xc0")
    real = real[:at + 5] + struct.pack(">HH", 20000, 20000) + real[at + 9:]
    # FF 00 right after SOI, then two bytes a length-walking parser reads as the "segment" length
    # that jumps over the real frame to a decoy 1x1 frame at the end; decoders skip FF 00.
    body = real[2:]
    crafted = real[:2] + b"\xff\x00" + struct.pack(">H", len(body) + 2) + body + _sof(1, 1)
    assert header_size(crafted) == (20000, 20000)


def test_tiff_duplicate_size_tags_count_the_largest():
    def entry(tag, value):
        return struct.pack("<HHII", tag, 4, 1, value)
    entries = [entry(256, 40000), entry(256, 1), entry(257, 40000), entry(257, 1)]  # libtiff keeps the first
    data = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)) + b"".join(entries) + b"\0\0\0\0"
    assert header_size(data) == (40000, 40000)


def test_pnm_comment_ended_by_a_carriage_return():
    data = b"P5\n#c\r40000 40000\n255\n" + b"\0" * 16
    assert header_size(data) == (40000, 40000)
    with pytest.raises(InvalidImageError, match="40000x40000"):
        load_image(data)


def test_paths_that_are_not_regular_files_or_too_big(tmp_path, monkeypatch):
    import os

    import motivnet_edge.image_io as io

    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(InvalidImageError, match="it is a folder"):
        load_image(tmp_path / "folder.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(InvalidImageError, match="not a regular file"):
        load_image(tmp_path / "pipe.jpg")  # would block forever if opened
    big = tmp_path / "big.jpg"
    with open(big, "wb") as fh:
        fh.truncate(2 * 2**20)
    monkeypatch.setattr(io, "MAX_FILE_BYTES", 2**20)
    with pytest.raises(InvalidImageError, match="above the 1 MB limit"):
        load_image(big)
