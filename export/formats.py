"""The format table: for each ``--formats`` name, the backend it serves and its fp32 and INT8 writers.

Each writer gets the package folder under construction (``Build``) and returns its ModelFile
entries; an INT8 file a runtime cannot build or run is left out with one line naming the
runtime and its fallback. ``exporter.export`` runs the rows in order.

A *lean* package (``Build.lean``) keeps two copies of the weights, not five: OpenVINO reads the
fp32 ``model.onnx`` itself (no IR copy), and one static QDQ ``model.int8.onnx`` serves ONNX
Runtime's CPU, OpenVINO and TensorRT. It is for students whose convolution weights make a
package too big to embed (a resnet of 2.8 M parameters is 11 MB per fp32 copy); ONNX Runtime
then runs the plain graph (no fused attention, which OpenVINO cannot read).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from motivnet_edge.package import ModelFile, sha256_file

from .graph_fusion import fuse_for_onnxruntime
from .int8 import (Int8Data, NothingQuantized, QuantizationError, accuracy_report, quantize_dynamic_onnx,
                   tensorrt_calibration)
from .nncf_ptq import quantize_onnx, quantize_openvino
from .onnx_export import INPUT, OUTPUT, export_onnx, max_abs_diff, onnx_to_openvino
from .sources import ExportSource

log = logging.getLogger(__name__)


@dataclass
class Build:
    """What the format writers of one export share, in place of a loose dict."""

    src: ExportSource
    folder: Path
    formats: tuple[str, ...]
    data: Int8Data | None = None
    max_drop: float | None = None
    onnx_max_abs_diff: float | None = None
    assets: dict[str, str] = field(default_factory=dict)   # path -> sha256 of files no backend loads directly
    roles: dict[str, str] = field(default_factory=dict)    # role -> asset path
    int8: dict[str, dict] = field(default_factory=dict)    # runtime -> accuracy of its INT8 file vs fp32
    fused: dict = field(default_factory=dict)              # what fuse_attention did to ONNX Runtime's files
    lean: bool = False                                     # two weight files shared by every runtime

    def fp32_onnx(self) -> Path:
        """The plain fp32 ONNX graph every other file is made from (exported once)."""
        path = self.folder / "model.onnx"
        if not path.exists():
            export_onnx(self.src.model, self.src.preprocessing, self.src.labels, path, license=self.src.license)
        return path

    def ort_onnx(self) -> Path:
        """The fp32 graph ONNX Runtime runs: the plain graph with its attention blocks fused into
        one ``Attention`` node each where that gives the same logits (made once; it replaces
        model.onnx when the build ends, after OpenVINO, NNCF and TensorRT read the plain graph)."""
        if (self.folder / "model.onnx.data").exists() or self.lean:
            # Weights beside the graph (the 1B teacher), or a lean package's graph that OpenVINO
            # reads too: left as exported.
            return self.fp32_onnx()
        path = self.folder / ORT_TMP
        if not path.exists():
            self.fused = fuse_for_onnxruntime(self.fp32_onnx(), path)
        return path

    def check_drop(self, runtime: str, report: dict) -> None:
        if self.max_drop is not None and report.get("val_accuracy_drop", 0.0) > self.max_drop:
            raise QuantizationError(
                f"INT8 ({runtime}) loses {report['val_accuracy_drop']:.2%} accuracy, above --max-drop "
                f"{self.max_drop:.2%}; nothing was written. Raise --max-drop, use more or more typical "
                "calibration faces, or ship fp32 only")


#: Build-time name of ONNX Runtime's fused fp32 graph (renamed over model.onnx at the end).
ORT_TMP = "model.ort-fused.onnx"


def finish_onnxruntime(b: Build, files: list[ModelFile]) -> list[ModelFile]:
    """Puts ONNX Runtime's fused graph in model.onnx's place and re-hashes its entry."""
    fused = b.folder / ORT_TMP
    if not fused.exists():
        return files
    os.replace(fused, b.folder / "model.onnx")
    digest = sha256_file(b.folder / "model.onnx")
    return [dataclasses.replace(f, sha256=digest) if f.path == "model.onnx" else f for f in files]


def _onnx_fp32(b: Build) -> list[ModelFile]:
    src, folder = b.src, b.folder
    # Above protobuf's 2 GB (the 1B teacher) the weights go to external data beside the graph.
    big = sum(p.numel() * p.element_size() for p in src.model.parameters()) > 1.8e9
    path = export_onnx(src.model, src.preprocessing, src.labels, folder / "model.onnx", external_data=big,
                       license=src.license)
    if big:
        data = folder / "model.onnx.data"  # no ORT comparison: a second full-size copy doubles peak memory
        return [ModelFile("onnxruntime", "fp32", path.name, sha256_file(path), INPUT, OUTPUT,
                          {data.name: sha256_file(data)})]
    x = np.random.default_rng(0).normal(size=(4, src.preprocessing.channels, *src.preprocessing.input_size))
    b.onnx_max_abs_diff = max_abs_diff(src.model, path, x.astype(np.float32))
    b.ort_onnx()
    return [ModelFile("onnxruntime", "fp32", path.name, sha256_file(path), INPUT, OUTPUT)]


def _runtime_failure(b: Build, runtime: str, exc: Exception, fallback: str) -> None:
    """An INT8 file a runtime cannot build or run is left out, with one line saying so (not a traceback)."""
    cause = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:240]
    log.warning("INT8 for %s not shipped: %s (%s); %s", runtime, cause, type(exc).__name__, fallback)
    b.int8[runtime] = {"shipped": False, "error": f"{type(exc).__name__}: {cause}", "fallback": fallback}


def _onnx_int8(b: Build) -> list[ModelFile]:
    """ONNX Runtime's CPU INT8 file (``_onnxruntime_cpu_int8``), and the NNCF QDQ ONNX + calibration
    table for TensorRT (an asset with the role "tensorrt_int8").
    A file whose quantisation its runtime cannot run (e.g. ORT's QLinearConv on some Keras
    graphs) is left out with a warning naming the runtime and the fallback."""
    fp32, trt = b.fp32_onnx(), b.folder / "tensorrt"
    trt.mkdir(exist_ok=True)
    # The calibration table needs only the fp32 graph, so it ships even when the QDQ file cannot.
    b.assets.update({f"tensorrt/{p.name}": sha256_file(p) for p in tensorrt_calibration(fp32, trt, b.data)})
    if b.lean:
        return _shared_int8(b, fp32)
    qdq = trt / "model.int8.qdq.onnx"

    def tensorrt_file() -> dict:
        made = quantize_onnx(fp32, qdq, b.data, max_drop=b.max_drop)
        return {**accuracy_report(fp32, qdq, b.data), **made.report, "file": qdq.relative_to(b.folder).as_posix(),
                "method": "static QDQ (NNCF) for TensorRT, which builds its engine from it"}

    report = _attempt(b, "tensorrt", qdq, tensorrt_file, "TensorRT builds its own INT8 from the fp32 ONNX with the "
                                                         "shipped calibration table (tensorrt/calibration.*)")
    if report is not None:
        b.int8["tensorrt"] = report
        b.check_drop("tensorrt", report)
        b.assets[f"tensorrt/{qdq.name}"] = sha256_file(qdq)
        b.roles["tensorrt_int8"] = f"tensorrt/{qdq.name}"

    def cpu_file() -> dict:
        cpu, method = _onnxruntime_cpu_int8(b)
        return {**accuracy_report(fp32, cpu, b.data), **method, "file": cpu.name}

    report = _attempt(b, "onnxruntime", b.folder / "model.int8.onnx", cpu_file, "ONNX Runtime runs the fp32 model.onnx")
    if report is None:
        return []
    b.int8["onnxruntime"] = report
    b.check_drop("onnxruntime", report)
    cpu = b.folder / report["file"]
    return [ModelFile("onnxruntime", "int8", cpu.name, sha256_file(cpu), INPUT, OUTPUT)]


def _attempt(b: Build, runtime: str, out: Path, make, fallback: str) -> dict | None:
    """``make()``'s report of an INT8 file, or None when NNCF or the runtime cannot build or run
    it: the half-written ``out`` is removed and the runtime recorded as not shipped, with its
    fallback (``_runtime_failure``). An accuracy-control failure stops the export."""
    try:
        return make()
    except QuantizationError:
        raise
    except Exception as exc:  # NNCF and ORT raise their own types
        out.unlink(missing_ok=True)
        _runtime_failure(b, runtime, exc, fallback)
        return None


def _shared_int8(b: Build, fp32: Path) -> list[ModelFile]:
    """A lean package's one INT8 file: NNCF's static QDQ graph with 7-bit weights (CPUs without
    VNNI run it too), ONNX Runtime's CPU file and TensorRT's QDQ source (OpenVINO's, next)."""
    out = b.folder / "model.int8.onnx"

    def shared_file() -> dict:
        made = quantize_onnx(fp32, out, b.data, max_drop=b.max_drop, overflow_fix=True)
        return {**accuracy_report(fp32, out, b.data), **made.report, "file": out.name}

    report = _attempt(b, "onnxruntime", out, shared_file, "ONNX Runtime and OpenVINO run the fp32 model.onnx; "
                                                          "TensorRT builds its own INT8 with the shipped calibration table")
    if report is None:
        return []
    b.int8["onnxruntime"] = {**report, "method": "static QDQ (NNCF), shared with OpenVINO and TensorRT"}
    b.int8["tensorrt"] = {**report, "method": "static QDQ (NNCF) for TensorRT, which builds its engine from it; "
                                              "the file ONNX Runtime's CPU runs"}
    b.check_drop("onnxruntime", report)
    b.assets[out.name] = sha256_file(out)
    b.roles["tensorrt_int8"] = out.name
    return [ModelFile("onnxruntime", "int8", out.name, sha256_file(out), INPUT, OUTPUT)]


def _conv_weighted(path: Path) -> bool:
    """Whether convolution weights outweigh MatMul/Gemm weights (a resnet, not a ViT)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    sizes = {t.name: int(np.prod(t.dims)) for t in graph.initializer}
    by_op = {"Conv": 0, "MatMul": 0, "Gemm": 0}
    for node in graph.node:
        if node.op_type in by_op and len(node.input) > 1:
            by_op[node.op_type] += sizes.get(node.input[1], 0)
    return by_op["Conv"] > by_op["MatMul"] + by_op["Gemm"]


def _onnxruntime_cpu_int8(b: Build) -> tuple[Path, dict]:
    """ONNX Runtime's CPU INT8 file and how it was made.

    A graph with MatMuls (the ViT students) gets dynamic INT8: ORT's CPU optimiser leaves static
    QDQ round trips around Add, Mul, Softmax and LayerNorm, which made it slower than fp32. A
    graph of convolutions (the Keras Xception peers, the resnets: their weights are mostly
    convolutions) gives dynamic INT8 little or nothing to quantize; there ORT fuses each static Quantize-Conv-Dequantize into one QLinearConv, so it gets NNCF's
    static QDQ graph, with 7-bit weights because it runs on CPUs without VNNI too.
    """
    out = b.folder / "model.int8.onnx"
    try:
        if _conv_weighted(b.fp32_onnx()):  # dynamic INT8 would quantize a resnet's head and nothing else
            raise NothingQuantized("convolutions hold most of the weights")
        return quantize_dynamic_onnx(b.ort_onnx(), out), {
            "method": "dynamic: MatMul/Gemm weights int8, activations quantized per call"}
    except NothingQuantized:
        made = quantize_onnx(b.fp32_onnx(), out, b.data, max_drop=b.max_drop, overflow_fix=True)
        log.info("no MatMul or Gemm for dynamic INT8: ONNX Runtime gets NNCF's static QDQ graph (%s)",
                 made.report["scheme"])
        return out, {"method": "static QDQ (NNCF): convolutions run as QLinearConv", **made.report}


def _openvino_fp32(b: Build) -> list[ModelFile]:
    if b.lean:  # OpenVINO reads the fp32 ONNX graph itself
        path = b.fp32_onnx()
        return [ModelFile("openvino", "fp32", path.name, sha256_file(path), INPUT, OUTPUT)]
    (b.folder / "openvino").mkdir(exist_ok=True)
    xml = onnx_to_openvino(b.fp32_onnx(), b.folder / "openvino" / "model.xml")
    return [ModelFile("openvino", "fp32", "openvino/model.xml", sha256_file(xml), INPUT, OUTPUT,
                      {"openvino/model.bin": sha256_file(xml.with_suffix(".bin"))})]


def _openvino_int8(b: Build) -> list[ModelFile]:
    """NNCF INT8 IR; measured, and left out (recorded as not shipped) above ``max_drop``. A lean
    package's OpenVINO reads the shared QDQ ``model.int8.onnx`` instead."""
    if b.lean:
        return _openvino_reads_shared_int8(b)
    fp32 = b.folder / "openvino" / "model.xml"
    try:
        made = quantize_openvino(fp32, b.folder / "openvino" / "model.int8.xml", b.data, max_drop=b.max_drop)
        xml = made.path
        report = b.int8["openvino"] = {**accuracy_report(fp32, xml, b.data), **made.report,
                                       "method": "static (NNCF) IR",
                                       "file": "openvino/model.int8.xml"}
    except QuantizationError:
        raise
    except Exception as exc:  # NNCF / OpenVINO raise their own types
        for p in (b.folder / "openvino").glob("model.int8.*"):
            p.unlink()
        _runtime_failure(b, "openvino", exc, "OpenVINO runs the fp32 IR")
        return []
    if b.max_drop is not None and report.get("val_accuracy_drop", 0.0) > b.max_drop:
        # NNCF reverts layers until it gives up; what is left is no INT8 model worth shipping.
        log.warning("OpenVINO INT8 loses %.2f%% (above --max-drop): not shipped", 100 * report["val_accuracy_drop"])
        report["shipped"] = False
        xml.unlink()
        xml.with_suffix(".bin").unlink()
        return []
    return [ModelFile("openvino", "int8", "openvino/model.int8.xml", sha256_file(xml), INPUT, OUTPUT,
                      {"openvino/model.int8.bin": sha256_file(xml.with_suffix(".bin"))})]


def _openvino_reads_shared_int8(b: Build) -> list[ModelFile]:
    shared = b.folder / "model.int8.onnx"
    if not shared.exists():  # ONNX Runtime's writer recorded why
        return []
    import openvino as ov

    core = ov.Core()
    report = accuracy_report(core.read_model(str(b.fp32_onnx())), core.read_model(str(shared)), b.data)
    b.int8["openvino"] = {**report, "method": "the shared static QDQ ONNX (NNCF), read by OpenVINO", "file": shared.name}
    b.check_drop("openvino", report)
    return [ModelFile("openvino", "int8", shared.name, sha256_file(shared), INPUT, OUTPUT)]


@dataclass(frozen=True)
class Format:
    """One row of the format table: the backend it serves and its fp32 and INT8 writers."""

    backend: str
    fp32: Callable[[Build], list[ModelFile]]
    int8: Callable[[Build], list[ModelFile]]


#: ``--formats`` names, in the order they are written (OpenVINO converts the ONNX graph).
FORMATS = {
    "onnx": Format("onnxruntime", _onnx_fp32, _onnx_int8),
    "openvino": Format("openvino", _openvino_fp32, _openvino_int8),
}
