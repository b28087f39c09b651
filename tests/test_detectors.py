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
