"""Where a classify call's time goes: ONNX Runtime's own kernel timings, by op type.

    python benchmarks/classify_profile.py --student default --threads 1 --threads 2

For each model (``default`` or NAME=PACKAGE, plus the mini-Xception peer exported as
``latency_ratio.py`` exports it) and each thread count, an ONNX Runtime session like the
runtime's (all graph optimisations, workers not spinning) first times the same random crop
(wall-clock p50), then a second, profiling session runs it again and the median kernel time of
every node is summed by op type. Profiling adds a few microseconds of its own to every kernel,
so the sum can exceed the unprofiled wall time: read it for where the work is (which op types,
how much of it the convolutions are) and compare the one-thread wall times for how much work
each model is. Two models whose one-thread wall times differ by a factor cannot be brought
within a much smaller factor by threading or graph tweaks: the work itself has to shrink.
Writes benchmarks/results/classify_profile.json (CPU flags, commit, date inside).
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import SHARED, named, per_cpu_out, write_result  # noqa: E402  (benchmarks/ is the script folder)


def _session(model: bytes, threads: int, profile_dir: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(profile_dir) / "profile")
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def profile(model: bytes, x: np.ndarray, *, threads: int, calls: int) -> dict:
    """Wall-clock p50 of ``calls`` runs, and the profiled median kernel time per op type (ms)."""
    sess = _session(model, threads)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(50):
        sess.run(None, feed)
    wall = []
    for _ in range(calls):
        t = time.perf_counter()
        sess.run(None, feed)
        wall.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        sess = _session(model, threads, tmp)
        for _ in range(calls):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_node, op_of = collections.defaultdict(list), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"].removesuffix("_kernel_time")
            per_node[node].append(e["dur"])
            op_of[node] = e["args"].get("op_name", "?")
    by_op = collections.Counter()
    for node, durs in per_node.items():
        by_op[op_of[node]] += float(np.median(durs)) / 1e3
    return {"threads": threads, "calls": calls, "wall_p50_ms": round(float(np.median(wall)) * 1e3, 4),
            "kernel_sum_ms": round(sum(by_op.values()), 4), "nodes": len(per_node),
            "by_op_ms": {op: round(v, 4) for op, v in by_op.most_common()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", action="append", default=[], metavar="NAME[=PACKAGE]",
                    help="'default' (the embedded model) or NAME=PACKAGE; repeat")
    ap.add_argument("--threads", action="append", type=int, default=[], help="thread counts (default: 1 and 2)")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--shared", type=Path, default=SHARED)
    per_cpu_out(ap, "classify_profile.json")
    args = ap.parse_args()

    from motivnet_edge.package import load_package
    from motivnet_edge.recognizer import DEFAULT_MODEL
    from motivnet_edge.machine import machine_info
    from motivnet_export.exporter import export

    students = {name: Path(path) if path != "default" else DEFAULT_MODEL
                for name, path in named(args.student or ["default=default"]).items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        mini = args.shared / "models" / "xception_fer2013" / "fer2013_mini_XCEPTION.102-0.66.hdf5"
        if not mini.is_file():
            raise SystemExit(f"{mini} not found: the peer is read from ../shared")
        packages = {**students, "xception_mini": export(mini, Path(tmp) / "mini", latency=False)}
        for name, path in packages.items():
            pkg = load_package(path)
            f = pkg.file_for("onnxruntime", "fp32")
            model = pkg.path_of(f).read_bytes()
            x = np.random.default_rng(0).standard_normal(
                (1, pkg.preprocessing.channels, *pkg.preprocessing.input_size)).astype(np.float32)
            for threads in args.threads or [1, 2]:
                row = {"model": name, **profile(model, x, threads=threads, calls=args.calls)}
                rows.append(row)
                top = ", ".join(f"{op} {ms:.3f}" for op, ms in list(row["by_op_ms"].items())[:4])
                print(f"{name:16s} {threads} thread(s): wall p50 {row['wall_p50_ms']:.3f} ms, kernels "
                      f"{row['kernel_sum_ms']:.3f} ms in {row['nodes']} nodes ({top})", flush=True)
    write_result(args.out, {"machine": machine_info(), "packages": {k: str(v) for k, v in students.items()},
                            "settings": {"runtime": "onnxruntime fp32, ORT_ENABLE_ALL, workers not spinning, "
                                                    "batch 1, models timed one after another"},
                            "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
