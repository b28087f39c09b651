"""The CLI on bad input, as a user meets it: exit code 2, one line naming the fix, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import cli, edit_manifest

TINY = Path(__file__).parent / "data" / "tiny_package"


def _env():
    import os
    return {k: v for k, v in os.environ.items() if k != "MOTIVNET_YUNET"}


@pytest.mark.parametrize("make_args, needle", [
    (lambda t, p: ["predict", t / "missing.jpg"], "no such file"),
    (lambda t, p: ["predict", t / "corrupt.png"], "not a readable image"),
    (lambda t, p: ["predict", t / "empty_dir"], "holds no images"),
    (lambda t, p: ["predict", t / "x.png", "--model", t], "no manifest.json"),
    # a package without a YuNet inside (the default ships one), and none given
    (lambda t, p: ["predict", t / "x.png", "--detector", "yunet", "--model", TINY], "needs a model file"),
    (lambda t, p: ["info", p], "does not match its sha256"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, package_copy, make_args, needle):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    (tmp_path / "empty_dir").mkdir()
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((50, 50, 3), np.uint8))
    with open(package_copy / "model.onnx", "ab") as f:
        f.write(b"tampered")
    r = cli(*make_args(tmp_path, package_copy), env=_env())
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_one_bad_file_does_not_stop_the_batch(tiny_package, tmp_path):
    (tmp_path / "a_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    cv2.imwrite(str(tmp_path / "b_good.png"), np.zeros((48, 48, 3), np.uint8))
    r = cli("predict", tmp_path, "--model", tiny_package, "--detector", "none", "--json")
    assert r.returncode == 2
    assert [json.loads(line)["input"] for line in r.stdout.splitlines()] == [str(tmp_path / "b_good.png")]
    assert r.stderr.strip().count("\n") == 0 and "a_corrupt.png" in r.stderr and "Traceback" not in r.stderr


def test_camera_that_is_not_there_exits_2(tiny_package):
    r = cli("predict", "--camera", "42", "--model", tiny_package, "--detector", "none")
    assert r.returncode == 2 and "cannot open camera 42" in r.stderr and "Traceback" not in r.stderr
    none = cli("predict", "--model", tiny_package)
    assert none.returncode == 2 and "--camera 0" in none.stderr


def test_tooling_verbs_without_torch_say_what_to_install(tmp_path):
    """On a device install (no torch), the help still lists every verb and tooling verbs exit 2 with the fix."""
    blocker = ("import sys, importlib.abc\n"
               "class Block(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path, target=None):\n"
               "        if name.split('.')[0] in ('torch', 'nncf'):\n"
               "            raise ModuleNotFoundError(name, name=name.split('.')[0])\n"
               "sys.meta_path.insert(0, Block())\n"
               "from motivnet_edge.cli import main\n"
               "main()\n")
    run = lambda *a: subprocess.run([sys.executable, "-c", blocker, *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    r = run("--help")
    assert r.returncode == 0 and "On a device" in r.stdout and "Model building" in r.stdout
    r = run("distill", "--data", tmp_path, "--out", tmp_path / "run")
    assert r.returncode == 2 and "torch is not installed" in r.stderr and "pip install" in r.stderr
    assert "Traceback" not in r.stderr


def test_truncated_png_and_mp4_get_our_line_only(astronaut, tiny_package, tmp_path):
    """libpng and FFmpeg print their own complaints; the user sees one line per bad file, ours."""
    ok, png = cv2.imencode(".png", astronaut)
    (tmp_path / "cut.png").write_bytes(png.tobytes()[: len(png) // 2])
    w = cv2.VideoWriter(str(tmp_path / "full.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (512, 512))
    for _ in range(10):
        w.write(astronaut)
    w.release()
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    r = cli("predict", tmp_path / "cut.png", tmp_path / "cut.mp4", "--model", tiny_package, "--detector", "none")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("motivnet-edge: error:") for line in lines), lines


def test_a_batch_goes_on_past_missing_paths_folders_and_fifos(tiny_package, tmp_path):
    import os

    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((48, 48, 3), np.uint8))
    (tmp_path / "empty.jpg").mkdir()  # a folder named like an image, holding none
    os.mkfifo(tmp_path / "pipe.jpg")
    args = [good, tmp_path / "MISSING.png", tmp_path / "empty.jpg", tmp_path / "pipe.jpg", "/dev/zero", good]
    r = cli("predict", *args, "--model", tiny_package, "--detector", "none", "--json")
    assert r.returncode == 2
    assert [json.loads(line)["input"] for line in r.stdout.splitlines()] == [str(good), str(good)]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 4 and "Traceback" not in r.stderr, r.stderr
    for needle in ("MISSING.png", "empty.jpg holds no images", "pipe.jpg", "/dev/zero"):
        assert any(needle in line for line in lines), (needle, lines)


def test_missing_camera_is_one_line_without_opencv_warnings(tiny_package):
    r = cli("predict", "--camera", "97", "--model", tiny_package, "--detector", "none")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [line for line in r.stderr.strip().splitlines() if "camera 97" in line]
    assert "WARN" not in r.stderr


@pytest.mark.parametrize("edit", [
    lambda m: m.__setitem__("metrics", {"test": {"x": {"fp32": {"accuracy": "high"}}}}),
    lambda m: m.__setitem__("metrics", {"int8": {"onnxruntime": {"val_accuracy_drop": None}}, "gflops": "many"}),
    lambda m: m.__setitem__("provenance", {"prior_correction": {"bias": 1, "validation": []}}),
])
def test_info_reports_a_malformed_record_in_one_line(package_copy, edit):
    edit_manifest(package_copy, edit)
    r = cli("info", package_copy)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "record is malformed" in r.stdout and "labels:" in r.stdout


def test_a_zip_that_is_no_package_is_refused_and_nothing_is_unpacked(tmp_path):
    import os
    import zipfile

    z = tmp_path / "weights.pt"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x04N.")
    cache = tmp_path / "cache"
    r = cli("info", z, env={**os.environ, "MOTIVNET_CACHE": str(cache)})
    assert r.returncode == 2 and "not a model package" in r.stderr
    assert not (cache / "packages").exists() or not any((cache / "packages").iterdir())
