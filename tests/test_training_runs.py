"""Training runs: resume after a kill, DDP on CPU, the distill CLI end to end, run folders, bad options."""

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
from motivnet_edge.datasets.readers import FaceSet  # noqa: E402
from motivnet_distill.train import TrainConfig  # noqa: E402
from motivnet_edge.preprocess import Preprocessing  # noqa: E402

from distill_helpers import class_folder, synthetic, tiny_cfg  # noqa: E402


SCRIPT = textwrap.dedent("""
    import sys, json, torch
    sys.path.insert(0, {tests!r})
    from distill_helpers import synthetic
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
    # The faces' terms too: a FER2013Train folder is FER2013's images, wherever it was copied to.
    assert "FER2013 images: research use only" in ck["license"]["faces"]
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
    # ... and the terms its weights carry: its teacher's and its faces'.
    assert "MIT" in ck2["license"]["init"] and "FER2013 images: research use only" in ck2["license"]["init"]
    from motivnet_distill.students.io import lineage

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


def test_run_folder_is_never_overwritten_or_resumed_with_other_settings(tmp_path):
    from motivnet_distill.train import TrainConfigError, train

    run, pp = tmp_path / "run", Preprocessing()
    train(run, synthetic(32), synthetic(16, seed=1), pp, tiny_cfg(), progress=False)
    before = (run / "best.pt").read_bytes()
    with pytest.raises(TrainConfigError, match="already holds a run"):
        train(run, synthetic(32), synthetic(16, seed=1), pp, tiny_cfg(), progress=False)
    with pytest.raises(TrainConfigError, match="views: run 1, now 2"):
        train(run, synthetic(32), synthetic(16, seed=1), pp, replace(tiny_cfg(), views=2), resume=True,
              progress=False)
    other = replace(tiny_cfg(), student=dict(embed_dim=64, depth=1, num_heads=2, patch_size=8, drop_path=0.0))
    with pytest.raises(TrainConfigError, match="student shape differs"):
        train(run, synthetic(32), synthetic(16, seed=1), pp, other, resume=True, progress=False)
    with pytest.raises(TrainConfigError, match="degrade_prob: run 0.0, now 0.5"):
        train(run, synthetic(32), synthetic(16, seed=1), pp, replace(tiny_cfg(), degrade_prob=0.5), resume=True,
              progress=False)
    assert (run / "best.pt").read_bytes() == before
    assert len((run / "log.jsonl").read_text().splitlines()) == 1
    # The teacher is part of the recipe: a resume with another teacher file, or its mirror, is refused.
    fs, taught = synthetic(32), tmp_path / "taught"
    logits = np.zeros((len(fs), 1, len(fs.labels)), np.float32)
    kd = tiny_cfg(kd_weight=1.0)
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
        train(tmp_path / "run", faces, synthetic(16, seed=1), Preprocessing(), tiny_cfg(), progress=False)
    assert not (tmp_path / "run" / "best.pt").exists()


def test_extra_data_adds_only_the_train_part_of_its_person_split(tmp_path, caplog):
    from motivnet_edge.datasets.readers import read_image_folder, split_by_person
    from motivnet_distill.distill_options import DistillOptions
    from motivnet_distill.pipeline import distill

    classes = ("happiness", "sadness", "anger")
    people = [f"Person_{c}{i}" for c in "ABCDEFGH" for i in range(3)]
    main = class_folder(tmp_path / "main", classes, people[:4], seed=0)
    val = class_folder(tmp_path / "val", classes, people[4:8], seed=1)
    extra = class_folder(tmp_path / "extra", (*classes, "contempt"), people[8:], seed=2)
    kept = split_by_person(read_image_folder(extra, mapping={"contempt": None}), part="train")
    held = split_by_person(read_image_folder(extra, mapping={"contempt": None}), part="val")
    assert len(kept) and len(held)  # the extra set has people on both sides
    assert not {f.split("/")[1].rsplit("_", 1)[0] for f in kept.files} & \
        {f.split("/")[1].rsplit("_", 1)[0] for f in held.files}
    with pytest.raises(Exception, match="contempt"):  # the extra set's classes are remapped explicitly
        distill(DistillOptions(data=main, val=val, extra_data=[extra], out=tmp_path / "bad",
                               student="vit_hybrid_femto", epochs=1, progress=False))
    caplog.set_level("INFO", logger="motivnet_distill.pipeline")
    distill(DistillOptions(data=main, val=val, extra_data=[extra], mapping={"contempt": None}, out=tmp_path / "run",
                           student="vit_hybrid_femto", epochs=1, views=1, progress=False, train={"batch_size": 16}))
    assert f"extra training faces: {len(kept)} from the train part of {extra}" in caplog.text
    prov = json.loads((tmp_path / "run" / "config.json").read_text())["provenance"]
    assert prov["extra_training_data"] == [f"{extra} (train part, split by person)"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("damage", ["truncated", "empty", "pickled code", "not a checkpoint"])
def test_resume_from_a_damaged_last_pt_is_one_error_naming_the_fix(tmp_path, damage):
    from motivnet_distill.train import TrainConfigError, train

    pp = Preprocessing(input_size=(48, 48))
    run = tmp_path / "run"
    train(run, synthetic(32), synthetic(16, seed=1), pp, tiny_cfg(), progress=False)
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
        train(run, synthetic(32), synthetic(16, seed=1), pp, replace(tiny_cfg(), epochs=2), resume=True,
              progress=False)


def test_unreadable_init_and_unlabelled_selection_set_are_refused(tmp_path):
    from motivnet_distill.train import TrainConfigError, train

    pp = Preprocessing(input_size=(48, 48))
    bad = tmp_path / "init.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainConfigError, match="--init .* cannot be read as weights"):
        train(tmp_path / "a", synthetic(32), synthetic(16, seed=1), pp, tiny_cfg(), progress=False, init=bad)
    unlabelled = synthetic(16, seed=1)
    unlabelled = FaceSet(unlabelled.images, np.zeros_like(unlabelled.soft), np.full(16, -1), unlabelled.labels,
                         unlabelled.files)
    with pytest.raises(TrainConfigError, match="no labelled faces"):
        train(tmp_path / "b", synthetic(32), unlabelled, pp, tiny_cfg(), progress=False)
    assert not (tmp_path / "b" / "log.jsonl").exists()


def test_out_is_checked_before_any_face_is_read_and_a_finished_run_says_so(tmp_path):
    """Issue 43 (17): a reused --out was refused only after 21 s of reading faces; --resume of a
    finished run exited 0 without a word."""
    import json
    import time

    from conftest import cli

    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("\n".join(json.dumps({"epoch": e, "val_acc": 0.5 + e / 10}) for e in (1, 2)) + "\n")
    t0 = time.time()
    taken = cli("distill", "--data", tmp_path / "nowhere", "--out", run)
    assert taken.returncode == 2 and "already holds a run: pass --resume" in taken.stderr, taken.stderr
    done = cli("distill", "--data", tmp_path / "nowhere", "--out", run, "--resume", "--epochs", "2")
    assert done.returncode == 0 and "is complete: 2 of 2 epochs" in done.stderr and "best epoch 2" in done.stderr
    assert "next: motivnet-edge export" in done.stderr
    assert time.time() - t0 < 30  # two interpreter starts; no face was read


def test_a_long_run_trains_in_sittings_of_stop_after_epochs(tmp_path):
    """--stop-after N ends a sitting after N epochs of the --epochs schedule and says how to go
    on; --resume takes the next sitting. A resnet student trains through the same command."""
    import json

    from conftest import cli
    from distill_helpers import class_folder

    classes, people = ("happiness", "sadness"), ["Person_A", "Person_B"]
    data = class_folder(tmp_path / "main", classes, people, seed=0)
    val = class_folder(tmp_path / "val", classes, people, seed=1)
    args = ["distill", "--data", data, "--val", val, "--out", tmp_path / "run", "--student", "resnet_s",
            "--epochs", "3", "--batch-size", "8", "--views", "1", "--threads", "1", "--stop-after", "1"]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert "paused after epoch 1 of 3; continue with the same command and --resume" in first.stderr
    second = cli(*args, "--resume")
    assert second.returncode == 0 and "paused after epoch 2 of 3" in second.stderr, second.stderr
    rows = [json.loads(r) for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["cpu_seconds"] > 0 for r in rows)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["student"]["arch"] == "resnet" and saved["student"]["widths"] == [32, 64, 128, 256]


def test_distill_options_refuse_what_cannot_train_before_any_face_is_read(tmp_path):
    """Issue 43 (3): one frozen DistillOptions with check(), as RecognizerOptions has."""
    from motivnet_distill.distill_options import DistillOptions
    from motivnet_edge.errors import MotivnetError

    nowhere = tmp_path / "nowhere"
    cases = {"unknown student": dict(data=nowhere, student="vit_giant"),
             "add --teacher FILE": dict(data=nowhere, mirror_teacher=True),
             "use at most 64": dict(data=nowhere, teachers=("t.onnx",), views=65),
             "pass one of --data": dict(data=nowhere, domains=nowhere),
             "drop --val and --extra-data": dict(domains=nowhere, val=nowhere),
             "unknown training settings lrr": dict(data=nowhere, train={"lrr": 0.1})}
    for message, kw in cases.items():
        with pytest.raises(MotivnetError, match=message):
            DistillOptions(out=tmp_path / "run", **kw).check()
    DistillOptions(out=tmp_path / "run", data=nowhere, train={"lr": 3e-4}).check()
    assert not (tmp_path / "run").exists()


def test_a_run_saved_before_a_student_field_existed_resumes(tmp_path):
    """A run folder written before StudentConfig had arch/widths/stage_blocks/stem_stride resumes:
    a field it did not record had its default then (the nano teacher run of session 24 was refused)."""
    import json

    from motivnet_distill.train import train

    run, pp = tmp_path / "run", Preprocessing()
    train(run, synthetic(32), synthetic(16, seed=1), pp, tiny_cfg(), progress=False)
    config = json.loads((run / "config.json").read_text())
    for key in ("arch", "widths", "stage_blocks", "stem_stride"):
        config["student"].pop(key)
    (run / "config.json").write_text(json.dumps(config))
    train(run, synthetic(32), synthetic(16, seed=1), pp, replace(tiny_cfg(), epochs=2), resume=True, progress=False)
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
