"""INT8 data and the files that need no NNCF: calibration/validation tensors, ONNX Runtime's
dynamic INT8, the TensorRT calibration table, and the INT8-vs-fp32 report of any INT8 file.

NNCF's static INT8 (the QDQ ONNX for TensorRT, the OpenVINO IR) lives in ``nncf_ptq``. All of
them use the same calibration faces, cut by the model's own preprocessing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from motivnet_edge.errors import MotivnetError
from motivnet_edge.preprocess import Preprocessing, faces_to_tensor

log = logging.getLogger(__name__)

MIN_CALIBRATION = 300


class QuantizationError(MotivnetError, ValueError):
    """INT8 quantization cannot proceed or did not meet its accuracy bound."""


class NothingQuantized(RuntimeError):
    """A quantizer left every op in fp32: there is no INT8 file to ship (a runtime failure, not a user error)."""


#: Ops a dynamic-quantized ONNX graph computes in INT8 (ORT may fuse them after loading).
_DYNAMIC_INT8_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


@dataclass
class Int8Data:
    """Calibration tensors (and optional labelled validation tensors) for one preprocessing."""

    calib: list[np.ndarray]
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None
    #: Every validation face (up to AGREEMENT_FACES, labelled or not): what NNCF's scheme ladder
    #: measures top-1 agreement with fp32 on. None: val_x, or the calibration faces.
    agree_x: np.ndarray | None = None


#: Labelled validation faces INT8 accuracy control and the drop are measured on, at most.
ACCURACY_FACES = 1500
#: Validation faces agreement is measured on, at most: agreement needs no labels and costs one
#: inference per face, and at 99.5 % 1,500 faces leave it within +/- 0.4 point; 10,000 within 0.15.
AGREEMENT_FACES = 10000


def prepare_data(calib_faces, pp: Preprocessing, *, val_faces=None, labels=None,
                 min_calibration: int = MIN_CALIBRATION) -> Int8Data:
    """Runs calibration/validation faces through the runtime's preprocessing.

    Raises:
        QuantizationError: fewer than ``min_calibration`` faces, or validation labels that
            do not match the model's label names.
    """
    n = len(calib_faces)
    if n < min_calibration:
        raise QuantizationError(
            f"only {n} calibration faces; INT8 ranges from fewer than {min_calibration} faces are unreliable. "
            f"Pass --calib with at least {min_calibration} face images (any labels or none)")
    calib = [x[None] for x in faces_to_tensor(calib_faces.images, pp)]
    if val_faces is None:
        return Int8Data(calib)
    if labels is not None and tuple(val_faces.labels) != tuple(labels):
        raise QuantizationError(f"validation labels {list(val_faces.labels)} are not the model's "
                                f"{list(labels)}; read the set with the model's label order")
    everyone = np.arange(len(val_faces))
    if len(everyone) > AGREEMENT_FACES:
        everyone = np.sort(np.random.default_rng(0).permutation(everyone)[:AGREEMENT_FACES])
    keep = val_faces.hard >= 0
    if keep.sum() > ACCURACY_FACES:
        # A fixed, seeded subset: NNCF's accuracy control scores every face once per candidate,
        # and 1,500 faces put the drop within about a point (binomial s.e. ~1.1 % at 80 %).
        chosen = np.random.default_rng(0).permutation(np.flatnonzero(keep))[:ACCURACY_FACES]
        keep = np.zeros_like(keep)
        keep[np.sort(chosen)] = True
    if keep.sum() < 50:
        raise QuantizationError(f"the validation set has {int(keep.sum())} labelled faces; accuracy control "
                                "needs at least 50 (check its labels: are the class names right?)")
    # One preprocessing pass over the faces either set needs (they are the same faces when the
    # validation set has at most AGREEMENT_FACES).
    labelled = np.flatnonzero(keep)
    needed = np.union1d(everyone, labelled)
    t = faces_to_tensor([val_faces.images[i] for i in needed], pp)
    return Int8Data(calib, t[np.searchsorted(needed, labelled)], val_faces.hard[keep],
                    t[np.searchsorted(needed, everyone)])


def quantize_dynamic_onnx(fp32_path: Path, out_path: Path) -> Path:
    """fp32 ONNX -> INT8 for ONNX Runtime's CPU provider: MatMul/Gemm weights int8, activations
    quantized per call (MatMulInteger / DynamicQuantizeMatMul, VNNI where the CPU has it).

    The QDQ file NNCF writes is what TensorRT wants, but ORT's CPU optimiser leaves dozens of
    Quantize/Dequantize round trips in it (around Add, Mul, Softmax, LayerNorm), which made it
    slower than fp32 (benchmarks/int8_formats.py). Labels and preprocessing metadata are kept.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm"])
    src, out = onnx.load(str(fp32_path)), onnx.load(str(out_path))
    if not any(n.op_type in _DYNAMIC_INT8_OPS for n in out.graph.node):
        out_path.unlink(missing_ok=True)
        raise NothingQuantized("the graph has no MatMul or Gemm with constant weights, the ops dynamic INT8 "
                               "quantizes, so the file would be the fp32 model renamed")
    have = {p.key for p in out.metadata_props}
    for prop in src.metadata_props:
        if prop.key not in have:
            out.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save_model(out, str(out_path))
    return out_path


def tensorrt_calibration(fp32_path: Path, out_dir: Path, data: Int8Data) -> list[Path]:
    """TensorRT INT8 calibration table (for ORT's TensorRT EP on Jetson) from the same faces."""
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator
    from onnxruntime.quantization.quant_utils import write_calibration_table

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(data.calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}

    out_dir.mkdir(parents=True, exist_ok=True)
    cal = create_calibrator(str(fp32_path), [], augmented_model_path=str(out_dir / "augmented.onnx"),
                            calibrate_method=CalibrationMethod.MinMax)
    cal.collect_data(Reader())
    write_calibration_table(dict(cal.compute_data().data), dir=str(out_dir))
    (out_dir / "augmented.onnx").unlink(missing_ok=True)
    return sorted(p for p in out_dir.iterdir() if p.name.startswith("calibration."))


def top1(run, x: np.ndarray) -> np.ndarray:
    """Top-1 labels of ``run(batch) -> logits`` over ``x``, 256 faces at a time."""
    return np.concatenate([run(x[i:i + 256]) for i in range(0, len(x), 256)]).argmax(1)


def predictor(model):
    """Batched top-1 predictions of an ONNX model (ONNX Runtime CPU) or an OpenVINO one (CPU, f32
    hint: a bf16 CPU would otherwise run the fp32 parts in bf16): a file path, an onnx.ModelProto
    or its bytes, or an openvino.Model."""
    if (isinstance(model, bytes) or hasattr(model, "SerializeToString")
            or (isinstance(model, (str, Path)) and Path(model).suffix == ".onnx")):
        import onnxruntime as ort

        src = (model if isinstance(model, bytes) else model.SerializeToString() if hasattr(model, "SerializeToString")
               else str(model))
        sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: top1(lambda b: sess.run(None, {name: b})[0], x)
    import openvino as ov

    compiled = ov.Core().compile_model(model if isinstance(model, ov.Model) else str(model), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda x: top1(lambda b: compiled(b)[0], x)


def accuracy_report(fp32: Path, int8: Path, data: Int8Data) -> dict:
    """An INT8 file against its fp32 source (same format): top-1 agreement on the validation
    faces (the calibration faces without them) and, with labels, both accuracies and the drop."""
    x = data.val_x if data.val_x is not None else np.concatenate(data.calib)
    p32, p8 = predictor(fp32)(x), predictor(int8)(x)
    out = {"agreement_int8_vs_fp32": float((p32 == p8).mean()), "agreement_faces": int(len(x))}
    if data.val_y is not None:
        a32, a8 = float((p32 == data.val_y).mean()), float((p8 == data.val_y).mean())
        out.update(val_accuracy_fp32=a32, val_accuracy_int8=a8, val_accuracy_drop=a32 - a8)
    return out
