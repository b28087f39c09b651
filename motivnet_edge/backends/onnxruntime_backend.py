"""ONNX Runtime backend: CPU by default; CUDA and TensorRT providers for Jetson and GPUs."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, PackageError
from .base import Backend, BackendOptions, VerifiedModel

log = logging.getLogger(__name__)

_SHORT = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
          "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
          "openvino": "OpenVINOExecutionProvider", "coreml": "CoreMLExecutionProvider"}


def _first_line(exc: Exception) -> str:
    """The cause of a runtime's load error in one line (its first non-empty line, trimmed)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


#: What this process's ONNX Runtime CPU sessions may allocate together while they run: far above
#: what a face model needs (the pico at batch 256 takes about 40 MB), far below a device's memory.
#: A crafted graph that broadcasts or loops its way to gigabytes fails instead (measured: 3 GB).
ARENA_BYTES = 512 * 2**20
_ARENA_LOCK = threading.Lock()
_arena: list[bool] = []


def _bounded_arena(ort) -> bool:
    """Registers, once per process, the bounded CPU arena that sessions share; False if this
    onnxruntime cannot (then sessions use their own unbounded arena)."""
    with _ARENA_LOCK:
        if not _arena:
            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                ort.create_and_register_allocator(info, ort.OrtArenaCfg({"max_mem": ARENA_BYTES,
                                                                          "arena_extend_strategy": 1}))
                _arena.append(True)
            except Exception as exc:  # an onnxruntime without shared allocators
                log.warning("ONNX Runtime cannot bound its memory here (%s)", _first_line(exc))
                _arena.append(False)
        return _arena[0]


def available_providers() -> list[str]:
    import onnxruntime as ort
    return list(ort.get_available_providers())


def trt_cache_dir(options: BackendOptions, model_dir: Path) -> Path:
    """Where TensorRT engines are built once and reused: the option, else a per-model user cache
    (an installed package folder may be read-only)."""
    import hashlib

    from ..cache import user_cache

    if options.trt_cache_dir:
        return Path(options.trt_cache_dir)
    return user_cache("trt", hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16])


def resolve_providers(options: BackendOptions, model_dir: Path) -> list:
    """Maps short names to ORT providers with their options; CPU always comes last."""
    avail = available_providers()
    names = [_SHORT.get(p.lower(), p) for p in options.providers] or ["CPUExecutionProvider"]
    missing = [n for n in names if n not in avail]
    if missing:
        raise BackendUnavailableError(
            f"ONNX Runtime providers {missing} are not available here (available: {avail}); install "
            "onnxruntime-gpu (CUDA/TensorRT) or JetPack's onnxruntime build, or drop the provider")
    out = []
    for n in names:
        if n == "TensorrtExecutionProvider":
            cache = trt_cache_dir(options, model_dir)
            cache.mkdir(parents=True, exist_ok=True)
            opts = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                    "trt_fp16_enable": True}
            if options.trt_int8_table:
                opts.update(trt_int8_enable=True, trt_int8_calibration_table_name=options.trt_int8_table,
                            trt_int8_use_native_calibration_table=False)
            out.append((n, opts))
        else:
            out.append(n)
    if "CPUExecutionProvider" not in names:
        out.append("CPUExecutionProvider")
    return out


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: Path, *, input_name: str, output_name: str, options: BackendOptions,
                 precision: str = "fp32", verified: VerifiedModel | None = None) -> None:
        super().__init__(path, input_name=input_name, output_name=output_name, options=options, precision=precision,
                         verified=verified)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailableError("onnxruntime is not installed: pip install onnxruntime "
                                          "(or onnxruntime-gpu)") from None
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if options.threads:
            so.intra_op_num_threads = options.threads
            so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0" if options.spin is False else "1")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if _bounded_arena(ort):
            so.add_session_config_entry("session.use_env_allocators", "1")
        providers = resolve_providers(options, path.parent)
        try:
            # Verified bytes when there are any; a model with external data loads from the private
            # copy that was hashed as it was written; a bare path only for direct callers.
            source = (str(verified.private_dir / verified.path) if verified is not None and verified.private_dir
                      else verified.data if verified is not None else str(path))
            self.session = ort.InferenceSession(source, so, providers=providers)
        except Exception as exc:  # ORT raises its own exception types
            raise PackageError(f"ONNX Runtime cannot load {path.name}: {_first_line(exc)}; re-export the package "
                               "(a model whose external data the manifest does not list is refused)") from None
        names = [i.name for i in self.session.get_inputs()]
        shape = next((i.shape for i in self.session.get_inputs() if i.name == input_name), None)
        self.input_chw = tuple(shape[1:]) if shape and len(shape) == 4 else None
        if input_name not in names:
            raise PackageError(f"{path.name} has inputs {names}, the manifest says {input_name!r}")
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if output_name not in outputs:
            raise PackageError(f"{path.name} has outputs {list(outputs)}, the manifest says {output_name!r}")
        last = outputs[output_name][-1] if outputs[output_name] else None
        self.output_size = last if isinstance(last, int) else None
        self._probe(path)

    def _probe(self, path: Path) -> None:
        """One face of zeros through the graph at load, inside the bounded arena: a graph that
        would allocate without bound fails here, before a user's frame reaches it."""
        import onnxruntime as ort

        kind = next(i.type for i in self.session.get_inputs() if i.name == self.input_name)
        if kind != "tensor(float)" or self.input_chw is None \
                or not all(isinstance(d, int) and 0 < d <= 4096 for d in self.input_chw):
            return
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4
        try:
            self.session.run([self.output_name], {self.input_name: np.zeros((1, *self.input_chw), np.float32)}, quiet)
        except Exception as exc:
            self.session = None
            raise PackageError(f"{path.name} fails on one face at load ({_first_line(exc)[:160]}); a face model "
                               f"runs within {ARENA_BYTES >> 20} MB: re-export the package") from None

    def run(self, batch: np.ndarray) -> np.ndarray:
        # InferenceSession.run is thread-safe, so one session serves every caller.
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def describe(self) -> str:
        spinning = "" if self.options.spin is not False else " (workers do not spin)"
        return f"onnxruntime {self.session.get_providers()[0]}{spinning}"

    def close(self) -> None:
        self.session = None
