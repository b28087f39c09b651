"""Accuracy when the face is captured worse: smaller, blurred, JPEG-compressed.

    python benchmarks/robustness.py --model default --model new=runs/pkg/md_pico_degrade_kd

The scoreboard (domains.py) reads each test set as stored. A device's faces are often smaller,
softer or more compressed than a dataset's crops, and a model may lean on how a domain's crops
look rather than on the expression. Each stored test crop (AffectNet96 ``test_``, SFEW ``val_``,
CK+48, FER2013Test with FER+ majority labels, facial_expressions val) is read as ``predict
--detector none`` reads it, under fixed conditions (no randomness):

- ``clean``: as stored;
- ``smaller``: the crop at 60 % of its side (INTER_AREA), as a face farther from the camera;
- ``blur``: a Gaussian blur of one model-input pixel (sigma = side / 48 stored pixels);
- ``jpeg30``: JPEG at quality 30.

Writes each model's accuracy per set and condition, the mean over the four cross-domain crop
sets (AffectNet96, SFEW, CK+48, FER+) per condition, the CPU flags, commit and date.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from motivnet_edge.datasets.readers import FaceSet
from motivnet_edge.datasets.domains import shared_yunet, test_sets
from motivnet_distill.evaluate import evaluate_probs, model_probs
from motivnet_edge.detectors import YuNetDetector
from motivnet_edge.machine import machine_info
from common import board_arguments, scored_models, write_result  # noqa: E402  (benchmarks/ is the script folder)

SETS = ("affectnet96", "sfew", "ckplus", "ferplus_majority", "facial_expressions")
#: The sets whose mean is reported per condition (the scoreboard's cross-domain crop sets).
MEAN_SETS = ("affectnet96", "sfew", "ckplus", "ferplus_majority")


def smaller(im: np.ndarray) -> np.ndarray:
    h, w = im.shape[:2]
    return cv2.resize(im, (max(8, round(w * 0.6)), max(8, round(h * 0.6))), interpolation=cv2.INTER_AREA)


def blur(im: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(im, (0, 0), max(im.shape[:2]) / 48, borderType=cv2.BORDER_REPLICATE)


def jpeg30(im: np.ndarray) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 30])[1], cv2.IMREAD_UNCHANGED)


CONDITIONS = {"clean": None, "smaller": smaller, "blur": blur, "jpeg30": jpeg30}


def conditioned(sets: dict[str, FaceSet]) -> dict[tuple[str, str], FaceSet]:
    """Every set under every condition, cut once: {(set, condition): faces} (clean: as stored)."""
    return {(s, c): faces if f is None else FaceSet([f(im) for im in faces.images], faces.soft, faces.hard,
                                                   faces.labels, faces.files)
            for s, faces in sets.items() for c, f in CONDITIONS.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    board_arguments(ap, "robustness.json")
    args = ap.parse_args()

    models = scored_models(args.model, args.shared, peers=not args.no_peers)
    t0 = time.time()
    yunet = shared_yunet(args.shared)
    sets = {k: ts.faces for k, ts in test_sets(args.shared, YuNetDetector(yunet)).items() if k in SETS}
    cut = conditioned(sets)
    results = {}
    for name, path in models.items():
        row: dict = {"path": path if not Path(path).is_absolute() else Path(path).name}
        for c in CONDITIONS:
            row[c] = {}
            for s in sets:
                labels, probs = model_probs(path, cut[s, c], backend="onnxruntime", precision="fp32")
                row[c][s] = round(evaluate_probs(labels, probs, cut[s, c]).accuracy, 4)
            row[c]["mean"] = round(float(np.mean([row[c][s] for s in MEAN_SETS if s in sets])), 4)
        row["worst_drop"] = round(max(row["clean"]["mean"] - row[c]["mean"] for c in CONDITIONS), 4)
        results[name] = row
        print(f"{name:22s} " + "  ".join(f"{c} {row[c]['mean']:.1%}" for c in CONDITIONS), flush=True)
    write_result(args.out, {
        "machine": machine_info(), "seconds": round(time.time() - t0, 1),
        "sets": {s: len(f) for s, f in sets.items()}, "mean_sets": [s for s in MEAN_SETS if s in sets],
        "conditions": {"clean": "as stored", "smaller": "60 % of the stored side, INTER_AREA",
                       "blur": "Gaussian, sigma one model-input pixel (side / 48)", "jpeg30": "JPEG quality 30"},
        "protocol": "stored crops as predict --detector none; ONNX Runtime fp32 for packages", "models": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
