"""``export()``: the one code path behind ``motivnet-edge export`` and the Python API.

Formats are a data table (``formats.FORMATS``); each writes its files into the package folder
under construction and returns ModelFile entries. The folder is renamed into place only
after every file was written, hashed, and the package reloaded and checked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

from motivnet_edge.machine import git_commit
from motivnet_edge.package import ModelFile, sha256_file
from motivnet_edge.package.write import build_manifest, check_replaceable, write_package

from .formats import FORMATS, ORT_TMP, Build, finish_onnxruntime
from .int8 import Int8Data, QuantizationError
from .onnx_export import OPSET
from .sources import ExportSource, SourceError, load_source

log = logging.getLogger(__name__)


def count_gflops(src: ExportSource) -> float:
    """GFLOPs of one face (batch 1) of the module being exported."""
    from motivnet_distill.students.model import count_flops

    return round(count_flops(src.model, (1, src.preprocessing.channels, *src.preprocessing.input_size)) / 1e9, 5)


def _latency(folder: Path, files: list[ModelFile], threads: int, rounds: int) -> dict:
    """fp32 vs int8 latency per backend on this machine, each in its own process, batch 1."""
    from motivnet_edge.cpu import int8_flags
    from motivnet_edge.machine import machine_info
    from motivnet_edge.timing import BenchConfig, compare

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
    from motivnet_edge.datasets.readers import FaceSet, read_dataset

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
        from motivnet_edge.datasets.readers import concat

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


@contextlib.contextmanager
def _third_parties_contained() -> Iterator[None]:
    """Standard output stays the command's result: what third parties print there while a
    package is built (NNCF's progress bars and, with -v, its INFO lines) goes to stderr with
    ``-v`` and nowhere without. Without -v (the root logger above INFO) an export shows its own
    stage lines only: torch's exporter notes on the torchvision ops it skips, deprecation
    warnings and ONNX Runtime's quantizer advice to the root logger all come back with -v."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    torch_onnx = logging.getLogger("torch.onnx")
    level = torch_onnx.level
    root = logging.getLogger()

    def not_ort_advice(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname

    with warnings.catch_warnings(), open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        warnings.simplefilter("ignore", FutureWarning)
        torch_onnx.setLevel(logging.ERROR)
        root.addFilter(not_ort_advice)
        try:
            yield
        finally:
            root.removeFilter(not_ort_advice)
            torch_onnx.setLevel(level)


def _write_models(b: Build, say) -> list[ModelFile]:
    """Every format's fp32 file, then (with calibration data) its INT8 file, in the table's order;
    ONNX Runtime's files get their fused graphs last."""
    files = []
    for name in b.formats:
        say(f"writing {name} fp32")
        files += FORMATS[name].fp32(b)
    if b.data is not None:
        for name in b.formats:
            say(f"quantizing {name} to INT8 (NNCF)")
            files += FORMATS[name].int8(b)
    if "onnx" in b.formats:
        files = finish_onnxruntime(b, files)
    else:
        (b.folder / "model.onnx").unlink(missing_ok=True)  # only the source of the other formats
    (b.folder / ORT_TMP).unlink(missing_ok=True)
    return files


def _ship_detector(b: Build, yunet: Path) -> None:
    """Copies a YuNet model into the package as an asset in the "yunet" role."""
    (b.folder / "detector").mkdir(exist_ok=True)
    shutil.copy(yunet, b.folder / "detector" / "yunet.onnx")
    b.assets["detector/yunet.onnx"] = sha256_file(b.folder / "detector" / "yunet.onnx")
    b.roles["yunet"] = "detector/yunet.onnx"


def _detector_licence(yunet: Path | None) -> dict:
    """A shipped detector's terms, beside the classifier's, in the package's licence."""
    from motivnet_edge.detectors import YUNET_LICENCE

    return {} if yunet is None else {"detector": YUNET_LICENCE}


def _provenance(b: Build, extra: dict | None) -> dict:
    """The source's provenance, the caller's additions, and how this export was made."""
    return {**b.src.provenance, **(extra or {}), "code_version": git_commit(),
            "export": {"formats": list(b.formats), "lean": b.lean, "onnx_opset": OPSET,
                       "onnx_max_abs_diff_vs_torch": b.onnx_max_abs_diff,
                       "onnxruntime_fusion": b.fused or None,
                       "machine": platform.machine(), "python": platform.python_version()}}


def _measured(b: Build, files: list[ModelFile], extra: dict | None) -> dict:
    """File sizes, GFLOPs and each INT8 file's agreement with fp32 for the manifest's metrics.

    Raises:
        QuantizationError: INT8 was asked for and no runtime could run any INT8 file.
    """
    sizes = {f.path: (b.folder / f.path).stat().st_size + sum((b.folder / p).stat().st_size for p in f.extra_files)
             for f in files}
    measured = {**b.src.metrics, **(extra or {}), "file_sizes": sizes, "gflops": count_gflops(b.src)}
    if b.int8:
        measured["int8"] = {k: {"shipped": True, **v} for k, v in b.int8.items()}
        if not any(v.get("shipped", True) for v in b.int8.values()):
            raise QuantizationError("no runtime could run an INT8 version of this model: "
                                    + "; ".join(f"{k}: {v['error']}" for k, v in b.int8.items())
                                    + ". Export without --int8 (fp32 runs everywhere)")
    return measured


def export(source, out: str | Path, *, formats=("onnx", "openvino"), int8: bool = False,
           calib=None, val=None, val_label_source: str = "ferplus", max_drop: float | None = None,
           min_calibration: int = 300,
           latency: bool = True, latency_threads: int = 1, latency_rounds: int = 3,
           metrics: dict | None = None, provenance: dict | None = None, license: dict | None = None,
           teacher_options: dict | None = None, yunet: str | Path | None = None,
           prior_correction: bool = False, lean: bool = False, progress=None) -> Path:
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
        lean: two weight files shared by every runtime (formats.py): OpenVINO reads
            model.onnx, one static QDQ model.int8.onnx serves ONNX Runtime, OpenVINO and
            TensorRT. Needs the onnx format.
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
    if lean and "onnx" not in formats:
        raise SourceError("--lean shares model.onnx with the other runtimes: keep the onnx format in --formats")
    if yunet is not None and not Path(yunet).is_file():
        raise SourceError(f"YuNet model {yunet} does not exist")
    check_replaceable(Path(out).absolute())  # before minutes of work, not after
    say = progress or (lambda stage: None)
    say("loading the model")
    src = source if isinstance(source, ExportSource) else load_source(source, **(teacher_options or {}))
    data = _prepare(src, val=val, calib=calib, int8=int8, prior_correction=prior_correction,
                    val_label_source=val_label_source, min_calibration=min_calibration, say=say)
    formats = tuple(name for name in FORMATS if name in formats)  # the table's order

    def build(folder: Path) -> dict:
        b = Build(src, folder, formats, data=data, max_drop=max_drop, lean=lean)
        files = _write_models(b, say)
        if yunet is not None:
            _ship_detector(b, Path(yunet))
        kw = dict(labels=src.labels, preprocessing=src.preprocessing, files=files,
                  provenance=_provenance(b, provenance), license={**src.license, **_detector_licence(yunet), **(license or {})},
                  assets=b.assets or None, roles=b.roles)
        measured = _measured(b, files, metrics)
        if latency:
            say("timing fp32 and INT8 on this machine")
            # The package must load to be timed: write a provisional manifest first.
            (folder / "manifest.json").write_text(json.dumps(build_manifest(**kw, metrics=measured)))
            measured["latency"] = _latency(folder, files, latency_threads, latency_rounds)
        return build_manifest(**kw, metrics=measured)

    with _third_parties_contained():
        return write_package(out, build)
