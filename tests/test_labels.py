import numpy as np
import pytest

from motivnet_edge.errors import LabelError
from motivnet_edge.labels import FER2013_LABELS, MOTIVNET_LABELS, canonical, remap_indices, remap_scores


def test_synonyms_are_canonical():
    assert canonical("Happy") == "happiness" and canonical("angry") == "anger"


def test_fer2013_to_motivnet_by_name():
    idx = remap_indices(FER2013_LABELS, MOTIVNET_LABELS)
    assert [MOTIVNET_LABELS[i] for i in idx] == ["anger", "disgust", "fear", "happiness", "sadness",
                                                  "surprise", "neutral"]


def test_missing_class_needs_an_explicit_choice():
    with pytest.raises(LabelError, match="contempt"):
        remap_indices(["happy", "contempt"], MOTIVNET_LABELS)
    assert remap_indices(["happy", "contempt"], MOTIVNET_LABELS, mapping={"contempt": None}).tolist() == [1, -1]
    assert remap_indices(["contempt"], MOTIVNET_LABELS, mapping={"contempt": "disgust"}).tolist() == [5]


def test_remap_scores_reorders_and_refuses_different_sets():
    s = np.arange(7.0)
    out = remap_scores(s, FER2013_LABELS, MOTIVNET_LABELS)
    assert out[MOTIVNET_LABELS.index("neutral")] == 6 and out[MOTIVNET_LABELS.index("anger")] == 0
    with pytest.raises(LabelError):
        remap_scores(np.zeros(2), ["a", "b"], ["a", "c"])


def test_remap_scores_drops_and_zero_fills_when_asked():
    p = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    out = remap_scores(p, ["happy", "contempt", "sad", "angry"], ["anger", "sadness", "fear", "happiness"],
                       on_missing="drop")
    assert out.tolist() == [[pytest.approx(0.4), pytest.approx(0.3), 0.0, pytest.approx(0.1)]]  # contempt dropped


def test_softmax_is_stable_and_normalised():
    from motivnet_edge.labels import softmax
    p = softmax(np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]]))
    assert p.dtype == np.float32 and np.allclose(p.sum(1), 1)
    assert p[0].tolist() == [1.0, 0.0, 0.0] and np.allclose(p[1], 1 / 3)
