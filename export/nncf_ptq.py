"""NNCF post-training INT8 of the ONNX graph (QDQ: TensorRT's file, and ONNX Runtime's CPU file for
graphs of convolutions only) and the OpenVINO IR, by a ladder.

The INT8 error of the small students is spread over their layers (keeping any one layer in
fp32 moves top-1 agreement with fp32 by under half a point), but it is largest in the conv stem,
which sees the raw pixels through few channels. So quantization climbs a ladder of schemes, each
keeping more leading convolutions in fp32, and keeps the first whose top-1 agreement with the
fp32 model on the validation faces reaches ``AGREEMENT_TARGET`` (above the 99.5 % on each test
set that precision="auto" needs before it may choose an INT8 file); where no rung reaches it,
the most accurate rung. The climb starts at the top (``_ladder``). Each rung costs one NNCF
pass (10-17 s for a pico on 2 cores) and one pass over the faces.

Measured on the multi-domain pico's OpenVINO IR (top-1 agreement on FER2013Test / CK+48 /
AffectNet96 test_, p50 batch 1, 2 threads; fp32 0.835 ms):
2 convs fp32, mean-min-max ranges 98.5 / 99.5 / 98.1 % at 0.68 ms; 4 convs, min-max 99.2 / 99.7 /
98.7 % at 0.76 ms; all but the patch conv 99.7 / 99.9 / 99.0 % at 0.80 ms; every conv fp32
(only the transformer's MatMuls INT8) 99.6 / 99.9 / 99.7 % at 0.81 ms. Plain min-max ranges
beat NNCF's mean-min-max once the stem is fp32 (every conv fp32: 99.3 / 99.7 / 98.9 % with it).

With ``max_drop`` and labelled faces, NNCF's accuracy control then starts from the chosen rung
and reverts the most harmful layers until the accuracy drop fits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .int8 import Int8Data, predictor, top1

log = logging.getLogger(__name__)


def _quiet_nncf():
    """nncf, its INFO lines (about 70 per export) shown only with ``-v``: it sets its own logger's
    level when imported, so ours is applied after."""
    import nncf

    if not logging.getLogger().isEnabledFor(logging.INFO):
        nncf.set_log_level(logging.WARNING)
    return nncf

#: Top-1 agreement with fp32, on the validation faces, that stops the ladder. precision="auto"
#: needs 99.5 % on each test set (INT8_AGREEMENT in motivnet_edge.backends); validation mixes the
#: domains, and the hardest one agrees less than the mix: the multi-domain pico distilled from
#: its ensemble agreed on 99.8 % of 1,500 validation faces and on 98.8 % of AffectNet96 test_.
AGREEMENT_TARGET = 0.998
SUBSET = 512  # calibration faces NNCF collects statistics on (more cost time, not accuracy)
#: Calibration faces the agreement of each rung is measured on when there is no validation set.
AGREEMENT_FACES = 1500


@dataclass(frozen=True)
class Scheme:
    """One rung: how many leading convolutions stay fp32, and how activation ranges are set.

    ``fp32_convs``: a count, -1 for all but the last convolution (a ViT's patch projection), or
    None for every convolution (only MatMuls are quantized); a rung is tried only where its fp32
    convolutions hold at most ``MAX_FP32_WEIGHTS`` of the weights (in a resnet they hold them all).
    ``ranges``: NNCF's activation range estimator, "mean_minmax" (NNCF's default) or "minmax".
    """

    fp32_convs: int | None
    ranges: str

    def kept(self, convs: list[str]) -> list[str]:
        if self.fp32_convs is None:
            return list(convs)
        return list(convs[:-1] if self.fp32_convs == -1 else convs[:self.fp32_convs])

    def describe(self, convs: list[str]) -> str:
        ranges = {"mean_minmax": "mean-min-max", "minmax": "min-max"}[self.ranges]
        return f"{len(self.kept(convs))} of {len(convs)} convolutions fp32, {ranges} ranges"


LADDER = (Scheme(2, "mean_minmax"), Scheme(4, "minmax"), Scheme(-1, "minmax"), Scheme(None, "minmax"))


@dataclass(frozen=True)
class Quantized:
    """An INT8 file and how it was made: the scheme kept and every rung's agreement."""

    path: Path
    report: dict


def _ops(model, onnx_types: tuple[str, ...], ov_types: tuple[str, ...]) -> list[str]:
    if hasattr(model, "graph"):  # ONNX ModelProto
        return [n.name for n in model.graph.node if n.op_type in onnx_types]
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in ov_types]


def _has_attention(model) -> bool:
    """A transformer's graph: MatMuls and a Softmax. A CNN's classifier head is a Gemm (ONNX) or
    a MatMul (OpenVINO) with no Softmax; the Keras peers end in a Softmax after their MatMul and
    were always quantized as this says."""
    return bool(_ops(model, ("MatMul",), ("MatMul",))) and bool(_ops(model, ("Softmax",), ("SoftMax", "Softmax")))


#: Convolution op types (depthwise ones included) in ONNX and in OpenVINO.
ONNX_CONVS, OV_CONVS = ("Conv",), ("Convolution", "GroupConvolution")


def _convs(model) -> list[str]:
    """Convolutions in graph order of an ONNX ModelProto or OpenVINO Model."""
    return _ops(model, ONNX_CONVS, OV_CONVS)


def _weights(model) -> tuple[dict[str, int], int]:
    """Each convolution's weight count, and the graph's (every initializer or Constant)."""
    if hasattr(model, "graph"):  # ONNX ModelProto
        sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
        convs = {n.name: sizes.get(n.input[1], 0) for n in model.graph.node if n.op_type in ONNX_CONVS}
        return convs, sum(sizes.values())
    ops = model.get_ordered_ops()
    total = sum(int(np.prod(list(op.get_output_shape(0)))) for op in ops if op.get_type_name() == "Constant")
    convs = {}
    for op in ops:
        if op.get_type_name() in OV_CONVS:
            src = op.input_value(1).get_node()
            while src.get_type_name() != "Constant" and src.get_input_size():  # a Convert from fp16, ...
                src = src.input_value(0).get_node()
            convs[op.get_friendly_name()] = int(np.prod(list(src.get_output_shape(0))))
    return convs, total


#: A rung whose fp32 convolutions hold more of the weights than this is not an INT8 file: in a
#: resnet the convolutions are 99.8 % of the weights, in an ensemble of the pico and a resnet
#: 89 % (its INT8 file kept 25 of 26 convolutions fp32 and weighed 10.9 MB against 13.7 MB fp32).
#: The pico's convolutions hold 34 %, so its every-convolution-fp32 rung stays on the ladder.
MAX_FP32_WEIGHTS = 0.5


#: The graph scored last and its ONNX Runtime runner (key: sha1 of the serialized graph).
_LAST_RUNNER: dict = {}


def onnx_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX ModelProto on ONNX Runtime's CPU provider.

    NNCF's accuracy control scores one face per call, 1,500 calls per candidate: a session per
    call cost 30-70 ms, 151 s of a 397 s pico export on an AVX2 CPU. The session of the graph
    scored last is kept, keyed by the graph's bytes (NNCF may edit a model in place), so a call
    costs one serialization and a hash (a few ms for a pico) instead.
    """
    import hashlib

    data = model.SerializeToString()
    key = hashlib.sha1(data).digest()
    if _LAST_RUNNER.get("key") != key:
        _LAST_RUNNER.clear()
        _LAST_RUNNER.update(key=key, run=predictor(data))
    return float((_LAST_RUNNER["run"](x) == y).mean())


def ov_accuracy(compiled, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a compiled OpenVINO model (what NNCF's accuracy control hands over)."""
    return float((top1(lambda b: compiled(b)[0], x) == y).mean())


def _copy(model):
    """A copy NNCF may change: every rung quantizes the same fp32 graph."""
    if hasattr(model, "graph"):
        import onnx

        out = onnx.ModelProto()
        out.CopyFrom(model)
        return out
    return model.clone()


def _params(scheme: Scheme, convs: list[str], n_calib: int, *, qdq: bool, overflow_fix: bool,
            transformer: bool) -> tuple[dict, object]:
    nncf = _quiet_nncf()
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                       AdvancedSmoothQuantParameters, OverflowFix,
                                                       QuantizationParameters)
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ranges = {"mean_minmax": RangeEstimatorParametersSet.MEAN_MINMAX, "minmax": RangeEstimatorParametersSet.MINMAX}
    # SmoothQuant (on by default for transformers) migrates activation ranges into the weights;
    # on these small students it broke the OpenVINO INT8 file (FER2013Valid 81.8 -> 36.2 %,
    # 42 % agreement with fp32); without it: 81.9 %, 97.4 % agreement (measured on the pico default).
    # The QDQ file gets one scale per activation tensor: NNCF otherwise gives the inputs of
    # depthwise convolutions (the Xception peers) a scale per channel, which TensorRT does not
    # take and ONNX Runtime's QLinearConv rejects ("input zero point must be a scalar").
    per_tensor = QuantizationParameters(per_channel=False) if qdq else None
    # CPUs without VNNI (AVX2 only) multiply u8 x s8 pairs into a saturating 16-bit sum; NNCF's
    # default keeps weights 7-bit in the first layer only, and an IR exported on a VNNI CPU then
    # drifted on an AVX2 one: Xception peers 81-94 % top-1 agreement with fp32 there instead of
    # ~97 %. With every layer's weights 7-bit: 95-97 % (int8_agreement.py, AMD EPYC avx2), and the
    # pico's IR 99.20 -> 99.53 % on FER2013Valid (export_time.py before and after). The IR and ONNX
    # Runtime's static CPU file run on every CPU, so they get the fix; TensorRT's QDQ file does not
    # (no such overflow on a GPU). ORT's CPU kernels saturate the same way: `export --int8` of the
    # mini-Xception on AVX2 (the command in docs/GUIDE.md) printed 90.6 % top-1 agreement with fp32
    # for its QDQ graph without the fix (the TensorRT file), 97.2 % with it (the CPU file).
    overflow = OverflowFix.ENABLE if overflow_fix else None
    advanced = AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1, convolution=-1), overflow_fix=overflow,
        activations_range_estimator_params=ranges[scheme.ranges], activations_quantization_params=per_tensor)
    # NNCF's transformer patterns (no quantizer between a MatMul and its Add, ...) only for attention.
    return dict(model_type=nncf.ModelType.TRANSFORMER if transformer else None, subset_size=min(n_calib, SUBSET),
                ignored_scope=nncf.IgnoredScope(names=scheme.kept(convs), validate=False)), advanced


def _rungs(model, convs: list[str]) -> list[Scheme]:
    """The ladder's distinct rungs for this graph, most fp32 first, less any that leaves more than
    ``MAX_FP32_WEIGHTS`` of the weights fp32 (a convolutional net's every-but-one rung, an ensemble
    with a resnet member): an fp32 model under an INT8 name. The cheapest rung always stays."""
    sizes, total = _weights(model)
    out, seen = [], set()
    for scheme in reversed(LADDER):
        kept = scheme.kept(convs)
        key = (tuple(kept), scheme.ranges)
        heavy = sum(sizes.get(c, 0) for c in kept) > MAX_FP32_WEIGHTS * total
        if key not in seen and not (heavy and scheme is not LADDER[0]):
            seen.add(key)
            out.append(scheme)
    return out


def _ladder(model, convs: list[str], calib, data: Int8Data, overflow_fix: bool,
            attention: bool) -> tuple[Scheme, object, dict]:
    """Quantizes rung by rung, most fp32 first; returns the kept scheme, its model and a report.

    Agreement falls as fewer convolutions stay fp32 (every measured ladder was monotone), so
    the climb starts at the top: the most accurate rung, kept as the best there is when it misses
    the target, and otherwise followed down while rungs still reach the target, keeping the
    cheapest that does. A pico whose top rung misses costs one NNCF pass instead of four
    (export on an AVX2 CPU: 257 s with all four, both formats).
    """
    nncf = _quiet_nncf()

    x = data.agree_x if data.agree_x is not None else data.val_x
    if x is None:
        x = np.concatenate(data.calib[:AGREEMENT_FACES])
    reference = predictor(model)(x)
    rungs, kept = [], None
    for scheme in _rungs(model, convs):
        common, advanced = _params(scheme, convs, len(data.calib), qdq=hasattr(model, "graph"),
                                   overflow_fix=overflow_fix, transformer=attention)
        candidate = nncf.quantize(_copy(model), calib, advanced_parameters=advanced, **common)
        agreement = float((predictor(candidate)(x) == reference).mean())
        rungs.append({"scheme": scheme.describe(convs), "agreement": round(agreement, 4)})
        log.info("INT8 rung %s: %.2f%% top-1 agreement with fp32 on %d faces", rungs[-1]["scheme"],
                 100 * agreement, len(x))
        if kept is None or agreement >= AGREEMENT_TARGET:
            kept = (scheme, candidate)
        if agreement < AGREEMENT_TARGET:
            break
    report = {"scheme": kept[0].describe(convs), "ladder": rungs, "ladder_faces": int(len(x)),
              "agreement_target": AGREEMENT_TARGET}
    return kept[0], kept[1], report


def _quantize(model, calib, data: Int8Data, max_drop: float | None, accuracy,
              overflow_fix: bool) -> tuple[object, dict]:
    nncf = _quiet_nncf()

    convs, attention = _convs(model), _has_attention(model)
    scheme, quantized, report = _ladder(model, convs, calib, data, overflow_fix, attention)
    report["weights"] = "7-bit weights (overflow fix, for CPUs without VNNI)" if overflow_fix else "8-bit weights"
    if max_drop is None or data.val_x is None:
        return quantized, report
    # NNCF scores candidates on the items it hands the validation function: the whole set for
    # the drop, subsets of it when it ranks which layers to keep in fp32. Each item is one
    # labelled face, so both see real faces and labels.
    items = [(data.val_x[i:i + 1], int(data.val_y[i])) for i in range(len(data.val_y))]

    def validate(candidate, batch) -> float:
        batch = list(batch)
        return accuracy(candidate, np.concatenate([x for x, _ in batch]), np.array([y for _, y in batch]))

    common, advanced = _params(scheme, convs, len(data.calib), qdq=hasattr(model, "graph"),
                               overflow_fix=overflow_fix, transformer=attention)
    report["accuracy_control"] = True
    return nncf.quantize_with_accuracy_control(
        model, calib, nncf.Dataset(items), validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
        advanced_quantization_parameters=advanced, **common), report


def quantize_onnx(fp32_path: Path, out_path: Path, data: Int8Data, *, max_drop: float | None = None,
                  accuracy=onnx_accuracy, overflow_fix: bool = False) -> Quantized:
    """fp32 ONNX -> INT8 QDQ ONNX (per-channel weights, per-tensor activations), by the ladder.

    ``accuracy(model, x, y)`` scores a candidate for accuracy control (default: ONNX Runtime top-1).
    ``overflow_fix``: 7-bit weights in every layer, for a file CPUs without VNNI run.
    """
    nncf = _quiet_nncf()
    import onnx

    calib = nncf.Dataset(data.calib, lambda x: {"input": x})  # ONNX feeds are dicts
    model, report = _quantize(onnx.load(str(fp32_path)), calib, data, max_drop, accuracy, overflow_fix)
    onnx.save_model(model, str(out_path))
    return Quantized(out_path, report)


def quantize_openvino(fp32_xml: Path, out_xml: Path, data: Int8Data, *, max_drop: float | None = None) -> Quantized:
    """fp32 OpenVINO IR -> INT8 IR, by the ladder."""
    nncf = _quiet_nncf()
    import openvino as ov

    model, report = _quantize(ov.Core().read_model(str(fp32_xml)), nncf.Dataset(data.calib), data, max_drop,
                              ov_accuracy, overflow_fix=True)
    ov.save_model(model, str(out_xml), compress_to_fp16=False)
    return Quantized(out_xml, report)
