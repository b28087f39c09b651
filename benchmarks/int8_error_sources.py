"""Where a peer's INT8 agreement goes: weights against activations, and kernels against arithmetic.

    python benchmarks/int8_error_sources.py [--peer mini --peer big] [--package mini=PKG ...]

The Xception peers' INT8 files agree with fp32 on about 97 % of FER faces, below the 99 % bar.
This script splits that loss. Each peer's fp32 ONNX graph (the project's own export) gets INT8's
rounding inserted as QuantizeLinear/DequantizeLinear pairs, one source at a time:
per-channel symmetric weights (8-bit, or 7-bit as NNCF's overflow fix leaves them) and per-tensor
asymmetric 8-bit activations at every convolution input (min-max ranges over the same 600
FER2013Train calibration faces as the INT8 export). ONNX Runtime runs these graphs with its
optimisations off, so each Q/DQ pair is evaluated as plain float arithmetic: what is measured is
the quantization grid alone, whatever the CPU. The convolutions whose input rounding alone flips
the most faces are listed too.

With ``--package NAME=PKG`` (a peer exported with ``--int8``, e.g. by the GUIDE's command), the
package's shipped QDQ files are also scored both ways: as arithmetic (optimisations off) and as
this CPU's INT8 kernels (optimisations on, QLinearConv). The gap between the two is the kernels'
own error, e.g. 16-bit saturation on a CPU without VNNI.

Agreement is top-1 agreement with the fp32 graph on FER2013Valid (3,579 faces). Writes
benchmarks/results/int8_error_sources.json, or its avx2/ copy (CPU flags, commit, date inside).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from common import SHARED, fer_calibration, named, per_cpu_out, write_result  # noqa: E402

PEERS = {"mini": "fer2013_mini_XCEPTION.102-0.66.hdf5", "big": "fer2013_big_XCEPTION.54-0.66.hdf5"}
#: (row name, weight bits or None, activations quantized)
SOURCES = [("weights 8-bit only", 8, False), ("weights 7-bit only (overflow fix)", 7, False),
           ("activations 8-bit only", None, True), ("weights 8-bit + activations 8-bit", 8, True),
           ("weights 7-bit + activations 8-bit", 7, True)]


def _session(model, optimise: bool):
    """An ONNX Runtime session on a file path or an in-memory ModelProto; with ``optimise`` off,
    Q/DQ pairs stay separate nodes, evaluated as float arithmetic."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])


def top1(model, x: np.ndarray, *, optimise: bool = False) -> np.ndarray:
    s = _session(model, optimise)
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 256]})[0] for i in range(0, len(x), 256)]).argmax(1)


def activation_ranges(model, calib: np.ndarray) -> dict[str, tuple[float, float]]:
    """Min-max of every convolution input over the calibration faces (zero always inside)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = sorted({n.input[0] for n in m.graph.node if n.op_type == "Conv"})
    for a in names:
        m.graph.output.append(onnx.helper.make_tensor_value_info(a, onnx.TensorProto.FLOAT, None))
    s = _session(m, False)
    values = s.run(names, {s.get_inputs()[0].name: calib})
    return {a: (min(float(v.min()), 0.0), max(float(v.max()), 0.0)) for a, v in zip(names, values)}


def quantized(model, ranges, *, weight_bits: int | None, activations: bool, only: int | None = None):
    """``model`` with INT8 rounding inserted: the weights of every convolution rounded to
    ``weight_bits`` per output channel, and (``activations``) each convolution input rounded to
    8 bits over its calibration range; ``only`` limits both to the convolution of that index."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    nodes, k = [], -1
    for n in m.graph.node:
        k += n.op_type == "Conv"
        if n.op_type != "Conv" or only not in (None, k):
            nodes.append(n)
            continue
        if weight_bits:
            w = numpy_helper.to_array(inits[n.input[1]])
            q = 2 ** (weight_bits - 1) - 1
            s = np.abs(w).reshape(len(w), -1).max(1) / q
            s = np.where(s == 0, 1.0, s).reshape(-1, *[1] * (w.ndim - 1))
            inits[n.input[1]].CopyFrom(numpy_helper.from_array(
                (np.clip(np.round(w / s), -q, q) * s).astype(np.float32), n.input[1]))
        if activations:
            lo, hi = ranges[n.input[0]]
            scale = (hi - lo) / 255 or 1.0
            tag = f"{n.input[0]}__int8_{k}"
            m.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), tag + "_scale"),
                                        numpy_helper.from_array(np.array(round(-lo / scale), np.uint8), tag + "_zero")])
            nodes += [helper.make_node("QuantizeLinear", [n.input[0], tag + "_scale", tag + "_zero"], [tag + "_q"]),
                      helper.make_node("DequantizeLinear", [tag + "_q", tag + "_scale", tag + "_zero"], [tag])]
            n.input[0] = tag
        nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def peer_rows(keras: Path, calib_faces, val_faces, workdir: Path) -> dict:
    """The rounding table of one peer; the faces are read once by the caller and cut here by the
    peer's own preprocessing."""
    import onnx

    from motivnet_edge.preprocess import faces_to_tensor
    from motivnet_export.exporter import export
    from motivnet_export.sources import load_source

    src = load_source(keras)
    pkg = export(keras, workdir / keras.stem, formats=("onnx",), latency=False)
    model = onnx.load(str(pkg / "model.onnx"))
    calib = faces_to_tensor(calib_faces.images, src.preprocessing)
    x = faces_to_tensor(val_faces.images, src.preprocessing)
    reference = top1(model, x)
    ranges = activation_ranges(model, calib)
    rows = [{"source": name, "agreement": round(float((top1(quantized(
        model, ranges, weight_bits=bits, activations=acts), x) == reference).mean()), 4)}
        for name, bits, acts in SOURCES]
    for r in rows:
        print(f"{keras.stem}: {r['source']:36s} {r['agreement']:.2%}", flush=True)
    n_convs = sum(n.op_type == "Conv" for n in model.graph.node)
    alone = sorted((float((top1(quantized(model, ranges, weight_bits=None, activations=True, only=k), x)
                           == reference).mean()), k) for k in range(n_convs))
    return {"faces": int(len(x)), "convolutions": n_convs, "rows": rows,
            "worst_single_activations": [{"convolution": k, "agreement": round(a, 4)} for a, k in alone[:5]]}


def package_rows(pkg: Path, x: np.ndarray) -> list[dict]:
    """The package's QDQ files as arithmetic and as this CPU's kernels, against its fp32 graph."""
    reference = top1(pkg / "model.onnx", x, optimise=True)
    rows = []
    for rel in ("model.int8.onnx", "tensorrt/model.int8.qdq.onnx"):
        if (pkg / rel).is_file():
            arithmetic = float((top1(pkg / rel, x) == reference).mean())
            kernels = float((top1(pkg / rel, x, optimise=True) == reference).mean())
            rows.append({"file": rel, "arithmetic": round(arithmetic, 4), "kernels": round(kernels, 4)})
            print(f"{pkg.name}/{rel}: arithmetic {arithmetic:.2%}, this CPU's kernels {kernels:.2%}", flush=True)
    return rows


def main() -> None:
    from motivnet_edge.datasets.readers import read_dataset
    from motivnet_edge.package import load_package
    from motivnet_edge.preprocess import faces_to_tensor
    from motivnet_edge.machine import machine_info

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", action="append", choices=sorted(PEERS), help="default: both")
    ap.add_argument("--package", action="append", default=[], help="NAME=PKG: a peer exported with --int8")
    ap.add_argument("--shared", type=Path, default=SHARED)
    per_cpu_out(ap, "int8_error_sources.json")
    args = ap.parse_args()
    logging.getLogger("nncf").setLevel(logging.WARNING)
    val_dir = args.shared / "data" / "ferplus" / "FER2013Valid"
    result = {"machine": machine_info(), "faces_set": "FER2013Valid", "calibration": "600 FER2013Train faces",
              "peers": {}, "packages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        calib = read_dataset(fer_calibration(args.shared, Path(tmp) / "calib"))
        val = read_dataset(val_dir, label_source="fer2013")  # images only: agreement needs no labels
        for peer in args.peer or sorted(PEERS):
            keras = args.shared / "models" / "xception_fer2013" / PEERS[peer]
            result["peers"][peer] = peer_rows(keras, calib, val, Path(tmp))
    for name, path in named(args.package).items():
        pkg = load_package(path)
        result["packages"][name] = package_rows(pkg.root, faces_to_tensor(val.images, pkg.preprocessing))
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
