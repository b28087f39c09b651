"""Backend registry and the documented auto rules for backend and precision.

The same face gets the same answer on every machine unless the user asks for a precision:

precision="auto": fp32, unless the package records that its INT8 file for this backend agrees
with fp32 on at least ``INT8_AGREEMENT`` (99.5 %) of its test faces (``metrics.int8.<backend>.
test_agreement``, the lowest over its test sets, measured at export) *and* INT8 is known to pay
off here: the manifest records INT8 faster than fp32 (``metrics.latency``) on a CPU with the
same INT8 dot product instructions this one has (VNNI or AMX), or the session runs on TensorRT.
A package with only an int8 file uses it. Asking for "int8" always gets int8. "fp32" is fp32 on
every backend (OpenVINO's CPU plugin would otherwise run bf16 on CPUs that have it); "bf16"
asks OpenVINO for bf16 explicitly.

backend="auto": ONNX Runtime when GPU providers were asked for; otherwise, among the installed
backends the package has files for, the one with the lowest fp32 latency the package's manifest
records (measured at export, batch 1); without such figures, ``AUTO_ORDER``. Nothing is timed
when a package loads (the first load costs what loading costs); ``autotune=True`` or
``MOTIVNET_AUTOTUNE=1`` opts in to timing the candidates on this device once (cached; see
motivnet_edge.autotune), among files the rules above admit.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from ..cpu import INT8_FLAGS, has_bf16, int8_flags
from ..errors import BackendUnavailableError, OptionError, PackageError
from .base import Backend, BackendOptions, VerifiedModel
from .registry import AUTO_ORDER, BACKENDS, PRECISIONS, SPECS, installed_backends


def _on_tensorrt(options: BackendOptions) -> bool:
    return any(p.lower() in ("tensorrt", "trt", "tensorrtexecutionprovider") for p in options.providers)


#: Top-1 agreement with fp32 (lowest over the package's test sets) an INT8 file needs before
#: precision="auto" may choose it.
INT8_AGREEMENT = 0.995


def int8_agrees(package, backend: str) -> bool:
    """Whether the package records its INT8 file for ``backend`` agreeing with fp32 on >= 99.5 % of test faces."""
    rec = package.metrics.get("int8", {}).get(backend, {})
    agreement = rec.get("test_agreement") if isinstance(rec, dict) else None
    return isinstance(agreement, (int, float)) and agreement >= INT8_AGREEMENT


def choose_precision(package, backend: str, precision: str, options: BackendOptions) -> str:
    """The precision the rules in this module's docstring give; see there.

    Raises:
        OptionError: an unknown precision, or bf16 asked of a backend that has no bf16 mode.
        PackageError: the package has no file of that precision.
        BackendUnavailableError: bf16 on a CPU without bf16 instructions.
    """
    if precision not in PRECISIONS:
        raise OptionError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    have = {f.precision for f in package.files if f.backend == backend}
    if precision == "bf16":
        # bf16 is a way to run the fp32 file (OpenVINO's inference precision), not a file of its own.
        if "bf16" not in SPECS[backend].run_precisions or "fp32" not in have:
            raise OptionError("precision 'bf16' runs the fp32 OpenVINO model in bf16: use --backend openvino "
                               "with a package that has an OpenVINO fp32 model")
        if options.device.upper() == "CPU" and not has_bf16():
            raise BackendUnavailableError("this CPU has no bf16 instructions (AVX512_BF16 or AMX): use precision fp32")
        return "bf16"
    if precision != "auto":
        if precision not in have:
            raise PackageError(f"the package has no {precision} model for {backend} (it has "
                               f"{sorted(have)}); export one with `motivnet-edge export --int8`")
        return precision
    if have == {"int8"}:
        return "int8"
    if "int8" in have:
        on_trt = _on_tensorrt(options)
        lat = package.metrics.get("latency", {}).get(backend, {})
        measured_faster = lat.get("int8_ms", float("inf")) < lat.get("fp32_ms", 0.0)
        # The figure only speaks for this CPU when it was taken with INT8 instructions this CPU
        # also has; a figure from a CPU without any (an empty list) says nothing about INT8 here.
        recorded = set(lat.get("cpu_int8_flags", [])) & INT8_FLAGS
        same_isa = bool(recorded) and recorded <= int8_flags()
        if int8_agrees(package, backend) and (on_trt or (measured_faster and same_isa)):
            return "int8"
    return "fp32" if "fp32" in have else sorted(have)[0]


def _package_trt_table(package, options: BackendOptions) -> BackendOptions:
    """Copies the package's TensorRT calibration table into the engine cache, where ORT reads it."""
    import shutil

    from .onnxruntime_backend import trt_cache_dir

    table = package.root / "tensorrt" / "calibration.flatbuffers"
    if "tensorrt/calibration.flatbuffers" not in package.manifest.get("assets", {}):
        raise PackageError("the package has no TensorRT calibration table; export it with --int8")
    cache = trt_cache_dir(options, package.root)
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy(table, cache / table.name)
    return dataclasses.replace(options, trt_cache_dir=str(cache), trt_int8_table=table.name)


def _verified(package, f) -> VerifiedModel:
    """The model file's bytes (and its companions'), verified against the manifest as they are read."""
    from ..onnx_refs import check_listed, check_operators
    from ..package import copy_verified, read_verified

    if f.backend == "onnxruntime" and f.extra_files:
        # External data: ORT needs files; they are copied while hashed into a private folder,
        # and the model may reference only those (motivnet_edge.onnx_refs).
        private = Path(tempfile.mkdtemp(prefix="motivnet-model-"))
        try:
            for rel, digest in ((f.path, f.sha256), *f.extra_files.items()):
                copy_verified(package.root, rel, digest, private)
            data = (private / f.path).read_bytes()
            check_listed(data, f.path, f.extra_files)
            check_operators(data, f.path)
        except BaseException:
            shutil.rmtree(private, ignore_errors=True)
            raise
        return VerifiedModel(f.path, b"", {}, private)
    data = read_verified(package.root, f.path, f.sha256)
    if f.backend == "onnxruntime" or f.path.endswith(".onnx"):  # OpenVINO reads a lean package's ONNX files
        check_listed(data, f.path, ())  # from bytes, a runtime would look for external data in the working directory
        check_operators(data, f.path)
    return VerifiedModel(f.path, data, {rel: read_verified(package.root, rel, d) for rel, d in f.extra_files.items()})


def auto_candidates(package, backend: str, precision: str, options: BackendOptions) -> list[tuple[str, str]]:
    """The (backend, precision) pairs an "auto" choice may take on this CPU (empty: nothing to
    choose): installed backends the package has files for, INT8 only where it agrees with fp32."""
    if "auto" not in (backend, precision) or options.providers or options.device.upper() != "CPU":
        return []
    installed = installed_backends()
    backends = [b for b in ([backend] if backend != "auto" else AUTO_ORDER) if b in installed]
    precisions = [precision] if precision != "auto" else ["fp32", "int8"]
    return [(b, p) for b in backends for p in precisions if package.file_for(b, p) is not None
            and (p != "int8" or precision == "int8" or int8_agrees(package, b))]


def create_backend(package, *, backend: str = "auto", precision: str = "auto",
                   options: BackendOptions | None = None) -> Backend:
    """Opens the package's model file for the chosen backend and precision.

    Raises:
        BackendUnavailableError: the backend is not installed (the message names the pip command).
        PackageError: the package has no file for that backend/precision.
    """
    options = options or BackendOptions()
    installed = installed_backends()
    if precision == "bf16" and backend == "auto":
        backend = next(s.name for s in SPECS.values() if "bf16" in s.run_precisions)  # an inference precision
    if backend == "auto":
        offered = {f.backend for f in package.files}
        choices = [b for b in AUTO_ORDER if b in installed and b in offered]
        if not choices:
            raise BackendUnavailableError(
                f"the package has models for {sorted(offered)} but none of those backends is installed; "
                + "; ".join(SPECS[b].install for b in sorted(offered) if b in SPECS))
        lat = package.metrics.get("latency", {})
        if options.providers and "onnxruntime" in choices:
            backend = "onnxruntime"
        elif all("fp32_ms" in lat.get(b, {}) for b in choices):
            backend = min(choices, key=lambda b: lat[b]["fp32_ms"])
        else:
            backend = choices[0]
    elif backend not in SPECS:
        raise OptionError(f"unknown backend {backend!r}; choose {', '.join(BACKENDS)}")
    elif backend not in installed:
        raise BackendUnavailableError(f"backend {backend!r} is not installed: {SPECS[backend].install}")
    prec = choose_precision(package, backend, precision, options)
    f = package.file_for(backend, "fp32" if prec == "bf16" else prec)
    qdq = package.manifest.get("assets_roles", {}).get("tensorrt_int8")
    if _on_tensorrt(options) and prec == "int8" and qdq:
        # TensorRT runs the QDQ graph; the package's own int8 file is quantized for ORT's CPU provider.
        f = dataclasses.replace(f, path=qdq, sha256=package.manifest["assets"][qdq])
    if options.trt_int8_table == "package":
        options = _package_trt_table(package, options)
    cls = SPECS[backend].backend_class()
    verified = _verified(package, f)
    try:
        inst = cls(package.path_of(f), input_name=f.input_name, output_name=f.output_name, options=options,
                   precision=prec, verified=verified)
    finally:
        if verified.private_dir is not None:
            shutil.rmtree(verified.private_dir, ignore_errors=True)
    want = (package.preprocessing.channels, *package.preprocessing.input_size)
    got = getattr(inst, "input_chw", None)
    if got is not None and any(isinstance(g, int) and g != w for g, w in zip(got, want)):
        inst.close()
        raise PackageError(f"{f.path} takes input {tuple(got)} (channels, height, width) but the manifest's "
                           f"preprocessing gives {want} ({package.preprocessing.color}, "
                           f"{package.preprocessing.input_size}); fix the manifest or re-export")
    if inst.output_size is not None and inst.output_size != len(package.labels):
        inst.close()
        raise PackageError(f"{f.path} outputs {inst.output_size} scores but the manifest lists "
                           f"{len(package.labels)} labels {list(package.labels)}; the labels must name "
                           "every output, in order: fix the manifest or re-export")
    return inst


__all__ = ["BACKENDS", "PRECISIONS", "SPECS", "Backend", "BackendOptions", "create_backend", "installed_backends", "AUTO_ORDER"]
