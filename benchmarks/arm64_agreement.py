"""The device runtime on ARM64 (a Jetson's or a Raspberry Pi's CPU), emulated, against this x86-64 machine.

    python benchmarks/arm64_agreement.py                     # builds runs/arm64 first (about a minute)
    python benchmarks/arm64_agreement.py --cpu neoverse-n1   # an ARM core with SDOT/UDOT (asimddp)

``benchmarks/arm64/make_env.sh`` builds an aarch64 Python from Debian's packages and installs the
wheel ``pip wheel`` makes from this repository with aarch64 wheels of its dependencies (no torch);
qemu's user-mode emulator runs it. There, as on this machine, ``benchmarks/arm64/device_side.py``
reads the astronaut (``predict``: YuNet, alignment), classifies the CK+48 faces and AffectNet96's
``test_`` part with every backend and precision the default package has (``predict_faces``), and
says what ``precision="auto"`` picks. ``info default`` runs there too. The two machines' answers
are compared face by face: label agreement, and the largest and 99th-percentile difference of
any class probability. Emulated timings are not device timings: none are taken.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, SHARED, write_result  # noqa: E402  (benchmarks/ is the script folder)
from motivnet_edge.machine import machine_info

SIDE = ROOT / "benchmarks" / "arm64" / "device_side.py"
SETS = {"ckplus": ("ckplus48", None), "affectnet96": ("affectnet96", "test")}


def test_faces(shared: Path, per_set: int) -> dict[str, np.ndarray]:
    """The stored crops of CK+48 (it has no split) and AffectNet96 ``test_``, gray uint8: a seeded
    sample of ``per_set`` faces of each, every class in proportion (0: all). Emulated Python is slow."""
    from motivnet_edge.datasets.readers import read_image_folder
    from motivnet_edge.datasets.domains import read_part

    out = {"ckplus": read_image_folder(shared / "data" / "ckplus48", mapping={"contempt": None}),
           "affectnet96": read_part(shared, "affectnet96", "test")}
    faces = {}
    for k, v in out.items():
        order = np.sort(np.random.default_rng(0).permutation(len(v))[:per_set or None])
        faces[k] = np.stack([np.asarray(v.images[i], np.uint8) for i in order])
    return faces


def arm_command(root: Path, cpu: str, *args: str) -> list[str]:
    return ["qemu-aarch64-static", "-cpu", cpu, "-L", str(root), str(root / "usr" / "bin" / "python3.11"), *args]


def compare(ours: dict, theirs: dict) -> dict:
    """Per run and set: label agreement and probability differences, ARM against x86-64."""
    out = {}
    for key in sorted(set(ours) & set(theirs)):
        a, b = ours[key], theirs[key]
        diff = np.abs(a - b)
        out[key] = {"n": len(a), "label_agreement": round(float((a.argmax(1) == b.argmax(1)).mean()), 5),
                    "labels_differ": int((a.argmax(1) != b.argmax(1)).sum()),
                    "max_prob_diff": float(f"{diff.max():.3g}"), "p99_prob_diff": float(f"{np.percentile(diff.max(1), 99):.3g}")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(ROOT / "runs" / "arm64"), help="the ARM64 environment (built if missing)")
    ap.add_argument("--cpu", default="cortex-a72", choices=("cortex-a72", "neoverse-n1"),
                    help="the emulated core: cortex-a72 (Raspberry Pi 4) or neoverse-n1 (with SDOT/UDOT)")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--per-set", type=int, default=400, help="faces of each test set (0: all; 400 + 400 take ~5 min)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "arm64.json"))
    args = ap.parse_args()
    import skimage

    root = Path(args.root)
    photo = str(Path(skimage.__file__).parent / "data" / "astronaut.png")
    t0 = time.time()
    subprocess.run(["bash", str(ROOT / "benchmarks" / "arm64" / "make_env.sh"), str(root), args.cpu], check=True,
                   stdout=subprocess.DEVNULL)
    built = time.time() - t0
    with tempfile.TemporaryDirectory() as tmp:
        faces = Path(tmp) / "faces.npz"
        np.savez(faces, **test_faces(args.shared, args.per_set))
        arm_env = {**os.environ, "PYTHONPATH": f"{root / 'opt' / 'motivnet'}:{root / 'opt' / 'openvino'}"}
        t1 = time.time()
        subprocess.run(arm_command(root, args.cpu, str(SIDE), str(faces), photo, f"{tmp}/arm.npz"), check=True,
                       env=arm_env, stderr=subprocess.DEVNULL)
        emulated = time.time() - t1
        info = subprocess.run(arm_command(root, args.cpu, "-m", "motivnet_edge.cli", "info", "default"),
                              capture_output=True, text=True, env=arm_env, timeout=600)
        torch = subprocess.run(arm_command(root, args.cpu, "-c", "import torch"), capture_output=True, env=arm_env)
        subprocess.run([sys.executable, str(SIDE), str(faces), photo, f"{tmp}/x86.npz"], check=True)
        arm, x86 = dict(np.load(f"{tmp}/arm.npz")), dict(np.load(f"{tmp}/x86.npz"))
        arm_facts = json.loads(Path(f"{tmp}/arm.npz.json").read_text())
        x86_facts = json.loads(Path(f"{tmp}/x86.npz.json").read_text())
    qemu = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    boxes = [max(abs(p - q) for p, q in zip(a["box"], b["box"])) for a, b in zip(arm_facts["photo"], x86_facts["photo"])]
    result = {
        "machine": machine_info(),
        "arm64": {**{k: arm_facts[k] for k in ("machine", "cpu", "flags", "int8_flags", "python", "versions", "runs",
                                              "as_shipped", "auto_precision", "int8_agrees", "int8_latency_recorded_on")},
                  "emulator": f"{qemu}, -cpu {args.cpu}", "torch_importable": torch.returncode == 0,
                  "info_default": {"returncode": info.returncode, "lines": len(info.stdout.splitlines()),
                                   "first_line": info.stdout.splitlines()[0] if info.stdout else info.stderr[-200:]},
                  "build_seconds": round(built), "emulated_run_seconds": round(emulated)},
        "photo": {"arm64": arm_facts["photo"], "x86_64": x86_facts["photo"],
                  "same_labels": [a["label"] for a in arm_facts["photo"]] == [b["label"] for b in x86_facts["photo"]],
                  "largest_box_difference_px": round(max(boxes), 3) if boxes else None},
        "x86_64_as_shipped": x86_facts["as_shipped"], "x86_64_auto_precision": x86_facts["auto_precision"],
        "agreement": compare(arm, x86),
        "note": "emulated by qemu-user: timings there are not device timings and none are reported",
    }
    write_result(args.out, result)
    for key, v in result["agreement"].items():
        print(f"{key:32s} n={v['n']:5d} agree {v['label_agreement']:.2%} max |dp| {v['max_prob_diff']:.2g} "
              f"p99 {v['p99_prob_diff']:.2g}")
    print(f"astronaut: {result['photo']['same_labels'] and 'same label'}, box within "
          f"{result['photo']['largest_box_difference_px']} px; info default rc {info.returncode}; "
          f"auto precision on ARM64 {arm_facts['auto_precision']}; wrote {args.out}")


if __name__ == "__main__":
    main()
