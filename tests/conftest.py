"""Shared fixtures: a tiny student exported by the tests themselves, real photos, YuNet."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"
FERPLUS = SHARED / "data" / "ferplus"
CKPLUS = SHARED / "data" / "ckplus48"
# Unpacked zips, engines and device measurements go to a throwaway cache, not the user's.
os.environ["MOTIVNET_CACHE"] = tempfile.mkdtemp(prefix="motivnet-test-cache-")


@pytest.fixture(scope="session")
def yunet_path() -> Path:
    if not YUNET.is_file():
        pytest.skip(f"YuNet model not found at {YUNET} (../shared is absent on this machine)")
    return YUNET


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real photo with one frontal face (public domain, ships in scikit-image), BGR."""
    data = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the test photo")
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch", reason="building the test model needs the distill extra")
    from motivnet_distill.student import create_student
    from motivnet_edge.labels import MOTIVNET_LABELS
    from motivnet_edge.preprocess import Preprocessing

    torch.manual_seed(0)
    model = create_student("vit_pico", embed_dim=48, depth=2, num_heads=2, labels=MOTIVNET_LABELS)
    with torch.no_grad():  # a random head gives near-uniform scores; widen them to test ranking
        model.head.weight.mul_(50)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"model": model.state_dict(), "student": asdict(model.cfg),
                "preprocessing": Preprocessing().to_dict(), "license": {"teacher": "none (test model)"}}, path)
    return path


@pytest.fixture(scope="session")
def tiny_package(tiny_checkpoint, tmp_path_factory) -> Path:
    """The same tiny model exported to every format, used by every backend's tests."""
    from motivnet_export.exporter import export

    return export(tiny_checkpoint, tmp_path_factory.mktemp("pkg") / "tiny", formats=("onnx", "openvino"),
                  latency_rounds=1)


@pytest.fixture()
def package_copy(tiny_package, tmp_path) -> Path:
    """A private copy that a test may damage."""
    import shutil

    dest = tmp_path / "pkg"
    shutil.copytree(tiny_package, dest)
    return dest
