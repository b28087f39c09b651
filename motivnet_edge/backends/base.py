"""The small interface every inference backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class BackendOptions:
    """Runtime settings shared by the backends.

    Attributes:
        threads: intra-op threads; 0 lets the runtime decide.
        device: OpenVINO device string ("CPU", "GPU", "NPU", "AUTO").
        providers: ONNX Runtime execution providers, short ("cpu", "cuda", "tensorrt")
            or full names; empty means CPU.
        trt_cache_dir: where TensorRT keeps built engines (Jetson: build once, reuse).
        trt_int8_table: TensorRT INT8 calibration table file name (inside trt_cache_dir);
            "package" uses the package's own table.
        autotune: decide "auto" backend/precision by timing them here once (cached per
            package and CPU); None (default): only when MOTIVNET_AUTOTUNE=1; False never.
            Without it the figures in the package's manifest decide, and nothing is timed.
        spin: whether ONNX Runtime's worker threads busy-wait for the next call. True is
            fastest for one model alone; False hands the cores back at once, which is faster
            where other threads share them (a face detector beside the classifier, several
            sessions in one process). None: an EmotionRecognizer turns spinning off when it
            runs a face detector and on for face crops only; a bare backend spins.
    """

    threads: int = 0
    device: str = "CPU"
    providers: tuple[str, ...] = field(default_factory=tuple)
    trt_cache_dir: str | None = None
    trt_int8_table: str | None = None
    autotune: bool | None = None
    spin: bool | None = None


@dataclass(frozen=True)
class VerifiedModel:
    """A model file's sha256-checked bytes and those of its companions (OpenVINO's .bin),
    by package-relative path: the runtime loads these bytes, never the path again.
    ``private_dir``: for ONNX with external data, a private copy written while it was hashed."""

    path: str
    data: bytes
    extra: dict[str, bytes] = field(default_factory=dict)
    private_dir: Path | None = None


class Backend:
    """Runs a model file: float32 NCHW batch in, logits (N, K) out. Thread-safe ``run``.

    ``precision`` is what ``create_backend`` settled on: the file's ("fp32", "int8"), or
    "bf16" for OpenVINO's CPU plugin running the fp32 model in bf16.
    """

    name = "base"
    #: classes the model outputs, when its file says so statically (checked against the labels)
    output_size: int | None = None
    #: (channels, height, width) the model file declares, None where dynamic (checked against the manifest)
    input_chw: tuple | None = None

    def __init__(self, path: Path, *, input_name: str, output_name: str, options: BackendOptions,
                 precision: str = "fp32", verified: "VerifiedModel | None" = None) -> None:
        self.path, self.input_name, self.output_name, self.options = path, input_name, output_name, options
        self.precision = precision
        self.verified = verified

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Releases the session; the backend must not be used afterwards."""
