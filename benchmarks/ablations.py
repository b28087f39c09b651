"""What each lever gave: runs and packages scored on validation and test, with and without prior correction.

    python benchmarks/ablations.py --package old_default=/tmp/old_default \
        --run pico_votes30=runs/pico_votes30 --run nano_votes=runs/nano_votes

Each ``--run`` gives two rows: its best.pt as trained, and the same weights with the prior
correction fitted on FER2013Valid (motivnet_distill.prior_correction), exactly as
``export --prior-correction`` folds it in. A ``--package`` row scores a model package
through the runtime (e.g. an earlier default, checked out from git). Every row carries
the run's command, device, epochs and training time (from its run folder or manifest),
accuracy and UAR on FER2013Valid (selection) and on every standard protocol, and the lowest
per-class recall on each. Epochs are selected on FER2013Valid; test figures (FER2013Test,
CK+48) are reported, never chosen on. Writes benchmarks/results/ablations.json (machine, commit, date
inside) and ablation_curves.png (validation accuracy per epoch of every run).
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from pathlib import Path
from common import ROOT, SHARED, write_result  # noqa: E402  (benchmarks/ is the script folder)




def _scores(labels, probs, faces) -> dict:
    from motivnet_distill.evaluate import evaluate_probs

    m = evaluate_probs(labels, probs, faces)
    return {"accuracy": round(m.accuracy, 4), "uar": round(m.uar, 4), "n": m.n,
            "min_recall": round(min(m.per_class_recall.values()), 4),
            "per_class_recall": {k: round(v, 4) for k, v in m.per_class_recall.items()}}


def _run_info(run: Path) -> dict:
    from motivnet_distill.run_folder import read_log

    config = json.loads((run / "config.json").read_text())
    rows = read_log(run)
    cmd = run / "commands.txt"
    return {"command": cmd.read_text().strip().splitlines() if cmd.is_file() else None,
            "device": rows[-1].get("device"), "epochs_run": len(rows), "epochs_planned": config["train"]["epochs"],
            "train_minutes": round(sum(r["seconds"] for r in rows) / 60, 1),
            "best_epoch": max(rows, key=lambda r: r["val_acc"])["epoch"],
            "val_curve": [round(r["val_acc"], 4) for r in rows], "train": config["train"],
            "teacher": config.get("provenance", {}).get("teacher"), "teacher_files": _teacher_files(cmd),
            "init": (config.get("provenance", {}).get("init") or {}).get("path")}


def _teacher_files(commands: Path) -> list[str]:
    """The --teacher paths of the run's last command (its provenance names files by hash, not by path)."""
    if not commands.is_file():
        return []
    words = shlex.split(commands.read_text().strip().splitlines()[-1])
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--teacher"]


def plot_curves(rows: list[dict], path: Path) -> None:
    """FER2013Valid accuracy per epoch of every run row, so a reader sees which runs were still rising."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {Path(r["run"]).resolve(): r for r in rows if r["kind"] == "run" and r["variant"] == "as trained"}

    def start(row: dict) -> int:  # a run started with --init continues its parent's curve
        parent = runs.get(Path(row["init"]).resolve().parent) if row.get("init") else None
        return start(parent) + parent["epochs_run"] if parent else 0

    fig, ax = plt.subplots(figsize=(7, 4))
    for row in runs.values():
        curve, x0 = row["val_curve"], start(row)
        ax.plot(range(x0 + 1, x0 + len(curve) + 1), [100 * v for v in curve], marker=".", label=row["name"])
    ax.set_ylim(70, 87)
    ax.set_xlabel("epoch (a run started with --init continues its parent's curve)")
    ax.set_ylabel("FER2013Valid accuracy, FER+ majority (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", default=[], metavar="NAME=RUN")
    ap.add_argument("--package", action="append", default=[], metavar="NAME=PACKAGE")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ablations.json")
    args = ap.parse_args()

    import torch

    from motivnet_distill.prior_correction import apply_bias, fit_prior_correction
    from motivnet_edge.datasets.fer import read_ferplus
    from motivnet_distill.evaluate import package_probs, standard_protocols
    from motivnet_distill.train import predict_logits
    from motivnet_edge.machine import machine_info
    from motivnet_export.exporter import count_gflops
    from motivnet_export.sources import load_source

    t0 = time.time()
    sets = {"valid_ferplus": read_ferplus(args.shared / "data" / "ferplus" / "FER2013Valid"),
            **standard_protocols(args.shared)}
    rows = []
    for spec in args.package:
        name, path = spec.split("=", 1)
        from motivnet_edge.package import load_package

        pkg = load_package(path)
        row = {"name": name, "kind": "package", "gflops": pkg.metrics.get("gflops"),
               "provenance": {k: pkg.provenance.get(k) for k in ("description", "training") if k in pkg.provenance}}
        for s, faces in sets.items():
            row[s] = _scores(*package_probs(path, faces, backend="onnxruntime", precision="fp32"), faces)
        rows.append(row)
        print(f"  {name}: done", flush=True)
    for spec in args.run:
        name, run = spec.split("=", 1)
        src = load_source(Path(run))
        info = _run_info(Path(run))
        logits = {s: predict_logits(src.model, f, src.preprocessing) for s, f in sets.items()}
        fit = fit_prior_correction(logits["valid_ferplus"].numpy(), sets["valid_ferplus"])
        bias = torch.tensor(fit["bias"])
        for variant, shift in (("as trained", None), ("prior-corrected", bias)):
            row = {"name": name if shift is None else f"{name}+prior", "kind": "run", "run": run,
                   "variant": variant, "gflops": count_gflops(src),
                   "params": sum(p.numel() for p in src.model.parameters()), **info}
            if shift is not None:
                row["prior_correction"] = {k: fit[k] for k in ("floor", "bias")}
            for s, faces in sets.items():
                lg = logits[s] if shift is None else logits[s] + shift
                row[s] = _scores(src.labels, torch.softmax(lg, 1).numpy(), faces)
            rows.append(row)
        check = copy.deepcopy(src.model)  # the folded head must give the same scores as the added offset
        apply_bias(check, fit["bias"])
        diff = (predict_logits(check, sets["valid_ferplus"], src.preprocessing) - logits["valid_ferplus"] - bias)
        if float(diff.abs().max()) > 1e-4:
            raise SystemExit(f"{name}: the folded head differs from the added offset by {float(diff.abs().max())}")
        print(f"  {name}: offsets {fit['bias']}", flush=True)
    results = {"machine": machine_info(), "rows": rows, "seconds": round(time.time() - t0),
               "notes": ["each run's best epoch is selected on FER2013Valid (FER+ majority); the default among "
                         "runs on FER2013Valid + the facial_expressions validation part (select_default.py); "
                         "FER2013Test and CK+48 are reported, never selected on",
                         "FER2013Test: 3,573 images (16 of FER2013's private test dropped by FER+)"]}
    write_result(args.out, results)
    plot_curves(rows, args.out.with_name("ablation_curves.png"))
    cols = [s for s in sets]
    print(f"{'row':26s} " + " ".join(f"{c[:16]:>16s}" for c in cols) + "   (accuracy / lowest class recall)")
    for r in rows:
        print(f"{r['name']:26s} " + " ".join(f"{r[c]['accuracy']:7.2%}/{r[c]['min_recall']:6.1%}  " for c in cols))
    print(f"wrote {args.out} in {results['seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
