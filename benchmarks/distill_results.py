"""Students vs their teachers: accuracy, agreement, parameters and GFLOPs on the standard protocols.

    python benchmarks/distill_results.py --run fer2013_nano=runs/fer2013_nano \
        --run fer2013_pico=runs/fer2013_pico --out benchmarks/results/distill.json

Every model (each Xception teacher, their ensemble, each student run's best.pt) is scored
on FER2013Test (FER2013 labels and FER+ majority) and CK+48 with the torch CPU forward.
Agreement is top-1 agreement with the Xception ensemble, the teacher the students were
distilled from. Training time and device come from each run's log. The script ends, like
NNCF's examples, by printing each student's accuracy gap to its teacher and its compression.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or "unknown"


def _size(model) -> tuple[int, float]:
    """(parameters, GFLOPs of one face at batch 1), both counted by torch on the module."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.model.parameters())
    x = torch.zeros(1, model.preprocessing.channels, *model.preprocessing.input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.model(x)
    return params, counter.get_total_flops() / 1e9


def _training(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    config = json.loads((run / "config.json").read_text())
    best = max(rows, key=lambda r: r["val_acc"])
    caches = [json.loads(p.read_text()) for p in (run / "cache").glob("*.meta.json")] \
        if (run / "cache").is_dir() else []
    return {"epochs": len(rows), "best_epoch": best["epoch"], "val_acc": best["val_acc"],
            "val_n": best["val_n"], "train_seconds": round(sum(r["seconds"] for r in rows)),
            "device": rows[-1].get("device", "cpu x1 (not logged)"),
            "teacher_cache_seconds": [c["seconds"] for c in caches if "seconds" in c],
            "label_source": config["provenance"].get("label_source", "ferplus"),
            "teacher": config["provenance"].get("teacher"), "config": config["train"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="NAME=RUN", help="a distill run folder")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distill.json")
    args = ap.parse_args()

    from motivnet_distill.evaluate import evaluate_probs, scores_on, standard_protocols
    from motivnet_distill.teachers import EnsembleTeacher, load_teacher
    from motivnet_distill.train import predict_logits
    from motivnet_edge.benchmark import machine_info
    from motivnet_export.sources import load_source

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    t_start = time.time()
    protocols = standard_protocols(args.shared)
    if not protocols:
        raise SystemExit(f"{args.shared} holds no FER+/CK+ data: nothing to measure")
    xdir = args.shared / "models" / "xception_fer2013"
    teacher_files = {"xception_mini": xdir / "fer2013_mini_XCEPTION.102-0.66.hdf5",
                     "xception_big": xdir / "fer2013_big_XCEPTION.54-0.66.hdf5"}
    members = {name: load_teacher(f) for name, f in teacher_files.items()}
    ensemble = EnsembleTeacher(list(members.values()))
    probs: dict[str, dict] = {}  # model -> protocol -> (labels, probs)
    models: dict[str, dict] = {}
    for name, t in {**members, "xception_ensemble": ensemble}.items():
        probs[name] = {p: (t.labels, t.probs(f.images)) for p, f in protocols.items()}
        sizes = [_size(load_source(teacher_files[n])) for n in (members if name == "xception_ensemble" else [name])]
        models[name] = {"role": "teacher", "params": sum(s[0] for s in sizes),
                        "gflops": round(sum(s[1] for s in sizes), 4)}
    for spec in args.run:
        name, run = spec.split("=", 1)
        src = load_source(Path(run))
        params, gflops = _size(src)
        probs[name] = {p: (src.labels, torch.softmax(predict_logits(src.model, f, src.preprocessing), 1).numpy())
                       for p, f in protocols.items()}
        models[name] = {"role": "student", "params": params, "gflops": round(gflops, 4),
                        "training": _training(Path(run))}
    reference = {p: scores_on(*probs["xception_ensemble"][p], f.labels).argmax(1) for p, f in protocols.items()}
    for name in models:
        models[name]["test"] = {p: evaluate_probs(*probs[name][p], f, reference=reference[p]).to_dict()
                                for p, f in protocols.items()}
    results = {"machine": machine_info(), "commit": _commit(),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "agreement_reference": "xception_ensemble", "models": models,
               "notes": ["FER2013Test: 3,573 images; FER2013's private test had 3,589 (16 dropped by FER+)",
                         "selection on FER2013Valid only; the test split is never trained or selected on"],
               "seconds": round(time.time() - t_start)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, args.out)

    teacher = models["xception_ensemble"]
    print(f"{'model':20s} {'params':>10s} {'GFLOPs':>8s} {'FER2013':>8s} {'FER+':>7s} {'CK+':>7s} {'agree':>7s}")
    for name, m in models.items():
        t = m["test"]
        print(f"{name:20s} {m['params']:10,d} {m['gflops']:8.3f} {t['fer2013']['accuracy']:8.2%} "
              f"{t['ferplus_majority']['accuracy']:7.2%} {t['ckplus']['accuracy']:7.2%} "
              f"{t['fer2013']['agreement']:7.2%}")
    for name, m in models.items():
        if m["role"] == "student":
            gap = m["test"]["fer2013"]["accuracy"] - teacher["test"]["fer2013"]["accuracy"]
            print(f"{name}: FER2013 accuracy {gap * 100:+.2f} points vs the ensemble teacher, "
                  f"{m['gflops'] / teacher['gflops']:.2f}x the ensemble's GFLOPs, {m['params'] / 1e6:.2f} M params, "
                  f"trained {m['training']['train_seconds'] / 60:.0f} min on {m['training']['device']}")
    print(f"wrote {args.out} in {results['seconds']} s")
    return None


if __name__ == "__main__":
    sys.exit(main())
