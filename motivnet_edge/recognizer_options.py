"""RecognizerOptions: every setting of an EmotionRecognizer, in one frozen dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .backends import BackendOptions


@dataclass(frozen=True)
class RecognizerOptions:
    """How to build an EmotionRecognizer.

    Attributes:
        model: package folder or .zip; None for the embedded default model.
        backend: "auto", "onnxruntime" or "openvino".
        precision: "auto", "fp32", "bf16" (OpenVINO on bf16 CPUs) or "int8" (rules: motivnet_edge.backends).
        detector: "auto", "yunet", "haar" or "none" (inputs already are face crops).
        yunet_model: YuNet .onnx; default: the package's, then $MOTIVNET_YUNET.
        runtime: the backend's settings (threads, OpenVINO device, ONNX Runtime providers,
            TensorRT cache and INT8 table, autotune): see ``BackendOptions``.
        min_face: faces smaller than this many pixels (box side) are ignored.
        max_faces: keep at most this many faces per image, highest detector score first.
        smoothing: score EMA weight used by stream(), in [0, 1).
        detect_every: stream() runs the detector on every Nth frame and carries the faces
            it found through the frames between (1: detect every frame). A frame with no
            carried face is always searched.
        class_weights: {label name: weight} multiplying each class's probability before the
            scores are normalised again (others 1); e.g. ``{"neutral": 0.5}`` for posed or
            subtle expressions a web-trained model reads as neutral. README has the measured
            trade-off (benchmarks/class_weights.py).
        mirror: score each face and its mirror image and average the two (test-time
            augmentation): about a point more accuracy for twice the classify work; README has
            the measured trade-off (benchmarks/mirror.py). A package whose graph reads the mirror
            image itself (``accurate``) is not read twice: it would cost twice as much for the
            same answer.
        redetect_change / redetect_drop: between detections, a carried face is searched again
            in a window around it (the detector's ``refine``) when its patch changed by more than
            ``redetect_change`` (mean absolute gray-level difference of a 16x16 thumbnail, 0-255)
            or its top-class confidence fell by more than ``redetect_drop`` since it was last
            located; a face no longer in its window triggers a full detection. 255 and 1 turn
            either trigger off.
    """

    model: str | Path | None = None
    backend: str = "auto"
    precision: str = "auto"
    detector: str = "auto"
    yunet_model: str | Path | None = None
    runtime: BackendOptions = field(default_factory=BackendOptions)
    min_face: int = 20
    max_faces: int = 32
    smoothing: float = 0.6
    detect_every: int = 1
    redetect_change: float = 8.0
    redetect_drop: float = 0.25
    class_weights: Mapping[str, float] | None = None
    mirror: bool = False
