"""Full 640x480 frames: detect + align + classify, every frame or with a detection cadence.

    python benchmarks/frame_pipeline.py --shared ../shared

Labelled faces (CK+48, and the facial_expressions validation part) are placed at seeded
positions and sizes in 640x480 frames, so the accuracy cost of each speed-up is measured,
not assumed. Modes: detection at full resolution on every frame (the reference); detection
on a copy downscaled for the smallest face asked for (``min_face``); and short clips (the
face drifting a few pixels a frame) through ``stream()`` with a detection cadence. Each mode
reports p50 ms per frame (2 threads, ONNX Runtime fp32 classify, YuNet) or frames per
second, and accuracy over the same faces, with its difference to the reference. Face crops
alone (no detector) are timed with the recognizer's default spinning and with ``spin=False``.
The reference runs once more with ONNX Runtime's workers spinning (``spin=True``; the recognizer
turns spinning off when it runs a detector) to show what that setting costs. Peers (OpenCV
Zoo's expression model by default, with its own 112x112 RGB preprocessing; ``--peer NAME=PACKAGE``)
run the main mode, every frame at ``min_face=48``, on the same frames. Writes
benchmarks/results/frame_pipeline.json (CPU flags, commit, date inside).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from common import SHARED, named, per_cpu_out, write_result  # noqa: E402  (benchmarks/ is the script folder)


W, H = 640, 480


def faces(shared: Path, per_set: int, seed: int = 0):
    """(image, label index, set name) for a seeded sample of CK+48 and facial_expressions val."""
    from motivnet_edge.datasets.readers import read_image_folder, split_by_person

    sets = {"ckplus": read_image_folder(shared / "data" / "ckplus48", mapping={"contempt": None}),
            "facial_expressions": split_by_person(read_image_folder(shared / "data" / "facial_expressions",
                                                                    mapping={"contempt": None}), part="val")}
    rng = np.random.default_rng(seed)
    out = []
    for name, fs in sets.items():
        for i in rng.choice(len(fs), min(per_set, len(fs)), replace=False):
            out.append((fs.images[i], int(fs.hard[i]), name))
    return out, sets["ckplus"].labels


def place(face: np.ndarray, size: int, x: int, y: int) -> np.ndarray:
    import cv2

    frame = np.full((H, W, 3), 96, np.uint8)
    f = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    frame[y:y + size, x:x + size] = f[..., None] if f.ndim == 2 else f
    return frame


def run_mode(package, yunet, samples, labels, *, min_face: int, detect_every: int | None, clip: int,
             spin: bool | None = None, precision: str = "fp32") -> dict:
    from motivnet_edge import EmotionRecognizer

    rng = np.random.default_rng(1)
    correct, times, n_frames = 0, [], 0
    with EmotionRecognizer.from_pretrained(package, detector="yunet", yunet_model=yunet, threads=2,
                                           backend="onnxruntime", precision=precision, min_face=min_face,
                                           detect_every=detect_every or 1, spin=spin) as rec:
        names = list(rec.labels)
        for face, label, _ in samples:
            size = int(rng.integers(96, 200))
            x, y = int(rng.integers(0, W - size - 3 * clip)), int(rng.integers(0, H - size))
            if detect_every is None:
                frame = place(face, size, x, y)
                t = time.perf_counter()
                preds = rec.predict(frame)
                times.append(time.perf_counter() - t)
                results = [preds]
            else:
                frames = [place(face, size, x + 3 * k, y) for k in range(clip)]
                t = time.perf_counter()
                results = list(rec.stream(frames))
                times.append((time.perf_counter() - t) / clip)
            for preds in results:
                n_frames += 1
                top = max(preds, key=lambda p: p.score) if preds else None
                correct += top is not None and names.index(top.label) == names.index(labels[label])
        ran = rec.describe()
    return {"min_face": min_face, "detect_every": detect_every, "spin": spin, "ran": ran, "frames": n_frames,
            "accuracy": round(correct / n_frames, 4), "p50_ms_per_frame": round(1e3 * float(np.median(times)), 3),
            "fps": round(1 / float(np.median(times)), 1)}


def crop_mode(package, samples, *, spin: bool | None, rounds: int = 3) -> dict:
    """Face crops only (``detector="none"``): p50 ms per crop with the recognizer's default
    spinning (None: on without a detector) or an explicit setting, the recognizer used alone."""
    from motivnet_edge import EmotionRecognizer

    times = []
    with EmotionRecognizer.from_pretrained(package, detector="none", threads=2, backend="onnxruntime",
                                           precision="fp32", spin=spin) as rec:
        for face, _, _ in samples[:20]:
            rec.predict(face)  # warm-up
        for _ in range(rounds):
            for face, _, _ in samples:
                t = time.perf_counter()
                rec.predict(face)
                times.append(time.perf_counter() - t)
    return {"detector": "none", "spin": spin, "crops": len(times),
            "p50_ms_per_crop": round(1e3 * float(np.median(times)), 4),
            "p90_ms_per_crop": round(1e3 * float(np.percentile(times, 90)), 4)}


def _peers(args) -> dict[str, str]:
    """NAME -> package of each peer run beside the model (``--peer``, else OpenCV Zoo's)."""
    if args.peer is not None:
        return named(args.peer)
    from zoo_package import zoo_peer

    zoo = zoo_peer(args.shared)
    return {"opencv_zoo": zoo} if zoo else {}


def main() -> None:
    from motivnet_edge.datasets.domains import shared_yunet

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--package", type=Path, default=None, help="model package (default: the embedded one)")
    ap.add_argument("--per-set", type=int, default=150, help="faces drawn from each labelled set")
    ap.add_argument("--clip", type=int, default=10, help="frames per clip in stream modes")
    ap.add_argument("--peer", action="append", default=None, metavar="NAME=PACKAGE",
                    help="a peer package run in the main mode (default: OpenCV Zoo's, when shared/ has it)")
    per_cpu_out(ap, "frame_pipeline.json")
    args = ap.parse_args()

    from motivnet_edge.machine import machine_info
    from motivnet_edge.recognizer import DEFAULT_MODEL

    package = args.package or DEFAULT_MODEL
    yunet = shared_yunet(args.shared)
    samples, labels = faces(args.shared, args.per_set)
    modes = [dict(min_face=1, detect_every=None), dict(min_face=48, detect_every=None),
             dict(min_face=64, detect_every=None), dict(min_face=1, detect_every=1),
             dict(min_face=48, detect_every=5), dict(min_face=48, detect_every=10),
             dict(min_face=1, detect_every=None, spin=True)]  # the reference with ORT's workers spinning
    rows = []
    for m in modes:
        rows.append(run_mode(package, yunet, samples, labels, clip=args.clip, **m))
        print(rows[-1], flush=True)
    # Crops alone: the default (spinning, no detector) must not be slower than spin=False; the
    # two settings alternate so drift hits both alike.
    crop_rows = [crop_mode(package, samples, spin=s) for s in (None, False, None, False)]
    crops = [{"detector": "none", "spin": s, "crops": sum(r["crops"] for r in crop_rows if r["spin"] is s),
              "p50_ms_per_crop": round(float(np.median([r["p50_ms_per_crop"] for r in crop_rows if r["spin"] is s])), 4)}
             for s in (None, False)]
    ref = {None: rows[0]["accuracy"], "stream": rows[3]["accuracy"]}
    for r in rows:
        r["accuracy_vs_full_every_frame"] = round(r["accuracy"] - (ref[None] if r["detect_every"] is None
                                                                   else ref["stream"]), 4)
    results = {"machine": machine_info(), "frame": f"{W}x{H}, one face of 96-200 px on a flat background",
               "faces": {"n": len(samples), "sets": sorted({s for _, _, s in samples})},
               "settings": {"threads": 2, "classify": "onnxruntime fp32", "detector": "YuNet 2023mar",
                            "clip_frames": args.clip},
               "package": str(package), "rows": rows, "crops": crops,
               "peers": [{"name": name, "package": path,
                          **run_mode(path, yunet, samples, labels, clip=args.clip, min_face=48, detect_every=None,
                                     precision="auto")}
                         for name, path in _peers(args).items()]}
    write_result(args.out, results)
    print(f"{'mode':48s} {'p50 ms':>8s} {'fps':>7s} {'accuracy':>9s} {'vs ref':>7s}")
    for r in rows:
        mode = (f"every frame, min_face {r['min_face']}" if r["detect_every"] is None
                else f"stream, detect every {r['detect_every']}, min_face {r['min_face']}")
        mode += ", ORT spinning" if r["spin"] else ""
        print(f"{mode:48s} {r['p50_ms_per_frame']:8.2f} {r['fps']:7.1f} {r['accuracy']:9.2%} "
              f"{100 * r['accuracy_vs_full_every_frame']:+6.1f}")
    for p in results["peers"]:
        print(f"{'peer ' + p['name'] + ', every frame, min_face 48':48s} {p['p50_ms_per_frame']:8.2f} {p['fps']:7.1f} "
              f"{p['accuracy']:9.2%}")
    for r in crops:
        setting = "default (spins without a detector)" if r["spin"] is None else "spin=False"
        print(f"face crops only, {setting:36s} {r['p50_ms_per_crop']:8.3f} ms per crop")
    print(f"CPU {results['machine']['cpu']} flags {results['machine']['flags']}; wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
