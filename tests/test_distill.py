"""Student, loss, teacher cache, training resume after a kill, DDP on CPU."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="distillation needs the distill extra")

from conftest import load_benchmark  # noqa: E402
from motivnet_distill.teacher_cache import build_cache  # noqa: E402
from motivnet_distill.data import FaceSet  # noqa: E402
from motivnet_distill.student import PRESETS, StudentConfig, count_flops, create_student, load_timm_weights  # noqa: E402
from motivnet_distill.teachers import Teacher  # noqa: E402
from motivnet_distill.train import TrainConfig, distill_loss  # noqa: E402
from motivnet_distill.views import view_image, view_params  # noqa: E402
from motivnet_edge.labels import MOTIVNET_LABELS  # noqa: E402
from motivnet_edge.preprocess import Preprocessing  # noqa: E402


def synthetic(n=64, seed=0):
    """Faces whose class is readable from pixel statistics, so a student can learn something."""
    r = np.random.default_rng(seed)
    hard = r.integers(0, 7, n)
    imgs = [np.clip(r.normal(30 + 30 * h, 20, (48, 48)), 0, 255).astype(np.uint8) for h in hard]
    return FaceSet(imgs, np.eye(7, dtype=np.float32)[hard], hard.astype(np.int64), MOTIVNET_LABELS,
                   [f"s{i}.png" for i in range(n)])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_count(name):
    cfg = StudentConfig(**{**PRESETS[name], "img_size": (48, 48) if name != "vit_tiny" and name != "vit_small"
                           else (224, 224)})
    m = create_student(name, img_size=cfg.img_size)
    x = torch.zeros(2, 1, *cfg.img_size)
    assert m(x).shape == (2, 7)


def test_flop_count_of_a_plain_vit_is_its_matmuls_and_patch_conv():
    cfg = StudentConfig(**PRESETS["vit_nano"], img_size=(48, 48))
    n, d, h = cfg.grid[0] * cfg.grid[1] + (cfg.pool == "cls"), cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)
    macs = cfg.grid[0] * cfg.grid[1] * cfg.patch_size ** 2 * d  # patch conv, one channel
    macs += cfg.depth * (n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * h) + d * 7
    assert count_flops(create_student("vit_nano"), (1, 1, 48, 48)) == 2 * macs
    # the shipped default's manifest figure comes from the same counter
    from motivnet_edge import load_package
    from motivnet_edge.recognizer import DEFAULT_MODEL
    gflops = load_package(DEFAULT_MODEL).metrics["gflops"]
    assert round(count_flops(create_student("vit_hybrid_pico"), (1, 1, 48, 48)) / 1e9, 5) == gflops


def test_bad_student_configs():
    with pytest.raises(ValueError, match="divisible"):
        create_student("vit_nano", embed_dim=130)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        create_student("vit_nano", img_size=(50, 50))
    with pytest.raises(ValueError, match="unknown student"):
        create_student("resnet50")
    with pytest.raises(ValueError, match="stem_act must be one of gelu, relu"):
        create_student("vit_hybrid_pico", stem_act="swish")


def test_relu_stem_has_the_lite_stems_weights_and_fusable_activations():
    """pico_lite_relu differs from pico_lite only in its stem's activations (ReLU: the runtimes fuse
    it into the convolution), so a pico_lite's weights start it; configs saved before the setting
    existed read as GELU."""
    lite, relu = create_student("vit_hybrid_pico_lite"), create_student("vit_hybrid_pico_lite_relu")
    assert {k: v.shape for k, v in lite.state_dict().items()} == {k: v.shape for k, v in relu.state_dict().items()}
    acts = [type(m) for m in relu.patch_embed.stem if not isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    assert acts and set(acts) == {torch.nn.ReLU}
    assert torch.nn.GELU in {type(m) for m in lite.patch_embed.stem}
    old = {k: v for k, v in dataclasses.asdict(lite.cfg).items() if k != "stem_act"}
    assert StudentConfig.from_dict(old).stem_act == "gelu"


def test_timm_checkpoint_initialises_a_student(tmp_path):
    # A file laid out like timm's vit_tiny (3-channel, 16 px patches, class token, 14x14 grid).
    src = create_student("vit_tiny", in_chans=3, pool="cls", num_classes=1000)
    path = tmp_path / "deit_tiny.pth"
    torch.save({"model": src.state_dict()}, path)
    dst = create_student("vit_tiny", img_size=(64, 64), in_chans=1, pool="cls")
    missing = load_timm_weights(dst, path)
    assert missing == ["head.bias", "head.weight"]  # 1000 classes vs 7: head skipped
    assert torch.allclose(dst.blocks[3].attn.qkv.weight, src.blocks[3].attn.qkv.weight)
    assert torch.allclose(dst.patch_embed.proj.weight, src.patch_embed.proj.weight.sum(1, keepdim=True))
    assert dst.pos_embed.shape == (1, 1 + 16, 192)
    torch.save({"x": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no timm ViT weights"):
        load_timm_weights(dst, tmp_path / "other.pth")


def test_loss_terms():
    cfg = TrainConfig(label_weight=1.0, kd_weight=0.0)
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    soft = torch.tensor([[1.0, 0.0, 0.0]])
    assert distill_loss(logits, soft, None, cfg).item() == pytest.approx(-torch.log_softmax(logits, 1)[0, 0].item())
    kd = TrainConfig(label_weight=0.0, kd_weight=1.0, temperature=2.0)
    assert distill_loss(logits, soft, logits.clone(), kd).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(logits, soft, torch.tensor([[-1.0, 0.0, 2.0]]), kd).item() > 0.1
    assert distill_loss(logits, torch.zeros(1, 3), None, cfg).item() == 0.0  # unlabelled row


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
    from motivnet_distill.teacher_cache import teacher_logprobs
    from motivnet_distill.train import train

    fs, t = synthetic(12), CountingTeacher()
    cached = build_cache(t, fs, tmp_path / "cache", labels=MOTIVNET_LABELS, views=2, progress=False)
    imgs = [view_image(fs.images[i], 0, i, v) for i in range(12) for v in range(2)]
    assert np.allclose(teacher_logprobs(t, imgs, MOTIVNET_LABELS), cached.astype(np.float32), atol=2e-3)
    seen = []

    def online(images):
        seen.append(len(images))
        return teacher_logprobs(t, images, MOTIVNET_LABELS)
    cfg = replace(_tiny_cfg(kd_weight=1.0, online_teacher=True, mixup=0.3), views=50)
    train(tmp_path / "run", synthetic(32), synthetic(16, seed=1), Preprocessing(), cfg, online_teacher=online,
          progress=False)
    assert seen == [16, 16]  # every batch of the one epoch, as the student read it
    log = json.loads((tmp_path / "run" / "log.jsonl").read_text())
    assert 0 <= log["train_agreement"] <= 1
    with pytest.raises(ValueError, match="online_teacher is set exactly when"):
        train(tmp_path / "run2", synthetic(32), synthetic(16, seed=1), Preprocessing(), cfg, progress=False)
    from motivnet_distill.train import TrainConfigError

    with pytest.raises(TrainConfigError, match="add --online-teacher"):
        train(tmp_path / "run3", synthetic(32), synthetic(16, seed=1), Preprocessing(), _tiny_cfg(kd_weight=1.0, mixup=0.3),
              teacher_logits=np.zeros((32, 1, 7), np.float32), progress=False)


class CountingTeacher(Teacher):
    def __init__(self):
        pp = Preprocessing(input_size=(48, 48))
        super().__init__("count", tuple(reversed(MOTIVNET_LABELS)), pp,
                         lambda x: np.stack([x.mean((1, 2, 3)) * k for k in range(7)], 1))
        self.calls = 0

    def logits(self, images, *, batch=256):
        self.calls += len(images)
        return super().logits(images, batch=batch)


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
    from motivnet_distill.teacher_cache import teacher_logprobs

    fs, t, teacher_saw, student_saw = synthetic(32), CountingTeacher(), [], []
    real_batch = train_mod.batch_of
    monkeypatch.setattr(train_mod, "batch_of", lambda imgs, pp: (student_saw.extend(imgs), real_batch(imgs, pp))[1])

    def online(images):
        teacher_saw.extend(images)
        return teacher_logprobs(t, images, MOTIVNET_LABELS)
    cfg = replace(_tiny_cfg(kd_weight=1.0, online_teacher=True, degrade_prob=0.9), views=4)
    train_mod.train(tmp_path / "run", fs, synthetic(16, seed=1), Preprocessing(), cfg, online_teacher=online,
                    progress=False)
    student_saw = student_saw[:32]  # the epoch's batches; evaluation batches follow
    assert len(teacher_saw) == 32
    differ = sum(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(teacher_saw, student_saw))
    assert differ >= 20  # about 90 % degraded
    clean = {view_image(fs.images[i], 0, i, v).tobytes() for i in range(32) for v in range(4)}
    assert all(im.tobytes() in clean for im in teacher_saw)  # the teacher got untouched views


def _write_synthetic_pack(path, size=56):
    from motivnet_distill.pack import save_pack

    a, b = synthetic(40), synthetic(24, seed=3)
    big = FaceSet([np.kron(im, np.ones((2, 2), np.uint8)) for im in b.images], b.soft, b.hard, b.labels, b.files)
    from motivnet_distill.data import concat

    train = concat([a, big])
    report = {"ferplus": {"faces": 40, "rows": 40, "detector_misses": None},
              "affectnet96": {"faces": 24, "rows": 24, "detector_misses": 0}}
    val = {"ferplus": synthetic(16, seed=1), "affectnet96": synthetic(12, seed=2)}
    from motivnet_distill.pipeline import STUDENT_PREPROCESSING

    save_pack(path, train, val, report=report, recipe={}, preprocessing=STUDENT_PREPROCESSING, size=size)
    return train, val


def test_a_pack_round_trips_rows_labels_and_domains(tmp_path):
    from motivnet_distill.pack import read_pack

    train, val = _write_synthetic_pack(tmp_path / "p.npz")
    got, got_val, manifest = read_pack(tmp_path / "p.npz")
    assert len(got) == 64 and got.files == train.files and np.allclose(got.soft, train.soft, atol=1e-3)
    assert np.array_equal(got.hard, train.hard) and got.labels == tuple(MOTIVNET_LABELS)
    assert got.images[0].shape == (48, 48) and got.images[50].shape == (56, 56)  # 96 px rows capped at 56
    # Lossy, but the same picture: WebP at quality 75 stays close to the stored pixels.
    assert np.abs(got.images[0].astype(int) - train.images[0].astype(int)).mean() < 12
    assert {k: len(v) for k, v in got_val.items()} == {"ferplus": 16, "affectnet96": 12}
    assert list(manifest["sources"]) == ["ferplus", "affectnet96"] and manifest["encoding"]["max_side"] == 56


@pytest.mark.parametrize("damage, message", [
    ("missing", "does not exist"), ("text", "is not a training pack"), ("pickle", "is not a training pack"),
    ("version", "pack version 99"), ("offsets", "disagree"), ("rows", "counts 99 train rows"),
])
def test_a_bad_pack_is_one_error_naming_the_fix(tmp_path, damage, message):
    from motivnet_distill.pack import PackError, read_pack

    p = tmp_path / "p.npz"
    _write_synthetic_pack(p)
    if damage == "missing":
        p.unlink()
    elif damage == "text":
        p.write_text("not a pack")
    elif damage == "pickle":
        with open(p, "wb") as f:
            np.save(f, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    else:
        z = dict(np.load(p))
        m = json.loads(bytes(z["manifest"]))
        if damage == "version":
            m["version"] = 99
        elif damage == "rows":
            m["sources"]["ferplus"]["rows"] = 75
        else:
            z["train.offsets"] = z["train.offsets"][::-1].copy()
        z["manifest"] = np.frombuffer(json.dumps(m).encode(), np.uint8)
        with open(p, "wb") as f:
            np.savez(f, **z)
    with pytest.raises(PackError, match=message):
        read_pack(p)


def test_distill_trains_from_a_pack_with_its_domains_and_selection_sets(tmp_path):
    from motivnet_distill.pipeline import distill

    _write_synthetic_pack(tmp_path / "p.npz")
    best = distill(pack=tmp_path / "p.npz", out=tmp_path / "run", student="vit_hybrid_femto", epochs=1, views=2,
                   progress=False, samples_per_epoch=48, batch_size=16, degrade_prob=0.3)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    prov = cfg["provenance"]["domains"]
    assert prov["pack"]["encoding"]["codec"] == "webp" and prov["selection"] == {"ferplus": 16, "affectnet96": 12}
    log = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert {"val_acc_ferplus", "val_acc_affectnet96"} <= set(log) and "val_acc" in best
    with pytest.raises(Exception, match="pass one of --data"):
        distill(pack=tmp_path / "p.npz", domains=tmp_path, out=tmp_path / "run2", progress=False)


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


def test_licence_terms_do_not_nest_across_generations():
    from motivnet_distill.pipeline import licence_terms

    student_of_student = ("teacher: teacher: unknown; note: students distilled from a teacher may carry its licence "
                          "terms; note: students distilled from a teacher may carry its licence terms")
    assert licence_terms([student_of_student, "unknown"]) == "unknown"
    assert licence_terms(["teacher: CC BY-NC 4.0 (Sapiens weights); note: x", "MIT (FER2013 Xception)"]) == \
        "CC BY-NC 4.0 (Sapiens weights); MIT (FER2013 Xception)"


def test_a_domain_teacher_replaces_the_main_teachers_targets_on_its_rows_only(tmp_path):
    from motivnet_distill.pipeline import _teacher_targets
    from motivnet_distill.teacher_cache import teacher_logprobs
    from motivnet_distill.teachers import load_teacher

    main = _mean_teacher(tmp_path / "main.onnx", [0.0, 0.02, 0, 0, 0, 0, 0])
    fer = _mean_teacher(tmp_path / "fer.onnx", [0.03, 0, 0, 0, 0, 0, 0])
    fs, extra = synthetic(12), {"provenance": {}}
    logits, online = _teacher_targets([main], fs, MOTIVNET_LABELS, tmp_path / "cache", 2, 0, False, False, extra,
                                      routed={"ferplus": (slice(4, 10), [fer])})
    assert online is None and logits.shape == (12, 2, 7)
    for path, rows in ((main, [0, 1, 2, 3, 10, 11]), (fer, range(4, 10))):
        t = load_teacher(path)
        for i in rows:
            want = teacher_logprobs(t, [view_image(fs.images[i], 0, i, v) for v in range(2)], MOTIVNET_LABELS)
            assert np.allclose(logits[i], want, atol=2e-3), (path.name, i)
    assert extra["provenance"]["domain_teachers"]["ferplus"].startswith("onnx:")
    assert "; ferplus: onnx:" in extra["provenance"]["teacher"]  # --resume compares this name


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


SCRIPT = textwrap.dedent("""
    import sys, json, torch
    sys.path.insert(0, {tests!r})
    from test_distill import synthetic
    from motivnet_distill.train import TrainConfig, train
    from motivnet_edge.preprocess import Preprocessing
    torch.set_num_threads(1)
    pp = Preprocessing(input_size=(48, 48))
    cfg = TrainConfig(student=dict(embed_dim=32, depth=2, num_heads=2, patch_size=8, drop_path=0.0),
                      epochs={epochs}, batch_size=16, views=2, ema_decay=0.9, seed=3)
    teacher = torch.randn(64, 2, 7).numpy()
    best = train(sys.argv[1], synthetic(64), synthetic(32, seed=1), pp, cfg, teacher_logits=teacher,
                 resume="--resume" in sys.argv, progress=False)
    print(json.dumps(best))
""")


def _script(tmp_path, epochs):
    p = tmp_path / "run_train.py"
    p.write_text(SCRIPT.format(tests=os.path.dirname(__file__), epochs=epochs))
    return p


def _weights(run):
    return torch.load(run / "last.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(tmp_path):
    script = _script(tmp_path, epochs=6)
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, str(script), str(ref)], check=True, capture_output=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "log.jsonl").is_file():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-run, after at least one checkpoint
    proc.wait()
    done = len((run / "log.jsonl").read_text().splitlines())
    assert done < 6, "the run finished before it could be killed"
    subprocess.run([sys.executable, str(script), str(run), "--resume"], check=True, capture_output=True)
    a, b = _weights(ref), _weights(run)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert len((run / "log.jsonl").read_text().splitlines()) >= 6
    assert (run / "curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    script = _script(tmp_path, epochs=2)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run([sys.executable, str(script), str(single)], check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(29500 + os.getpid() % 1000), str(script), str(ddp)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _weights(single), _weights(ddp)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert json.loads((ddp / "config.json").read_text())["train"]["epochs"] == 2


@pytest.mark.slow
def test_distill_cli_end_to_end_on_real_faces(tmp_path):
    """FER+ faces, the mini Xception teacher, a cached cache, a checkpoint that exports."""
    from conftest import FERPLUS, SHARED
    teacher = SHARED / "models" / "xception_fer2013" / "fer2013_mini_XCEPTION.102-0.66.hdf5"
    if not teacher.is_file() or not FERPLUS.is_dir():
        pytest.skip("../shared data is absent")
    import shutil
    for split, n in (("FER2013Train", 256), ("FER2013Valid", 128)):
        dst = tmp_path / "fer" / split
        dst.mkdir(parents=True)
        rows = (FERPLUS / split / "label.csv").read_text().splitlines()[:n]
        (dst / "label.csv").write_text("\n".join(rows) + "\n")
        for r in rows:
            shutil.copy(FERPLUS / split / r.split(",")[0], dst)
    cmd = [sys.executable, "-m", "motivnet_edge.cli", "distill", "--data", str(tmp_path / "fer" / "FER2013Train"),
           "--out", str(tmp_path / "run"), "--teacher", str(teacher), "--student", "vit_hybrid_pico",
           "--epochs", "1", "--views", "2", "--batch-size", "64", "--cache-dir", str(tmp_path / "cache")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    best = json.loads(r.stdout.strip().splitlines()[-1])
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["val_acc"] == ck["metrics"]["val_acc"] and best["val_n"] == ck["metrics"]["val_n"] > 0
    assert best["params"] == sum(v.numel() for k, v in ck["model"].items() if "running_" not in k
                                 and "num_batches" not in k)
    assert len(list((tmp_path / "cache").glob("teacher-*.npy"))) == 1
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert "keras:fer2013_mini" in ck["provenance"]["teacher"] and "MIT" in ck["license"]["teacher"]
    cache = next((tmp_path / "cache").glob("teacher-*.npy"))
    stamp = cache.stat().st_mtime_ns
    # A second student on FER2013's labels, started from the first: same images, so the cache is reused.
    shutil.copy(FERPLUS / "fer2013_labels.csv", tmp_path / "fer" / "fer2013_labels.csv")
    r2 = subprocess.run(cmd[:6] + ["--out", str(tmp_path / "run2")] + cmd[8:] +
                        ["--label-source", "fer2013", "--init", str(tmp_path / "run" / "best.pt")],
                        capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert cache.stat().st_mtime_ns == stamp and len(list((tmp_path / "cache").glob("teacher-*"))) == 2  # + meta
    ck2 = torch.load(tmp_path / "run2" / "best.pt", weights_only=True)
    assert ck2["provenance"]["label_source"] == "fer2013" and ck2["metrics"]["device"] == "cpu x1"
    # The second run records what it started from, so results can name every teacher along the chain.
    init = ck2["provenance"]["init"]
    assert init["path"] == str(tmp_path / "run" / "best.pt") and init["label_source"] == "ferplus"
    from motivnet_distill.student_io import lineage

    chain = lineage(ck2["provenance"])
    assert [(s["label_source"], s["init"]) for s in chain] == [
        ("fer2013", str(tmp_path / "run" / "best.pt")), ("ferplus", None)]
    assert all("keras:fer2013_mini" in s["teacher"] for s in chain)
    # --mirror-teacher: the same teacher read on each view and its mirror, cached under its own key.
    r3 = subprocess.run(cmd[:6] + ["--out", str(tmp_path / "run3")] + cmd[8:] + ["--mirror-teacher"],
                        capture_output=True, text=True, timeout=600)
    assert r3.returncode == 0, r3.stderr[-2000:]
    assert cache.stat().st_mtime_ns == stamp and len(list((tmp_path / "cache").glob("teacher-*.npy"))) == 2
    ck3 = torch.load(tmp_path / "run3" / "best.pt", weights_only=True)
    assert ck3["provenance"]["teacher"] == "mirror(" + ck["provenance"]["teacher"] + ")"
    # --online-teacher --mixup: the teacher reads every (mixed) batch itself, so no cache is built.
    caches = sorted(p.name for p in (tmp_path / "cache").iterdir())
    r4 = subprocess.run(cmd[:6] + ["--out", str(tmp_path / "run4")] + cmd[8:] + ["--online-teacher", "--mixup", "0.4"],
                        capture_output=True, text=True, timeout=600)
    assert r4.returncode == 0, r4.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == caches
    ck4 = torch.load(tmp_path / "run4" / "best.pt", weights_only=True)
    assert ck4["provenance"]["teacher"] == ck["provenance"]["teacher"]
    cfg4 = json.loads((tmp_path / "run4" / "config.json").read_text())["train"]
    assert cfg4["online_teacher"] is True and cfg4["mixup"] == 0.4
    log4 = json.loads((tmp_path / "run4" / "log.jsonl").read_text().splitlines()[-1])
    assert 0 <= log4["train_agreement"] <= 1  # measured against the online teacher


def test_results_name_a_runs_teacher_from_its_provenance():
    key = load_benchmark("distill_results").teacher_key
    assert key("keras:fer2013_mini_XCEPTION.102-0.66.hdf5:59534287fdfb125e") == "xception_mini"
    assert key("keras:fer2013_big_XCEPTION.54-0.66.hdf5:2c7ed52bc381077b") == "xception_big"
    assert key("ensemble(keras:fer2013_mini_XCEPTION.102-0.66.hdf5:5953,keras:fer2013_big_XCEPTION.54-0.66.hdf5:2c7e)") \
        == "xception_ensemble"
    assert key("ensemble(onnx:model.onnx:1234,onnx:model.onnx:5678)") is None  # not the Xception pair
    assert key("ensemble(keras:fer2013_mini_XCEPTION.102-0.66.hdf5:5953,onnx:model.onnx:1)") is None
    assert key("onnx:someone_else.onnx:abcd") is None and key(None) is None


def test_init_from_timm_file_before_training(tmp_path):
    from motivnet_distill.train import train
    src = create_student("vit_nano", in_chans=1, labels=MOTIVNET_LABELS)
    torch.save({"model": src.state_dict()}, tmp_path / "timm.pth")
    cfg = TrainConfig(student=dict(PRESETS["vit_nano"]), epochs=1, batch_size=32, views=1, lr=0.0,
                      warmup_epochs=0.0, ema_decay=0.0, erase_prob=0.0)
    train(tmp_path / "run", synthetic(32), synthetic(16, seed=1), Preprocessing(), cfg, progress=False,
          init=tmp_path / "timm.pth")
    got = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert torch.allclose(got["blocks.2.mlp.fc1.weight"], src.state_dict()["blocks.2.mlp.fc1.weight"])


@pytest.mark.parametrize("option, value, match", [
    ("temperature", 0.0, "--temperature 0.0 is invalid"),
    ("kd_weight", float("nan"), "--kd-weight nan is invalid"),
    ("lr", float("nan"), "--lr nan is invalid"),
    ("lr", -1.0, "--lr -1.0 is invalid"),
    ("views", 0, "--views 0 is invalid"),
    ("label_smoothing", 1.0, "--label-smoothing 1.0 is invalid"),
])
def test_bad_training_options_are_refused_with_the_option_named(option, value, match):
    from motivnet_distill.train import TrainConfigError

    with pytest.raises(TrainConfigError, match=match):
        TrainConfig(**{option: value})


def _tiny_cfg(**kw):
    return TrainConfig(student=dict(embed_dim=32, depth=2, num_heads=2, patch_size=8, drop_path=0.0),
                       epochs=1, batch_size=16, views=1, **kw)


def test_run_folder_is_never_overwritten_or_resumed_with_other_settings(tmp_path):
    from motivnet_distill.train import TrainConfigError, train

    run, pp = tmp_path / "run", Preprocessing()
    train(run, synthetic(32), synthetic(16, seed=1), pp, _tiny_cfg(), progress=False)
    before = (run / "best.pt").read_bytes()
    with pytest.raises(TrainConfigError, match="already holds a run"):
        train(run, synthetic(32), synthetic(16, seed=1), pp, _tiny_cfg(), progress=False)
    with pytest.raises(TrainConfigError, match="views: run 1, now 2"):
        train(run, synthetic(32), synthetic(16, seed=1), pp, replace(_tiny_cfg(), views=2), resume=True,
              progress=False)
    other = replace(_tiny_cfg(), student=dict(embed_dim=64, depth=1, num_heads=2, patch_size=8, drop_path=0.0))
    with pytest.raises(TrainConfigError, match="student shape differs"):
        train(run, synthetic(32), synthetic(16, seed=1), pp, other, resume=True, progress=False)
    with pytest.raises(TrainConfigError, match="degrade_prob: run 0.0, now 0.5"):
        train(run, synthetic(32), synthetic(16, seed=1), pp, replace(_tiny_cfg(), degrade_prob=0.5), resume=True,
              progress=False)
    assert (run / "best.pt").read_bytes() == before
    assert len((run / "log.jsonl").read_text().splitlines()) == 1
    # The teacher is part of the recipe: a resume with another teacher file, or its mirror, is refused.
    fs, taught = synthetic(32), tmp_path / "taught"
    logits = np.zeros((len(fs), 1, len(fs.labels)), np.float32)
    kd = _tiny_cfg(kd_weight=1.0)
    train(taught, fs, synthetic(16, seed=1), pp, kd, teacher_logits=logits, progress=False,
          extra={"provenance": {"teacher": "onnx:t/model.onnx:ab12"}})
    with pytest.raises(TrainConfigError, match=r"teacher: run 'onnx:t/model.onnx:ab12', now 'mirror\(onnx:t"):
        train(taught, fs, synthetic(16, seed=1), pp, replace(kd, epochs=2), teacher_logits=logits, resume=True,
              progress=False, extra={"provenance": {"teacher": "mirror(onnx:t/model.onnx:ab12)"}})
    train(taught, fs, synthetic(16, seed=1), pp, replace(kd, epochs=2), teacher_logits=logits, resume=True,
          progress=False, extra={"provenance": {"teacher": "onnx:t/model.onnx:ab12"}})
    assert len((taught / "log.jsonl").read_text().splitlines()) == 2


def test_a_non_finite_loss_stops_training_with_a_clear_error(tmp_path):
    from motivnet_distill.train import TrainConfigError, train

    faces = synthetic(32)
    faces.soft[3, 0] = np.nan  # one corrupt label row poisons the loss of its batch
    with pytest.raises(TrainConfigError, match="loss became nan at epoch 1"):
        train(tmp_path / "run", faces, synthetic(16, seed=1), Preprocessing(), _tiny_cfg(), progress=False)
    assert not (tmp_path / "run" / "best.pt").exists()


def test_a_hybrid_run_initialises_the_same_preset_completely(tmp_path):
    """--init from a run's best.pt: every tensor loads as it is (the hybrid's small patch kernel
    must not be resized to patch_size)."""
    src = create_student("vit_hybrid_pico", labels=MOTIVNET_LABELS)
    torch.save({"model": src.state_dict()}, tmp_path / "best.pt")
    dst = create_student("vit_hybrid_pico", labels=MOTIVNET_LABELS)
    assert load_timm_weights(dst, tmp_path / "best.pt") == []
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def _class_folder(root, classes, people, seed):
    import cv2
    r = np.random.default_rng(seed)
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for p in people:
            for i in range(2):
                img = np.clip(r.normal(30 + 30 * k, 20, (48, 48)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(root / cls / f"{p}_{i + 1:04d}.png"), img)
    return root


def test_extra_data_adds_only_the_train_part_of_its_person_split(tmp_path, caplog):
    from motivnet_distill.data import read_image_folder, split_by_person
    from motivnet_distill.pipeline import distill

    classes = ("happiness", "sadness", "anger")
    people = [f"Person_{c}{i}" for c in "ABCDEFGH" for i in range(3)]
    main = _class_folder(tmp_path / "main", classes, people[:4], seed=0)
    val = _class_folder(tmp_path / "val", classes, people[4:8], seed=1)
    extra = _class_folder(tmp_path / "extra", (*classes, "contempt"), people[8:], seed=2)
    kept = split_by_person(read_image_folder(extra, mapping={"contempt": None}), part="train")
    held = split_by_person(read_image_folder(extra, mapping={"contempt": None}), part="val")
    assert len(kept) and len(held)  # the extra set has people on both sides
    assert not {f.split("/")[1].rsplit("_", 1)[0] for f in kept.files} & \
        {f.split("/")[1].rsplit("_", 1)[0] for f in held.files}
    with pytest.raises(Exception, match="contempt"):  # the extra set's classes are remapped explicitly
        distill(data=main, val=val, extra_data=[extra], out=tmp_path / "bad", student="vit_hybrid_femto",
                epochs=1, progress=False)
    caplog.set_level("INFO", logger="motivnet_distill.pipeline")
    distill(data=main, val=val, extra_data=[extra], mapping={"contempt": None}, out=tmp_path / "run",
            student="vit_hybrid_femto", epochs=1, batch_size=16, views=1, progress=False)
    assert f"extra training faces: {len(kept)} from the train part of {extra}" in caplog.text
    prov = json.loads((tmp_path / "run" / "config.json").read_text())["provenance"]
    assert prov["extra_training_data"] == [f"{extra} (train part, split by person)"]


def test_a_preset_with_its_own_input_size_trains_at_that_size(tmp_path):
    """vit_tiny is a 224x224 DeiT shape: it must not silently train on 48x48 faces (a 3x3 grid)."""
    from motivnet_distill.pipeline import STUDENT_PREPROCESSING, distill, student_preprocessing

    assert student_preprocessing("vit_hybrid_pico") == STUDENT_PREPROCESSING
    assert student_preprocessing("vit_tiny").input_size == (224, 224)
    classes, people = ("happiness", "sadness"), ["Person_A", "Person_B"]
    distill(data=_class_folder(tmp_path / "main", classes, people, seed=0),
            val=_class_folder(tmp_path / "val", classes, people, seed=1), out=tmp_path / "run",
            student="vit_tiny", epochs=1, batch_size=8, views=1, progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["student"]["img_size"] == [224, 224] and saved["preprocessing"]["input_size"] == [224, 224]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("damage", ["truncated", "empty", "pickled code", "not a checkpoint"])
def test_resume_from_a_damaged_last_pt_is_one_error_naming_the_fix(tmp_path, damage):
    from motivnet_distill.train import TrainConfigError, train

    pp = Preprocessing(input_size=(48, 48))
    run = tmp_path / "run"
    train(run, synthetic(32), synthetic(16, seed=1), pp, _tiny_cfg(), progress=False)
    last = run / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:200])
    elif damage == "empty":
        last.write_bytes(b"")
    elif damage == "pickled code":
        torch.save({"model": _Evil()}, last)
    else:
        torch.save({"something": torch.zeros(1)}, last)
    with pytest.raises(TrainConfigError, match="cannot be resumed.*best.pt"):
        train(run, synthetic(32), synthetic(16, seed=1), pp, replace(_tiny_cfg(), epochs=2), resume=True,
              progress=False)


def test_unreadable_init_and_unlabelled_selection_set_are_refused(tmp_path):
    from motivnet_distill.train import TrainConfigError, train

    pp = Preprocessing(input_size=(48, 48))
    bad = tmp_path / "init.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainConfigError, match="--init .* cannot be read as weights"):
        train(tmp_path / "a", synthetic(32), synthetic(16, seed=1), pp, _tiny_cfg(), progress=False, init=bad)
    unlabelled = synthetic(16, seed=1)
    unlabelled = FaceSet(unlabelled.images, np.zeros_like(unlabelled.soft), np.full(16, -1), unlabelled.labels,
                         unlabelled.files)
    with pytest.raises(TrainConfigError, match="no labelled faces"):
        train(tmp_path / "b", synthetic(32), unlabelled, pp, _tiny_cfg(), progress=False)
    assert not (tmp_path / "b" / "log.jsonl").exists()


def test_a_deeper_student_from_a_shallower_one_starts_with_the_same_function(tmp_path):
    """pico -> pico8: the four new blocks begin as identities, so the outputs are the pico's."""
    from motivnet_distill.student import identity_blocks

    pico = create_student("vit_hybrid_pico").eval()
    torch.nn.init.normal_(pico.head.weight)
    torch.save({"model": pico.state_dict()}, tmp_path / "pico.pt")
    deep = create_student("vit_hybrid_pico8").eval()
    skipped = load_timm_weights(deep, tmp_path / "pico.pt")
    assert identity_blocks(deep, skipped) == [4, 5, 6, 7]
    x = torch.randn(3, 1, 48, 48)
    torch.testing.assert_close(deep(x), pico(x), atol=1e-5, rtol=1e-5)
    assert identity_blocks(pico, []) == []  # a student whose blocks all loaded is left alone


def test_a_lite_stem_from_a_pico_keeps_every_strided_conv(tmp_path):
    """pico -> pico_lite: the stride-1 stem convs are dropped, the strided ones (and their norms)
    keep their weights at their new places, and nothing is left at its random init."""
    from motivnet_distill.student import count_flops

    pico = create_student("vit_hybrid_pico")
    torch.save({"model": pico.state_dict()}, tmp_path / "pico.pt")
    lite = create_student("vit_hybrid_pico_lite")
    assert load_timm_weights(lite, tmp_path / "pico.pt") == []
    src, dst = pico.state_dict(), lite.state_dict()
    for full, short in ((0, 0), (1, 1), (3, 3), (4, 4), (9, 6), (10, 7)):
        for part in ("weight",) + (("bias", "running_mean", "running_var") if full in (1, 4, 10) else ()):
            assert torch.equal(dst[f"patch_embed.stem.{short}.{part}"], src[f"patch_embed.stem.{full}.{part}"])
    assert torch.equal(dst["blocks.3.mlp.fc2.weight"], src["blocks.3.mlp.fc2.weight"])
    assert count_flops(lite, (1, 1, 48, 48)) < 0.6 * count_flops(pico, (1, 1, 48, 48))
    with pytest.raises(ValueError, match="stem must be one of"):
        create_student("vit_hybrid_pico", stem="conv_tiny")


def test_the_embedded_default_rebuilds_as_a_student_with_the_same_logits():
    """from_package reads the ONNX Runtime graph as shipped (each block's attention fused into one
    Attention node) and gives back a student computing the package's function."""
    import onnx
    import onnxruntime as ort

    from motivnet_distill.from_package import student_from_package
    from motivnet_edge.recognizer import DEFAULT_MODEL

    x = np.random.default_rng(0).normal(0, 1, (32, 1, 48, 48)).astype(np.float32)
    model, cfg, pkg = student_from_package(DEFAULT_MODEL, x)
    onnx_file = pkg.path_of(pkg.file_for("onnxruntime", "fp32"))
    assert "Attention" in {n.op_type for n in onnx.load(str(onnx_file)).graph.node}
    ref = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    bias = np.asarray(pkg.provenance.get("prior_correction", {}).get("bias", np.zeros(ref.shape[1])))
    with torch.no_grad():
        got = model.eval()(torch.from_numpy(x)).numpy() + bias
    assert np.abs(got - ref).max() < 1e-3


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
