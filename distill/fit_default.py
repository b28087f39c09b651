"""Trains the embedded default student on FER+ (soft vote labels), selecting on FER2013Valid.

    python -m motivnet_distill.fit_default --data ../shared/data/ferplus --out runs/default
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from motivnet_edge.preprocess import Preprocessing

from .data import read_ferplus
from .student import PRESETS
from .train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--student", default="vit_hybrid_nano", choices=sorted(PRESETS))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    pp = Preprocessing(input_size=(48, 48), color="gray", mean=(127.5,), std=(64.0,))
    tr = read_ferplus(args.data / "FER2013Train")
    va = read_ferplus(args.data / "FER2013Valid")
    cfg = TrainConfig(student={k: v for k, v in PRESETS[args.student].items() if k != "img_size"},
                      epochs=args.epochs)
    print(json.dumps(train(args.out, tr, va, pp, cfg, resume=args.resume, progress=False)))


if __name__ == "__main__":
    main()
