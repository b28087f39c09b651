"""Top-1 agreement of INT8 vs FP32 on real faces (FER2013Test), per backend, for a package.

    python benchmarks/int8_agreement.py [--package PKG] --shared ../shared

Writes benchmarks/results/int8_agreement.json (device, commit, date inside).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from motivnet_distill.data import read_ferplus
from motivnet_distill.evaluate import package_probs
from motivnet_edge.backends import installed_backends
from motivnet_edge.timing import machine_info
from motivnet_edge.package import load_package
from motivnet_edge.recognizer import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = ap.parse_args()
    faces = read_ferplus(args.shared / "data" / "ferplus" / "FER2013Test")
    pkg = load_package(args.package)
    out = {"machine": machine_info(), "package": pkg.provenance.get("description", ""), "faces": len(faces),
           "backends": {}}
    for backend in sorted({f.backend for f in pkg.files} & set(installed_backends())):
        preds = {p: package_probs(args.package, faces, backend=backend, precision=p)[1].argmax(1)
                 for p in ("fp32", "int8")}
        out["backends"][backend] = {"agreement_int8_vs_fp32": float((preds["fp32"] == preds["int8"]).mean())}
    dest = ROOT / "benchmarks" / "results" / "int8_agreement.json"
    dest.write_text(json.dumps(out, indent=1))
    print(json.dumps(out["backends"]))


if __name__ == "__main__":
    main()
