"""Students vs their teachers: accuracy, agreement, parameters and GFLOPs on the standard protocols.

    python benchmarks/distill_results.py --run ferplus_nano=runs/default \
        --run ferplus_pico=runs/ferplus_pico --run fer2013_nano=runs/fer2013_nano

Every model (each Xception teacher, their ensemble, each student run's best.pt) is scored
on FER2013Test (FER2013 labels and FER+ majority) and CK+48 with the torch CPU forward, and
on the selection split FER2013Valid (both label sets) beside it. ``agreement`` is top-1
agreement with the Xception ensemble (one reference for every row); each student also gets
``agreement_with_teacher`` against the teacher of its own run. A student started from another
run (``--init``) lists every teacher along that chain in ``training.lineage``. Training
curve, time and device come from each run's log. The script ends, like NNCF's examples, by
printing each student's accuracy gap to its teacher and its cost relative to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from common import ROOT, SHARED, write_result  # noqa: E402  (benchmarks/ is the script folder)


#: The teachers' results rows and their files in ../shared/models/xception_fer2013.
TEACHER_FILES = {"xception_mini": "fer2013_mini_XCEPTION.102-0.66.hdf5",
                 "xception_big": "fer2013_big_XCEPTION.54-0.66.hdf5"}


def teacher_key(name: str | None) -> str | None:
    """The results row of a run's teacher, from the teacher name its provenance records."""
    if not name:
        return None
    if name.startswith("ensemble(") and name.endswith(")"):
        members = {teacher_key(m) for m in name[len("ensemble("):-1].split(",")}
        return "xception_ensemble" if members == set(TEACHER_FILES) else None  # no row for other ensembles
    return next((key for key, file in TEACHER_FILES.items() if file in name), None)


def _lineage(prov: dict) -> list[dict]:
    """The run's lineage (motivnet_distill.students.io.lineage) with teachers named as results rows."""
    from motivnet_distill.students.io import lineage

    return [dict(step, teacher=teacher_key(step["teacher"])) for step in lineage(prov)]


def _training(run: Path) -> dict:
    """What the run's log says: epochs, best epoch, per-epoch curve, time, device, labels, lineage."""
    from motivnet_distill.run_folder import read_log

    rows = read_log(run)
    config = json.loads((run / "config.json").read_text())
    lineage = _lineage(config["provenance"])
    best = max(rows, key=lambda r: r["val_acc"])
    return {"epochs": len(rows), "best_epoch": best["epoch"], "val_acc": best["val_acc"], "val_n": best["val_n"],
            "curve": [{k: r[k] for k in ("epoch", "train_acc", "val_acc", "seconds")} for r in rows],
            "train_seconds": round(sum(r["seconds"] for r in rows)),
            "device": rows[-1].get("device", "cpu x1 (not logged)"),
            "label_source": lineage[0]["label_source"], "teacher": lineage[0]["teacher"], "lineage": lineage,
            "config": config["train"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="NAME=RUN", help="a distill run folder")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distill.json")
    args = ap.parse_args()

    from motivnet_distill.evaluate import evaluate_probs, standard_protocols
    from motivnet_edge.labels import remap_scores
    from motivnet_distill.teachers.load import EnsembleTeacher, load_teacher
    from motivnet_distill.train import predict_logits
    from motivnet_edge.machine import machine_info
    from motivnet_export.exporter import count_gflops
    from motivnet_export.sources import load_source

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    t_start = time.time()
    protocols = standard_protocols(args.shared)
    if not protocols:
        raise SystemExit(f"{args.shared} holds no FER+/CK+ data: nothing to measure")
    # The selection split too (both label sets), so a run's val_acc can be read against its teacher's.
    valid = {f"valid_{k}": v for k, v in standard_protocols(args.shared, split="FER2013Valid").items()
             if k != "ckplus"}
    sets = {**protocols, **valid}
    xdir = args.shared / "models" / "xception_fer2013"
    teacher_files = {name: xdir / file for name, file in TEACHER_FILES.items()}
    members = {name: load_teacher(f) for name, f in teacher_files.items()}
    models: dict[str, dict] = {}
    for name, f in teacher_files.items():
        src = load_source(f)
        models[name] = {"role": "teacher", "params": sum(p.numel() for p in src.model.parameters()),
                        "gflops": count_gflops(src)}
    models["xception_ensemble"] = {"role": "teacher", "params": sum(models[n]["params"] for n in members),
                                   "gflops": round(sum(models[n]["gflops"] for n in members), 5)}
    probs: dict[str, dict] = {}  # model -> protocol -> (labels, probs)
    for name, t in {**members, "xception_ensemble": EnsembleTeacher(list(members.values()))}.items():
        probs[name] = {p: (t.labels, t.probs(f.images)) for p, f in sets.items()}
    for spec in args.run:
        name, run = spec.split("=", 1)
        src = load_source(Path(run))
        probs[name] = {p: (src.labels, torch.softmax(predict_logits(src.model, f, src.preprocessing), 1).numpy())
                       for p, f in sets.items()}
        models[name] = {"role": "student", "params": sum(p.numel() for p in src.model.parameters()),
                        "gflops": count_gflops(src), "training": _training(Path(run))}
    reference = {p: remap_scores(*probs["xception_ensemble"][p][::-1], f.labels, on_missing="drop").argmax(1) for p, f in sets.items()}
    for name in models:
        scored = {p: evaluate_probs(*probs[name][p], f, reference=reference[p]).to_dict() for p, f in sets.items()}
        own = (models[name].get("training") or {}).get("teacher")
        if own:
            for p, f in sets.items():
                mine, theirs = (remap_scores(*probs[m][p][::-1], f.labels, on_missing="drop").argmax(1) for m in (name, own))
                scored[p]["agreement_with_teacher"] = float((mine == theirs).mean())
        models[name]["test"] = {p: scored[p] for p in protocols}
        models[name]["selection"] = {p: scored[p] for p in valid}
    results = {"machine": machine_info(), "agreement_reference": "xception_ensemble", "models": models,
               "notes": ["FER2013Test: 3,573 images; FER2013's private test had 3,589 (16 dropped by FER+)",
                         "selection on FER2013Valid only; the test split is never trained or selected on"],
               "seconds": round(time.time() - t_start)}
    write_result(args.out, results)

    print(f"{'model':20s} {'params':>10s} {'GFLOPs':>8s} {'FER2013':>8s} {'FER+':>7s} {'CK+':>7s} {'agree':>7s}")
    for name, m in models.items():
        t = m["test"]
        print(f"{name:20s} {m['params']:10,d} {m['gflops']:8.3f} {t['fer2013']['accuracy']:8.2%} "
              f"{t['ferplus_majority']['accuracy']:7.2%} {t['ckplus']['accuracy']:7.2%} "
              f"{t['fer2013']['agreement']:7.2%}")
    def gap(m: dict, teacher: str) -> float:
        return (m["test"]["fer2013"]["accuracy"] - models[teacher]["test"]["fer2013"]["accuracy"]) * 100

    for name, m in models.items():
        if m["role"] == "student":
            tr = m["training"]
            own = tr["teacher"] or "xception_ensemble"
            chain = " <- ".join(f"{step['teacher']} ({step['label_source']} labels)" for step in tr["lineage"])
            print(f"{name}: FER2013 accuracy {gap(m, own):+.2f} points vs its teacher {tr['teacher']}, "
                  f"{m['gflops'] / models[own]['gflops']:.2f}x its GFLOPs, {m['params'] / 1e6:.2f} M params, "
                  f"trained {tr['train_seconds'] / 60:.0f} min on {tr['device']}; taught by {chain}")
            others = (*TEACHER_FILES, "xception_ensemble")
            print("  vs each teacher: " + ", ".join(f"{t} {gap(m, t):+.2f}" for t in others))
    print(f"wrote {args.out} in {results['seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
