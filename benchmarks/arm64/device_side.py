"""The device half of ``benchmarks/arm64_agreement.py``: run on the emulated ARM64 Python (and, for
the reference, on this machine), with the device install only (numpy, OpenCV, ONNX Runtime;
OpenVINO where its aarch64 wheel is on the path).

    python device_side.py FACES.npz PHOTO OUT.npz

For each backend and precision the default package has here, the class probabilities of every
face in FACES.npz through ``EmotionRecognizer.predict_faces`` (whole crops, as ``predict
--detector none`` reads them); the photo's faces through ``predict`` (YuNet, alignment); what
``precision="auto"`` picks and the CPU facts it picked from. Writes OUT.npz and OUT.npz.json.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from motivnet_edge import EmotionRecognizer
from motivnet_edge.backends import choose_precision, installed_backends, int8_agrees
from motivnet_edge.backends.base import BackendOptions
from motivnet_edge.cpu import int8_flags
from motivnet_edge.package import load_package
from motivnet_edge.machine import machine_info


def main(faces_npz: str, photo: str, out: str) -> None:
    faces = np.load(faces_npz)
    pkg = load_package("default")
    probs, runs = {}, {}
    for backend in installed_backends():
        for precision in ("fp32", "int8"):
            if pkg.file_for(backend, precision) is None:
                continue
            with EmotionRecognizer.from_pretrained("default", backend=backend, precision=precision,
                                                   detector="none", threads=2) as rec:
                for name in faces.files:
                    found = rec.predict_faces(list(faces[name]))
                    probs[f"{backend}/{precision}/{name}"] = np.array([[f.scores[k] for k in rec.labels] for f in found])
                runs[f"{backend}/{precision}"] = rec.describe()
    with EmotionRecognizer.from_pretrained("default", threads=2) as rec:
        photo_faces = [{"box": list(f.box), "label": f.label, "confidence": f.confidence} for f in rec.predict(photo)]
        shipped = rec.describe()
    auto = {b: choose_precision(pkg, b, "auto", BackendOptions()) for b in installed_backends()}
    lat = pkg.metrics.get("latency", {})
    facts = {
        **machine_info(), "int8_flags": sorted(int8_flags()),
        "runs": runs, "photo": photo_faces, "as_shipped": shipped, "auto_precision": auto,
        "int8_agrees": {b: int8_agrees(pkg, b) for b in installed_backends()},
        "int8_latency_recorded_on": {b: lat.get(b, {}).get("cpu_int8_flags") for b in installed_backends()},
    }
    np.savez(out, **probs)
    with open(out + ".json", "w") as fh:
        json.dump(facts, fh, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
