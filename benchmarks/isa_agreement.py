"""Same face, same label on every machine: how far fp32 answers move between kernels and ISAs.

    python benchmarks/isa_agreement.py --package default

A package's fp32 file gives the same label on two CPUs unless the two CPUs' kernels round the
logits differently by more than the face's top-1 margin. No AVX2-only CPU is at hand in every
session, so this measures what can be measured on one machine, each run in its own process:

  onnxruntime          the runtime's default (MLAS kernels for this CPU);
  openvino             oneDNN kernels for this CPU;
  openvino_avx2        oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, the kernels an AVX2-only
                       CPU runs; the kernel names it ran are recorded as proof).

It reports, per test set, top-1 agreement of every run with the default run, the largest
difference in log-probability any face showed between runs (the size of cross-kernel rounding),
and how many faces have a top-1 margin under ten times that: the only faces whose label a
different machine could change. ``from_pretrained(None)`` answers in fp32 unless the package
records INT8 agreement >= 99.5 % (docs/GUIDE.md), so these fp32 figures are what a user gets.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import ROOT, SHARED, write_result  # noqa: E402  (benchmarks/ is the script folder)

RUNS = {"onnxruntime": ("onnxruntime", {}),
        "openvino": ("openvino", {}),
        "openvino_avx2": ("openvino", {"ONEDNN_MAX_CPU_ISA": "AVX2"})}


def _worker(package: str, backend: str, faces_npz: str, out: str) -> None:
    """One run in its own process: log-probabilities of every stored crop, and the kernels used."""
    from motivnet_edge.recognizer import EmotionRecognizer

    crops = np.load(faces_npz)
    logp, kernels = {}, {}
    with EmotionRecognizer.from_pretrained(package, backend=backend, precision="fp32", detector="none") as rec:
        for name in crops.files:
            x = crops[name]
            logp[name] = np.log(np.clip(np.concatenate([rec.classify(x[i:i + 256]) for i in range(0, len(x), 256)]),
                                        1e-30, 1.0))
    if backend == "openvino":
        import openvino as ov

        pkg_file = Path(package) / "openvino" / "model.xml"
        compiled = ov.Core().compile_model(str(pkg_file), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        kernels = collections.Counter(op.get_rt_info()["primitiveType"].astype(str)
                                      for op in compiled.get_runtime_model().get_ordered_ops())
        kernels = {k: v for k, v in kernels.items() if "avx" in k or "amx" in k or "sse" in k}
    np.savez(out, **logp)
    Path(out + ".json").write_text(json.dumps({"labels": list(rec.labels), "kernels": kernels}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="default", help="package folder or 'default'")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "isa_agreement.json")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(*args.worker)
        return

    from motivnet_distill.domains import crops_for, shared_yunet, test_sets
    from motivnet_edge.detectors import YuNetDetector
    from motivnet_edge.package import load_package, resolve_model
    from motivnet_edge.preprocess import face_crop
    from motivnet_edge.timing import machine_info

    package = str(resolve_model(args.package))
    pp = load_package(package).preprocessing
    sets = test_sets(args.shared, YuNetDetector(shared_yunet(args.shared)))
    with tempfile.TemporaryDirectory() as tmp:
        faces_npz = str(Path(tmp) / "faces.npz")
        np.savez(faces_npz, **{s: np.stack([face_crop(im, pp) for im in crops_for(ts, pp).images])
                               for s, ts in sets.items()})
        runs, info = {}, {}
        for run, (backend, env) in RUNS.items():
            out = str(Path(tmp) / f"{run}.npz")
            subprocess.run([sys.executable, __file__, "--worker", package, backend, faces_npz, out],
                           env={**os.environ, **env}, check=True)
            with np.load(out) as z:
                runs[run] = {s: z[s] for s in z.files}
            info[run] = {"backend": backend, "env": env, **json.loads(Path(out + ".json").read_text())}
    base = runs["onnxruntime"]
    rows = {}
    for s in sets:
        top2 = np.sort(base[s], axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        diff = max(float(np.abs(r[s] - base[s]).max()) for r in runs.values())
        rows[s] = {"n": len(margin),
                   "agreement_with_onnxruntime": {run: round(float((r[s].argmax(1) == base[s].argmax(1)).mean()), 6)
                                                  for run, r in runs.items() if run != "onnxruntime"},
                   "max_abs_logprob_diff": diff,
                   "faces_with_margin_under_10x_diff": int((margin < 10 * diff).sum()),
                   "smallest_margin": float(margin.min())}
        print(f"{s:20s} n={len(margin):5d} " + " ".join(f"{k} {v:.4%}" for k, v in
              rows[s]["agreement_with_onnxruntime"].items()) + f"  max diff {diff:.2e}  at-risk faces "
              f"{rows[s]['faces_with_margin_under_10x_diff']}", flush=True)
    write_result(args.out, {"machine": machine_info(), "package": args.package, "runs": info, "sets": rows,
                            "protocol": "fp32 through EmotionRecognizer.classify, each run in its own process; "
                                        "test sets cut as benchmarks/domains.py cuts them"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
