"""Issue 41: do more test-time views than the mirror pay? Scored on validation parts only.

    python benchmarks/test_time_views.py --model accurate
    python benchmarks/test_time_views.py --model default

``accurate`` already reads each face and its mirror image inside its graph (``ensemble --mirror``),
which bought it 0.6 points of pooled validation for twice the compute. The next views a face
detector's jitter suggests are small shifts and scales of the face crop. Each view here moves the
face in the source image (replicated border, as the crop's own padding would), before the model's
own preprocessing, so it is the face a slightly displaced detector box would hand the model. Every
candidate set of views is scored as ``ensemble_teacher.py`` scores a teacher: the mean of the
views' probabilities, per selection domain, and the mean of the domains (``distill``'s val_acc).
Writes benchmarks/results/test_time_views_<model>.json (model file and sha256, commit, date inside). Test
parts are never read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from common import ROOT, SHARED, write_result  # noqa: E402  (benchmarks/ is the script folder)
from ensemble_teacher import member_probs, score, teachers_and_sets  # noqa: E402  (the same reading and score as the teachers')

#: Each view as (horizontal shift, vertical shift, scale), shifts in fractions of the image's side.
VIEWS = {
    "identity": (0.0, 0.0, 1.0),
    "left": (-0.04, 0.0, 1.0), "right": (0.04, 0.0, 1.0),
    "up": (0.0, -0.04, 1.0), "down": (0.0, 0.04, 1.0),
    "zoom_in": (0.0, 0.0, 1.08), "zoom_out": (0.0, 0.0, 0.92),
}

#: The view sets compared, each the mean of its views' probabilities. The cost is their count.
CANDIDATES = {
    "identity": ("identity",),
    "+horizontal shifts": ("identity", "left", "right"),
    "+vertical shifts": ("identity", "up", "down"),
    "+scales": ("identity", "zoom_in", "zoom_out"),
    "+all shifts": ("identity", "left", "right", "up", "down"),
    "all": tuple(VIEWS),
}


def moved(image: np.ndarray, dx: float, dy: float, scale: float) -> np.ndarray:
    """``image`` scaled about its centre and shifted by (dx, dy) of its side, borders replicated."""
    import cv2

    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, scale)
    m[:, 2] += (dx * w, dy * h)
    return cv2.warpAffine(np.ascontiguousarray(image), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


class Moved:
    """``teacher`` reading every face moved by one view (``probs`` as ``member_probs`` calls it)."""

    def __init__(self, teacher, view: tuple[float, float, float]) -> None:
        self.teacher, self.view = teacher, view

    def probs(self, images, *, labels=None) -> np.ndarray:
        return self.teacher.probs([moved(im, *self.view) for im in images], labels=labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="accurate", help="a package folder, .onnx, or an embedded model's name")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "cache_kd",
                    help="distill's cache folder: the aligned selection crops are reused from it")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from motivnet_edge.machine import machine_info

    teachers, sets = teachers_and_sets([args.model], args.shared, args.cache_dir, tool="test_time_views")
    teacher = teachers[args.model]
    probs = {view: member_probs(Moved(teacher, params), sets) for view, params in VIEWS.items()}
    rows = [{"views": label, "passes": len(views), **score([probs[v] for v in views], sets)}
            for label, views in CANDIDATES.items()]
    out = args.out or ROOT / "benchmarks" / "results" / f"test_time_views_{Path(args.model).name}.json"
    write_result(out, {"model": args.model, "teacher": teacher.name,  # its file and sha256, as load_teacher read it
                       "views": {k: dict(zip(("dx", "dy", "scale"), v)) for k, v in VIEWS.items()},
                       "selection_sets": {k: len(v) for k, v in sets.items()},
                       "score": "mean of the domains' validation accuracies (distill's val_acc); passes: "
                                "reads of the model per face", "rows": rows, "machine": machine_info()})
    for r in rows:
        print(f"{r['views']:<20} passes {r['passes']}  pooled {100 * r['pooled']:.1f}  " +
              " ".join(f"{k} {100 * v:.1f}" for k, v in r["domains"].items()))


if __name__ == "__main__":
    main()
