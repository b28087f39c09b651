"""What the student learns from: loss terms, seeded views, degraded and mixed faces, teacher caches,
online and per-domain teachers."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="distillation needs the distill extra")

from motivnet_distill.teachers.cache import build_cache  # noqa: E402
from motivnet_distill.train import TrainConfig, distill_loss  # noqa: E402
from motivnet_distill.views import view_image, view_params  # noqa: E402
from motivnet_edge.labels import MOTIVNET_LABELS  # noqa: E402
from motivnet_edge.preprocess import Preprocessing  # noqa: E402

from distill_helpers import CountingTeacher, synthetic, tiny_cfg  # noqa: E402


def test_loss_terms():
    cfg = TrainConfig(label_weight=1.0, kd_weight=0.0)
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    soft = torch.tensor([[1.0, 0.0, 0.0]])
    assert distill_loss(logits, soft, None, cfg).item() == pytest.approx(-torch.log_softmax(logits, 1)[0, 0].item())
    kd = TrainConfig(label_weight=0.0, kd_weight=1.0, temperature=2.0)
    assert distill_loss(logits, soft, logits.clone(), kd).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(logits, soft, torch.tensor([[-1.0, 0.0, 2.0]]), kd).item() > 0.1
    assert distill_loss(logits, torch.zeros(1, 3), None, cfg).item() == 0.0  # unlabelled row
    # a row without a teacher target (NaN: a domain trained on labels alone) has no KD term
    both, far = torch.cat([logits, logits]), torch.tensor([[-1.0, 0.0, 2.0]])
    assert distill_loss(both, None, torch.cat([far, torch.full((1, 3), float("nan"))]), kd).item() == \
        pytest.approx(distill_loss(logits, None, far, kd).item())
    assert distill_loss(logits, None, torch.full((1, 3), float("nan")), kd).item() == 0.0


def test_views_are_seeded_and_view0_is_identity():
    img = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    assert view_image(img, 0, 5, 0) is img
    assert np.array_equal(view_image(img, 0, 5, 3), view_image(img, 0, 5, 3))
    assert not np.array_equal(view_image(img, 0, 5, 3), view_image(img, 1, 5, 3))
    assert view_params(0, 5, 3) != view_params(0, 6, 3)


def test_mix_faces_mixes_pixels_and_labels_alike_across_sizes_and_channels():
    from motivnet_distill.views import mix_faces

    r = np.random.default_rng(0)
    imgs = [r.integers(0, 255, (48, 48), dtype=np.uint8), r.integers(0, 255, (48, 48), dtype=np.uint8),
            r.integers(0, 255, (96, 96, 3), dtype=np.uint8), r.integers(0, 255, (64, 64), dtype=np.uint8)]
    soft = np.eye(7, dtype=np.float32)[[0, 1, 2, 3]]
    out, mixed, lam = mix_faces(imgs, soft, np.random.default_rng(5), 0.4)
    again, mixed2, lam2 = mix_faces(imgs, soft, np.random.default_rng(5), 0.4)
    assert all(np.array_equal(a, b) for a, b in zip(out, again)) and np.array_equal(lam, lam2)  # seeded
    assert [o.shape for o in out] == [im.shape for im in imgs] and all(o.dtype == np.uint8 for o in out)
    assert np.all((lam > 0) & (lam < 1)) and np.allclose(mixed.sum(1), 1)
    partner = np.random.default_rng(5)
    partner.beta(0.4, 0.4, 4)
    partner = partner.permutation(4)
    for i, j in enumerate(partner):
        assert mixed[i, i] == pytest.approx(lam[i] + (1 - lam[i]) * (i == j), abs=1e-6)
        if imgs[j].shape == imgs[i].shape:  # same size and channels: the pixels are the weighted sum
            want = np.rint(lam[i] * imgs[i].astype(np.float32) + (1 - lam[i]) * imgs[j].astype(np.float32))
            assert np.array_equal(out[i], want.astype(np.uint8))


def test_online_teacher_targets_are_the_cached_ones_and_train_calls_it_per_batch(tmp_path):
    from motivnet_distill.teachers.cache import teacher_logprobs
    from motivnet_distill.train import train

    fs, t = synthetic(12), CountingTeacher()
    cached = build_cache(t, fs, tmp_path / "cache", labels=MOTIVNET_LABELS, views=2, progress=False)
    imgs = [view_image(fs.images[i], 0, i, v) for i in range(12) for v in range(2)]
    assert np.allclose(teacher_logprobs(t, imgs, MOTIVNET_LABELS), cached.astype(np.float32), atol=2e-3)
    seen = []

    def online(images):
        seen.append(len(images))
        return teacher_logprobs(t, images, MOTIVNET_LABELS)
    cfg = replace(tiny_cfg(kd_weight=1.0, online_teacher=True, mixup=0.3), views=50)
    train(tmp_path / "run", synthetic(32), synthetic(16, seed=1), Preprocessing(), cfg, online_teacher=online,
          progress=False)
    assert seen == [16, 16]  # every batch of the one epoch, as the student read it
    log = json.loads((tmp_path / "run" / "log.jsonl").read_text())
    assert 0 <= log["train_agreement"] <= 1
    with pytest.raises(ValueError, match="online_teacher is set exactly when"):
        train(tmp_path / "run2", synthetic(32), synthetic(16, seed=1), Preprocessing(), cfg, progress=False)
    from motivnet_distill.train import TrainConfigError

    with pytest.raises(TrainConfigError, match="add --online-teacher"):
        train(tmp_path / "run3", synthetic(32), synthetic(16, seed=1), Preprocessing(), tiny_cfg(kd_weight=1.0, mixup=0.3),
              teacher_logits=np.zeros((32, 1, 7), np.float32), progress=False)


def test_cache_builds_once_and_remaps_labels(tmp_path):
    fs, t = synthetic(20), CountingTeacher()
    c = build_cache(t, fs, tmp_path, labels=MOTIVNET_LABELS, views=3, batch=7, progress=False)
    assert c.shape == (60, 7) and c.dtype == np.float16 and t.calls == 60
    again = build_cache(t, fs, tmp_path, labels=MOTIVNET_LABELS, views=3, batch=7, progress=False)
    assert t.calls == 60 and np.array_equal(c, again)
    # Teacher order is reversed: its last output ("neutral") lands at MotivNet index 0.
    probs = t.probs([fs.images[0]], labels=MOTIVNET_LABELS)
    assert np.allclose(np.exp(c[0].astype(np.float32)), probs[0], atol=2e-3)
    build_cache(t, fs, tmp_path, labels=MOTIVNET_LABELS, views=2, progress=False)
    assert t.calls == 60 + 1 + 40  # the probs() call above, then other views -> other key


def test_cache_resumes_after_interruption(tmp_path):
    fs, t = synthetic(20), CountingTeacher()

    class Boom(Exception):
        pass

    real = t.run
    state = {"n": 0}

    def flaky(x):
        state["n"] += 1
        if state["n"] == 3:
            raise Boom
        return real(x)
    t.run = flaky
    with pytest.raises(Boom):
        build_cache(t, fs, tmp_path, labels=MOTIVNET_LABELS, views=2, batch=8, progress=False)
    t.run, t.calls = real, 0
    full = build_cache(t, fs, tmp_path, labels=MOTIVNET_LABELS, views=2, batch=8, progress=False)
    assert t.calls == 40 - 16  # two batches of 8 were already done
    ref = build_cache(CountingTeacher(), fs, tmp_path / "fresh", labels=MOTIVNET_LABELS, views=2, progress=False)
    assert np.array_equal(full, ref)


def test_degrade_gives_a_poorer_capture_of_the_same_face():
    from motivnet_distill.views import DEGRADATIONS, degrade

    face = np.zeros((96, 96), np.uint8)
    face[30:70, 20:76] = 200  # an edge the blur and JPEG must soften, not move
    kinds = {}
    for seed in range(30):
        out = degrade(face, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.ndim == 2
        if out.shape != face.shape:
            kinds["smaller"] = out.shape
            assert 0.3 * 96 - 1 <= out.shape[0] <= 0.9 * 96 + 1
        elif not np.array_equal(out, face):
            kinds.setdefault("changed", 0)
            assert abs(float(out.mean()) - float(face.mean())) < 6  # same picture, not another one
    assert "smaller" in kinds and "changed" in kinds and len(DEGRADATIONS) == 3
    color = np.dstack([face] * 3)
    assert all(degrade(color, np.random.default_rng(s)).shape[2] == 3 for s in range(6))
    assert np.array_equal(degrade(face, np.random.default_rng(7)), degrade(face, np.random.default_rng(7)))


def test_degraded_faces_reach_the_student_and_the_teacher_reads_them_clean(tmp_path, monkeypatch):
    from motivnet_distill import train as train_mod
    from motivnet_distill.teachers.cache import teacher_logprobs

    fs, t, teacher_saw, student_saw = synthetic(32), CountingTeacher(), [], []
    real_batch = train_mod.batch_of
    monkeypatch.setattr(train_mod, "batch_of", lambda imgs, pp: (student_saw.extend(imgs), real_batch(imgs, pp))[1])

    def online(images):
        teacher_saw.extend(images)
        return teacher_logprobs(t, images, MOTIVNET_LABELS)
    cfg = replace(tiny_cfg(kd_weight=1.0, online_teacher=True, degrade_prob=0.9), views=4)
    train_mod.train(tmp_path / "run", fs, synthetic(16, seed=1), Preprocessing(), cfg, online_teacher=online,
                    progress=False)
    student_saw = student_saw[:32]  # the epoch's batches; evaluation batches follow
    assert len(teacher_saw) == 32
    differ = sum(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(teacher_saw, student_saw))
    assert differ >= 20  # about 90 % degraded
    clean = {view_image(fs.images[i], 0, i, v).tobytes() for i in range(32) for v in range(4)}
    assert all(im.tobytes() in clean for im in teacher_saw)  # the teacher got untouched views


def _mean_teacher(path, weights):
    """An ONNX classifier whose logits are the face's mean pixel times ``weights``, labels in metadata."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1, 2, 3], keepdims=0),
         helper.make_node("Unsqueeze", ["m", "axis"], ["col"]),
         helper.make_node("Mul", ["col", "w"], ["logits"])],
        "mean_teacher", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 48, 48])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])],
        [helper.make_tensor("w", TensorProto.FLOAT, [7], weights), helper.make_tensor("axis", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    for k, v in {"labels": json.dumps(list(MOTIVNET_LABELS)),
                 "preprocessing": json.dumps(Preprocessing(input_size=(48, 48)).to_dict())}.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


def test_cache_of_a_slice_reads_the_students_views_of_those_rows(tmp_path):
    fs, t = synthetic(20), CountingTeacher()
    full = build_cache(t, fs, tmp_path / "a", labels=MOTIVNET_LABELS, views=3, progress=False)
    part = build_cache(t, fs.subset(np.arange(5, 12)), tmp_path / "a", labels=MOTIVNET_LABELS, views=3,
                       progress=False, index_offset=5)
    assert np.array_equal(part, full[5 * 3:12 * 3])  # views of row 5+i, not of row i
    unshifted = build_cache(t, fs.subset(np.arange(5, 12)), tmp_path / "a", labels=MOTIVNET_LABELS, views=3,
                            progress=False)
    assert not np.array_equal(unshifted, part)  # another key, other views


def test_a_domain_teacher_replaces_the_main_teachers_targets_on_its_rows_only(tmp_path):
    from motivnet_distill.targets import teacher_targets
    from motivnet_distill.teachers.cache import teacher_logprobs
    from motivnet_distill.teachers.load import load_teacher

    main = _mean_teacher(tmp_path / "main.onnx", [0.0, 0.02, 0, 0, 0, 0, 0])
    fer = _mean_teacher(tmp_path / "fer.onnx", [0.03, 0, 0, 0, 0, 0, 0])
    fs, extra = synthetic(12), {"provenance": {}}
    logits, online = teacher_targets([main], fs, MOTIVNET_LABELS, tmp_path / "cache", 2, 0, False, False, extra,
                                      routed={"ferplus": (slice(4, 10), [fer])})
    assert online is None and logits.shape == (12, 2, 7)
    for path, rows in ((main, [0, 1, 2, 3, 10, 11]), (fer, range(4, 10))):
        t = load_teacher(path)
        for i in rows:
            want = teacher_logprobs(t, [view_image(fs.images[i], 0, i, v) for v in range(2)], MOTIVNET_LABELS)
            assert np.allclose(logits[i], want, atol=2e-3), (path.name, i)
    assert extra["provenance"]["domain_teachers"]["ferplus"].startswith("onnx:")
    assert "; ferplus: onnx:" in extra["provenance"]["teacher"]  # --resume compares this name
    # DOMAIN=none: those rows keep no target (labels only); the others keep the main teacher's
    extra = {"provenance": {}}
    quiet, _ = teacher_targets([main], fs, MOTIVNET_LABELS, tmp_path / "cache", 2, 0, False, False, extra,
                               routed={"expw": (slice(4, 10), ["none"])})
    assert np.isnan(quiet[4:10]).all() and np.allclose(quiet[:4], logits[:4]) and np.isfinite(quiet[10:]).all()
    assert extra["provenance"]["domain_teachers"] == {"expw": "none"}
    assert extra["provenance"]["teacher"].endswith("; expw: none (labels only)")
    with pytest.raises(Exception, match="do not also give expw a teacher file"):
        teacher_targets([main], fs, MOTIVNET_LABELS, tmp_path / "cache", 2, 0, False, False, {"provenance": {}},
                        routed={"expw": (slice(4, 10), ["none", fer])})


@pytest.mark.parametrize("args, message", [
    (["--data", ".", "--domain-teacher", "ferplus=t.onnx"], "apply to --domains (or --pack) training"),
    (["--domains", ".", "--domain-teacher", "imagenet=t.onnx"], "DOMAIN=FILE"),
    (["--domains", ".", "--domain-teacher", "ferplus"], "DOMAIN=FILE"),
    (["--domains", ".", "--domain-teacher", "ferplus=t.onnx"], "add --teacher FILE"),
    (["--domains", ".", "--teacher", "t.onnx", "--online-teacher", "--domain-teacher", "ferplus=t.onnx"],
     "drop --online-teacher"),
])
def test_domain_teacher_misuse_is_a_usage_error(tmp_path, args, message):
    r = subprocess.run([sys.executable, "-m", "motivnet_edge.cli", "distill", "--out", str(tmp_path / "run"), *args],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, needs", [(["--online-teacher"], "--teacher FILE"),
                                          (["--teacher", "t.onnx", "--mixup", "0.2"], "--online-teacher"),
                                          (["--mixup", "-1"], "'--mixup'"),
                                          (["--teacher", "t.onnx", "--views", "65"], "add --online-teacher (no cache)")])
def test_online_teacher_and_mixup_misuse_is_refused_with_the_fix(tmp_path, flags, needs):
    (tmp_path / "t.onnx").write_bytes(b"not read: the options are checked first")
    flags = [str(tmp_path / f) if f == "t.onnx" else f for f in flags]
    r = subprocess.run([sys.executable, "-m", "motivnet_edge.cli", "distill", "--data", str(tmp_path),
                        "--out", str(tmp_path / "run"), *flags], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and needs in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_mirror_teacher_without_a_teacher_is_refused_with_the_fix(tmp_path):
    r = subprocess.run([sys.executable, "-m", "motivnet_edge.cli", "distill", "--data", str(tmp_path),
                        "--out", str(tmp_path / "run"), "--mirror-teacher"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--teacher FILE" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()
