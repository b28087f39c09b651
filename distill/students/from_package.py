"""A student checkpoint rebuilt from an exported package's ONNX file, to continue training from it.

    python -m motivnet_distill.students.from_package motivnet_edge/models/default --out runs/default.pt \
        --faces ../shared/data/ferplus/FER2013Valid

A package holds the student's weights in its fp32 ONNX graph: named initializers for most
parameters, unnamed transposed MatMul weights for the Linear layers (in graph order; a fused
Attention node holds its block's QKV weight the same way), and the
conv stem with each BatchNorm folded into its conv. The stem's BatchNorms are rebuilt so that the
network computes the same function in eval mode *and* starts training where it was: each
BatchNorm gets the mean and spread of its conv's output on real faces as both its running
statistics and its affine parameters. A prior correction folded into the head is taken out, so
training continues from the raw logits. The result matches the ONNX model to float precision.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from motivnet_edge.errors import MotivnetError
from motivnet_edge.package import load_package, read_verified

from .model import STEM_ACTS, StudentConfig, create_student
from .io import save_student

log = logging.getLogger(__name__)


def _initializers(pkg, f) -> tuple[dict, list]:
    import onnx
    from onnx import numpy_helper

    from motivnet_edge.onnx_refs import check_listed

    if f.extra_files:
        raise MotivnetError(f"{f.path} keeps its weights in external files: not a small student's package")
    data = read_verified(pkg.root, f.path, f.sha256)  # the manifest's bytes, referencing nothing else
    check_listed(data, f.path, ())
    model = onnx.load_from_string(data)
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    # A fused com.microsoft Attention node (the ONNX Runtime graph) holds its block's QKV weight
    # as input 1, in MatMul layout, where the plain graph had the QKV MatMul.
    matmuls = [n.input[1] for n in model.graph.node
               if n.op_type in ("MatMul", "Gemm", "Attention") and len(n.input) > 1 and n.input[1] in init]
    return init, matmuls


def student_from_package(package: str | Path, faces: np.ndarray) -> tuple[torch.nn.Module, StudentConfig, object]:
    """The package's student as a torch module; ``faces``: a float NCHW batch of real faces for the stem's statistics.

    Raises:
        MotivnetError: the package was not exported from a motivnet-edge student.
    """
    pkg = load_package(package)
    shape = pkg.provenance.get("student")
    fp32 = pkg.file_for("onnxruntime", "fp32")
    if not isinstance(shape, dict) or fp32 is None:
        raise MotivnetError(f"{package} records no student shape or has no fp32 ONNX file: only packages exported "
                            "from a motivnet-edge student can be turned back into one")
    cfg = StudentConfig.from_dict(shape)
    model = create_student(cfg).eval()
    init, matmuls = _initializers(pkg, fp32)
    own = model.state_dict()
    linear = [k for k in own if k.endswith(".weight") and own[k].ndim == 2 and k != "pos_embed"]
    if len(linear) != len(matmuls):
        raise MotivnetError(f"{package}: {len(matmuls)} MatMul weights for {len(linear)} Linear layers")
    new = {}
    for name, value in zip(linear, matmuls):
        new[name] = torch.from_numpy(init[value].T.copy())
    for name in own:
        if name in init:
            new[name] = torch.from_numpy(init[name].copy()).reshape(own[name].shape)
    bias = pkg.provenance.get("prior_correction", {}).get("bias")
    if bias is not None:  # continue from the raw logits, not the shipped corrected ones
        new["head.bias"] = new["head.bias"] - torch.tensor(bias, dtype=torch.float32)
    convs = [m for m in (model.patch_embed.stem or []) if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in (model.patch_embed.stem or []) if isinstance(m, torch.nn.BatchNorm2d)]
    stem_names = [k[:-len(".weight")] for k in own if k.startswith("patch_embed.stem.") and own[k].ndim == 4]
    model.load_state_dict(new, strict=False)
    with torch.no_grad():
        x = torch.from_numpy(faces)
        for conv, norm, name in zip(convs, norms, stem_names):
            conv.weight.copy_(torch.tensor(init[f"{name}.weight"]))
            y = torch.nn.functional.conv2d(x, conv.weight, None, conv.stride, conv.padding)
            mean, var = y.mean((0, 2, 3)), y.var((0, 2, 3), unbiased=False)
            folded = torch.tensor(init[f"{name}.weight_bias"])
            # The export computed y + folded. BN(y) = (y - mean) / sqrt(var + eps) * w + b equals it
            # with w = sqrt(var + eps) and b = mean + folded, in eval mode and, on faces like these,
            # in training mode too (batch statistics ~ mean, var).
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.weight.copy_(torch.sqrt(var + norm.eps))
            norm.bias.copy_(mean + folded)
            x = STEM_ACTS[cfg.stem_act]()(norm(conv(x)))
    return model, cfg, pkg


def main() -> None:
    from motivnet_edge.datasets.readers import read_dataset
    from motivnet_edge.preprocess import faces_to_tensor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--faces", type=Path, required=True, help="real faces for the stem's BatchNorm statistics")
    ap.add_argument("--count", type=int, default=512)
    args = ap.parse_args()
    pkg = load_package(args.package)
    faces = read_dataset(args.faces)
    x = faces_to_tensor(faces.images[: args.count], pkg.preprocessing)
    model, cfg, pkg = student_from_package(args.package, x)
    import onnxruntime as ort

    fp32 = pkg.file_for("onnxruntime", "fp32")
    ref = ort.InferenceSession(read_verified(pkg.root, fp32.path, fp32.sha256)).run(None, {"input": x[:64]})[0]
    bias = np.asarray(pkg.provenance.get("prior_correction", {}).get("bias", np.zeros(ref.shape[1])))
    got = model.eval()(torch.from_numpy(x[:64])).detach().numpy() + bias
    diff = float(np.abs(got - ref).max())
    if diff > 1e-3:
        raise SystemExit(f"rebuilt student differs from the package by {diff}")
    save_student(args.out, model, cfg, pkg.preprocessing, metrics={},
                 provenance={"rebuilt_from_package": str(args.package), "max_abs_diff": diff,
                             "package_provenance": {k: pkg.provenance.get(k) for k in ("student_preset", "training")}})
    print(json.dumps({"out": str(args.out), "max_abs_diff_vs_onnx": diff}))


if __name__ == "__main__":
    main()
