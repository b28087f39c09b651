"""Same face, same label on every machine: how far fp32 answers move between kernels and ISAs.

    python benchmarks/isa_agreement.py --package default

A package's fp32 file gives the same label on two CPUs unless the two CPUs' kernels round the
logits differently by more than the face's top-1 margin. No AVX2-only CPU is at hand in every
session, so this measures what can be measured on one machine, each run in its own process:

  onnxruntime          the runtime's default (MLAS kernels for this CPU);
  openvino             oneDNN kernels for this CPU;
  openvino_avx2        oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, the kernels an AVX2-only
                       CPU runs; the kernel names it ran are recorded as proof).

  as_shipped           ``from_pretrained(package)`` with every option left at its default
                       (backend and precision "auto"): what a user gets on this CPU.

It reports, per test set, top-1 agreement of every run with the default run, the largest
difference in log-probability any face showed between runs (the size of cross-kernel rounding),
and how many faces have a top-1 margin under ten times that: the only faces whose label a
different machine could change. The as_shipped run's label for every face is written into the
results file, and the results of the other kinds of CPU (benchmarks/results/isa_agreement.json
from an AVX-512 CPU, benchmarks/results/avx2/ from an AVX2-only one) are read back: where they
hold the same model, the agreement between the two machines' answers is measured face by face.
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

from common import CPU_CLASSES, SHARED, per_cpu_out, per_cpu_result, write_result  # noqa: E402  (benchmarks/ is the script folder)

RUNS = {"onnxruntime": ("onnxruntime", "fp32", {}),
        "openvino": ("openvino", "fp32", {}),
        "openvino_avx2": ("openvino", "fp32", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
        "as_shipped": ("auto", "auto", {})}


def _worker(package: str, backend: str, precision: str, faces_npz: str, out: str) -> None:
    """One run in its own process: log-probabilities of every stored crop, and the kernels used."""
    from motivnet_edge.recognizer import EmotionRecognizer

    crops = np.load(faces_npz)
    logp, kernels = {}, {}
    with EmotionRecognizer.from_pretrained(package, backend=backend, precision=precision, detector="none") as rec:
        ran = rec.describe()
        for name in crops.files:
            x = crops[name]
            logp[name] = np.log(np.clip(np.concatenate([rec.classify(x[i:i + 256]) for i in range(0, len(x), 256)]),
                                        1e-30, 1.0))
    if backend == "openvino" and precision == "fp32":
        import openvino as ov

        pkg_file = Path(package) / "openvino" / "model.xml"
        compiled = ov.Core().compile_model(str(pkg_file), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        kernels = collections.Counter(op.get_rt_info()["primitiveType"].astype(str)
                                      for op in compiled.get_runtime_model().get_ordered_ops())
        kernels = {k: v for k, v in kernels.items() if "avx" in k or "amx" in k or "sse" in k}
    np.savez(out, **logp)
    Path(out + ".json").write_text(json.dumps({"labels": list(rec.labels), "ran": ran, "kernels": kernels}))


def across_cpus(model: str, shipped: dict[str, str], out: Path, *, path_of=per_cpu_result) -> dict:
    """Face-by-face agreement of this CPU's as-shipped labels with those another kind of CPU
    recorded for the same model file (its per-CPU results file), keyed by that CPU's kind."""
    cross = {}
    for kind in CPU_CLASSES:
        other = path_of("isa_agreement.json", kind)
        if other.resolve() == Path(out).resolve() or not other.is_file():
            continue
        r = json.loads(other.read_text())
        theirs = r.get("as_shipped_top1", {})
        if r.get("model_sha256") != model or not theirs:
            continue
        cross[kind] = {"cpu": r["machine"]["cpu"], "flags": r["machine"]["flags"], "date": r["machine"]["date"],
                       "ran": r["runs"]["as_shipped"]["ran"],
                       "agreement": {s: round(float(np.mean([a == b for a, b in zip(mine, theirs[s])])), 6)
                                     for s, mine in shipped.items() if len(theirs.get(s, "")) == len(mine)}}
    return cross


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="default", help="package folder or 'default'")
    ap.add_argument("--shared", type=Path, default=SHARED)
    per_cpu_out(ap, "isa_agreement.json")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(*args.worker)
        return

    from motivnet_edge.datasets.domains import crops_for, shared_yunet, test_sets
    from motivnet_edge.detectors import YuNetDetector
    from motivnet_edge.package import load_package, resolve_model
    from motivnet_edge.preprocess import face_crop
    from motivnet_edge.machine import machine_info

    package = str(resolve_model(args.package))
    pp = load_package(package).preprocessing
    sets = test_sets(args.shared, YuNetDetector(shared_yunet(args.shared)))
    with tempfile.TemporaryDirectory() as tmp:
        faces_npz = str(Path(tmp) / "faces.npz")
        np.savez(faces_npz, **{s: np.stack([face_crop(im, pp) for im in crops_for(ts, pp).images])
                               for s, ts in sets.items()})
        runs, info = {}, {}
        for run, (backend, precision, env) in RUNS.items():
            out = str(Path(tmp) / f"{run}.npz")
            subprocess.run([sys.executable, __file__, "--worker", package, backend, precision, faces_npz, out],
                           env={**os.environ, **env}, check=True)
            with np.load(out) as z:
                runs[run] = {s: z[s] for s in z.files}
            info[run] = {"backend": backend, "precision": precision, "env": env,
                         **json.loads(Path(out + ".json").read_text())}
    base = runs["onnxruntime"]
    rows = {}
    for s in sets:
        top2 = np.sort(base[s], axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        diff = max(float(np.abs(runs[r][s] - base[s]).max()) for r in runs if RUNS[r][1] == "fp32")
        rows[s] = {"n": len(margin),
                   "agreement_with_onnxruntime": {run: round(float((r[s].argmax(1) == base[s].argmax(1)).mean()), 6)
                                                  for run, r in runs.items() if run != "onnxruntime"},
                   "max_abs_logprob_diff": diff,
                   "faces_with_margin_under_10x_diff": int((margin < 10 * diff).sum()),
                   "smallest_margin": float(margin.min())}
        print(f"{s:20s} n={len(margin):5d} " + " ".join(f"{k} {v:.4%}" for k, v in
              rows[s]["agreement_with_onnxruntime"].items()) + f"  max diff {diff:.2e}  at-risk faces "
              f"{rows[s]['faces_with_margin_under_10x_diff']}", flush=True)
    model = next(f.sha256 for f in load_package(package).files if (f.backend, f.precision) == ("onnxruntime", "fp32"))
    shipped = {s: "".join(str(int(i)) for i in runs["as_shipped"][s].argmax(1)) for s in sets}
    cross = across_cpus(model, shipped, args.out)
    for kind, agree in cross.items():
        print(f"as shipped, this CPU vs {kind}: " + ", ".join(f"{s} {a:.4%}" for s, a in agree["agreement"].items()))
    write_result(args.out, {"machine": machine_info(), "package": args.package, "model_sha256": model,
                            "runs": info, "sets": rows, "as_shipped_top1": shipped, "across_cpus": cross,
                            "protocol": "EmotionRecognizer.classify (fp32, or every option at its default for as_shipped), "
                                        "each run in its own process; "
                                        "test sets cut as benchmarks/domains.py cuts them"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
