"""OpenCV Zoo's facial expression model as a motivnet-edge package: a peer on every board.

    python benchmarks/zoo_package.py --out runs/peers/opencv_zoo_fer

The model people run beside YuNet in OpenCV (Progressive Teacher, MobileFaceNet, trained on
RAF-DB; ../shared/models/opencv_zoo_fer, INT8 QDQ ONNX as the Zoo ships it). Its preprocessing is
its own, written into the manifest so the runtime cuts faces the Zoo's way: 112x112 RGB, a
similarity transform of YuNet's five landmarks onto its (ArcFace) template, x = (pixel/255 - 0.5)
/ 0.5 (the Zoo's ``facial_fer_model.py``; the one difference: our warp replicates the border where
the Zoo's fills it black). Labels are renamed from its order (angry, disgust, fearful, happy,
neutral, sad, surprised) to MotivNet's names, in that output order, and written into the graph's
metadata so they are bound to the hashed file. The batch dimension, fixed at 1 in the Zoo's
file, is made free so the runtime can classify several faces at once (same weights, same
operators).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from common import ROOT, SHARED  # noqa: E402  (benchmarks/ is the script folder)

ZOO_FILE = Path("models") / "opencv_zoo_fer" / "facial_expression_recognition_mobilefacenet_2022july_int8.onnx"
ZOO_SHA256 = "f0d7093aff10e2638c734c5f18a6a7eabd2b9239b20bdb9b8090865a6f69a1ed"
#: The Zoo's output order, renamed to MotivNet's label names (the same classes).
ZOO_LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
#: The 112x112 template of the Zoo's alignment (facial_fer_model.py), as fractions of the side.
ZOO_TEMPLATE = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]


def zoo_package(shared: Path, dest: Path) -> Path:
    """Writes the package (atomically) and returns its folder.

    Raises:
        FileNotFoundError: the Zoo's model is not in shared/.
        ValueError: its sha256 is not the one ../shared/README.md lists.
    """
    import onnx

    from motivnet_edge.package import ModelFile
    from motivnet_edge.package.write import build_manifest, write_package
    from motivnet_edge.preprocess import Preprocessing

    src = shared / ZOO_FILE
    data = src.read_bytes()
    if hashlib.sha256(data).hexdigest() != ZOO_SHA256:
        raise ValueError(f"{src} is not the file ../shared/README.md lists (sha256 {ZOO_SHA256[:12]}...)")
    model = onnx.load_from_string(data)
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]  # shapes inferred for batch 1 would pin it again
    pp = Preprocessing(input_size=(112, 112), color="rgb", mean=(127.5,) * 3, std=(127.5,) * 3, crop="align5",
                       interpolation="linear", template=tuple(tuple(v / 112 for v in pt) for pt in ZOO_TEMPLATE))
    onnx.helper.set_model_props(model, {"labels": json.dumps(list(ZOO_LABELS)), "producer": "opencv_zoo",
                                        "preprocessing": json.dumps(pp.to_dict())})

    def build(folder: Path) -> dict:
        (folder / "model.onnx").write_bytes(model.SerializeToString())
        digest = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
        files = [ModelFile("onnxruntime", "int8", "model.onnx", digest, input_name="data", output_name="label")]
        return build_manifest(labels=ZOO_LABELS, preprocessing=pp, files=files, provenance={
            "description": "OpenCV Zoo facial_expression_recognition_mobilefacenet_2022july_int8 (RAF-DB), "
                           "batch dimension freed, labels renamed; preprocessing as the Zoo's",
            "source": {"file": str(ZOO_FILE), "sha256": ZOO_SHA256},
            # boards cut even stored face crops through YuNet + alignment for it, as its users do
            "reads": "aligned faces"},
            license={"weights": "Apache-2.0 (OpenCV Zoo); trained on RAF-DB: research use"})

    return write_package(dest, build)


def zoo_peer(shared: Path = SHARED) -> str | None:
    """The Zoo peer's package path for a board (built once under runs/peers), None without shared/'s file."""
    if not (shared / ZOO_FILE).is_file():
        return None
    dest = ROOT / "runs" / "peers" / "opencv_zoo_fer"
    if not (dest / "manifest.json").is_file():
        zoo_package(shared, dest)
    return str(dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "peers" / "opencv_zoo_fer")
    args = ap.parse_args()
    print(zoo_package(args.shared, args.out))


if __name__ == "__main__":
    main()
