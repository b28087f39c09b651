"""Issue 41: does a model underfit or memorise? Its accuracy on its own training faces against validation.

    python benchmarks/fit_gap.py --model default --model teacher=runs/pkg/teacher_resnet48

A model that scores about as well on the faces it was trained on as on held-out ones is short of
capacity (a bigger model, a longer schedule or lighter augmentation pays); one far above on its
training faces has memorised them (capacity alone will not help: more faces, stronger
regularisation or a teacher's soft targets will). Per domain, a seeded sample of the train part
(clean: no augmentation, cut as the validation part is cut: KDEF and ExpW detector-aligned, the
others as stored crops) is scored beside the whole validation part. SFEW has no validation part of its
own (its ``val_`` is its test set, read only by the scoreboard), so only its train fit is given.
Writes benchmarks/results/fit_gap.json (CPU flags, commit, date inside). Test parts are never read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from common import ROOT, SHARED, named, require_data, write_result  # noqa: E402  (benchmarks/ is the script folder)

OUT = ROOT / "benchmarks" / "results" / "fit_gap.json"


def sample(faces, count: int, seed: int = 0):
    """At most ``count`` labelled faces of ``faces``, drawn without replacement (seeded)."""
    keep = np.flatnonzero(faces.hard >= 0)
    rng = np.random.default_rng(seed)
    return faces.subset(np.sort(rng.choice(keep, min(count, len(keep)), replace=False)))


def accuracy(model: str, faces) -> float:
    from motivnet_distill.evaluate import evaluate_probs, model_probs

    return round(evaluate_probs(*model_probs(model, faces), faces).accuracy, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True,
                    help="NAME=PATH or PATH ('default': the embedded model): a package, run folder or checkpoint (repeat)")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--train-faces", type=int, default=3000, help="train faces sampled per domain")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "cache_kd",
                    help="distill's cache folder: aligned crops are reused from it")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from motivnet_distill.distill_options import STUDENT_PREPROCESSING
    from motivnet_distill.mixture import SELECTION_DOMAINS, evaluation_cut, validation_sets
    from motivnet_edge.datasets.domains import DOMAINS, read_part, shared_yunet
    from motivnet_edge.detectors import YuNetDetector
    from motivnet_edge.machine import machine_info

    require_data(args.shared)
    models = named(args.model)
    detector = YuNetDetector(shared_yunet(args.shared))
    val = validation_sets(args.shared, STUDENT_PREPROCESSING, detector, cache_dir=args.cache_dir)
    sets = {d: (evaluation_cut(sample(read_part(args.shared, d, "train"), args.train_faces), d, STUDENT_PREPROCESSING,
                               detector, cache_dir=args.cache_dir, part="trainsample"), val.get(d))
            for d in [*SELECTION_DOMAINS, "sfew"]}
    rows = {}
    for name, path in models.items():
        rows[name] = {"path": path, "domains": {}}
        for d, (train, held_out) in sets.items():
            t = accuracy(path, train)
            v = accuracy(path, held_out) if held_out is not None else None
            rows[name]["domains"][d] = {"train": t, "val": v, "gap": None if v is None else round(t - v, 4)}
            print(f"{name:16s} {d:20s} train {100 * t:5.1f}" + ("" if v is None else f"  val {100 * v:5.1f}"),
                  flush=True)
    write_result(args.out, {"machine": machine_info(), "train_faces": args.train_faces,
                            "sets": {d: {"train": len(t), "val": None if v is None else len(v)}
                                     for d, (t, v) in sets.items()},
                            "protocol": "clean faces (no augmentation), each domain cut as its validation part ("
                                        + ", ".join(d for d in sets if DOMAINS[d].eval_crop == "aligned")
                                        + " YuNet-aligned, the others whole crops); a seeded train sample; "
                                        "test parts not read",
                            "models": rows})


if __name__ == "__main__":
    main()
