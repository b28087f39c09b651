"""Issue 41's teacher tools: the ensemble's candidates and score, the fit-gap sample (benchmarks/)."""

import numpy as np
import pytest

pytest.importorskip("torch", reason="the teacher tools read teachers through the distill extra")

from conftest import load_benchmark  # noqa: E402
from distill_helpers import CountingTeacher, synthetic  # noqa: E402


def test_candidates_are_each_member_every_pair_and_all_of_three():
    ens = load_benchmark("ensemble_teacher")
    assert ens.candidates(["a", "b"]) == [("a",), ("b",), ("a", "b")]
    assert ens.candidates(["a", "b", "c"]) == [("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"),
                                               ("a", "b", "c")]


def test_an_ensemble_scores_the_argmax_of_its_mean_probability_on_labelled_faces_only():
    ens = load_benchmark("ensemble_teacher")
    faces = synthetic(6)
    faces.hard[:] = [0, 1, 2, 3, -1, 1]  # the unlabelled face is left out of every probability and score
    sets = {"d": faces}
    sure = np.eye(7)[[0, 1, 2, 0, 0]]           # right on 3 of the 5 labelled faces (0 1 2 3 1)
    unsure = 0.3 * np.eye(7)[[1, 1, 2, 3, 1]]   # right on 4 of 5, but less sure than ``sure`` everywhere
    assert ens.score([{"d": sure}], sets) == {"pooled": 0.6, "domains": {"d": 0.6}}
    assert ens.score([{"d": unsure}], sets)["pooled"] == 0.8
    # The mean follows the surer member where they disagree: faces 0, 3 and 4 go to class 0 (right, wrong, wrong).
    assert ens.score([{"d": sure}, {"d": unsure}], sets)["pooled"] == 0.6


def test_member_probabilities_skip_unlabelled_faces_and_follow_the_sets_label_order():
    ens = load_benchmark("ensemble_teacher")
    faces = synthetic(5)
    faces.hard[1] = -1
    teacher = CountingTeacher()  # its labels are the sets' in reverse: probs must come back remapped
    probs = ens.member_probs(teacher, {"d": faces})["d"]
    assert probs.shape == (4, 7) and teacher.calls == 4
    own = teacher.probs([faces.images[i] for i in (0, 2, 3, 4)])  # in the teacher's own (reversed) order
    np.testing.assert_allclose(probs, own[:, ::-1], atol=1e-6)


def test_the_fit_gap_sample_is_seeded_labelled_and_bounded():
    fit_gap = load_benchmark("fit_gap")
    faces = synthetic(40)
    faces.hard[:10] = -1
    a, b = fit_gap.sample(faces, 12), fit_gap.sample(faces, 12)
    assert len(a) == 12 and a.files == b.files and (a.hard >= 0).all()
    assert a.files != fit_gap.sample(faces, 12, seed=1).files
    assert len(fit_gap.sample(faces, 100)) == 30  # never more than the labelled faces there are


def test_a_view_moves_the_face_by_its_fraction_of_the_side_and_keeps_the_image_shape():
    views = load_benchmark("test_time_views")
    image = np.zeros((40, 40), np.uint8)
    image[20, 20] = 255
    np.testing.assert_array_equal(views.moved(image, 0.0, 0.0, 1.0), image)
    right = views.moved(image, 0.1, 0.0, 1.0)      # 4 pixels to the right, nothing up or down
    assert right.shape == image.shape and np.unravel_index(right.argmax(), right.shape) == (20, 24)
    down = views.moved(image, 0.0, 0.1, 1.0)
    assert np.unravel_index(down.argmax(), down.shape) == (24, 20)
    image[:, :2] = 90                              # a border column: replicated into the gap a shift leaves
    assert (views.moved(image, 0.1, 0.0, 1.0)[:, :4] == 90).all()
    square = np.zeros((40, 40), np.uint8)
    square[16:24, 16:24] = 255                     # scaled about the centre: the square grows, centred
    big = views.moved(square, 0.0, 0.0, 1.5) > 127
    rows, cols = np.flatnonzero(big.any(1)), np.flatnonzero(big.any(0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (14, 25, 14, 25)


def test_every_view_set_starts_from_the_face_as_it_is_and_names_known_views():
    views = load_benchmark("test_time_views")
    assert views.VIEWS["identity"] == (0.0, 0.0, 1.0)
    for label, members in views.CANDIDATES.items():
        assert members[0] == "identity" and set(members) <= set(views.VIEWS), label
    teacher = CountingTeacher()
    faces = synthetic(3)
    moved = views.member_probs(views.Moved(teacher, views.VIEWS["left"]), {"d": faces})["d"]
    plain = views.member_probs(teacher, {"d": faces})["d"]
    assert moved.shape == plain.shape == (3, 7) and teacher.calls == 6


def test_a_teacher_that_cannot_be_read_ends_the_script_with_its_name_and_no_traceback(tmp_path):
    ens = load_benchmark("ensemble_teacher")
    with pytest.raises(SystemExit, match="has no data/: point --shared"):
        ens.teachers_and_sets(["default"], tmp_path, tmp_path / "cache", tool="test_time_views")
    if not (ens.SHARED / "data").is_dir():
        pytest.skip(f"the unreadable-teacher case needs the shared data folder: {ens.SHARED} has no data/")
    with pytest.raises(SystemExit, match=r"^test_time_views: teacher .*missing\.onnx does not exist"):
        ens.teachers_and_sets([str(tmp_path / "missing.onnx")], ens.SHARED, tmp_path / "cache", tool="test_time_views")
