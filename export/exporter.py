"""``export()``: the one code path behind ``motivnet-edge export`` and the Python API.

Formats are a data table; each writes its files into the package folder under
construction and returns ModelFile entries. The folder is renamed into place only
after every file was written, hashed, and the package reloaded and checked.
"""

from __future__ import annotations

import logging
import platform
import subprocess
from pathlib import Path

import numpy as np

from motivnet_edge.package import ModelFile, build_manifest, sha256_file, write_package

from .onnx_export import INPUT, OUTPUT, export_onnx, max_abs_diff, onnx_to_openvino
from .sources import ExportSource, SourceError, load_source

log = logging.getLogger(__name__)


def _onnx_fp32(src: ExportSource, folder: Path, ctx: dict) -> list[ModelFile]:
    path = export_onnx(src.model, src.preprocessing, src.labels, folder / "model.onnx")
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


def _code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def export(source, out: str | Path, *, formats=("onnx", "openvino"), metrics: dict | None = None,
           provenance: dict | None = None, license: dict | None = None) -> Path:
    """Exports a student (run folder, checkpoint or ExportSource) to a model package.

    Raises:
        SourceError: the source is not a model.
        PackageError: the output cannot be written.
        ValueError: an unknown format name.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise SourceError(f"unknown formats {unknown}; choose from {sorted(FORMATS)}")
    src = source if isinstance(source, ExportSource) else load_source(source)
    ctx: dict = {}

    def build(folder: Path) -> dict:
        files = []
        for name in sorted(formats, key=list(FORMATS).index):
            writer, _, _ = FORMATS[name]
            log.info("writing %s", name)
            files += writer(src, folder, ctx)
        if "remove" in ctx and "onnx" not in formats:
            ctx["remove"].unlink()
        prov = {**src.provenance, **(provenance or {}), "code_version": _code_version(),
                "export": {"formats": list(formats), "onnx_opset": 18,
                           "onnx_max_abs_diff_vs_torch": ctx.get("onnx_max_abs_diff"),
                           "machine": platform.machine(), "python": platform.python_version()}}
        sizes = {f.path: (folder / f.path).stat().st_size + sum((folder / p).stat().st_size for p in f.extra_files)
                 for f in files}
        return build_manifest(labels=src.labels, preprocessing=src.preprocessing, files=files,
                              provenance=prov, license={**src.license, **(license or {})},
                              metrics={**src.metrics, **(metrics or {}), "file_sizes": sizes})

    return write_package(out, build)
