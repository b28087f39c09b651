"""Chooses the default model among trained runs on validation data only.

    python benchmarks/select_default.py --run runs/md_pico_ft --run runs/md_pico_ft_nokd

The score is the mean over domains of validation accuracy: FER2013Valid (FER+ majority),
affectnet96 ``valid_``, KDEF validation people 08-12 (YuNet-aligned, as ``predict`` sees them),
the facial_expressions validation part (people split off by name) and ExpW ``valid_`` (YuNet-aligned). A run qualifies only when
every class with at least 40 validation faces in a domain reaches ``--floor`` recall there (a
model that folds fear into surprise does not win on accuracy). The test sets are not read here.
With ``--robust`` the score is the mean of that and of the same accuracy on the validation faces
made smaller, blurred and JPEG-compressed (``robustness.py``'s conditions). Writes
benchmarks/results/selection.json (CPU flags, commit, date inside) and prints the winner.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from motivnet_edge.datasets.domains import shared_yunet
from motivnet_distill.evaluate import evaluate_probs, model_probs
from motivnet_distill.mixture import validation_sets
from motivnet_distill.distill_options import STUDENT_PREPROCESSING
from motivnet_edge.machine import machine_info
from motivnet_edge.detectors import YuNetDetector
from common import ROOT, SHARED, write_result  # noqa: E402  (benchmarks/ is the script folder)

MIN_SUPPORT = 40


def degraded_accuracy(run: Path, cut: dict) -> dict:
    """Mean validation accuracy over the domains under each poorer-capture condition, and their mean;
    ``cut`` is ``robustness.conditioned`` of the validation sets (made once for every run)."""
    from robustness import CONDITIONS

    out = {}
    for cond in CONDITIONS:
        if cond == "clean":
            continue
        accs = [evaluate_probs(*model_probs(run, faces), faces).accuracy for (_, c), faces in cut.items() if c == cond]
        out[cond] = round(sum(accs) / len(accs), 4)
    out["mean"] = round(sum(out.values()) / len(out), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, action="append", required=True, help="a run folder or package (repeat)")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--floor", type=float, default=0.30, help="lowest per-class validation recall allowed")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "selection.json")
    ap.add_argument("--robust", action="store_true",
                    help="score each run on its validation faces as stored and made smaller, blurred and "
                         "JPEG-compressed (benchmarks/robustness.py's conditions): the mean of the two means")
    args = ap.parse_args()

    yunet = shared_yunet(args.shared)
    sets = validation_sets(args.shared, STUDENT_PREPROCESSING, YuNetDetector(yunet))
    if args.robust:
        from robustness import conditioned

        cut = conditioned(sets)
    rows = []
    for run in args.run:
        row = {"run": run.name}
        lowest = 1.0
        for name, faces in sets.items():
            labels, probs = model_probs(run, faces)
            m = evaluate_probs(labels, probs, faces)
            support = dict(zip(m.labels, [sum(r) for r in m.confusion]))
            row[name] = {"accuracy": round(m.accuracy, 4), "uar": round(m.uar, 4), "n": m.n,
                         "per_class_recall": {k: round(v, 4) for k, v in m.per_class_recall.items()}}
            lowest = min([lowest, *(v for k, v in m.per_class_recall.items() if support.get(k, 0) >= MIN_SUPPORT)])
        row["score"] = round(sum(row[n]["accuracy"] for n in sets) / len(sets), 4)
        if args.robust:
            row["clean_score"] = row["score"]
            row["degraded"] = degraded_accuracy(run, cut)
            row["score"] = round((row["clean_score"] + row["degraded"]["mean"]) / 2, 4)
        row["lowest_recall"] = round(lowest, 4)
        row["qualifies"] = lowest >= args.floor
        rows.append(row)
        print(f"{run.name:24s} " + "  ".join(f"{n} {row[n]['accuracy']:.2%}" for n in sets)
              + f"  score {row['score']:.2%}  lowest recall {lowest:.1%}"
              + (f"  degraded {row['degraded']['mean']:.2%}" if args.robust else ""), flush=True)
    ok = [r for r in rows if r["qualifies"]] or rows
    best = max(ok, key=lambda r: r["score"])
    write_result(args.out, {"machine": machine_info(), "rule": (
        f"mean of validation accuracy over {', '.join(sets)}; runs with a class (>= {MIN_SUPPORT} faces) under "
        f"{args.floor:.0%} validation recall are passed over; test sets not read"
        + ("; with --robust the score is the mean of that and of the same mean on the faces made smaller, "
           "blurred and JPEG-compressed (robustness.py's conditions): a device's faces are often softer than a "
           "dataset's" if args.robust else "")),
        "rows": rows, "chosen": best["run"]})
    print(f"chosen: {best['run']}")


if __name__ == "__main__":
    main()
