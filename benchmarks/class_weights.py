"""What a neutral class weight buys and costs: the default model with ``class_weights={"neutral": w}``.

    python benchmarks/class_weights.py [--model PACKAGE] [--weights 1,0.7,0.5,0.35,0.25]

A model trained on FER+ web faces learnt that a third of faces are neutral; posed or subtle
expressions from other populations (CK+ anger, a frowning user) fall into that class. The
recognizer's ``class_weights`` option shifts that prior at run time. This script scores the
package once per set through the runtime (ONNX Runtime fp32, face = whole image) and applies
each weight with the recognizer's own weighting (``apply_class_weights``), on the validation sets
(FER2013Valid, facial_expressions val) and the test sets (FER2013Test, CK+48): accuracy, UAR,
neutral recall and the lowest class recall. Nothing is chosen here; the default stays 1.
Writes benchmarks/results/class_weights.json (CPU flags, commit, date inside).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from motivnet_edge.labels import apply_class_weights
from common import ROOT, SHARED, write_result  # noqa: E402  (benchmarks/ is the script folder)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "motivnet_edge" / "models" / "default")
    ap.add_argument("--weights", default="1,0.7,0.5,0.35,0.25", help="neutral weights, comma list")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "class_weights.json")
    args = ap.parse_args()

    from motivnet_edge.datasets.fer import read_ferplus
    from motivnet_distill.evaluate import evaluate_probs, package_probs, standard_protocols
    from motivnet_edge.machine import machine_info

    t0 = time.time()
    sets = {"valid_ferplus": read_ferplus(args.shared / "data" / "ferplus" / "FER2013Valid"),
            **standard_protocols(args.shared)}
    scored = {name: package_probs(args.model, faces, backend="onnxruntime", precision="fp32")
              for name, faces in sets.items()}
    rows = []
    for w in (float(v) for v in args.weights.split(",")):
        row = {"neutral_weight": w}
        for name, faces in sets.items():
            labels, probs = scored[name]
            m = evaluate_probs(labels, apply_class_weights(probs, labels, {"neutral": w}), faces)
            recall = m.per_class_recall
            row[name] = {"accuracy": round(m.accuracy, 4), "uar": round(m.uar, 4), "n": m.n,
                         "neutral_recall": round(recall["neutral"], 4) if "neutral" in recall else None,
                         "min_recall": round(min(recall.values()), 4),
                         "per_class_recall": {k: round(v, 4) for k, v in recall.items()}}
        rows.append(row)
    results = {"machine": machine_info(), "model": str(args.model.resolve().relative_to(ROOT))
               if args.model.resolve().is_relative_to(ROOT) else str(args.model),
               "settings": {"runtime": "onnxruntime fp32", "face": "whole image"},
               "rows": rows, "seconds": round(time.time() - t0),
               "notes": ["validation: valid_ferplus, facial_expressions (val part); test: ferplus_majority, "
                         "fer2013, ckplus; CK+48 has no neutral class, so every neutral answer there is wrong"]}
    write_result(args.out, results)
    for r in rows:
        print(f"neutral x{r['neutral_weight']:<5g} " + "  ".join(
            f"{n} {r[n]['accuracy']:.2%}/{r[n]['min_recall']:.0%}" for n in sets))
    print(f"wrote {args.out} in {results['seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
