"""EmotionRecognizer on photos and crops: inputs, backends, options and their misuse, threads, close,
worker spinning, memory on huge images, the embedded default's claimed accuracy."""

import dataclasses
import sys
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from motivnet_edge import BackendOptions, EmotionRecognizer, FacePrediction, RecognizerOptions
from motivnet_edge.backends import installed_backends
from motivnet_edge.errors import InvalidImageError, MotivnetError, OptionError, PackageError
from motivnet_edge.package import embedded_models


def test_predict_a_real_photo(rec, astronaut):
    faces = rec.predict(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert isinstance(f, FacePrediction) and f.label in rec.labels
    assert abs(sum(f.scores.values()) - 1) < 1e-5 and f.confidence == max(f.scores.values())
    assert list(f.scores) == list(rec.labels)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.label = "happiness"


def test_path_bytes_gray_and_bgra_inputs_agree(rec, astronaut, tmp_path):
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), astronaut)
    ref = rec.predict(astronaut)[0].scores
    for variant in (p, str(p), p.read_bytes(), np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])):
        got = rec.predict(variant)[0].scores
        assert all(abs(got[k] - ref[k]) < 1e-5 for k in ref)
    assert len(rec.predict(cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY))) == 1


def test_no_face_is_an_empty_list(rec):
    assert rec.predict(np.full((200, 200, 3), 90, np.uint8)) == []


def test_bad_image_raises(rec):
    with pytest.raises(InvalidImageError):
        rec.predict(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(InvalidImageError):
        rec.predict(b"\x89PNG\r\n\x1a\ntruncated")


@pytest.mark.parametrize("backend", installed_backends())
def test_same_scores_on_every_backend(tiny_package, yunet_path, astronaut, backend):
    with EmotionRecognizer.from_pretrained(tiny_package, backend="onnxruntime", detector="yunet",
                                           yunet_model=yunet_path) as a, \
            EmotionRecognizer.from_pretrained(tiny_package, backend=backend, detector="yunet",
                                              yunet_model=yunet_path) as b:
        sa, sb = a.predict(astronaut)[0].scores, b.predict(astronaut)[0].scores
    assert all(abs(sa[k] - sb[k]) < 1e-4 for k in sa)


def test_predict_faces_batches_crops(rec, astronaut):
    crop = astronaut[60:190, 160:290]
    out = rec.predict_faces([crop, crop[:, :, 0], crop.copy()])
    assert len(out) == 3 and out[0].box == (0.0, 0.0, 130.0, 130.0)
    assert out[0].scores == out[2].scores
    assert rec.predict_faces([]) == []


def test_min_face_and_max_faces_filter_what_is_returned(tiny_package, yunet_path, astronaut):
    import cv2

    face = astronaut[20:240, 120:330]
    canvas = np.full((480, 900, 3), 40, np.uint8)
    canvas[20:460, 20:440] = cv2.resize(face, (420, 440))   # a big face
    canvas[200:300, 600:696] = cv2.resize(face, (96, 100))    # a small one
    boxes = {}
    for kw in ({}, {"min_face": 100}, {"max_faces": 1}):
        with EmotionRecognizer.from_pretrained(tiny_package, detector="yunet", yunet_model=yunet_path, **kw) as r:
            boxes[str(kw)] = [f.box for f in r.predict(canvas)]
    assert len(boxes["{}"]) == 2
    assert len(boxes["{'min_face': 100}"]) == 1 and boxes["{'min_face': 100}"][0][2] > 100
    assert len(boxes["{'max_faces': 1}"]) == 1


def test_thread_safe_predict(rec, astronaut):
    ref = rec.predict(astronaut)[0].scores
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: rec.predict(astronaut)[0].scores, range(16)))
    assert all(o == pytest.approx(ref, abs=1e-6) for o in outs)


def test_closed_recognizer_refuses(tiny_package):
    r = EmotionRecognizer.from_pretrained(tiny_package, detector="none")
    r.close()
    with pytest.raises(MotivnetError, match="closed"):
        r.predict(np.zeros((48, 48), np.uint8))


def test_options_misuse(tiny_package, tmp_path):
    with pytest.raises(OptionError, match="max_faces"):
        EmotionRecognizer.create_from_options(RecognizerOptions(model=tiny_package, max_faces=0))
    with pytest.raises(PackageError, match="no manifest"):
        EmotionRecognizer.from_pretrained(tmp_path)
    with pytest.raises(TypeError):
        EmotionRecognizer.from_pretrained(tiny_package, "onnxruntime")  # options are keyword-only
    with pytest.raises(TypeError, match="thread"):
        EmotionRecognizer.from_pretrained(tiny_package, detector="none", thread=2)  # a misspelt option
    with pytest.raises(OptionError, match="BackendOptions"):
        EmotionRecognizer.create_from_options(RecognizerOptions(model=tiny_package, runtime={"threads": 2}))
    with pytest.raises(OptionError, match="threads"):
        EmotionRecognizer.create_from_options(RecognizerOptions(model=tiny_package,
                                                                runtime=BackendOptions(threads=-1)))


def test_runtime_keywords_reach_the_backend(tiny_package):
    """from_pretrained's backend keywords land in RecognizerOptions.runtime, declared once."""
    with EmotionRecognizer.from_pretrained(tiny_package, detector="none", backend="onnxruntime", threads=1,
                                           providers=["cpu"], autotune=False) as r:
        assert r.options.runtime == BackendOptions(threads=1, providers=("cpu",), autotune=False)
        # what reaches the backend is that, with "spin" settled (no detector: spinning on)
        assert r._backend.options == dataclasses.replace(r.options.runtime, spin=True)
        assert r._backend.session.get_session_options().intra_op_num_threads == 1


def test_embedded_default_model_works_offline(astronaut):
    with EmotionRecognizer.from_pretrained() as r:
        faces = r.predict(astronaut)
        assert r.package.provenance.get("description")
    assert len(faces) == 1 and faces[0].label in r.labels


PEAK_SCRIPT = """
import sys
from pathlib import Path
from motivnet_edge import EmotionRecognizer
with EmotionRecognizer.from_pretrained(sys.argv[1], detector=sys.argv[3], backend="onnxruntime",
                                       precision="fp32", yunet_model=sys.argv[4] if len(sys.argv) > 4 else None) as rec:
    faces = rec.predict(sys.argv[2])
peak = [l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:")][0]
print(len(faces), int(peak.split()[1]) // 1024)
"""


def _big_images(tmp_path, astronaut):
    gray = np.zeros((9999, 9999), np.uint8)  # 97 KB as PNG, 100 MP decoded
    cv2.imwrite(str(tmp_path / "gray_9999.png"), gray)
    del gray
    rgba16 = np.zeros((5000, 5000, 4), np.uint16)  # 200 MB as a 16-bit RGBA canvas
    rgba16[..., 3] = 65535
    cv2.imwrite(str(tmp_path / "rgba16.png"), rgba16)
    del rgba16
    photo = np.full((8000, 8000, 3), 120, np.uint8)  # 64 MP photo with a real face in it
    photo[3000:4024, 3000:4024] = cv2.resize(astronaut, (1024, 1024))
    cv2.imwrite(str(tmp_path / "photo_8000.jpg"), photo)
    return ["gray_9999.png", "rgba16.png", "photo_8000.jpg"]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
def test_huge_images_stay_under_1_gb(tiny_package, yunet_path, astronaut, tmp_path):
    import subprocess
    import sys as _sys

    for name in _big_images(tmp_path, astronaut):
        for det in ("haar", "yunet"):
            args = [_sys.executable, "-c", PEAK_SCRIPT, str(tiny_package), str(tmp_path / name), det, str(yunet_path)]
            r = subprocess.run(args, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr[-2000:]
            n_faces, peak_mb = map(int, r.stdout.split()[-2:])
            assert peak_mb < 1024, (name, det, peak_mb)
            if name == "photo_8000.jpg" and det == "yunet":
                assert n_faces == 1  # the face is still found on the downscaled copy


def test_results_are_immutable_through_and_through(rec, astronaut):
    f = rec.predict(astronaut)[0]
    with pytest.raises(TypeError):
        f.scores["happiness"] = 1.0
    assert f.to_dict()["scores"] == {k: round(v, 4) for k, v in f.scores.items()}


def test_close_waits_for_running_calls_and_then_refuses(tiny_package):
    import threading

    r = EmotionRecognizer.from_pretrained(tiny_package, detector="none", threads=1)
    crops = np.zeros((64, 48, 48), np.uint8)
    errors, done = [], []

    def worker():
        try:
            while True:
                r.classify(crops)
                done.append(1)
        except Exception as exc:  # noqa: BLE001 - the test inspects whatever ends the loop
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    while len(done) < 8:
        pass
    r.close()
    for t in threads:
        t.join(timeout=30)
    assert len(errors) == 4 and all(isinstance(e, MotivnetError) and "closed" in str(e) for e in errors), errors


@pytest.mark.slow
@pytest.mark.parametrize("model", embedded_models())
def test_each_embedded_model_reproduces_the_accuracy_its_manifest_claims(model):
    """Every accuracy in each shipped manifest (metrics.test) is re-measured here from the shipped files."""
    from conftest import SHARED

    pytest.importorskip("motivnet_distill.evaluate")
    from motivnet_edge.datasets.domains import crops_for, test_sets
    from motivnet_distill.evaluate import evaluate_probs, package_probs
    from motivnet_edge.detectors import YuNetDetector
    from motivnet_edge.package import resolve_model

    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED}/data is absent: no test sets on this machine")
    rec = EmotionRecognizer.from_pretrained(model, detector="none")
    claimed, pp = rec.package.metrics["test"], rec.package.preprocessing
    rec.close()
    sets = test_sets(SHARED, YuNetDetector(SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"))
    checked = 0
    for name, by_precision in claimed.items():
        faces = crops_for(sets[name], pp)
        missed = np.array([d is None for d in sets[name].detections]) if sets[name].detections else None
        for precision, m in by_precision.items():
            labels, probs = package_probs(resolve_model(model), faces, backend="onnxruntime", precision=precision)
            got = evaluate_probs(labels, probs, faces, unanswered=missed)
            # fp32 reproduces to rounding; INT8 kernels differ between CPUs (VNNI vs AVX2 u8s8), so
            # an int8 figure measured on another CPU may move by a few faces.
            tol = 6e-4 if precision == "fp32" else 5e-3
            assert got.n == m["n"] and got.accuracy == pytest.approx(m["accuracy"], abs=tol), (name, precision)
            checked += 1
    assert checked >= 14  # seven test sets, fp32 and int8


@pytest.mark.parametrize("detector, spin, spins", [("none", None, True), ("haar", None, False),
                                                   ("haar", True, True), ("none", False, False)])
def test_ort_workers_spin_only_without_a_detector_unless_set(tiny_package, detector, spin, spins):
    with EmotionRecognizer.from_pretrained(tiny_package, detector=detector, backend="onnxruntime",
                                           precision="fp32", threads=2, spin=spin) as rec:
        assert ("do not spin" not in rec.describe()) is spins, rec.describe()


def test_predict_faces_refuses_one_bare_image(rec, astronaut):
    """One array is one image, not a list of crops: iterating it would make each row a face."""
    with pytest.raises(InvalidImageError, match="pass \\[crop\\] for one face"):
        rec.predict_faces(astronaut)
    with pytest.raises(InvalidImageError, match="pass \\[crop\\] for one face"):
        rec.predict_faces(astronaut[:, :, 0])
    assert len(rec.predict_faces(np.stack([astronaut[:100, :100, 0]] * 3))) == 3  # (N, H, W): a batch



def test_threads_reach_opencv(tiny_package):
    """Issue 43 (9): threads=1 runs YuNet and the resizes on one OpenCV thread too."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(4)  # as if OpenCV had sized its pool to a 4-core device
    try:
        with EmotionRecognizer.from_pretrained(tiny_package, detector="none", threads=1):
            assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)
