"""INT8 against fp32, per package and runtime: accuracy on three test sets and top-1 agreement.

    python benchmarks/int8_agreement.py --package default --package mini=PKG --package big=PKG

Each package's INT8 file for every installed runtime (ONNX Runtime's dynamic INT8, OpenVINO's
NNCF INT8 IR) is scored next to the same runtime's fp32 file on FER2013Test (FER+ majority),
CK+48 and AffectNet96 ``test_`` (whole crops, as ``predict --detector none``). The issue's bar:
agreement >= 99 % on each set. With --export-peers the two FER2013 Xception peers are first
exported with --int8 (calibration: 600 FER2013Train faces, validation: FER2013Valid). Writes
benchmarks/results/int8_agreement.json (CPU flags, commit, date inside).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import SHARED, fer_calibration, named, per_cpu_out, write_result  # noqa: E402  (benchmarks/ is the script folder)

SETS = ("ferplus_majority", "ckplus", "affectnet96")


def peers(shared: Path, workdir: Path) -> dict[str, str]:
    """The Xception peers exported through the project's own path, INT8 included."""
    from motivnet_export.exporter import export

    calib = fer_calibration(shared, workdir / "calib")
    out = {}
    for f in sorted((shared / "models" / "xception_fer2013").glob("*.hdf5")):
        name = "xception_" + f.name.split("_")[1]
        out[name] = str(export(f, workdir / name, int8=True, calib=calib, latency=False,
                               val=shared / "data" / "ferplus" / "FER2013Valid", val_label_source="fer2013"))
    return out


def main() -> None:
    from motivnet_edge.datasets.domains import shared_yunet, test_sets
    from motivnet_distill.evaluate import evaluate_probs, package_probs
    from motivnet_edge.backends import installed_backends
    from motivnet_edge.detectors import YuNetDetector
    from motivnet_edge.package import load_package, resolve_model
    from motivnet_edge.machine import machine_info

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", action="append", default=[], help="NAME=PACKAGE or 'default'; repeat")
    ap.add_argument("--export-peers", action="store_true", help="also export and score the two Xception peers")
    ap.add_argument("--shared", type=Path, default=SHARED)
    per_cpu_out(ap, "int8_agreement.json")
    args = ap.parse_args()
    sets = {k: v for k, v in test_sets(args.shared, YuNetDetector(
        shared_yunet(args.shared))).items() if k in SETS}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        packages = named(args.package or ["default=default"])
        if args.export_peers:
            packages.update(peers(args.shared, Path(tmp)))
        for name, path in packages.items():
            pkg = load_package(path)
            for backend in sorted({f.backend for f in pkg.files if f.precision == "int8"} & set(installed_backends())):
                row = {"package": name, "runtime": backend,
                       "int8_file": pkg.file_for(backend, "int8").path}
                for s, ts in sets.items():
                    probs = {p: package_probs(resolve_model(path), ts.faces, backend=backend, precision=p)
                             for p in ("fp32", "int8")}
                    acc = {p: evaluate_probs(*probs[p], ts.faces).accuracy for p in probs}
                    row[s] = {"n": len(ts.faces), "fp32": round(acc["fp32"], 4), "int8": round(acc["int8"], 4),
                              "agreement": round(float((probs["fp32"][1].argmax(1) == probs["int8"][1].argmax(1))
                                                       .mean()), 4)}
                q = pkg.metrics.get("int8", {}).get(backend, {})
                row["validation_drop"] = q.get("val_accuracy_drop")
                row["lowest_agreement"] = min(row[s]["agreement"] for s in sets)
                rows.append(row)
                print(f"{name:16s} {backend:12s} " + "  ".join(
                    f"{s} {row[s]['fp32']:.2%}->{row[s]['int8']:.2%} agree {row[s]['agreement']:.2%}" for s in sets),
                    flush=True)
            missing = sorted({"onnxruntime", "openvino"} - {r["runtime"] for r in rows if r["package"] == name})
            for backend in missing:
                q = pkg.metrics.get("int8", {}).get(backend, {})
                rows.append({"package": name, "runtime": backend, "int8_file": None,
                             "not_shipped": q.get("error") or ("validation drop above --max-drop"
                                                               if q.get("shipped") is False else "not exported")})
    write_result(args.out, {"machine": machine_info(), "sets": {s: len(ts.faces) for s, ts in sets.items()},
                            "bar": "top-1 agreement with fp32 >= 99 % on each set, validation drop <= 0.5 point",
                            "rows": rows, "mean_faces": int(np.mean([len(ts.faces) for ts in sets.values()]))})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
