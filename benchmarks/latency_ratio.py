"""Classify latency of students against the mini-Xception peer, interleaved in one process.

    python benchmarks/latency_ratio.py --student default --student nano=runs/pkg/nano

One ONNX Runtime process, 2 threads, batch 1: every round times each model once on the same
random crop, in turn, so drift on a shared machine hits all models alike. Each session has
its own worker threads, and by default they busy-wait after a call: interleaved, the worker
of the model just timed still spins while the next one runs, and on two cores that can cost
the next model several times its own latency. So the models are timed twice, with spinning
on (ONNX Runtime's default) and off (``BackendOptions(spin=False)``), and both are recorded.
Prints each model's p50 and its ratio to the mini Xception (issue target: at most 2.5x), and
writes benchmarks/results/latency_ratio.json (CPU flags, commit, date inside).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import SHARED, named, per_cpu_out, write_result  # noqa: E402  (benchmarks/ is the script folder)




def _time_interleaved(packages: dict, *, threads: int, spin: bool, seconds: float) -> list[dict]:
    """p50/p90 of each package, timed one call each in turn until ``seconds`` have passed."""
    from motivnet_edge.backends import BackendOptions, create_backend
    from motivnet_edge.timing import time_interleaved
    from motivnet_edge.package import load_package
    from motivnet_edge.preprocess import to_tensor

    runners, inputs = {}, {}
    for name, path in packages.items():
        pkg = load_package(path)
        runners[name] = create_backend(pkg, backend="onnxruntime", precision="fp32",
                                       options=BackendOptions(threads=threads, spin=spin))
        crop = np.random.default_rng(0).integers(0, 255, (1, *pkg.preprocessing.input_size,
                                                          pkg.preprocessing.channels), dtype=np.uint8)
        inputs[name] = to_tensor(crop, pkg.preprocessing)
    times = time_interleaved({name: (lambda r=r, x=inputs[name]: r.run(x)) for name, r in runners.items()},
                             seconds=seconds)
    for r in runners.values():
        r.close()
    p50 = {name: float(np.median(v)) for name, v in times.items()}
    return [{"model": name, "spin": spin, "p50_ms": round(p50[name], 4),
             "p90_ms": round(float(np.percentile(times[name], 90)), 4), "calls": len(times[name]),
             "ratio_to_xception_mini": round(p50[name] / p50["xception_mini"], 3)} for name in runners]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", action="append", default=[], metavar="NAME[=PACKAGE]",
                    help="'default' (the embedded model) or NAME=PACKAGE; repeat")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=40.0, help="total timing budget, half per spin mode")
    per_cpu_out(ap, "latency_ratio.json")
    args = ap.parse_args()

    from motivnet_edge.machine import machine_info
    from motivnet_edge.recognizer import DEFAULT_MODEL
    from motivnet_export.exporter import export

    students = {name: Path(path) if path != "default" else DEFAULT_MODEL
                for name, path in named(args.student or ["default=default"]).items()}
    with tempfile.TemporaryDirectory() as tmp:
        mini = args.shared / "models" / "xception_fer2013" / "fer2013_mini_XCEPTION.102-0.66.hdf5"
        if not mini.is_file():
            raise SystemExit(f"{mini} not found: the peer is read from ../shared")
        packages = {**students, "xception_mini": export(mini, Path(tmp) / "mini", latency=False)}
        rows = []
        for spin in (True, False):
            rows += _time_interleaved(packages, threads=args.threads, spin=spin, seconds=args.seconds / 2)
    results = {"machine": machine_info(), "settings": {"runtime": "onnxruntime fp32, one process, interleaved",
                                                       "threads": args.threads, "batch": 1,
                                                       "seconds": args.seconds},
               "packages": {k: str(v) for k, v in students.items()}, "rows": rows}
    write_result(args.out, results)
    for r in rows:
        print(f"spin {'on ' if r['spin'] else 'off'} {r['model']:16s} p50 {r['p50_ms']:.3f} ms  "
              f"{r['ratio_to_xception_mini']:.2f}x mini-Xception ({r['calls']} calls)")
    print(f"CPU {results['machine']['cpu']} flags {results['machine']['flags']}; wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
