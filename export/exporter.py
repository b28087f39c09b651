"""``export()``: the one code path behind ``motivnet-edge export`` and the Python API.

Formats are a data table; each writes its files into the package folder under
construction and returns ModelFile entries. The folder is renamed into place only
after every file was written, hashed, and the package reloaded and checked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from motivnet_edge.timing import git_commit
from motivnet_edge.package import ModelFile, build_manifest, sha256_file, write_package

from .graph_fusion import fuse_for_onnxruntime
from .int8 import (Int8Data, QuantizationError, accuracy_report, quantize_dynamic_onnx, quantize_onnx,
                   quantize_openvino, tensorrt_calibration)
from .onnx_export import INPUT, OPSET, OUTPUT, export_onnx, max_abs_diff, onnx_to_openvino
from .sources import ExportSource, SourceError, load_source

log = logging.getLogger(__name__)


@dataclass
class _Build:
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
        if (self.folder / "model.onnx.data").exists():
            return self.fp32_onnx()  # weights beside the graph (the 1B teacher): left as exported
        path = self.folder / _ORT_TMP
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
_ORT_TMP = "model.ort-fused.onnx"


def _finish_onnxruntime(b: _Build, files: list[ModelFile]) -> list[ModelFile]:
    """Puts ONNX Runtime's fused graph in model.onnx's place and re-hashes its entry."""
    fused = b.folder / _ORT_TMP
    if not fused.exists():
        return files
    os.replace(fused, b.folder / "model.onnx")
    digest = sha256_file(b.folder / "model.onnx")
    return [dataclasses.replace(f, sha256=digest) if f.path == "model.onnx" else f for f in files]


def _onnx_fp32(b: _Build) -> list[ModelFile]:
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


def _runtime_failure(b: _Build, runtime: str, exc: Exception, fallback: str) -> None:
    """An INT8 file a runtime cannot build or run is left out, with one line saying so (not a traceback)."""
    cause = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:240]
    log.warning("INT8 for %s not shipped: %s (%s); %s", runtime, cause, type(exc).__name__, fallback)
    b.int8[runtime] = {"shipped": False, "error": f"{type(exc).__name__}: {cause}", "fallback": fallback}


def _onnx_int8(b: _Build) -> list[ModelFile]:
    """Dynamic-quantized ONNX for ORT's CPU provider, and the NNCF QDQ ONNX + calibration table
    for TensorRT (an asset with the role "tensorrt_int8": ORT's CPU provider runs QDQ slowly).
    A file whose quantisation its runtime cannot run (e.g. ORT's QLinearConv on some Keras
    graphs) is left out with a warning naming the runtime and the fallback."""
    fp32, trt = b.fp32_onnx(), b.folder / "tensorrt"
    trt.mkdir(exist_ok=True)
    # The calibration table needs only the fp32 graph, so it ships even when the QDQ file cannot.
    b.assets.update({f"tensorrt/{p.name}": sha256_file(p) for p in tensorrt_calibration(fp32, trt, b.data)})
    qdq = trt / "model.int8.qdq.onnx"
    try:
        quantize_onnx(fp32, qdq, b.data, max_drop=b.max_drop)
        b.int8["tensorrt"] = {**accuracy_report(fp32, qdq, b.data), "file": qdq.relative_to(b.folder).as_posix()}
    except QuantizationError:
        raise
    except Exception as exc:  # NNCF and ORT raise their own types
        qdq.unlink(missing_ok=True)
        _runtime_failure(b, "tensorrt", exc, "TensorRT builds its own INT8 from the fp32 ONNX with the shipped "
                                             "calibration table (tensorrt/calibration.*)")
    else:
        b.check_drop("tensorrt", b.int8["tensorrt"])
        b.assets[f"tensorrt/{qdq.name}"] = sha256_file(qdq)
        b.roles["tensorrt_int8"] = f"tensorrt/{qdq.name}"
    try:
        cpu = quantize_dynamic_onnx(b.ort_onnx(), b.folder / "model.int8.onnx")
        b.int8["onnxruntime"] = {**accuracy_report(fp32, cpu, b.data), "file": cpu.name}
    except QuantizationError:
        raise
    except Exception as exc:
        (b.folder / "model.int8.onnx").unlink(missing_ok=True)
        _runtime_failure(b, "onnxruntime", exc, "ONNX Runtime runs the fp32 model.onnx")
        return []
    b.check_drop("onnxruntime", b.int8["onnxruntime"])
    return [ModelFile("onnxruntime", "int8", cpu.name, sha256_file(cpu), INPUT, OUTPUT)]


def _openvino_fp32(b: _Build) -> list[ModelFile]:
    (b.folder / "openvino").mkdir(exist_ok=True)
    xml = onnx_to_openvino(b.fp32_onnx(), b.folder / "openvino" / "model.xml")
    return [ModelFile("openvino", "fp32", "openvino/model.xml", sha256_file(xml), INPUT, OUTPUT,
                      {"openvino/model.bin": sha256_file(xml.with_suffix(".bin"))})]


def _openvino_int8(b: _Build) -> list[ModelFile]:
    """NNCF INT8 IR; measured, and left out (recorded as not shipped) above ``max_drop``."""
    fp32 = b.folder / "openvino" / "model.xml"
    try:
        xml = quantize_openvino(fp32, b.folder / "openvino" / "model.int8.xml", b.data, max_drop=b.max_drop)
        report = b.int8["openvino"] = {**accuracy_report(fp32, xml, b.data), "file": "openvino/model.int8.xml"}
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


@dataclass(frozen=True)
class Format:
    """One row of the format table: the backend it serves and its fp32 and INT8 writers."""

    backend: str
    fp32: Callable[[_Build], list[ModelFile]]
    int8: Callable[[_Build], list[ModelFile]]


#: ``--formats`` names, in the order they are written (OpenVINO converts the ONNX graph).
FORMATS = {
    "onnx": Format("onnxruntime", _onnx_fp32, _onnx_int8),
    "openvino": Format("openvino", _openvino_fp32, _openvino_int8),
}


def count_gflops(src: ExportSource) -> float:
    """GFLOPs of one face (batch 1) of the module being exported."""
    from motivnet_distill.student import count_flops

    return round(count_flops(src.model, (1, src.preprocessing.channels, *src.preprocessing.input_size)) / 1e9, 5)


def _latency(folder: Path, files: list[ModelFile], threads: int, rounds: int) -> dict:
    """fp32 vs int8 latency per backend on this machine, each in its own process, batch 1."""
    from motivnet_edge.cpu import int8_flags
    from motivnet_edge.timing import BenchConfig, compare, machine_info

    configs = [BenchConfig(f.backend, f.precision, threads, 1) for f in files]
    out: dict = {}
    info = machine_info()
    for r in compare(folder, configs, rounds=rounds, iters=300, seconds=3.0):
        entry = out.setdefault(r["backend"], {"cpu": info["cpu"], "cpu_int8_flags": sorted(int8_flags()),
                                              "threads": threads, "batch": 1, "date": info["date"]})
        entry[f"{r['precision']}_ms"] = round(r["p50_ms"], 4)
        entry[f"{r['precision']}_spread_ms"] = [round(v, 4) for v in r["p50_spread_ms"]]
    return out


def _faces(data, labels, label_source: str):
    """A dataset path read in the model's label order, or a FaceSet the caller already read."""
    from motivnet_distill.data import FaceSet, read_dataset

    if isinstance(data, FaceSet):
        if tuple(data.labels) != tuple(labels):
            raise SourceError(f"faces labelled {list(data.labels)} for a model with labels {list(labels)}")
        return data
    return read_dataset(data, labels=labels, label_source=label_source)


def _prepare(src: ExportSource, *, val, calib, int8: bool, prior_correction: bool, val_label_source: str,
             min_calibration: int, say) -> Int8Data | None:
    """Reads the validation faces, folds the prior correction into the student, and cuts the
    calibration/validation tensors INT8 needs (None without ``int8``)."""
    by_domain = isinstance(val, Mapping)
    if by_domain:
        from motivnet_distill.data import concat

        domains = {name: _faces(faces, src.labels, val_label_source) for name, faces in val.items()}
        val_faces = concat(list(domains.values()))
    else:
        val_faces = _faces(val, src.labels, val_label_source) if val is not None and (int8 or prior_correction) else None
    if prior_correction:
        from motivnet_distill.prior_correction import apply_bias, fit_domain_prior, fit_prior_correction
        from motivnet_distill.train import predict_logits

        say("fitting the prior correction on the validation faces")
        if by_domain:  # one prior for every domain: the best mean over them
            fit = fit_domain_prior({n: (predict_logits(src.model, f, src.preprocessing).numpy(), f.hard)
                                    for n, f in domains.items()}, src.labels)
            where = "validation parts of " + ", ".join(domains)
        else:
            fit = fit_prior_correction(predict_logits(src.model, val_faces, src.preprocessing).numpy(), val_faces)
            where = str(val) if isinstance(val, (str, Path)) else f"{len(val_faces)} validation faces given in memory"
        apply_bias(src.model, fit["bias"])
        src.provenance["prior_correction"] = {**fit, "fitted_on": where}
        log.info("prior correction %s: validation %s -> %s", fit["bias"],
                 fit["validation"]["uncorrected"], fit["validation"]["corrected"])
    if not int8:
        return None
    from .int8 import prepare_data

    if calib is None:
        raise SourceError(f"--int8 needs --calib: at least {min_calibration} face images to set INT8 ranges")
    return prepare_data(_faces(calib, src.labels, "ferplus"), src.preprocessing, val_faces=val_faces,
                        labels=src.labels, min_calibration=min_calibration)


def export(source, out: str | Path, *, formats=("onnx", "openvino"), int8: bool = False,
           calib=None, val=None, val_label_source: str = "ferplus", max_drop: float | None = None,
           min_calibration: int = 300,
           latency: bool = True, latency_threads: int = 1, latency_rounds: int = 3,
           metrics: dict | None = None, provenance: dict | None = None, license: dict | None = None,
           teacher_options: dict | None = None, yunet: str | Path | None = None,
           prior_correction: bool = False, progress=None) -> Path:
    """Exports a student, checkpoint or teacher to a model package (the CLI's one code path).

    Args:
        source: run folder, checkpoint, teacher file, or an ExportSource.
        out: package folder; replaced atomically.
        formats: names from FORMATS.
        int8: also write each format's INT8 file (FORMATS' int8 writers); accuracy of every
            INT8 file vs fp32 goes to the manifest's ``metrics.int8``, keyed by runtime.
        calib: calibration faces (path to any dataset format, or a FaceSet); required with ``int8``.
        val: labelled validation faces (a path, a FaceSet, or {domain: FaceSet}): fp32/int8 accuracy
            and, with ``max_drop``, accuracy control; by domain, the prior correction maximises
            the mean over domains of validation accuracy (``fit_domain_prior``).
        val_label_source: for a FER+ split ``val``: "ferplus" votes or "fer2013" labels, the
            labels the model was trained and selected on.
        max_drop: largest absolute accuracy drop allowed for INT8 (e.g. 0.01).
        latency: measure fp32/int8 latency here (subprocesses) into the manifest.
        teacher_options: for teacher sources, e.g. num_heads, img_size, mode ("letterbox"/"stretch").
        yunet: a YuNet .onnx to ship inside the package (detector="auto" then uses it).
        prior_correction: fold a class-prior logit offset, fitted on ``val``, into the
            student's head before exporting (motivnet_distill.prior_correction).
        progress: called with a short text as each stage starts (the CLI prints it on a terminal).

    Raises:
        SourceError: the source is not a model, or bad formats.
        QuantizationError: too few calibration faces, bad validation labels, drop above max_drop.
        PackageError: the output cannot be written.
    """
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise SourceError(f"unknown formats {unknown}; choose from {sorted(FORMATS)}")
    if max_drop is not None and (val is None or not int8):
        raise SourceError("--max-drop needs --int8 and a labelled --val set")
    if prior_correction and val is None:
        raise SourceError("--prior-correction needs a labelled --val set to fit the correction on")
    say = progress or (lambda stage: None)
    say("loading the model")
    src = source if isinstance(source, ExportSource) else load_source(source, **(teacher_options or {}))
    data = _prepare(src, val=val, calib=calib, int8=int8, prior_correction=prior_correction,
                    val_label_source=val_label_source, min_calibration=min_calibration, say=say)
    def build(folder: Path) -> dict:
        b = _Build(src, folder, tuple(formats), data=data, max_drop=max_drop)
        rows = [FORMATS[name] for name in FORMATS if name in formats]
        files = []
        for name, row in zip([n for n in FORMATS if n in formats], rows):
            say(f"writing {name} fp32")
            files += row.fp32(b)
        if data is not None:
            for name, row in zip([n for n in FORMATS if n in formats], rows):
                say(f"quantizing {name} to INT8 (NNCF)")
                files += row.int8(b)
        if "onnx" in formats:
            files = _finish_onnxruntime(b, files)
        else:
            (folder / "model.onnx").unlink(missing_ok=True)  # only the source of the other formats
        (folder / _ORT_TMP).unlink(missing_ok=True)
        if yunet is not None:
            if not Path(yunet).is_file():
                raise SourceError(f"YuNet model {yunet} does not exist")
            (folder / "detector").mkdir(exist_ok=True)
            shutil.copy(yunet, folder / "detector" / "yunet.onnx")
            b.assets["detector/yunet.onnx"] = sha256_file(folder / "detector" / "yunet.onnx")
            b.roles["yunet"] = "detector/yunet.onnx"
        prov = {**src.provenance, **(provenance or {}), "code_version": git_commit(),
                "export": {"formats": list(formats), "onnx_opset": OPSET,
                           "onnx_max_abs_diff_vs_torch": b.onnx_max_abs_diff,
                           "onnxruntime_fusion": b.fused or None,
                           "machine": platform.machine(), "python": platform.python_version()}}
        sizes = {f.path: (folder / f.path).stat().st_size + sum((folder / p).stat().st_size for p in f.extra_files)
                 for f in files}
        measured = {**src.metrics, **(metrics or {}), "file_sizes": sizes, "gflops": count_gflops(src)}
        if b.int8:
            measured["int8"] = {k: {"shipped": True, **v} for k, v in b.int8.items()}
            if not any(v.get("shipped", True) for v in b.int8.values()):
                raise QuantizationError("no runtime could run an INT8 version of this model: "
                                        + "; ".join(f"{k}: {v['error']}" for k, v in b.int8.items())
                                        + ". Export without --int8 (fp32 runs everywhere)")
        kw = dict(labels=src.labels, preprocessing=src.preprocessing, files=files, provenance=prov,
                  license={**src.license, **(license or {})}, assets=b.assets or None, roles=b.roles)
        if latency:
            say("timing fp32 and INT8 on this machine")
            # The package must load to be timed: write a provisional manifest first.
            (folder / "manifest.json").write_text(json.dumps(build_manifest(**kw, metrics=measured)))
            measured["latency"] = _latency(folder, files, latency_threads, latency_rounds)
        return build_manifest(**kw, metrics=measured)

    return write_package(out, build)
