"""OpenVINO backend: CPU, GPU or NPU device string; one infer request per thread."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, PackageError
from .base import Backend, BackendOptions, VerifiedModel


def _cause(exc: Exception) -> str:
    """OpenVINO's error in one line: the line that says what went wrong, not its C++ frames."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(("Check ", "["))]
    return (lines[-1] if lines else str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)[:300]


#: The most elements one operation of a face model may produce per face (the pico's largest is
#: 37 k; a 640x640 detector's about 1.6 M).
MAX_ELEMENTS = 2**24
#: Operations that loop or branch: their sizes are not known before they run.
_UNBOUNDED = {"Loop", "If", "TensorIterator"}


def _check_bounded(model, name: str) -> None:
    """Every operation's output, for a batch of one face, has a known size under ``MAX_ELEMENTS``
    (OpenVINO infers the shapes of a copy of the graph reshaped to batch 1).

    Raises:
        PackageError: a loop or branch, a size only known at run time, or an output too large.
    """
    one = model.clone()
    try:
        shapes = {}
        for p in one.inputs:
            dims = list(p.get_partial_shape())
            if not dims or not all(d.is_static for d in dims[1:]):
                raise PackageError(f"{name}: its input {p.get_partial_shape()} must have a fixed size per face; "
                                   "re-export the package")
            shapes[p] = [1, *(d.get_length() for d in dims[1:])]
        one.reshape(shapes)
    except PackageError:
        raise
    except Exception as exc:
        raise PackageError(f"{name}: OpenVINO cannot size its graph for one face ({_cause(exc)}); "
                           "re-export the package") from None
    for op in one.get_ops():
        kind = op.get_type_name()
        if kind in _UNBOUNDED:
            raise PackageError(f"{name} holds a {kind} operation, which a face model has no need of and whose size "
                               "is unknown until it runs; re-export the package with `motivnet-edge export`")
        for i in range(op.get_output_size()):
            shape = op.get_output_partial_shape(i)
            if shape.is_static and int(np.prod([d.get_length() for d in shape], dtype=np.float64)) <= MAX_ELEMENTS:
                continue
            raise PackageError(f"{name}: its {kind} operation makes {shape} values for one face (a face model's "
                               f"largest is well under {MAX_ELEMENTS:,}); such a graph is not loaded: "
                               "re-export the package with `motivnet-edge export`")


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, path: Path, *, input_name: str, output_name: str, options: BackendOptions,
                 precision: str = "fp32", verified: VerifiedModel | None = None) -> None:
        super().__init__(path, input_name=input_name, output_name=output_name, options=options, precision=precision,
                         verified=verified)
        try:
            import openvino as ov
        except ImportError:
            raise BackendUnavailableError("OpenVINO is not installed: pip install openvino") from None
        core = ov.Core()
        devices = core.available_devices
        wanted = options.device.upper()
        if wanted not in ("AUTO",) and wanted.split(".")[0] not in devices:
            raise BackendUnavailableError(f"OpenVINO device {options.device!r} is not present here "
                                          f"(available: {devices})")
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if wanted == "CPU":
            # Without the hint the CPU plugin runs bf16 wherever the CPU has AVX512_BF16/AMX:
            # "fp32" must mean fp32. An int8 IR keeps its fp32 parts fp32 the same way.
            config["INFERENCE_PRECISION_HINT"] = "bf16" if precision == "bf16" else "f32"
        if options.threads and wanted == "CPU":
            config["INFERENCE_NUM_THREADS"] = options.threads
        try:
            self.compiled = core.compile_model(self._read(ov, core, path, verified), wanted, config)
        except PackageError:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError with a long message
            raise PackageError(f"OpenVINO cannot load {path.name}: {_cause(exc)}") from None
        self._local = threading.local()
        dims = self.compiled.inputs[0].get_partial_shape()
        self.input_chw = tuple(d.get_length() if d.is_static else None for d in dims)[1:] if len(dims) == 4 else None
        by_name = {n: o for o in self.compiled.outputs for n in o.get_names()}
        if output_name not in by_name:
            raise PackageError(f"{path.name} has outputs {sorted(by_name)}, the manifest says {output_name!r}")
        self._output = by_name[output_name]
        last = self._output.get_partial_shape()[-1]
        self.output_size = last.get_length() if last.is_static else None

    @staticmethod
    def _read(ov, core, path: Path, verified: VerifiedModel | None):
        """The model from verified bytes: an IR's .xml and the one .bin the manifest lists beside
        it (an IR would otherwise open whatever .bin sits beside it, or a symlink's target), or a
        lean package's ONNX file, which ``backends._verified`` has scanned: it names no external
        data (from bytes, OpenVINO would look for that in the working directory)."""
        if verified is None:
            return core.read_model(str(path))
        if verified.path.endswith(".onnx") and not verified.extra:
            model = core.read_model(verified.data)
            _check_bounded(model, verified.path)
            return model
        if not verified.data.lstrip()[:5] in (b"<?xml", b"<net "):
            # read_model takes other formats from bytes too, and an ONNX file read that way
            # opens external data in the working directory (measured): only an IR, or an ONNX
            # file the manifest names as such (scanned above), is accepted.
            raise PackageError(f"{verified.path} is not an OpenVINO IR (.xml); re-export the package")
        bins = [data for rel, data in verified.extra.items() if rel.endswith(".bin")]
        if len(bins) != 1:
            raise PackageError(f"{verified.path}: an OpenVINO IR needs exactly one .bin listed in the manifest's "
                               f"extra_files (found {len(bins)}); re-export the package")
        weights = ov.Tensor(np.frombuffer(bins[0], dtype=np.uint8).copy()) if bins[0] else ov.Tensor(np.zeros(1, np.uint8))
        model = core.read_model(verified.data, weights)
        _check_bounded(model, verified.path)
        return model

    def run(self, batch: np.ndarray) -> np.ndarray:
        req = getattr(self._local, "req", None)
        if req is None:  # an infer request is not thread-safe: one per thread
            req = self._local.req = self.compiled.create_infer_request()
        result = req.infer({0: batch})
        return np.array(result[self._output], copy=True)

    def describe(self) -> str:
        return f"openvino {self.options.device}"

    def close(self) -> None:
        self.compiled = None
