"""FaceTemplate: following a face between detections, and refusing when it cannot."""

import numpy as np
import pytest

from motivnet_edge.detectors import Detection
from motivnet_edge.tracking import FaceTemplate


def _face_image(dx: int = 0, dy: int = 0, size: int = 120) -> tuple[np.ndarray, Detection]:
    """A smooth random 'face' square (detail at a face's scale) on a flat background, shifted by (dx, dy)."""
    import cv2

    img = np.full((360, 480), 90, np.uint8)
    tex = np.random.default_rng(0).integers(0, 255, (size // 15, size // 15)).astype(np.float32)
    face = cv2.resize(tex, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    x, y = 150 + dx, 100 + dy
    img[y:y + face.shape[0], x:x + face.shape[1]] = face
    lms = ((x + 30.0, y + 40.0), (x + 90.0, y + 40.0), (x + 60.0, y + 70.0), (x + 35.0, y + 95.0), (x + 85.0, y + 95.0))
    return img, Detection((float(x), float(y), float(size), float(size)), 0.9, lms)


@pytest.mark.parametrize("dx, dy", [(7, -4), (-15, 9), (0, 0), (20, 20)])
def test_follow_finds_the_shifted_face_and_moves_its_landmarks(dx, dy):
    img0, face = _face_image()
    img1, truth = _face_image(dx, dy)
    found = FaceTemplate.of(img0, face).follow(img1, face.box)
    assert found is not None
    assert found.box[:2] == pytest.approx(truth.box[:2], abs=2.0) and found.box[2:] == face.box[2:]
    assert np.allclose(found.landmarks, truth.landmarks, atol=2.0) and found.score == face.score
    assert all(type(v) is float for v in found.box)
    assert all(type(v) is float for pt in found.landmarks for v in pt)  # results are JSON-serialised as they are


def test_follow_works_on_colour_frames():
    img0, face = _face_image()
    img1, truth = _face_image(5, 3)
    to_bgr = lambda g: np.repeat(g[..., None], 3, axis=2)  # noqa: E731
    found = FaceTemplate.of(to_bgr(img0), face).follow(to_bgr(img1), face.box)
    assert found is not None and found.box[:2] == pytest.approx(truth.box[:2], abs=2.0)


def test_a_face_that_is_gone_is_not_followed():
    img0, face = _face_image()
    template = FaceTemplate.of(img0, face)
    assert template.follow(np.full_like(img0, 90), face.box) is None  # flat: nothing to match
    noise = np.random.default_rng(5).integers(0, 255, img0.shape, dtype=np.uint8)
    assert template.follow(noise, face.box) is None  # another picture: no match above min_score


def test_no_template_for_a_flat_or_cut_off_face():
    img0, face = _face_image()
    assert FaceTemplate.of(np.full_like(img0, 90), face) is None
    x, y, w, h = face.box
    assert FaceTemplate.of(img0, Detection((400.0, y, w, h), 0.9, None)) is None  # leaves the image
    assert FaceTemplate.of(img0, Detection((x, y, 4.0, 4.0), 0.9, None)) is None  # too small to match


def test_a_window_at_the_image_edge_too_small_to_search_gives_none():
    img0, face = _face_image()
    template = FaceTemplate.of(img0, face)
    assert template.follow(img0[:, :160], (150.0, 100.0, 120.0, 120.0)) is None
