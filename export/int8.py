"""INT8 post-training quantization with NNCF, on the exported fp32 graphs.

Quantizing the ONNX graph gives a QDQ model that ONNX Runtime and TensorRT run; quantizing
the OpenVINO IR gives an INT8 IR. Both use the same calibration faces, cut by the model's
own preprocessing, and NNCF's transformer settings (``ModelType.TRANSFORMER``: SmoothQuant,
no quantizers on LayerNorm/Softmax paths). With a labelled validation set and ``max_drop``,
NNCF's accuracy-controlled quantization reverts the most harmful layers to fp32; a drop
that still exceeds ``max_drop`` fails the export instead of shipping.
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
SUBSET = 512  # calibration faces NNCF collects statistics on (more cost time, not accuracy)


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


#: Labelled validation faces INT8 accuracy control and the drop are measured on, at most.
ACCURACY_FACES = 1500


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
    x = faces_to_tensor([im for im, k in zip(val_faces.images, keep) if k], pp)
    return Int8Data(calib, x, val_faces.hard[keep])


def _onnx_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString() if hasattr(model, "SerializeToString") else str(model),
                                providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 256]})[0] for i in range(0, len(x), 256)]).argmax(1)
    return float((pred == y).mean())


def _ov_accuracy(compiled, x: np.ndarray, y: np.ndarray) -> float:
    pred = np.concatenate([compiled(x[i:i + 256])[0] for i in range(0, len(x), 256)]).argmax(1)
    return float((pred == y).mean())


#: Convolutions kept in fp32 (the first ones in graph order): they see the raw pixels through few
#: channels, where one per-tensor activation scale costs the most. Measured on the multi-domain
#: pico's OpenVINO INT8 IR: all INT8, 93.4 / 93.2 % top-1 agreement with fp32 on FER2013Test /
#: AffectNet96 test_ at 0.66 ms; the first two in fp32, 98.7 / 98.2 % at 0.74 ms (fp32: 1.01 ms).
FP32_CONVS = 2


def _first_convs(model) -> list[str]:
    """Names of the first ``FP32_CONVS`` convolutions of an ONNX ModelProto or an OpenVINO Model."""
    if hasattr(model, "graph"):
        names = [n.name for n in model.graph.node if n.op_type == "Conv"]
    else:
        names = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    return names[:FP32_CONVS]


def _nncf(model, calib, data: Int8Data, max_drop: float | None, accuracy):
    """NNCF PTQ with transformer settings; accuracy-controlled when a bound and labels exist."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    # SmoothQuant (on by default for transformers) migrates activation ranges into the weights;
    # on these small students it broke the OpenVINO INT8 file (FER2013Valid 81.8 -> 36.2 %,
    # 42 % agreement with fp32); without it: 81.9 %, 97.4 % agreement (measured on the pico default).
    no_smooth_quant = AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1, convolution=-1))
    common = dict(model_type=nncf.ModelType.TRANSFORMER, subset_size=min(len(data.calib), SUBSET),
                  ignored_scope=nncf.IgnoredScope(names=_first_convs(model), validate=False))
    if max_drop is None or data.val_x is None:
        return nncf.quantize(model, calib, advanced_parameters=no_smooth_quant, **common)
    # NNCF scores candidates on the items it hands the validation function: the whole set for
    # the drop, subsets of it when it ranks which layers to keep in fp32. Each item is one
    # labelled face, so both see real faces and labels.
    items = [(data.val_x[i:i + 1], int(data.val_y[i])) for i in range(len(data.val_y))]

    def validate(candidate, batch) -> float:
        batch = list(batch)
        return accuracy(candidate, np.concatenate([x for x, _ in batch]), np.array([y for _, y in batch]))

    return nncf.quantize_with_accuracy_control(
        model, calib, nncf.Dataset(items), validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
        advanced_quantization_parameters=no_smooth_quant, **common)


def quantize_onnx(fp32_path: Path, out_path: Path, data: Int8Data, *, max_drop: float | None = None,
                  accuracy=_onnx_accuracy) -> Path:
    """fp32 ONNX -> INT8 QDQ ONNX (per-channel weights, per-tensor activations).

    ``accuracy(model, x, y)`` scores a candidate for accuracy control (default: ONNX Runtime top-1).
    """
    import nncf
    import onnx

    calib = nncf.Dataset(data.calib, lambda x: {"input": x})  # ONNX feeds are dicts
    onnx.save_model(_nncf(onnx.load(str(fp32_path)), calib, data, max_drop, accuracy), str(out_path))
    return out_path


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


def quantize_openvino(fp32_xml: Path, out_xml: Path, data: Int8Data, *, max_drop: float | None = None) -> Path:
    """fp32 OpenVINO IR -> INT8 IR."""
    import nncf
    import openvino as ov

    q = _nncf(ov.Core().read_model(str(fp32_xml)), nncf.Dataset(data.calib), data, max_drop, _ov_accuracy)
    ov.save_model(q, str(out_xml), compress_to_fp16=False)
    return out_xml


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


def _predictor(path: Path):
    """Batched top-1 predictions of an ONNX (ONNX Runtime CPU) or OpenVINO IR (CPU, f32 hint) file."""
    if path.suffix == ".xml":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        run = lambda x: compiled(x)[0]  # noqa: E731
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        run = lambda x: sess.run(None, {name: x})[0]  # noqa: E731
    return lambda x: np.concatenate([run(x[i:i + 256]) for i in range(0, len(x), 256)]).argmax(1)


def accuracy_report(fp32: Path, int8: Path, data: Int8Data) -> dict:
    """An INT8 file against its fp32 source (same format): top-1 agreement on the validation
    faces (the calibration faces without them) and, with labels, both accuracies and the drop."""
    x = data.val_x if data.val_x is not None else np.concatenate(data.calib)
    p32, p8 = _predictor(fp32)(x), _predictor(int8)(x)
    out = {"agreement_int8_vs_fp32": float((p32 == p8).mean()), "agreement_faces": int(len(x))}
    if data.val_y is not None:
        a32, a8 = float((p32 == data.val_y).mean()), float((p8 == data.val_y).mean())
        out.update(val_accuracy_fp32=a32, val_accuracy_int8=a8, val_accuracy_drop=a32 - a8)
    return out
