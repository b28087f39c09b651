"""The cross-domain scoreboard: every test set of ../shared, every model, as a user gets it.

    python benchmarks/domains.py --shared ../shared \
        --model default --model femto=runs/pkg/md_femto --out benchmarks/results/domains.json

Each test set is cut as its users measure it: cropped faces (FER2013Test, CK+48,
facial_expressions, AffectNet96 ``test_``, SFEW ``val_``) whole, as ``predict --detector none``
does; KDEF people 01-07 (loose 128 px photos) through YuNet + 5-point alignment, as ``predict``
does, a photo without a detected face counting as wrong. Models are packages (the runtime's
ONNX Runtime fp32 file), run folders / checkpoints, or teacher files such as the two FER2013
Xception peers (added unless --no-peers). Writes accuracy, mean per-class recall (UAR) and
per-class recall per set, the cross-domain mean (the five issue sets: AffectNet96, SFEW, KDEF,
CK+48, FER+ majority), the CPU flags, commit and date, and one confusion PNG per set for the
first model. Nothing here is used to choose a model: ``select_default.py`` reads validation parts only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from motivnet_edge.datasets.domains import CROSS_DOMAIN, KDEF_POSES, crops_for, kdef_pose, shared_yunet, test_sets
from motivnet_distill.evaluate import evaluate_probs, model_preprocessing, model_probs, plot_confusion
from motivnet_edge.machine import machine_info
from motivnet_edge.detectors import YuNetDetector
from common import ROOT, board_arguments, scored_models, write_result  # noqa: E402  (benchmarks/ is the script folder)

def score(model: str, sets: dict, detector=None) -> tuple[dict, dict]:
    """Per-set metrics rows and Metrics objects of one model. A package whose provenance says it
    reads only aligned faces (OpenCV Zoo's) gets the stored crops its own way too: YuNet's
    landmarks on each crop, aligned to its template (the whole crop where YuNet finds no face)."""
    pp = model_preprocessing(model)
    rows, metrics = {}, {}
    precision = _precision(model)
    aligned_only = _reads_aligned_only(model) and detector is not None
    for name, ts in sets.items():
        faces = crops_for(_aligned_cut(ts, detector) if aligned_only and ts.crop == "whole" else ts, pp)
        labels, probs = model_probs(model, faces, backend="onnxruntime", precision=precision)
        # No face found: predict() returns nothing for the photo, which is wrong whatever its label.
        missed = np.array([d is None for d in ts.detections]) if ts.detections is not None else None
        m = evaluate_probs(labels, probs, faces, unanswered=missed)
        rows[name] = {"accuracy": round(m.accuracy, 4), "uar": round(m.uar, 4), "n": m.n, "misses": ts.misses,
                      "per_class_recall": {k: round(v, 4) for k, v in m.per_class_recall.items()},
                      "confusion": m.confusion}
        if name == "kdef":  # profiles are where KDEF is lost: accuracy per camera angle
            pose = np.array([kdef_pose(f) for f in faces.files])
            rows[name]["per_pose_accuracy"] = {
                KDEF_POSES[p]: round(evaluate_probs(labels, probs[pose == p], faces.subset(np.flatnonzero(pose == p)),
                                                    unanswered=None if missed is None else missed[pose == p]).accuracy, 4)
                for p in KDEF_POSES if (pose == p).any()}
        metrics[name] = m
    rows["cross_domain_mean"] = round(float(np.mean([rows[s]["accuracy"] for s in CROSS_DOMAIN if s in rows])), 4)
    return rows, metrics


def _reads_aligned_only(model: str) -> bool:
    manifest = Path(model) / "manifest.json"
    return manifest.is_file() and json.loads(manifest.read_text()).get("provenance", {}).get("reads") == "aligned faces"


def _aligned_cut(ts, detector):
    """A whole-crop test set through the detector: each crop's first face, or the crop itself."""
    from dataclasses import replace

    dets = []
    for im in ts.faces.images:
        found = detector.detect(im)
        h, w = im.shape[:2]
        dets.append((found[0].box, found[0].landmarks) if found else ((0, 0, w, h), None))
    return replace(ts, crop="detect", detections=dets)


def _precision(model: str) -> str:
    """fp32 for a package that has it; a package shipped only quantized (OpenCV Zoo's) as it is."""
    manifest = Path(model) / "manifest.json"
    if manifest.is_file():
        have = {f["precision"] for f in json.loads(manifest.read_text())["files"] if f["backend"] == "onnxruntime"}
        if "fp32" not in have and have:
            return sorted(have)[0]
    return "fp32"


def training(path: str) -> dict | None:
    """For a run folder: the commands that trained it, the device, epochs and minutes (its own logs)."""
    run = Path(path)
    if not (run / "log.jsonl").is_file():
        return None
    from motivnet_distill.run_folder import read_log

    rows = read_log(run)
    best = max(rows, key=lambda r: r["val_acc"])
    cmds = (run / "commands.txt").read_text().splitlines() if (run / "commands.txt").is_file() else []
    return {"commands": [c.split(" ", 1)[1] for c in cmds], "device": rows[-1].get("device"),
            "epochs": len(rows), "best_epoch": best["epoch"], "minutes": round(sum(r["seconds"] for r in rows) / 60, 1),
            "validation": {k: round(v, 4) for k, v in best.items() if k.startswith("val_acc")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    board_arguments(ap, "domains.json")
    ap.add_argument("--plots", default=str(ROOT / "benchmarks" / "results" / "domains"),
                    help="confusion PNGs of the first model go here ('' for none)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the rows --out already holds for models this run does not score (a model whose "
                         "files are gone keeps its last measured row; sets it was not scored on stay blank)")
    args = ap.parse_args()

    models = scored_models(args.model, args.shared, peers=not args.no_peers)
    yunet = shared_yunet(args.shared)
    t0 = time.time()
    sets = test_sets(args.shared, YuNetDetector(yunet))
    results = {}
    for i, (name, path) in enumerate(models.items()):
        rows, metrics = score(path, sets, YuNetDetector(yunet, min_face=8))
        results[name] = {"path": path if not Path(path).is_absolute() else Path(path).name, **rows}
        trained = training(path)
        if trained:
            results[name]["training"] = trained
        print(f"{name:22s} " + "  ".join(f"{s} {rows[s]['accuracy']:.1%}" for s in sets)
              + f"  cross-domain {rows['cross_domain_mean']:.1%}", flush=True)
        if i == 0 and args.plots:
            for s, m in metrics.items():
                plot_confusion(m, Path(args.plots) / f"confusion_{name}_{s}.png", f"{name} on {s}")
    models_out = results
    if args.keep and Path(args.out).is_file():
        # The file's order stays (its first model is the one the per-class lines describe); rows
        # scored now replace theirs, new models come last.
        old = json.loads(Path(args.out).read_text())
        models_out = {n: results.get(n, {**row, "kept_from": row.get("kept_from", old["machine"]["date"][:10])})
                      for n, row in old["models"].items()}
        models_out.update({n: row for n, row in results.items() if n not in models_out})
    write_result(args.out, {
        "machine": machine_info(), "seconds": round(time.time() - t0, 1),
        "sets": {s: {"n": len(ts.faces), "crop": ts.crop, "misses": ts.misses} for s, ts in sets.items()},
        "cross_domain_sets": list(CROSS_DOMAIN), "models": models_out,
        "protocol": "whole crops as predict --detector none; kdef through YuNet + align5 as predict, "
                    "a photo with no detected face scored wrong; ONNX Runtime fp32 for packages (OpenCV Zoo's "
                    "as shipped, INT8)"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
