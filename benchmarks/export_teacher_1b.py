"""Exports the full MotivNet-1B graph (random weights) through the project's export path.

    python benchmarks/export_teacher_1b.py --out /tmp/motivnet1b

Proves the 1.16 B-parameter teacher exports to ONNX with external data (above protobuf's
2 GB), that the package loads (sha256 of graph and data), and times one ONNX Runtime
forward at batch 1 on this CPU. Writes benchmarks/results/teacher_1b_export.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from motivnet_distill.teachers.motivnet import MOTIVNET_PREPROCESSING, MotivNet, MotivNetConfig
from motivnet_edge.backends import BackendOptions, create_backend
from motivnet_edge.machine import machine_info
from motivnet_edge.labels import MOTIVNET_LABELS
from motivnet_edge.package import load_package
from motivnet_export.exporter import export
from motivnet_export.sources import ExportSource
from common import ROOT  # noqa: E402  (benchmarks/ is the script folder)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = MotivNet(MotivNetConfig()).eval()
    n_params = sum(p.numel() for p in model.parameters())
    src = ExportSource(model, MOTIVNET_LABELS, MOTIVNET_PREPROCESSING["letterbox"],
                       {"description": "MotivNet-1B, random weights (latency/export check only)"},
                       {"weights": "random"})
    t = time.time()
    export(src, args.out, formats=("onnx",), latency=False)
    export_s = time.time() - t
    pkg = load_package(args.out)
    files = {p.name: p.stat().st_size for p in args.out.iterdir() if p.is_file()}
    del model, src
    backend = create_backend(pkg, backend="onnxruntime", options=BackendOptions(threads=os.cpu_count() or 1))
    x = np.random.default_rng(0).normal(size=(1, 3, 1024, 768)).astype(np.float32)
    t = time.perf_counter()
    out = backend.run(x)
    forward_ms = (time.perf_counter() - t) * 1e3
    res = {"machine": machine_info(), "params": n_params, "export_seconds": round(export_s, 1),
           "file_bytes": files, "ort_cpu_batch1_ms": round(forward_ms), "output_shape": list(out.shape)}
    dest = ROOT / "benchmarks" / "results" / "teacher_1b_export.json"
    dest.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
