"""What mirror averaging (``RecognizerOptions(mirror=True)``, ``--mirror``) buys and costs.

    python benchmarks/mirror.py --package default --package nano=runs/pkg/nano

Accuracy: every package scored through the runtime with and without mirroring, on the two
validation sets (FER2013Valid, facial_expressions val: what the default is chosen on) and
the test protocols (FER+ majority, FER2013 labels, CK+48), with each set's lowest class
recall. Cost: classify p50 of each package with and without mirroring and of the mini-Xception
peer, batch 1, timed one call each in turn in one process (spinning off, as in
latency_ratio.py). Writes benchmarks/results/mirror.json (CPU flags, commit, date inside).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import ROOT, SHARED, named, write_result  # noqa: E402  (benchmarks/ is the script folder)




def _accuracy(package: Path, sets: dict, mirror: bool) -> dict:
    from motivnet_distill.evaluate import evaluate_probs, package_probs

    out = {}
    for name, faces in sets.items():
        labels, probs = package_probs(package, faces, backend="onnxruntime", precision="fp32", mirror=mirror)
        m = evaluate_probs(labels, probs, faces)
        out[name] = {"accuracy": round(m.accuracy, 4), "min_recall": round(min(m.per_class_recall.values()), 4),
                     "n": m.n}
    return out


def _latency(recognizers: dict, seconds: float) -> dict:
    from motivnet_edge.timing import time_interleaved

    crops = {name: np.random.default_rng(0).integers(0, 255, (1, *r.package.preprocessing.input_size,
                                                              r.package.preprocessing.channels), dtype=np.uint8)
             for name, r in recognizers.items()}
    times = time_interleaved({name: (lambda r=r, c=crops[name]: r.classify(c)) for name, r in recognizers.items()},
                             seconds=seconds)
    return {name: round(float(np.median(v)), 4) for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", action="append", default=[], metavar="NAME[=PACKAGE]",
                    help="'default' (the embedded model) or NAME=PACKAGE; repeat")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0, help="latency timing budget")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mirror.json")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from motivnet_distill.evaluate import standard_protocols
    from motivnet_edge.machine import machine_info
    from motivnet_edge.recognizer import DEFAULT_MODEL, EmotionRecognizer
    from motivnet_export.exporter import export
    from motivnet_edge.datasets.readers import read_image_folder, split_by_person
    from motivnet_edge.datasets.fer import read_ferplus

    mini = args.shared / "models" / "xception_fer2013" / "fer2013_mini_XCEPTION.102-0.66.hdf5"
    if not mini.is_file():
        raise SystemExit(f"{mini} not found: the sets and the peer are read from ../shared")
    packages = {name: Path(path) if path != "default" else DEFAULT_MODEL
                for name, path in named(args.package or ["default=default"]).items()}
    # the standard protocols' facial_expressions set is the validation part already read
    fe = read_image_folder(args.shared / "data" / "facial_expressions", mapping={"contempt": None})
    sets = {"ferplus_valid": read_ferplus(args.shared / "data" / "ferplus" / "FER2013Valid"),
            "facial_expressions_val": split_by_person(fe, part="val"),
            **{k: v for k, v in standard_protocols(args.shared).items() if k != "facial_expressions"}}
    rows = []
    for name, path in packages.items():
        for mirror in (False, True):
            rows.append({"model": name, "mirror": mirror, **_accuracy(path, sets, mirror)})
            print(f"{name:10s} mirror {'on ' if mirror else 'off'} "
                  + "  ".join(f"{k} {v['accuracy']:.2%}" for k, v in rows[-1].items() if isinstance(v, dict)),
                  flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        peer = export(mini, Path(tmp) / "mini", latency=False)
        settings = dict(backend="onnxruntime", precision="fp32", detector="none", threads=args.threads, spin=False)
        recs = {"xception_mini": EmotionRecognizer.from_pretrained(peer, **settings)}
        for name, path in packages.items():
            recs[name] = EmotionRecognizer.from_pretrained(path, **settings)
            recs[f"{name}+mirror"] = EmotionRecognizer.from_pretrained(path, mirror=True, **settings)
        p50 = _latency(recs, args.seconds)
        for r in recs.values():
            r.close()
    latency = [{"model": k, "p50_ms": v, "ratio_to_xception_mini": round(v / p50["xception_mini"], 3)}
               for k, v in p50.items()]
    for x in latency:
        print(f"{x['model']:16s} classify p50 {x['p50_ms']:.3f} ms  {x['ratio_to_xception_mini']:.2f}x mini-Xception")
    write_result(args.out, {"machine": machine_info(),
                          "settings": {"runtime": "onnxruntime fp32", "threads": args.threads, "batch": 1,
                                       "latency": "EmotionRecognizer.classify, one process, interleaved, spin off",
                                       "seconds": args.seconds},
                          "packages": {k: str(v) for k, v in packages.items()}, "rows": rows, "latency": latency})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
