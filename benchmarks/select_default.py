"""Chooses the default model among trained runs on validation data only.

    python benchmarks/select_default.py --run runs/pico_votes30 --run runs/pico_fe_ft

The score is the mean of two validation accuracies: FER2013Valid (FER+ majority; the
in-domain selection set every run already uses) and the facial_expressions validation part
(people split off by name, never trained on: in-the-wild faces of other populations).
The test sets (FER2013Test, CK+48) are not read here. Writes
benchmarks/results/selection.json (CPU flags, commit, date inside) and prints the winner.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from motivnet_distill.data import read_ferplus, read_image_folder, split_by_person
from motivnet_distill.evaluate import evaluate_probs, model_probs
from motivnet_edge.atomic import write_json
from motivnet_edge.benchmark import machine_info

ROOT = Path(__file__).resolve().parents[1]


def validation_sets(shared: Path) -> dict:
    """The two validation sets, in MotivNet label order."""
    return {"ferplus_valid": read_ferplus(shared / "data" / "ferplus" / "FER2013Valid"),
            "facial_expressions_val": split_by_person(
                read_image_folder(shared / "data" / "facial_expressions", mapping={"contempt": None}), part="val")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, action="append", required=True, help="a run folder (repeat)")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "selection.json")
    args = ap.parse_args()

    sets = validation_sets(args.shared)
    rows = []
    for run in args.run:
        row = {"run": run.name}
        for name, faces in sets.items():
            labels, probs = model_probs(run, faces)
            m = evaluate_probs(labels, probs, faces)
            row[name] = {"accuracy": round(m.accuracy, 4), "uar": round(m.uar, 4), "n": m.n,
                         "per_class_recall": {k: round(v, 4) for k, v in m.per_class_recall.items()}}
        row["score"] = round(sum(row[n]["accuracy"] for n in sets) / len(sets), 4)
        rows.append(row)
        print(f"{run.name:24s} FER2013Valid {row['ferplus_valid']['accuracy']:.2%}  facial_expressions val "
              f"{row['facial_expressions_val']['accuracy']:.2%}  score {row['score']:.2%}", flush=True)
    best = max(rows, key=lambda r: r["score"])
    write_json(args.out, {"machine": machine_info(), "rule": "mean of FER2013Valid (FER+ majority) and "
                          "facial_expressions validation-part accuracy; test sets not read",
                          "rows": rows, "chosen": best["run"]})
    print(f"chosen: {best['run']}")


if __name__ == "__main__":
    main()
