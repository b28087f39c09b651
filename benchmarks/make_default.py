"""Exports the distilled default student and embeds it in the wheel (motivnet_edge/models/default).

    python benchmarks/make_default.py --run runs/default --shared ../shared

Calibration faces come from FER2013Train, validation (prior correction, INT8 accuracy
control, --max-drop) from FER2013Valid; the test sets (FER2013Test, CK+48) are only
measured, never selected on. YuNet ships inside the package, so detector="auto" finds
faces with landmarks out of the box. The manifest records what the model is, how it was
trained, and its measured accuracy and per-class recall.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from motivnet_distill.evaluate import evaluate_probs, package_probs, standard_protocols
from motivnet_export.exporter import export
from motivnet_edge.package import load_package

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "motivnet_edge" / "models" / "default"
MAX_BYTES = 15_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "default")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--calib-count", type=int, default=1000)
    ap.add_argument("--command", required=True, help="the distill command(s) that trained --run, for the manifest")
    ap.add_argument("--no-prior-correction", action="store_true",
                    help="ship the student's raw logits (default: fold a prior correction fitted on FER2013Valid)")
    args = ap.parse_args()
    fer = args.shared / "data" / "ferplus"
    config = json.loads((args.run / "config.json").read_text())
    best = [json.loads(line) for line in (args.run / "log.jsonl").read_text().splitlines()]
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calib"
        calib.mkdir()
        for p in sorted((fer / "FER2013Train").glob("*.png"))[: args.calib_count]:
            shutil.copy(p, calib / p.name)
        source = config["provenance"].get("label_source", "ferplus")
        label_text = {"ferplus": "FER+ vote labels", "fer2013": "FER2013's original labels"}[source]
        extra = config["provenance"].get("extra_training_data", [])
        sets = "FER2013Train" + "".join(f" + {Path(e.split(' (')[0]).name} (train part, split by person)" for e in extra)
        teacher = config["provenance"].get("teacher")
        learnt = f"distilled from {teacher} plus {label_text}" if teacher else f"trained on {label_text} (no teacher)"
        prov = {"description": (
            f"ViT student '{config['provenance']['student_preset']}' (conv patch embedding, "
            f"{config['student']['depth']} blocks, width {config['student']['embed_dim']}), 48x48 gray, {learnt} "
            f"on {sets}, selected on FER2013Valid"
            + ("" if args.no_prior_correction else ", per-class prior correction fitted on FER2013Valid")
            + "; accuracy in metrics.test measured on FER2013Test, CK+48 and the facial_expressions validation part"),
            "training": {"command": args.command, "epochs": best, "config": config["train"]},
            "training_data": f"{sets}: FER2013Train with {label_text}, class-folder sets with their folder labels; "
                             "selection FER2013Valid"}
        yunet = args.shared / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"
        out = export(args.run, Path(tmp) / "pkg", int8=True, calib=calib, val=fer / "FER2013Valid",
                     val_label_source=source, max_drop=args.max_drop, provenance=prov,
                     prior_correction=not args.no_prior_correction, yunet=yunet,
                     license={"faces": "FER2013 images: research use only" + (
                                  "; facial_expressions (Apache-2.0 repository of LFW/IMFDB images): research use"
                                  if any("facial_expressions" in e for e in extra) else ""),
                              "teachers": "FER2013 Xception models: MIT",
                              "detector": "YuNet (detector/yunet.onnx): Apache-2.0"})
        manifest = json.loads((out / "manifest.json").read_text())
        test = {}
        for name, faces in standard_protocols(args.shared).items():
            for precision in ("fp32", "int8"):
                labels, probs = package_probs(out, faces, backend="onnxruntime", precision=precision)
                m = evaluate_probs(labels, probs, faces)
                test.setdefault(name, {})[precision] = {
                    "accuracy": round(m.accuracy, 4), "uar": round(m.uar, 4), "macro_f1": round(m.macro_f1, 4),
                    "n": m.n, "per_class_recall": {k: round(v, 4) for k, v in m.per_class_recall.items()}}
        manifest["metrics"]["test"] = test
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
        load_package(out)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        if size > MAX_BYTES:
            raise SystemExit(f"package is {size / 1e6:.1f} MB, above the {MAX_BYTES / 1e6:.0f} MB budget")
        if DEST.exists():
            shutil.rmtree(DEST)
        shutil.copytree(out, DEST)
    print(json.dumps(test, indent=1))
    print(f"embedded {DEST} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
