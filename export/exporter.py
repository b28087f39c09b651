"""``export()``: the one code path behind ``motivnet-edge export`` and the Python API.

Formats are a data table; each writes its files into the package folder under
construction and returns ModelFile entries. The folder is renamed into place only
after every file was written, hashed, and the package reloaded and checked.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from pathlib import Path

import numpy as np

from motivnet_edge.benchmark import git_commit
from motivnet_edge.package import ModelFile, build_manifest, sha256_file, write_package

from .onnx_export import INPUT, OPSET, OUTPUT, export_onnx, max_abs_diff, onnx_to_openvino
from .sources import ExportSource, SourceError, load_source

log = logging.getLogger(__name__)


def _onnx_fp32(src: ExportSource, folder: Path, ctx: dict) -> list[ModelFile]:
    # Above protobuf's 2 GB (the 1B teacher) the weights go to external data beside the graph.
    big = sum(p.numel() * p.element_size() for p in src.model.parameters()) > 1.8e9
    path = export_onnx(src.model, src.preprocessing, src.labels, folder / "model.onnx", external_data=big)
    if big:
        data = folder / "model.onnx.data"
        ctx["onnx_max_abs_diff"] = None  # a second full-size copy in ORT would double peak memory
        return [ModelFile("onnxruntime", "fp32", path.name, sha256_file(path), INPUT, OUTPUT,
                          {data.name: sha256_file(data)})]
    x = np.random.default_rng(0).normal(size=(4, src.preprocessing.channels, *src.preprocessing.input_size))
    ctx["onnx_max_abs_diff"] = max_abs_diff(src.model, path, x.astype(np.float32))
    return [ModelFile("onnxruntime", "fp32", path.name, sha256_file(path), INPUT, OUTPUT)]


def _openvino_fp32(src: ExportSource, folder: Path, ctx: dict) -> list[ModelFile]:
    onnx_path = folder / "model.onnx"
    if not onnx_path.exists():
        export_onnx(src.model, src.preprocessing, src.labels, onnx_path)
        ctx["remove"] = onnx_path
    (folder / "openvino").mkdir(exist_ok=True)
    xml = onnx_to_openvino(onnx_path, folder / "openvino" / "model.xml")
    binf = xml.with_suffix(".bin")
    return [ModelFile("openvino", "fp32", "openvino/model.xml", sha256_file(xml), INPUT, OUTPUT,
                      {"openvino/model.bin": sha256_file(binf)})]


#: format name -> (writer, runtime backend it serves, pip extra it needs)
FORMATS = {
    "onnx": (_onnx_fp32, "onnxruntime", "export"),
    "openvino": (_openvino_fp32, "openvino", "export"),
}


def count_gflops(src: ExportSource) -> float:
    """FLOPs of one face (batch 1), counted by torch on the exported module."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, src.preprocessing.channels, *src.preprocessing.input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        src.model(x)
    return round(counter.get_total_flops() / 1e9, 5)


def _int8(src: ExportSource, folder: Path, formats, data, max_drop, ctx: dict) -> list[ModelFile]:
    """INT8 files: dynamic-quantized ONNX for ORT's CPU provider, NNCF QDQ ONNX + calibration
    table for TensorRT (an asset with the role "tensorrt_int8"), NNCF INT8 OpenVINO IR."""
    from .int8 import (QuantizationError, accuracy_report, openvino_accuracy, quantize_dynamic_onnx,
                       quantize_onnx, quantize_openvino, tensorrt_calibration)

    fp32 = folder / "model.onnx"
    files = []
    agreement_x = data.val_x if data.val_x is not None else np.concatenate(data.calib)
    (folder / "tensorrt").mkdir(exist_ok=True)
    qdq = quantize_onnx(fp32, folder / "tensorrt" / "model.int8.qdq.onnx", data, max_drop=max_drop)
    cpu = quantize_dynamic_onnx(fp32, folder / "model.int8.onnx")
    report = accuracy_report(fp32, cpu, data, agreement_x=agreement_x)
    report["tensorrt_qdq"] = accuracy_report(fp32, qdq, data, agreement_x=agreement_x)
    ctx["int8"] = report
    for name, r in (("ONNX Runtime CPU", report), ("TensorRT QDQ", report["tensorrt_qdq"])):
        if max_drop is not None and r.get("val_accuracy_drop", 0.0) > max_drop:
            raise QuantizationError(
                f"INT8 ({name}) loses {r['val_accuracy_drop']:.2%} accuracy, above --max-drop {max_drop:.2%}; "
                "nothing was written. Raise --max-drop, use more or more typical calibration faces, or ship fp32 only")
    if "onnx" in formats:
        files.append(ModelFile("onnxruntime", "int8", cpu.name, sha256_file(cpu), INPUT, OUTPUT))
        table = tensorrt_calibration(fp32, folder / "tensorrt", data)
        ctx["assets"] = {f"tensorrt/{p.name}": sha256_file(p) for p in [*table, qdq]}
        ctx["roles"] = {"tensorrt_int8": f"tensorrt/{qdq.name}"}
    else:
        cpu.unlink()
        shutil.rmtree(folder / "tensorrt")
    if "openvino" in formats:
        xml = quantize_openvino(folder / "openvino" / "model.xml", folder / "openvino" / "model.int8.xml",
                                data, max_drop=max_drop)
        if data.val_x is not None:
            a32, a8 = (openvino_accuracy(x, data) for x in (folder / "openvino" / "model.xml", xml))
            report["openvino"] = {"val_accuracy_fp32": a32, "val_accuracy_int8": a8, "val_accuracy_drop": a32 - a8}
            if max_drop is not None and a32 - a8 > max_drop:
                # NNCF reverts layers until it gives up; what is left is no INT8 model worth shipping.
                log.warning("OpenVINO INT8 loses %.2f%% (above --max-drop): not shipped", 100 * (a32 - a8))
                report["openvino"]["shipped"] = False
                xml.unlink()
                xml.with_suffix(".bin").unlink()
                return files
        files.append(ModelFile("openvino", "int8", "openvino/model.int8.xml", sha256_file(xml), INPUT, OUTPUT,
                               {"openvino/model.int8.bin": sha256_file(xml.with_suffix(".bin"))}))
    return files


def _latency(folder: Path, files: list[ModelFile], threads: int, rounds: int) -> dict:
    """fp32 vs int8 latency per backend on this machine, each in its own process, batch 1."""
    from motivnet_edge.cpu import int8_flags
    from motivnet_edge.benchmark import BenchConfig, compare, machine_info

    configs = [BenchConfig(f.backend, f.precision, threads, 1) for f in files]
    out: dict = {}
    info = machine_info()
    for r in compare(folder, configs, rounds=rounds, iters=300, seconds=3.0):
        entry = out.setdefault(r["backend"], {"cpu": info["cpu"], "cpu_int8_flags": sorted(int8_flags()),
                                              "threads": threads, "batch": 1, "date": info["date"]})
        entry[f"{r['precision']}_ms"] = round(r["p50_ms"], 4)
        entry[f"{r['precision']}_spread_ms"] = [round(v, 4) for v in r["p50_spread_ms"]]
    return out


def export(source, out: str | Path, *, formats=("onnx", "openvino"), int8: bool = False,
           calib=None, val=None, val_label_source: str = "ferplus", max_drop: float | None = None,
           min_calibration: int = 300,
           latency: bool = True, latency_threads: int = 1, latency_rounds: int = 3,
           metrics: dict | None = None, provenance: dict | None = None, license: dict | None = None,
           teacher_options: dict | None = None, yunet: str | Path | None = None,
           prior_correction: bool = False) -> Path:
    """Exports a student, checkpoint or teacher to a model package (the CLI's one code path).

    Args:
        source: run folder, checkpoint, teacher file, or an ExportSource.
        out: package folder; replaced atomically.
        formats: names from FORMATS.
        int8: also write INT8 models (NNCF PTQ) for each format, a TensorRT table for ONNX.
        calib: calibration faces (path to any dataset format); required with ``int8``.
        val: labelled validation faces: fp32/int8 accuracy and, with ``max_drop``, accuracy control.
        val_label_source: for a FER+ split ``val``: "ferplus" votes or "fer2013" labels, the
            labels the model was trained and selected on.
        max_drop: largest absolute accuracy drop allowed for INT8 (e.g. 0.01).
        latency: measure fp32/int8 latency here (subprocesses) into the manifest.
        teacher_options: for teacher sources, e.g. num_heads, img_size, mode ("letterbox"/"stretch").
        yunet: a YuNet .onnx to ship inside the package (detector="auto" then uses it).
        prior_correction: fold a class-prior logit offset, fitted on ``val``, into the
            student's head before exporting (motivnet_distill.calibration).

    Raises:
        SourceError: the source is not a model, or bad formats.
        QuantizationError: too few calibration faces, bad validation labels, drop above max_drop.
        PackageError: the output cannot be written.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise SourceError(f"unknown formats {unknown}; choose from {sorted(FORMATS)}")
    if max_drop is not None and (val is None or not int8):
        raise SourceError("--max-drop needs --int8 and a labelled --val set")
    if prior_correction and val is None:
        raise SourceError("--prior-correction needs a labelled --val set to fit the correction on")
    src = source if isinstance(source, ExportSource) else load_source(source, **(teacher_options or {}))
    data = val_faces = None
    if val is not None and (int8 or prior_correction):
        from motivnet_distill.data import read_dataset

        val_faces = read_dataset(val, labels=src.labels, label_source=val_label_source)
    if prior_correction:
        from motivnet_distill.calibration import apply_bias, fit_prior_correction
        from motivnet_distill.train import predict_logits

        fit = fit_prior_correction(predict_logits(src.model, val_faces, src.preprocessing).numpy(), val_faces)
        apply_bias(src.model, fit["bias"])
        src.provenance["prior_correction"] = {**fit, "fitted_on": str(val)}
        log.info("prior correction %s: validation %s -> %s", fit["bias"],
                 fit["validation"]["uncorrected"], fit["validation"]["corrected"])
    if int8:
        from motivnet_distill.data import read_dataset

        from .int8 import prepare_data

        if calib is None:
            raise SourceError(f"--int8 needs --calib: at least {min_calibration} face images to set INT8 ranges")
        data = prepare_data(read_dataset(calib, labels=src.labels), src.preprocessing, val_faces=val_faces,
                            labels=src.labels, min_calibration=min_calibration)
    ctx: dict = {}

    def build(folder: Path) -> dict:
        files = []
        for name in sorted(formats, key=list(FORMATS).index):
            writer, _, _ = FORMATS[name]
            log.info("writing %s", name)
            files += writer(src, folder, ctx)
        if data is not None:
            if not (folder / "model.onnx").exists():
                export_onnx(src.model, src.preprocessing, src.labels, folder / "model.onnx")
            files += _int8(src, folder, formats, data, max_drop, ctx)
        if "remove" in ctx and "onnx" not in formats:
            ctx["remove"].unlink()
        roles = dict(ctx.get("roles", {}))
        if yunet is not None:
            if not Path(yunet).is_file():
                raise SourceError(f"YuNet model {yunet} does not exist")
            (folder / "detector").mkdir(exist_ok=True)
            shutil.copy(yunet, folder / "detector" / "yunet.onnx")
            ctx.setdefault("assets", {})["detector/yunet.onnx"] = sha256_file(folder / "detector" / "yunet.onnx")
            roles["yunet"] = "detector/yunet.onnx"
        prov = {**src.provenance, **(provenance or {}), "code_version": git_commit(),
                "export": {"formats": list(formats), "onnx_opset": OPSET,
                           "onnx_max_abs_diff_vs_torch": ctx.get("onnx_max_abs_diff"),
                           "machine": platform.machine(), "python": platform.python_version()}}
        sizes = {f.path: (folder / f.path).stat().st_size + sum((folder / p).stat().st_size for p in f.extra_files)
                 for f in files}
        measured = {**src.metrics, **(metrics or {}), "file_sizes": sizes, "gflops": count_gflops(src)}
        if "int8" in ctx:
            measured["int8"] = ctx["int8"]
        kw = dict(labels=src.labels, preprocessing=src.preprocessing, files=files, provenance=prov,
                  license={**src.license, **(license or {})}, assets=ctx.get("assets"), roles=roles)
        if latency:
            # The package must load to be timed: write a provisional manifest first.
            (folder / "manifest.json").write_text(json.dumps(build_manifest(**kw, metrics=measured)))
            measured["latency"] = _latency(folder, files, latency_threads, latency_rounds)
        return build_manifest(**kw, metrics=measured)

    return write_package(out, build)
