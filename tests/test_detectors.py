import numpy as np
import pytest

from motivnet_edge.detectors import HaarDetector, NoDetector, YuNetDetector, create_detector
from motivnet_edge.errors import MotivnetError, OptionError


def _inside(box, x, y):
    bx, by, bw, bh = box
    return bx <= x <= bx + bw and by <= y <= by + bh


def test_yunet_finds_the_face_with_landmarks(astronaut, yunet_path):
    dets = YuNetDetector(yunet_path).detect(astronaut)
    assert len(dets) == 1
    d = dets[0]
    assert d.score > 0.8 and _inside(d.box, 220, 120)  # her face is around (220, 120)
    assert len(d.landmarks) == 5 and d.landmarks[0][0] < d.landmarks[1][0]


def test_yunet_on_a_large_frame_scales_back(astronaut, yunet_path):
    import cv2
    big = cv2.resize(astronaut, None, fx=3, fy=3)
    d = YuNetDetector(yunet_path).detect(big)[0]
    assert _inside(d.box, 660, 360)


def test_haar_cascade_ships_with_opencv_and_finds_the_face(astronaut):
    dets = HaarDetector().detect(astronaut)
    assert dets and _inside(dets[0].box, 220, 120) and dets[0].landmarks is None
    assert 0 < dets[0].score < 1


def test_no_face_gives_an_empty_list(yunet_path):
    blank = np.full((240, 320, 3), 127, np.uint8)
    assert YuNetDetector(yunet_path).detect(blank) == []
    assert HaarDetector().detect(blank) == []


def test_none_detector_is_the_whole_image():
    assert NoDetector().detect(np.zeros((10, 20), np.uint8))[0].box == (0, 0, 20, 10)


def test_factory_errors(tmp_path):
    with pytest.raises(MotivnetError, match="needs a model file"):
        create_detector("yunet")
    with pytest.raises(MotivnetError, match="not found"):
        create_detector("yunet", yunet_model=tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(MotivnetError, match="not a YuNet ONNX model"):
        create_detector("yunet", yunet_model=junk)
    with pytest.raises(OptionError, match="unknown detector 'mtcnn'; choose auto, yunet, haar, none"):
        create_detector("mtcnn")
    assert create_detector("auto").name == "haar"


def test_a_non_yunet_onnx_is_refused_when_the_detector_is_built(tiny_package):
    with pytest.raises(MotivnetError, match="is not a YuNet ONNX model"):
        YuNetDetector(tiny_package / "model.onnx")


def test_downscaled_detection_finds_small_tight_faces_like_full_size(yunet_path):
    """min_face=48 runs YuNet on a downscaled 640x480 frame, then refines each face at full
    size: it must find the same faces and nearly the same landmarks as a full-size pass."""
    import cv2
    from conftest import SHARED
    sets = [SHARED / "data" / "ckplus48", SHARED / "data" / "facial_expressions"]
    if not all(s.is_dir() for s in sets):
        pytest.skip("../shared/data (CK+48, facial_expressions) is absent")
    files = [f for s in sets for f in sorted(p for p in s.rglob("*") if p.suffix in (".png", ".jpg"))[::41][:40]]
    rng = np.random.default_rng(0)
    full = create_detector("yunet", yunet_model=yunet_path, min_face=1)
    fast = create_detector("yunet", yunet_model=yunet_path, min_face=48)
    assert fast.scale_for((480, 640)) < 1  # the fast pass really runs on a smaller copy
    found, missed, errors = 0, [], []
    for f in files:
        size = int(rng.integers(96, 131))
        frame = np.full((480, 640, 3), 96, np.uint8)
        x, y = int(rng.integers(0, 640 - size)), int(rng.integers(0, 480 - size))
        frame[y:y + size, x:x + size] = cv2.resize(cv2.imread(str(f)), (size, size), interpolation=cv2.INTER_CUBIC)
        ref, got = full.detect(frame), fast.detect(frame)
        if not ref:
            continue
        found += 1
        if not got:
            missed.append(f"{f.name} at {size} px")
            continue
        errors.append(np.abs(np.array(ref[0].landmarks) - np.array(got[0].landmarks)).mean() / size)
    # A face whose YuNet score sits at the threshold may flip either way: one is let go.
    assert found >= 40 and len(missed) <= 1, f"{len(missed)} of {found} missed on the downscaled frame: {missed}"
    assert np.median(errors) < 0.025 and max(errors) < 0.08, (np.median(errors), max(errors))
