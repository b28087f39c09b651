"""The FER2013 Xception peers rebuilt from HDF5 reproduce their published accuracy; ensembles remap."""

import numpy as np
import pytest

pytest.importorskip("torch", reason="teachers need the distill extra")
pytest.importorskip("h5py", reason="Keras HDF5 teachers need h5py (distill extra)")

from conftest import FERPLUS, SHARED  # noqa: E402
from motivnet_edge.datasets.fer import read_fer2013_labels  # noqa: E402
from motivnet_distill.evaluate import evaluate_probs  # noqa: E402
from motivnet_distill.teachers.load import EnsembleTeacher, MirroredTeacher, TeacherError, load_teacher  # noqa: E402
from motivnet_edge.labels import FER2013_LABELS, MOTIVNET_LABELS  # noqa: E402

XCEPTION = SHARED / "models" / "xception_fer2013"


@pytest.fixture(scope="module")
def fer2013_test():
    if not (FERPLUS / "fer2013_labels.csv").is_file():
        pytest.skip("../shared FER+ data is absent")
    return read_fer2013_labels(FERPLUS / "fer2013_labels.csv", FERPLUS / "FER2013Test")


@pytest.mark.slow
@pytest.mark.parametrize("name, published", [("fer2013_mini_XCEPTION.102-0.66.hdf5", 0.652),
                                             ("fer2013_big_XCEPTION.54-0.66.hdf5", 0.664)])
def test_xception_rebuild_reproduces_published_accuracy(fer2013_test, name, published):
    if not (XCEPTION / name).is_file():
        pytest.skip(f"{name} is absent from ../shared")
    t = load_teacher(XCEPTION / name)
    assert t.labels == FER2013_LABELS and t.preprocessing.input_size == (64, 64)
    m = evaluate_probs(t.labels, t.probs(fer2013_test.images), fer2013_test)
    # 3,573 of the 3,589 private-test images (FER+ dropped 16): within half a point of the paper.
    assert m.n == 3573 and abs(m.accuracy - published) < 0.006, m.accuracy


def test_ensemble_remaps_by_name_and_refuses_unknown_formats(tmp_path):
    files = sorted(XCEPTION.glob("*.hdf5"))
    if len(files) < 2:
        pytest.skip("../shared Xception models are absent")
    members = [load_teacher(f) for f in files]
    ens = EnsembleTeacher(members, labels=MOTIVNET_LABELS)
    faces = [np.random.default_rng(i).integers(0, 255, (48, 48), dtype=np.uint8) for i in range(4)]
    p = np.exp(ens.logits(faces))
    ref = np.mean([m.probs(faces, labels=MOTIVNET_LABELS) for m in members], axis=0)
    assert np.allclose(p, ref, atol=1e-5) and np.allclose(p.sum(1), 1, atol=1e-4)
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(TeacherError, match="unknown teacher format"):
        load_teacher(tmp_path / "model.tflite")


def test_keras_file_with_unwritten_weights_is_refused_without_allocating(tmp_path):
    import json

    import h5py

    from motivnet_distill.teachers.keras_graph import KerasFormatError

    cfg = {"class_name": "Model", "config": {"layers": [
        {"name": "dense", "class_name": "Dense", "config": {"batch_input_shape": [None, 4]}, "inbound_nodes": []}],
        "output_layers": [["dense", 0, 0]]}}
    path = tmp_path / "bomb.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        g = f.create_group("model_weights/dense/dense")
        g.create_dataset("kernel:0", shape=(40000, 40000), dtype="f4", fillvalue=1.0)  # 6.4 GB, never written
    assert path.stat().st_size < 100_000
    with pytest.raises(KerasFormatError, match="claims shape"):
        load_teacher(path)


def test_one_table_says_what_a_model_file_is(tmp_path, tiny_checkpoint, tiny_package):
    """eval, export and --teacher read the same kinds: .pt by its content, the rest by suffix."""
    from motivnet_distill.model_files import ModelFileError, model_kind

    assert model_kind(tiny_package) == "package" and model_kind("default") == "package"
    assert model_kind(tiny_checkpoint) == "student"
    torch = pytest.importorskip("torch")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "teacher.pt")
    assert model_kind(tmp_path / "teacher.pt") == "motivnet"
    for name, kind in (("a.hdf5", "keras"), ("a.h5", "keras"), ("a.onnx", "onnx"), ("a.pth", "motivnet"),
                       ("a.ckpt", "motivnet"), ("a.pt2", "motivnet"), ("a.bin", "motivnet")):
        (tmp_path / name).write_bytes(b"x")
        assert model_kind(tmp_path / name) == kind, name
    (tmp_path / "a.tflite").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="unknown model format"):
        model_kind(tmp_path / "a.tflite")
    with pytest.raises(TeacherError, match="not a teacher file"):
        load_teacher(tiny_checkpoint)


@pytest.mark.parametrize("size, pool, stride", [(6, 3, 2), (7, 3, 2), (5, 2, 2), (6, 3, 1)])
def test_keras_same_pooling_matches_tensorflow_and_stays_finite(size, pool, stride):
    """Keras "same" pooling: max over the window's real cells, average over the real cells only,
    and no -inf anywhere in the graph (an -inf activation broke INT8 calibration)."""
    import torch
    import torch.nn.functional as F

    from motivnet_distill.teachers.keras_graph import KerasLayer, _same_pad

    x = torch.randn(2, 3, size, size)
    cfg = {"pool_size": [pool, pool], "strides": [stride, stride], "padding": "same"}
    got_max = KerasLayer("MaxPooling2D", cfg, {})([x])
    want_max = F.max_pool2d(F.pad(x, _pads(size, pool, stride), value=-float("inf")), pool, stride)
    assert torch.equal(got_max, want_max)
    got_avg = KerasLayer("AveragePooling2D", cfg, {})([x])
    n = -(-size // stride)
    assert got_avg.shape[-1] == n
    # By hand: each output is the mean of the in-bounds cells of its window (TensorFlow's rule).
    left = _pads(size, pool, stride)[0]
    for i in range(n):
        for j in range(n):
            r0, c0 = i * stride - left, j * stride - left
            cells = x[..., max(r0, 0):r0 + pool, max(c0, 0):c0 + pool]
            assert torch.allclose(got_avg[..., i, j], cells.mean(dim=(-2, -1)), atol=1e-6)
    assert torch.isfinite(_same_pad(x, (pool, pool), (stride, stride), mode="replicate")).all()


def _pads(size: int, pool: int, stride: int) -> list[int]:
    total = max((-(-size // stride) - 1) * stride + pool - size, 0)
    return [total // 2, total - total // 2] * 2


def test_a_mirrored_teacher_reads_a_face_and_its_mirror_alike(tiny_package):
    inner = load_teacher(tiny_package / "model.onnx")
    t = MirroredTeacher(inner)
    rng = np.random.default_rng(0)
    size = inner.preprocessing.input_size
    faces = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(6)]
    mirrors = [np.ascontiguousarray(f[:, ::-1]) for f in faces]
    # The plain model reads a face and its mirror differently, so the equality below is the wrapper's doing.
    assert np.abs(inner.probs(faces) - inner.probs(mirrors)).max() > 1e-3
    assert np.allclose(t.logits(faces), t.logits(mirrors), atol=1e-5)
    assert np.allclose(t.probs(faces), (inner.probs(faces) + inner.probs(mirrors)) / 2, atol=1e-5)
    # A different identity keys a different teacher cache; labels and preprocessing are the model's.
    assert t.name == f"mirror({inner.name})" and t.labels == inner.labels and t.preprocessing == inner.preprocessing


def test_a_package_or_default_is_a_teacher_through_its_fp32_onnx(tiny_package):
    """README's recipe names `--teacher default`: a package folder teaches as its model.onnx does."""
    from motivnet_distill.teachers.load import load_teacher

    by_folder, by_file = load_teacher(tiny_package), load_teacher(tiny_package / "model.onnx")
    assert by_folder.name == by_file.name and load_teacher("default").labels
