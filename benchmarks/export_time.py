"""Wall time of `motivnet-edge export --int8 --max-drop` for a pico student, as a user runs it.

    python benchmarks/export_time.py [--package default] [--max-drop 0.01]

The student is the package's own network rebuilt as a checkpoint (``motivnet_distill.students.from_package``,
BatchNorm statistics from FER2013Valid faces), so the figure needs nothing outside the repository
and ../shared. The export runs in a subprocess exactly as typed on a terminal: ONNX + OpenVINO,
INT8 for ONNX Runtime, TensorRT and OpenVINO (NNCF's scheme ladder, then accuracy control),
calibration on 600 FER2013Train faces, accuracy on FER2013Valid, fp32/int8 latency at the end.
The issue's bar: <= 3 min on 2 cores. Writes benchmarks/results/export_time.json (CPU flags,
commit, date inside).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import SHARED, fer_calibration, per_cpu_out, write_result  # noqa: E402  (benchmarks/ is the script folder)

BAR_SECONDS = 180


def main() -> None:
    from motivnet_edge.package import resolve_model
    from motivnet_edge.machine import machine_info

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="default", help="package whose student is rebuilt and exported")
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--calib-count", type=int, default=600)
    ap.add_argument("--shared", type=Path, default=SHARED)
    per_cpu_out(ap, "export_time.json")
    args = ap.parse_args()
    fer = args.shared / "data" / "ferplus"
    if not fer.is_dir():
        raise SystemExit(f"needs {fer} (FER2013Train for calibration, FER2013Valid for accuracy): not found")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "student.pt"
        subprocess.run([sys.executable, "-m", "motivnet_distill.students.from_package", str(resolve_model(args.package)),
                        "--out", str(ckpt), "--faces", str(fer / "FER2013Valid")], check=True)
        calib = fer_calibration(args.shared, tmp / "calib", args.calib_count)
        # The console script beside this interpreter: the one `pip install` put with the packages used here.
        cli = Path(sys.executable).with_name("motivnet-edge")
        cmd = [str(cli), "export", str(ckpt), "--out", str(tmp / "pkg"), "--int8", "--calib", str(calib),
               "--val", str(fer / "FER2013Valid"), "--max-drop", str(args.max_drop)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - start
        manifest = json.loads((tmp / "pkg" / "manifest.json").read_text())
    int8 = {k: {f: v.get(f) for f in ("shipped", "scheme", "agreement_int8_vs_fp32", "val_accuracy_drop",
                                      "accuracy_control", "error") if f in v}
            for k, v in manifest["metrics"].get("int8", {}).items()}
    write_result(args.out, {
        "machine": machine_info(), "package": args.package,
        "command": "motivnet-edge export STUDENT --out PKG --int8 --calib FER2013Train[:%d] --val FER2013Valid "
                   "--max-drop %g" % (args.calib_count, args.max_drop),
        "val_faces_scored": manifest["metrics"].get("int8", {}).get("openvino", {}).get("agreement_faces"),
        "seconds": round(seconds, 1), "bar_seconds": BAR_SECONDS, "met": seconds <= BAR_SECONDS, "int8": int8})
    print(f"export --int8 --max-drop {args.max_drop}: {seconds:.0f} s (bar {BAR_SECONDS} s); wrote {args.out}")


if __name__ == "__main__":
    main()
