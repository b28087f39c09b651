"""Shared fixtures: a tiny student exported by the tests themselves, real photos, YuNet."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"
FERPLUS = SHARED / "data" / "ferplus"
CKPLUS = SHARED / "data" / "ckplus48"
# Unpacked zips, engines and device measurements go to a throwaway cache, not the user's.
os.environ["MOTIVNET_CACHE"] = tempfile.mkdtemp(prefix="motivnet-test-cache-")


def edit_manifest(root: Path, edit) -> None:
    """Rewrites a package's manifest.json through ``edit(manifest)`` (which changes it in place)."""
    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    (root / "manifest.json").write_text(json.dumps(m))


#: ``python -c PEAK_CLI ARGS``: runs ``motivnet-edge ARGS`` and prints "PEAK_MB <n>" to stderr, the
#: process's own peak resident memory (VmHWM: ru_maxrss would carry over the forking parent's peak).
PEAK_CLI = """
import sys
from motivnet_edge.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1]
print("PEAK_MB", int(hwm) // 1024, file=sys.stderr)
sys.exit(code)
"""


def peak_mb(stderr: str) -> int:
    """The figure PEAK_CLI printed."""
    return int(stderr.split("PEAK_MB")[1].split()[0])


def relabel_onnx(root: Path, labels, **manifest_fields) -> None:
    """Rewrites ``root``'s model.onnx to declare ``labels`` (ONNX metadata) and its manifest to list
    only that file (new sha256) with those labels, plus ``manifest_fields``: a package whose hashed
    model and manifest agree on labels a test chose."""
    onnx = pytest.importorskip("onnx", reason="rewriting a model's metadata needs onnx")
    import hashlib

    model = onnx.load(str(root / "model.onnx"))
    for prop in model.metadata_props:
        if prop.key == "labels":
            prop.value = json.dumps(list(labels))
    data = model.SerializeToString()
    (root / "model.onnx").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    edit_manifest(root, lambda m: m.update(labels=list(labels), files=[
        {**f, "sha256": digest} for f in m["files"] if f["path"] == "model.onnx"], **manifest_fields))


def cli(*args, **kw):
    """``motivnet-edge ARGS`` in a subprocess, as a user runs it (stdout and stderr captured as text)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "motivnet_edge.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, **kw)


def face_crops(folder: Path, n: int, seed: int = 0) -> Path:
    """Face-like 48x48 crops: a bright oval with darker eyes and mouth, jittered."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    r = np.random.default_rng(seed)
    for i in range(n):
        img = np.full((48, 48), r.integers(20, 60), np.uint8)
        cv2.ellipse(img, (24 + int(r.integers(-3, 4)), 26), (16, 20), 0, 0, 360, int(r.integers(150, 230)), -1)
        for x in (17, 31):
            cv2.circle(img, (x, 20), 3, 40, -1)
        cv2.ellipse(img, (24, 36), (7, int(r.integers(1, 5))), 0, 0, 360, 60, -1)
        cv2.imwrite(str(folder / f"f{i:04d}.png"), img + r.integers(0, 20, img.shape, dtype=np.uint8))
    return folder


def random_batch(pkg, n: int = 5) -> np.ndarray:
    """``n`` seeded random face crops as the package's input tensor."""
    from motivnet_edge.preprocess import to_tensor

    crops = np.random.default_rng(1).integers(0, 255, (n, *pkg.preprocessing.input_size), dtype=np.uint8)
    return to_tensor(crops, pkg.preprocessing)


def load_benchmark(name: str):
    """A script from benchmarks/ as a module (the folder holds scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    import sys

    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # scripts import their helper module, benchmarks/common.py
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def yunet_path() -> Path:
    if not YUNET.is_file():
        pytest.skip(f"YuNet model not found at {YUNET} (../shared is absent on this machine)")
    return YUNET


@pytest.fixture(scope="session")
def astronaut_path() -> str:
    """The astronaut photo as a file (scikit-image ships it)."""
    data = pytest.importorskip("skimage.data", reason="the astronaut photo comes with scikit-image (dev extra)")
    import os

    return os.path.join(os.path.dirname(data.__file__), "astronaut.png")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real photo with one frontal face (public domain, ships in scikit-image), BGR."""
    data = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the test photo")
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The seeded tiny student as a torch checkpoint (tooling tests: needs torch)."""
    pytest.importorskip("torch", reason="building the test model needs the distill extra")
    from data.make_tiny_package import tiny_checkpoint as build

    return build(tmp_path_factory.mktemp("ckpt") / "tiny.pt")



@pytest.fixture()
def rec(tiny_package, yunet_path):
    """A recognizer on the tiny package with YuNet, one thread; closed after the test."""
    from motivnet_edge import EmotionRecognizer

    with EmotionRecognizer.from_pretrained(tiny_package, detector="yunet", yunet_model=yunet_path,
                                           threads=1) as r:
        yield r


@pytest.fixture(scope="session")
def tiny_package() -> Path:
    """The same tiny student exported to every format, committed (tests/data/make_tiny_package.py
    rebuilds it), so the runtime's tests need neither torch nor the exporter."""
    return Path(__file__).parent / "data" / "tiny_package"


@pytest.fixture()
def package_copy(tiny_package, tmp_path) -> Path:
    """A private copy that a test may damage."""
    import shutil

    dest = tmp_path / "pkg"
    shutil.copytree(tiny_package, dest)
    return dest
