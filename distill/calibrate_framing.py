"""Measures how FER+ crops frame a face, for motivnet_edge.preprocess's template.

Runs YuNet and the Haar cascade on upscaled FER+ training crops and prints where the 5
landmarks fall (fractions of the crop side) and where each detector's box sits relative
to the crop. Those numbers define TEMPLATE_5 and BOX_FRAME, so a photo's aligned crop
frames a face like the training crops do.

    python -m motivnet_distill.calibrate_framing ../shared/data/ferplus/FER2013Train \
        --yunet ../shared/models/yunet/face_detection_yunet_2023mar.onnx --limit 4000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from motivnet_edge.detectors import HaarDetector, YuNetDetector

UPSCALE = 4  # 48 px crops are below YuNet's smallest anchors


def measure(folder: Path, yunet: Path, limit: int) -> dict:
    files = sorted(folder.glob("*.png"))[:limit]
    yn, haar = YuNetDetector(yunet, score_threshold=0.8), HaarDetector(min_size=60)
    lms, ybox, hbox = [], [], []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        big = cv2.resize(img, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_CUBIC)
        side = float(big.shape[0])
        d = yn.detect(big)
        if d:
            lms.append(np.asarray(d[0].landmarks) / side)
            ybox.append(np.asarray(d[0].box) / side)
        h = haar.detect(big)
        if h:
            hbox.append(np.asarray(h[0].box) / side)

    def frame(boxes):
        # Crop square relative to the box: centre offset in box units, side / max(w, h).
        b = np.median(np.stack(boxes), axis=0)
        x, y, w, hh = b
        s = max(w, hh)
        return [round(float((0.5 - (x + w / 2)) / w), 4), round(float((0.5 - (y + hh / 2)) / hh), 4),
                round(float(1.0 / s), 4)]

    return {"images": len(files), "yunet_found": len(lms), "haar_found": len(hbox),
            "template_5": np.round(np.median(np.stack(lms), axis=0), 4).tolist(),
            "box_frame": {"yunet": frame(ybox), "haar": frame(hbox)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--yunet", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=4000)
    args = ap.parse_args()
    print(json.dumps(measure(args.folder, args.yunet, args.limit), indent=1))


if __name__ == "__main__":
    main()
