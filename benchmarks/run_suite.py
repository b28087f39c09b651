"""The benchmark suite: latency, memory, compute and accuracy of every model, one command.

    python benchmarks/run_suite.py --shared ../shared --out benchmarks/results/suite-cpu.json

Rows: the embedded default student (and any --student PKG) in fp32/int8 on every
installed backend, the FER2013 Xception peers (exported through the project's own
export path), the MotivNet-1B teacher when its architecture is available (CPU batch 1;
GPU rows only where torch sees a GPU). Each backend/precision is timed in its own
process, rounds interleaved, medians with their spread. Accuracy uses the standard
protocols on ../shared. Writes the results JSON (device, CPU flags, commit, date,
versions) and PNG plots beside it; README tables come from ``benchmarks/report.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gemm_peak import gemm_peak_gflops  # noqa: E402  (benchmarks/ is the script folder)
from motivnet_edge.machine import machine_info
from motivnet_edge.timing import BenchConfig, compare, precisions_here
from motivnet_edge.package import load_package
from motivnet_edge.recognizer import DEFAULT_MODEL
from common import SHARED, named, per_cpu_out, write_result  # noqa: E402  (benchmarks/ is the script folder)




def latency_rows(name: str, package: Path, *, batches, threads, rounds: int, seconds: float) -> list[dict]:
    pkg = load_package(package)
    configs = [BenchConfig(backend, precision, t, b) for backend, precision in precisions_here(pkg)
               for b in batches for t in threads]
    t0 = time.time()
    rows = compare(package, configs, rounds=rounds, seconds=seconds)
    gflops = pkg.metrics.get("gflops")
    size = {f"{f.backend}/{f.precision}": pkg.metrics.get("file_sizes", {}).get(f.path) for f in pkg.files}
    size["openvino/bf16"] = size.get("openvino/fp32")  # bf16 runs the fp32 IR
    for r in rows:
        r.update(model=name, gflops=gflops, size_bytes=size[f"{r['backend']}/{r['precision']}"])
    print(f"  {name}: {len(rows)} latency rows in {time.time() - t0:.0f} s", flush=True)
    return rows


def accuracy_rows(name: str, package: Path, protocols: dict, teacher_pred: dict) -> list[dict]:
    from motivnet_distill.evaluate import evaluate_probs, package_probs

    rows = []
    for precision in sorted({f.precision for f in load_package(package).files}):
        for proto, faces in protocols.items():
            labels, probs = package_probs(package, faces, backend="onnxruntime", precision=precision, threads=2)
            m = evaluate_probs(labels, probs, faces, reference=teacher_pred.get(proto))
            rows.append({"model": name, "precision": precision, "protocol": proto, **m.to_dict()})
    return rows


def teacher_predictions(shared: Path, protocols: dict) -> dict:
    """Top-1 of the Xception ensemble (the students' teacher) on each protocol, for agreement."""
    from motivnet_distill.teachers.load import EnsembleTeacher, load_teacher

    files = sorted((shared / "models" / "xception_fer2013").glob("*.hdf5"))
    if not files:
        return {}
    ens = EnsembleTeacher([load_teacher(f) for f in files])
    return {p: ens.probs(f.images, labels=f.labels).argmax(1) for p, f in protocols.items()}


def peer_packages(shared: Path, workdir: Path) -> dict[str, Path]:
    from motivnet_export.exporter import export

    out = {}
    for f in sorted((shared / "models" / "xception_fer2013").glob("*.hdf5")):
        name = "xception_" + f.name.split("_")[1]
        out[name] = export(f, workdir / name, latency=False)
    return out


def pipeline_fps(package: Path, yunet: Path | None, *, seconds: float = 5.0) -> list[dict]:
    """Detect + align + classify on 640x480 frames holding a real face, frames per second."""
    import cv2
    from skimage import data

    from motivnet_edge import EmotionRecognizer

    face = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    frame = cv2.resize(face, (480, 480))
    frame = cv2.copyMakeBorder(frame, 0, 0, 80, 80, cv2.BORDER_CONSTANT, value=(40, 40, 40))
    rows = []
    for det in (["yunet"] if yunet else []) + ["haar"]:
        with EmotionRecognizer.from_pretrained(package, detector=det, yunet_model=yunet, threads=2) as rec:
            n_faces = len(rec.predict(frame))
            times, end = [], time.time() + seconds
            while time.time() < end:
                t = time.perf_counter()
                rec.predict(frame)
                times.append(time.perf_counter() - t)
        rows.append({"detector": det, "frame": "640x480", "faces": n_faces, "fps": 1 / float(np.median(times)),
                     "p50_ms": 1e3 * float(np.median(times)), "threads": 2})
    return rows


def teacher_rows() -> list[dict]:
    """MotivNet-1B (random weights) in torch: CPU batch 1, and GPU fp32/bf16 batch 1/8/32 if present."""
    try:
        from motivnet_distill.teachers.motivnet import benchmark_teacher
    except ImportError:
        return [{"model": "motivnet_1b", "note": "teacher architecture not in this build: not measured"}]
    return benchmark_teacher()


def plots(results: dict, out_dir: Path) -> None:
    """pareto.png (accuracy vs latency on both FER2013Test label sets) and the default's confusions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from motivnet_distill.evaluate import Metrics, plot_confusion

    lat = {(r["model"], r["precision"]): r["p50_ms"] for r in results["latency"]
           if r["batch"] == 1 and r["threads"] == 2 and r["backend"] == "onnxruntime"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    for ax, proto, title in zip(axes, ("fer2013", "ferplus_majority"), ("FER2013 labels", "FER+ majority")):
        pts = sorted((lat[(r["model"], r["precision"])], 100 * r["accuracy"], f"{r['model']} {r['precision']}")
                     for r in results["accuracy"] if r["protocol"] == proto and (r["model"], r["precision"]) in lat)
        for x, y, name in pts:
            ax.scatter(x, y, s=36, color="tab:orange" if name.startswith("xception") else "tab:blue")
            ax.annotate(name, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        front, best = [], -1.0  # faster-and-better-than-everything-before points, left to right
        for x, y, _ in pts:
            if y > best:
                front.append((x, y))
                best = y
        if front:
            ax.step(*zip(*front), where="post", color="gray", alpha=0.5, lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("classify latency p50, ms (batch 1, 2 threads, ONNX Runtime)")
        ax.set_ylabel(f"FER2013Test accuracy, {title} (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.suptitle(f"accuracy vs latency on {results['machine']['cpu']} (orange: Xception peers)")
    fig.tight_layout()
    fig.savefig(out_dir / "pareto.png", dpi=110)
    plt.close(fig)
    keys = set(Metrics.__dataclass_fields__)
    for r in results["accuracy"]:
        if r["model"] == "default" and r["precision"] == "fp32" and r["protocol"] in ("fer2013", "ferplus_majority"):
            plot_confusion(Metrics(**{k: v for k, v in r.items() if k in keys}),
                           out_dir / f"confusion_default_{r['protocol']}.png",
                           f"default student, {r['protocol']}, FER2013Test")


def main() -> None:
    from motivnet_edge.datasets.domains import shared_yunet

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=SHARED)
    per_cpu_out(ap, "suite-cpu.json")
    ap.add_argument("--student", action="append", default=[], help="NAME=PACKAGE, extra students")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="batch 1, 1 thread, 1 round: a smoke run")
    args = ap.parse_args()
    batches, threads = ((1,), (1,)) if args.quick else ((1, 8), (1, 2))
    rounds = 1 if args.quick else args.rounds
    t_start = time.time()
    machine = machine_info()
    results = {"machine": machine, "gemm_peak_gflops": {t: gemm_peak_gflops(t) for t in threads},
               "gemm_peak_int8_gops": {t: gemm_peak_gflops(t, precision="int8") for t in threads},
               "settings": {"rounds": rounds, "seconds_per_round": args.seconds, "batches": batches,
                            "threads": threads}, "latency": [], "accuracy": [], "pipeline": [], "notes": []}
    print(f"machine: {machine['cpu']} flags {machine['flags']}, GEMM peak {results['gemm_peak_gflops']}", flush=True)
    packages = named(args.student, {"default": str(DEFAULT_MODEL)})
    packages = {k: Path(v) for k, v in packages.items()}
    with tempfile.TemporaryDirectory() as tmp:
        if (args.shared / "models").is_dir():
            packages.update(peer_packages(args.shared, Path(tmp)))
        else:
            results["notes"].append(f"{args.shared} absent: no peers, no accuracy rows")
        for name, pkg in packages.items():
            results["latency"] += latency_rows(name, pkg, batches=batches, threads=threads, rounds=rounds,
                                               seconds=args.seconds)
        if (args.shared / "data").is_dir():
            from motivnet_distill.evaluate import standard_protocols

            protocols = standard_protocols(args.shared)
            teacher = teacher_predictions(args.shared, protocols)
            for name, pkg in packages.items():
                results["accuracy"] += accuracy_rows(name, pkg, protocols, teacher)
            print(f"  accuracy: {len(results['accuracy'])} rows", flush=True)
    yunet = shared_yunet(args.shared)
    results["pipeline"] = pipeline_fps(DEFAULT_MODEL, yunet if yunet.is_file() else None)
    results["teacher"] = teacher_rows()
    for t in threads:
        for r in results["latency"]:
            if r["threads"] == t and r.get("gflops"):
                r["gflops_per_s"] = r["gflops"] * r["throughput_fps"]
                # Each precision against its own peak; bf16 has no probe here, so no fraction.
                peak = {"fp32": results["gemm_peak_gflops"], "int8": results["gemm_peak_int8_gops"]}.get(r["precision"])
                if peak:
                    r["fraction_of_gemm_peak"] = r["gflops_per_s"] / peak[t]
    results["seconds"] = round(time.time() - t_start)
    write_result(args.out, results)
    if results["accuracy"]:
        plots(results, args.out.parent)
    print(f"wrote {args.out} in {results['seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
