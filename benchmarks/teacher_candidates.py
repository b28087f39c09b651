"""Issue 41, step 1: the candidate teachers' validation curves against CPU-minutes.

    python benchmarks/teacher_candidates.py --run runs/teacher_resnet48 --run runs/teacher_resnet64 \
        --run runs/teacher_nano

Reads each run folder as ``distill`` left it (config.json, log.jsonl; the runs come from
``benchmarks/teacher_candidates.sh``: same data, recipe and schedule, bounded sittings) and writes
benchmarks/results/teacher_candidates.json (CPU flags, commit, date inside) and its picture,
teacher_candidates.png: pooled validation accuracy per CPU-minute, one line per candidate. Only
validation parts are read (they are in the logs; no test part is touched). An epoch logged before
``cpu_seconds`` was recorded counts at the run's mean CPU time per epoch, and is marked "estimated".

A continuation (a run started with ``--init`` from another listed run's checkpoint) is drawn
where that run's CPU time ends, so the long teacher's lineage reads as one curve of spend:

    python benchmarks/teacher_candidates.py --run runs/teacher_resnet48 --run runs/teacher_resnet64 \
        --run runs/teacher_nano --run runs/teacher_resnet48_fresh --run runs/teacher_resnet_s1 \
        --run runs/teacher_resnet48_ens --run runs/teacher_labels
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import ROOT, write_result  # noqa: E402  (benchmarks/ is the script folder)

OUT = ROOT / "benchmarks" / "results" / "teacher_candidates.json"


def candidate(run: Path) -> dict:
    """One run's shape, cost and curve (CPU time counted from its own start), and the run folder
    it continues (``--init RUN/best.pt``), if any."""
    from motivnet_distill.students.model import StudentConfig, count_flops, create_student

    config = json.loads((run / "config.json").read_text())
    init = config.get("provenance", {}).get("init") or {}
    from motivnet_distill.run_folder import read_log

    rows = read_log(run)
    if not rows:
        raise SystemExit(f"{run} has no finished epoch yet")
    scfg = StudentConfig.from_dict(config["student"])
    model = create_student(scfg)
    measured = [r["cpu_seconds"] for r in rows if "cpu_seconds" in r]
    if not measured:
        raise SystemExit(f"{run}: no epoch records its cpu_seconds; train one more epoch with this code")
    mean_cpu = sum(measured) / len(measured)
    curve, spent = [], 0.0
    for r in rows:
        spent += r.get("cpu_seconds", mean_cpu)
        domains = {k[len("val_acc_"):]: round(v, 4) for k, v in r.items() if k.startswith("val_acc_")}
        curve.append({"epoch": r["epoch"], "cpu_minutes": round(spent / 60, 1), "estimated": "cpu_seconds" not in r,
                      "val_acc": round(r["val_acc"], 4), "train_acc": round(r.get("train_acc", 0.0), 4),
                      "domains": domains})
    side = scfg.img_size[0]
    return {"run": run.name, "student": config.get("provenance", {}).get("student_preset", "?"),
            "input_px": side, "params": sum(p.numel() for p in model.parameters()),
            "gflops": round(count_flops(model, (1, scfg.in_chans, *scfg.img_size)) / 1e9, 3),
            "epochs_of_schedule": config["train"]["epochs"], "command": config.get("command", ""),
            "continues": Path(init["path"]).parent.name if init.get("path") else None, "curve": curve}


def candidates(runs: list[Path]) -> list[dict]:
    """Each run's curve, a continuation's shifted by its parent's CPU time (parents listed first)."""
    out: dict[str, dict] = {}
    for run in runs:
        c = out[run.name] = candidate(run)
        up = out.get(c["continues"] or "")
        for point in c["curve"] if up else ():
            point["cpu_minutes"] = round(point["cpu_minutes"] + up["curve"][-1]["cpu_minutes"], 1)
    return list(out.values())


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for c in result["candidates"]:
        xs = [p["cpu_minutes"] for p in c["curve"]]
        ax.plot(xs, [100 * p["val_acc"] for p in c["curve"]], marker="o",
                label=f"{c['run']}: {c['student']} {c['input_px']} px ({c['gflops']:.2f} GFLOPs)")
    ax.set_xlabel("CPU-minutes of training (all threads)")
    ax.set_ylabel("pooled validation accuracy, %")
    ax.set_title("Candidate teachers and the long run's continuations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)


def main() -> None:
    from motivnet_edge.machine import machine_info

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", type=Path, required=True, help="a candidate's run folder (repeat)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    result = {"machine": machine_info(), "score": "pooled accuracy over the validation parts the runs select on",
              "candidates": candidates(args.run)}
    write_result(args.out, result)
    plot(result, args.out.with_suffix(".png"))
    for c in result["candidates"]:
        last = c["curve"][-1]
        print(f"{c['run']}: {c['student']} {c['input_px']} px, {last['cpu_minutes']} CPU-min, "
              f"epoch {last['epoch']}, validation {100 * last['val_acc']:.1f} %")


if __name__ == "__main__":
    main()
