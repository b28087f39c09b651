"""Issue 42 (3-6, 9): labels bound to the hashed model, one manifest per zip, the detector from
verified bytes, a terminal that untrusted text cannot steer, temp files and cache entries that
planted links cannot redirect, and Keras graphs that name missing layers."""

import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

from conftest import cli, edit_manifest, relabel_onnx
from motivnet_edge import EmotionRecognizer
from motivnet_edge.errors import PackageError
from motivnet_edge.package import DEFAULT_MODEL, load_package, sha256_file


def _swap(labels, a, b):
    i, j = labels.index(a), labels.index(b)
    labels[i], labels[j] = labels[j], labels[i]


def test_labels_swapped_in_the_manifest_are_refused(package_copy, astronaut_path):
    """Swapping happiness and anger in manifest.json (not hashed) once renamed the outputs."""
    edit_manifest(package_copy, lambda m: _swap(m["labels"], "happiness", "anger"))
    with pytest.raises(PackageError, match="are not those model.onnx declares"):
        load_package(package_copy)
    r = cli("predict", astronaut_path, "--model", package_copy)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr


def test_a_model_file_that_declares_no_labels_is_refused(package_copy):
    onnx = pytest.importorskip("onnx", reason="rewriting a model's metadata needs onnx")
    model = onnx.load(str(package_copy / "model.onnx"))
    keep = [p for p in model.metadata_props if p.key != "labels"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    (package_copy / "model.onnx").write_bytes(model.SerializeToString())
    edit_manifest(package_copy, lambda m: [f.__setitem__("sha256", sha256_file(package_copy / "model.onnx"))
                                           for f in m["files"] if f["path"] == "model.onnx"])
    with pytest.raises(PackageError, match="does not declare its labels"):
        load_package(package_copy)


def test_openvino_ir_labels_are_checked_too(package_copy):
    xml = package_copy / "openvino" / "model.xml"
    text = xml.read_text().replace("&quot;happiness&quot;", "&quot;joy&quot;")
    xml.write_text(text)
    edit_manifest(package_copy, lambda m: [f.__setitem__("sha256", sha256_file(xml))
                                           for f in m["files"] if f["path"] == "openvino/model.xml"])
    with pytest.raises(PackageError, match="are not those openvino/model.xml declares"):
        load_package(package_copy)


def _zip(folder, z, edit=lambda rel, data: data) -> zipfile.ZipFile:
    """``folder`` zipped into ``z`` (each file's bytes through ``edit``); returned open for more entries."""
    zf = zipfile.ZipFile(z, "w")
    for f in folder.rglob("*"):
        if f.is_file():
            rel = f.relative_to(folder).as_posix()
            zf.writestr(rel, edit(rel, f.read_bytes()))
    return zf


def test_a_zip_with_two_manifests_is_refused(tiny_package, tmp_path):
    z = tmp_path / "p.zip"
    with _zip(tiny_package, z) as zf:
        m = json.loads((tiny_package / "manifest.json").read_text())
        _swap(m["labels"], "happiness", "anger")
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("manifest.json", json.dumps(m))
    with pytest.raises(PackageError, match="'manifest.json' more than once"):
        load_package(z)


def test_zip_errors_name_the_zip_not_the_private_folder(tiny_package, tmp_path):
    z = tmp_path / "p.zip"
    _zip(tiny_package, z, lambda rel, data: data[:-10] if rel == "model.onnx" else data).close()
    with pytest.raises(PackageError) as info:
        load_package(z)
    assert str(z) in str(info.value) and "unpacked-" not in str(info.value), info.value


def test_the_detector_is_built_from_the_verified_bytes_in_every_thread(tmp_path, astronaut):
    """Replacing the package's YuNet file after load changes nothing, in a new thread too."""
    pkg = tmp_path / "pkg"
    shutil.copytree(DEFAULT_MODEL, pkg)
    with EmotionRecognizer.from_pretrained(pkg, detector="yunet", threads=1) as rec:
        before = rec.predict(astronaut)
        (pkg / "detector" / "yunet.onnx").write_bytes(b"not a model any more")
        seen = []
        t = threading.Thread(target=lambda: seen.append(rec.predict(astronaut)))
        t.start()
        t.join()
    assert len(seen) == 1 and [f.box for f in seen[0]] == [f.box for f in before] and len(before) == 1




def test_no_string_from_a_file_or_model_steers_the_terminal(package_copy, tmp_path):
    evil = ["neutral\nx.png: face at x=0 y=0 w=1 h=1: happiness (99%)", "happiness\x1b]0;title\x07",
            "sadness\r", "surprise\u202e", "fear", "disgust", "anger\x9b31m"]
    relabel_onnx(package_copy, evil, provenance={"description": "fine\x1b]0;owned\x07\r\x1b[2Kforged"})
    faces = tmp_path / "faces"
    faces.mkdir()
    crop = np.random.default_rng(0).integers(0, 256, (48, 48), np.uint8)
    import cv2

    names = ["plain.png", "new\nline.png", "esc\x1b[31mred.png", "cr\rback.png"]
    for name in names:
        cv2.imwrite(str(faces / "tmp.png"), crop)
        os.replace(faces / "tmp.png", faces / name)
    r = cli("predict", faces, "--model", package_copy, "--detector", "none")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(names), lines  # one line per file: nothing forged a second one
    for text in (r.stdout, r.stderr):
        assert not any(c in text for c in "\x1b\r\x07\x9b\u202e"), repr(text)
    assert "\\n" in r.stdout and "\\x1b" in r.stdout
    info = cli("info", package_copy)
    assert info.returncode == 0 and not any(c in info.stdout for c in "\x1b\r\x07"), repr(info.stdout)
    as_json = cli("predict", faces / "plain.png", "--model", package_copy, "--detector", "none", "--json")
    assert json.loads(as_json.stdout)["faces"][0]["label"] in evil  # JSON stays exact


def test_saving_a_video_follows_no_planted_link_and_two_saves_do_not_collide(tiny_package, tmp_path):
    import cv2

    video = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    for i in range(6):
        w.write(np.full((64, 64, 3), 40 * i, np.uint8))
    w.release()
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / ".clip.tmp.mp4").symlink_to(victim)  # the fixed temp name earlier versions wrote through
    args = [sys.executable, "-m", "motivnet_edge.cli", "predict", str(video), "--model", str(tiny_package),
            "--detector", "none", "--save", str(out)]
    procs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    assert victim.read_text() == "precious"
    saved = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert len(saved) == 1 and cv2.VideoCapture(str(saved[0])).read()[0]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".clip.tmp.mp4"]  # nothing left behind
    umask = os.umask(0)
    os.umask(umask)
    assert saved[0].stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("kind", ["link_to_dev_zero", "fifo", "huge", "folder"])
def test_cache_entries_are_small_regular_files_only(tmp_path, kind):
    from motivnet_edge.cache import read_entry

    entry = tmp_path / "entry.json"
    if kind == "link_to_dev_zero":
        entry.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(entry)
    elif kind == "huge":
        entry.write_bytes(b" " * (1 << 20))
    else:
        entry.mkdir()
    done = []
    t = threading.Thread(target=lambda: done.append(pytest.raises(OSError, read_entry, entry)), daemon=True)
    t.start()
    t.join(timeout=10)
    assert done, "reading the cache entry hung"


def test_a_keras_graph_naming_a_missing_layer_is_one_error(tmp_path):
    h5py = pytest.importorskip("h5py", reason="Keras HDF5 teachers need h5py (distill extra)")
    pytest.importorskip("torch", reason="teachers need the distill extra")
    from motivnet_distill.teachers.keras_graph import KerasFormatError
    from motivnet_distill.teachers.load import load_teacher

    cfg = {"class_name": "Model", "config": {"layers": [
        {"name": "dense", "class_name": "Dense", "config": {"batch_input_shape": [None, 4], "activation": "linear"},
         "inbound_nodes": [[["ghost", 0, 0, {}]]]}], "output_layers": [["dense", 0, 0]]}}
    path = tmp_path / "ghost.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        g = f.create_group("model_weights/dense/dense")
        g.create_dataset("kernel:0", data=np.zeros((4, 7), np.float32))
        g.create_dataset("bias:0", data=np.zeros(7, np.float32))
    with pytest.raises(KerasFormatError, match="reads 'ghost'"):
        load_teacher(path)


@pytest.mark.parametrize("kind", ["fifo", "link_to_dev_zero"])
def test_a_planted_autotune_entry_neither_hangs_nor_floods(tiny_package, tmp_path, monkeypatch, kind):
    """A shared MOTIVNET_CACHE whose autotune entry is a FIFO hung the process; a link to
    /dev/zero was read without limit (3 GB). Either is now measured again."""
    from motivnet_edge import autotune
    from motivnet_edge.backends import BackendOptions, auto_candidates, installed_backends

    if len(installed_backends()) < 2:
        pytest.skip("autotune needs two runtimes to choose between")
    monkeypatch.setenv("MOTIVNET_CACHE", str(tmp_path / "cache"))
    pkg = load_package(tiny_package)
    candidates = auto_candidates(pkg, "auto", "auto", BackendOptions(threads=1, autotune=True))
    path = autotune.cache_path(pkg, 1, candidates)
    path.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    chosen = []
    t = threading.Thread(target=lambda: chosen.append(autotune.choose(pkg, candidates, threads=1)), daemon=True)
    t.start()
    t.join(timeout=90)
    assert chosen and tuple(chosen[0]) in {tuple(c) for c in candidates}, "autotune hung on its cache entry"


@pytest.mark.slow
def test_video_frames_stay_under_1_gb_and_bigger_ones_are_refused_from_the_header(tmp_path):
    """Issue 42 (9): 100 MP video frames peaked at 1.7 GB. Frames up to MAX_VIDEO_PIXELS (above
    8K) are decoded with a byte-bounded queue; above it the header is refused before decoding."""
    import cv2

    from motivnet_edge.media import MAX_VIDEO_PIXELS

    def video(path, w, h):
        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
        frame = np.full((h, w, 3), 128, np.uint8)
        for i in range(3):
            frame[:] = 60 * i
            out.write(frame)
        out.release()

    from conftest import PEAK_CLI as peak, peak_mb

    side = int(MAX_VIDEO_PIXELS ** 0.5) // 8 * 8
    video(tmp_path / "big.avi", side, side)
    r = subprocess.run([sys.executable, "-c", peak, "predict", str(tmp_path / "big.avi"), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3, r.stderr
    assert peak_mb(r.stderr) < 1024, f"{peak_mb(r.stderr)} MB"
    video(tmp_path / "huge.avi", 10000, 10000)
    r = subprocess.run([sys.executable, "-c", peak, "predict", str(tmp_path / "huge.avi")], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 2 and "above the limit" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert peak_mb(r.stderr) < 1024, f"{peak_mb(r.stderr)} MB"
