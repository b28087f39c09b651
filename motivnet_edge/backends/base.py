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
        trt_int8_table: TensorRT INT8 calibration table file name (inside trt_cache_dir).
        precision: set by ``create_backend`` from the package's file and the precision rules;
            "bf16" asks OpenVINO's CPU plugin for bf16 inference of the fp32 model.
        autotune: decide "auto" backend/precision by timing them here once (cached per
            package and CPU); False uses the figures in the package's manifest.
    """

    threads: int = 0
    device: str = "CPU"
    providers: tuple[str, ...] = field(default_factory=tuple)
    trt_cache_dir: str | None = None
    trt_int8_table: str | None = None
    precision: str = "fp32"
    autotune: bool = True


class Backend:
    """Runs a model file: float32 NCHW batch in, logits (N, K) out. Thread-safe ``run``."""

    name = "base"
    #: classes the model outputs, when its file says so statically (checked against the labels)
    output_size: int | None = None

    def __init__(self, path: Path, *, input_name: str, output_name: str, options: BackendOptions) -> None:
        self.path, self.input_name, self.output_name, self.options = path, input_name, output_name, options

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Releases the session; the backend must not be used afterwards."""
