"""Options that change the scores a recognizer returns: class weights (multiply, renormalise) and mirror
averaging (a face and its mirror image get one answer); each with its misuse."""

import cv2
import numpy as np
import pytest

from motivnet_edge import EmotionRecognizer, RecognizerOptions
from motivnet_edge.errors import OptionError
from motivnet_edge.labels import apply_class_weights


def _faces_of(astronaut) -> list[np.ndarray]:
    """Real face crops with different answers: the astronaut's face, shifted, flipped, dimmed, blurred."""
    face = astronaut[40:200, 160:290]
    return [face, astronaut[60:220, 170:300], face[:, ::-1], (face * 0.5).astype(np.uint8),
            cv2.GaussianBlur(face, (0, 0), 6), cv2.cvtColor(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)]


def test_class_weights_multiply_each_named_class_then_renormalise(astronaut):
    faces = _faces_of(astronaut)
    with EmotionRecognizer.from_pretrained(None, detector="none", backend="onnxruntime", precision="fp32",
                                           threads=1) as plain:
        p = np.array([[f.scores[k] for k in plain.labels] for f in plain.predict_faces(faces)])
        labels = plain.labels
    weights = {"neutral": 0.5, "happy": 3.0, "anger": 2.0}  # "happy": the recognizer reads synonyms
    w = np.array([{"neutral": 0.5, "happiness": 3.0, "anger": 2.0}.get(k, 1.0) for k in labels])
    expected = p * w / (p * w).sum(1, keepdims=True)
    with EmotionRecognizer.from_pretrained(None, detector="none", backend="onnxruntime", precision="fp32",
                                           threads=1, class_weights=weights) as weighted:
        got = np.array([[f.scores[k] for k in labels] for f in weighted.predict_faces(faces)])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # eval and the benchmark that reports the trade-off weight scores with this function.
    np.testing.assert_allclose(apply_class_weights(p, labels, weights), expected, atol=1e-5)
    np.testing.assert_allclose(apply_class_weights(p, labels, None), p, atol=1e-6)
    for weight, check in ((1e-9, lambda lab: lab != "neutral"), (1e9, lambda lab: lab == "neutral")):
        with EmotionRecognizer.from_pretrained(None, detector="none", class_weights={"neutral": weight}) as r:
            assert all(check(f.label) for f in r.predict_faces(faces)), weight


@pytest.mark.parametrize("weights, match", [
    ({"contempt": 2.0}, r"no such class; its classes are \['neutral'"),
    ({"neutral": 0}, "neutral=0 must be a number > 0"), ({"neutral": -1.0}, "must be a number > 0"),
    ({"neutral": float("nan")}, "must be a number > 0"), ({"neutral": float("inf")}, "must be a number > 0"),
    ({"neutral": "0.5"}, "must be a number > 0"), ({"neutral": True}, "must be a number > 0"),
    ([("neutral", 0.5)], "must map label names to weights"),
])
def test_class_weights_misuse(tiny_package, weights, match):
    with pytest.raises(OptionError, match=match):
        EmotionRecognizer.create_from_options(RecognizerOptions(model=tiny_package, detector="none",
                                                                class_weights=weights))


def test_mirror_averages_each_face_with_its_mirror_image(astronaut):
    from motivnet_edge.preprocess import face_crop

    settings = dict(detector="none", backend="onnxruntime", precision="fp32", threads=1,
                    class_weights={"neutral": 0.5})
    with EmotionRecognizer.from_pretrained(None, **settings) as plain, \
            EmotionRecognizer.from_pretrained(None, mirror=True, **settings) as mirrored:
        crops = np.stack([face_crop(f, plain.package.preprocessing) for f in _faces_of(astronaut)])
        flipped = np.ascontiguousarray(crops[:, :, ::-1])
        expected = (plain.classify(crops) + plain.classify(flipped)) / 2
        assert np.abs(plain.classify(crops) - plain.classify(flipped)).max() > 1e-3  # the mirror reads differently
        np.testing.assert_allclose(mirrored.classify(crops), expected, atol=1e-5)
        # a face and its mirror image get one answer, and predict() goes through the same path
        np.testing.assert_allclose(mirrored.classify(flipped), mirrored.classify(crops), atol=1e-5)
        got = [f.scores for f in mirrored.predict_faces([crops[0]])][0]
        np.testing.assert_allclose([got[k] for k in mirrored.labels], mirrored.classify(crops[:1])[0], atol=1e-5)


def test_a_graph_that_reads_the_mirror_itself_is_not_read_twice(astronaut, caplog):
    """``accurate`` reads each face's mirror image in its graph: mirror=True would double its work
    for the same answer, so the recognizer reads it once and says so in the log."""
    from motivnet_edge.preprocess import face_crop

    settings = dict(detector="none", backend="onnxruntime", precision="fp32", threads=1)
    with EmotionRecognizer.from_pretrained("accurate", **settings) as plain, \
            caplog.at_level("INFO", logger="motivnet_edge.recognizer"), \
            EmotionRecognizer.from_pretrained("accurate", mirror=True, **settings) as asked:
        assert plain.package.reads_mirror and not asked.mirror and not plain.mirror
        assert "already reads each face's mirror image" in caplog.text
        crops = np.stack([face_crop(f, plain.package.preprocessing) for f in _faces_of(astronaut)])
        flipped = np.ascontiguousarray(crops[:, :, ::-1])
        np.testing.assert_allclose(plain.classify(flipped), plain.classify(crops), atol=1e-5)  # the graph's own mirror
        np.testing.assert_allclose(asked.classify(crops), plain.classify(crops), atol=1e-6)
    with EmotionRecognizer.from_pretrained(None, mirror=True, **settings) as default:
        assert not default.package.reads_mirror and default.mirror  # a plain graph: the recognizer mirrors


@pytest.mark.parametrize("mirror", ["yes", 1, None])
def test_mirror_misuse(tiny_package, mirror):
    with pytest.raises(OptionError, match="must be True or False"):
        EmotionRecognizer.create_from_options(RecognizerOptions(model=tiny_package, detector="none", mirror=mirror))
