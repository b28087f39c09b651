"""Regenerates tests/data/tiny_package: the small random student the runtime tests use.

    python tests/data/make_tiny_package.py

Committed so the runtime's tests run on a device install (no torch, no exporter). Its
weights are a seeded random ViT with a widened head (scores that rank, not near-uniform);
it recognises nothing, it exercises every runtime path (ONNX Runtime and OpenVINO fp32).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from motivnet_distill.students.model import create_student
from motivnet_edge.labels import MOTIVNET_LABELS
from motivnet_edge.preprocess import Preprocessing
from motivnet_export.exporter import export

HERE = Path(__file__).resolve().parent


def tiny_checkpoint(path: Path) -> Path:
    """The seeded tiny student as a checkpoint file (also what conftest builds for torch tests)."""
    torch.manual_seed(0)
    model = create_student("vit_pico", embed_dim=48, depth=2, num_heads=2, labels=MOTIVNET_LABELS)
    with torch.no_grad():  # a random head gives near-uniform scores; widen them to test ranking
        model.head.weight.mul_(50)
    torch.save({"model": model.state_dict(), "student": asdict(model.cfg),
                "preprocessing": Preprocessing().to_dict(), "license": {"teacher": "none (test model)"}}, path)
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = export(tiny_checkpoint(Path(tmp) / "tiny.pt"), Path(tmp) / "pkg", formats=("onnx", "openvino"),
                     latency=False, provenance={"description": "tiny random test student (tests/data)"})
        dest = HERE / "tiny_package"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(out, dest)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
