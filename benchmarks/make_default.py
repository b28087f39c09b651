"""Exports the chosen student and embeds it in the wheel (motivnet_edge/models/NAME: default, accurate).

    python benchmarks/make_default.py --run runs/md_pico_ft --shared ../shared --command "..."
    python benchmarks/make_default.py --run runs/md_pico_lite --out runs/pkg/md_pico_lite --command "..."  # a candidate
    python benchmarks/make_default.py --run runs/accurate_ens --name accurate --lean --command "..."

Everything that fits the package to data uses the multi-domain *validation* parts (FER2013Valid,
affectnet96 ``valid_``, KDEF people 08-12 aligned by YuNet, facial_expressions val): the prior
correction, the INT8 accuracy control (--max-drop) and the fp32/INT8 validation figures. INT8
calibration faces are drawn from every domain's train part. The test sets (FER2013Test, CK+48,
AffectNet96 ``test_``, SFEW ``val_``, KDEF people 01-07) are only measured, into the manifest's
``metrics.test``, each cut as its users measure it (see benchmarks/domains.py). YuNet ships
inside the package, so detector="auto" finds faces with landmarks out of the box.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from motivnet_edge.datasets.readers import FaceSet, concat
from motivnet_edge.datasets.domains import crops_for, read_part, shared_yunet, test_sets
from motivnet_distill.evaluate import evaluate_probs, package_probs
from motivnet_distill.mixture import SELECTION_DOMAINS, trained_domains, validation_sets
from motivnet_distill.run_folder import read_log
from motivnet_edge.atomic import write_json
from motivnet_edge.backends import installed_backends
from motivnet_edge.detectors import YuNetDetector
from motivnet_edge.package import load_package
from motivnet_export.exporter import export
from common import ROOT, SHARED  # noqa: E402  (benchmarks/ is the script folder)

MODELS = ROOT / "motivnet_edge" / "models"
#: What each embedded model may weigh (every embedded binary stays in git history).
BUDGET_BYTES = {"default": 15_000_000, "accurate": 20_000_000}


def calibration_faces(shared: Path, count: int, domains) -> FaceSet:
    """``count`` train-part faces spread evenly over the run's domains (whole crops), for INT8 ranges."""
    parts = [read_part(shared, d, "train") for d in domains]
    per = count // len(parts) + 1
    rng = np.random.default_rng(0)
    return concat([p.subset(np.sort(rng.choice(len(p), min(per, len(p)), replace=False))) for p in parts])


def test_metrics(package: Path, shared: Path, detector) -> tuple[dict, dict]:
    """metrics.test (every test set, fp32 and int8 through ONNX Runtime, as users measure it) and,
    per runtime, its INT8 file's top-1 agreement with its fp32 file per test set (precision="auto"
    reads the lowest)."""
    pkg = load_package(package)
    pp = pkg.preprocessing
    # Every other runtime that ships an INT8 file gets its agreement with its own fp32 file measured too.
    runtimes = sorted({f.backend for f in pkg.files if f.precision == "int8"} & set(installed_backends()) - {"onnxruntime"})
    out, agreement = {}, {}
    for name, ts in test_sets(shared, detector).items():
        faces = crops_for(ts, pp)
        missed = np.array([d is None for d in ts.detections]) if ts.detections is not None else None
        top1 = {}
        for precision in ("fp32", "int8"):
            labels, probs = package_probs(package, faces, backend="onnxruntime", precision=precision)
            top1[precision] = probs.argmax(1)
            m = evaluate_probs(labels, probs, faces, unanswered=missed)
            out.setdefault(name, {})[precision] = {
                "accuracy": round(m.accuracy, 4), "uar": round(m.uar, 4), "macro_f1": round(m.macro_f1, 4),
                "n": m.n, "crop": ts.crop, "detector_misses": ts.misses,
                "per_class_recall": {k: round(v, 4) for k, v in m.per_class_recall.items()}}
        agreement.setdefault("onnxruntime", {})[name] = round(float((top1["fp32"] == top1["int8"]).mean()), 4)
        for backend in runtimes:
            fp32, int8 = (package_probs(package, faces, backend=backend, precision=p)[1].argmax(1) for p in ("fp32", "int8"))
            agreement.setdefault(backend, {})[name] = round(float((fp32 == int8).mean()), 4)
    return out, agreement


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--calib-count", type=int, default=1000)
    ap.add_argument("--name", choices=sorted(BUDGET_BYTES), default="default",
                    help="the embedded model it becomes (motivnet_edge/models/NAME), and so its size budget")
    ap.add_argument("--out", type=Path, default=None,
                    help="where the package goes (default: embedded as --name); a candidate built elsewhere "
                         "is what the scoreboard compares before anything is embedded")
    ap.add_argument("--command", required=True, help="the distill command(s) that trained --run, for the manifest")
    ap.add_argument("--lean", action="store_true",
                    help="two weight files shared by every runtime (export --lean): how a convolutional "
                         "student fits the embedded budget")
    ap.add_argument("--no-prior-correction", action="store_true",
                    help="ship the student's raw logits (default: fold a prior correction fitted on the "
                         "multi-domain validation parts)")
    args = ap.parse_args()
    dest = MODELS / args.name
    args.out = args.out or dest
    config = json.loads((args.run / "config.json").read_text())
    epochs = read_log(args.run)
    yunet = shared_yunet(args.shared)
    detector = YuNetDetector(yunet)
    from motivnet_distill.students.io import load_student

    student = load_student(args.run)
    pp = student.preprocessing
    val = validation_sets(args.shared, pp, detector)  # by domain: the prior is fitted to their mean
    prov = config["provenance"]
    trained = trained_domains(prov["domains"])  # the domains this run drew (a share of 0 draws none)
    calib = calibration_faces(args.shared, args.calib_count, trained)
    description = (student.provenance["description"]  # the student's own (students.io.description)
                   + ("" if args.no_prior_correction else ", per-class prior correction fitted on those validation parts")
                   + "; metrics.test holds every test set, measured after export")
    # "run": the run folder's name, which report.py names the embedded default by.
    extra = {"description": description, "training": {"run": args.run.resolve().name, "command": args.command,
                                                      "epochs": epochs, "config": config["train"]},
             "training_data": "train parts of " + ", ".join(trained) + " (kdef people 13-35, the others by their "
                              "own split); selection: validation parts of " + ", ".join(SELECTION_DOMAINS)
                              + " (kdef people 08-12)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = export(args.run, Path(tmp) / "pkg", int8=True, calib=calib, val=val, max_drop=args.max_drop,
                     provenance=extra, prior_correction=not args.no_prior_correction, yunet=yunet, lean=args.lean)
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["metrics"]["test"], agreement = test_metrics(out, args.shared, detector)
        for backend, per_set in agreement.items():
            rec = manifest["metrics"].setdefault("int8", {}).setdefault(backend, {})
            rec["test_agreement_per_set"] = per_set
            rec["test_agreement"] = min(per_set.values())  # precision="auto" needs >= 99.5 %
        write_json(out / "manifest.json", manifest)
        load_package(out)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        budget = BUDGET_BYTES[args.name]
        if size > budget and args.out == dest:  # the wheel's budget; a candidate elsewhere may be bigger
            raise SystemExit(f"package is {size / 1e6:.1f} MB, above the embedded {args.name}'s "
                             f"{budget / 1e6:.0f} MB budget")
        if args.out.exists():
            shutil.rmtree(args.out)
        shutil.copytree(out, args.out)
    print(json.dumps({k: v["fp32"]["accuracy"] for k, v in manifest["metrics"]["test"].items()}, indent=1))
    print(f"{'embedded' if args.out == dest else 'wrote'} {args.out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
