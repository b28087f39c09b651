"""EmotionRecognizer: detect faces, crop them the model's way, classify, track in video."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import numbers
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np

from . import autotune
from .backends import BackendOptions, create_backend
from .detectors import Detection, FaceDetector, create_detector
from .errors import InvalidImageError, MotivnetError, OptionError
from .image_io import IMAGE_SUFFIXES, load_image
from .labels import class_log_weights, softmax
from .package import DEFAULT_MODEL, ModelPackage, load_package, read_verified  # noqa: F401  (DEFAULT_MODEL: public name)
from .preprocess import face_crop, to_tensor
from .recognizer_options import RecognizerOptions
from .results import FacePrediction, FrameResult
from .video_stream import follow_faces

log = logging.getLogger(__name__)

#: Keyword options of ``from_pretrained`` that belong to the backend (``RecognizerOptions.runtime``).
_RUNTIME_FIELDS = frozenset(f.name for f in dataclasses.fields(BackendOptions))


#: The most threads a runtime is given (the CLI's --threads range too): more only costs memory.
MAX_THREADS = 256
#: Faces classified per backend call at 48x48 px: a batch of any length runs in pieces this size
#: (fewer faces for a larger input, the same number of pixels: a 112 px model's feature maps
#: for 256 faces outgrow ONNX Runtime's bounded arena).
MAX_BATCH = 256


def _check_int(name: str, value, low: int, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise OptionError(f"{name} {value!r} must be a whole number in {low}..{high} ({what})")


class EmotionRecognizer:
    """Recognises facial emotions in images, face crops and video. Thread-safe.

    Use ``from_pretrained`` or ``create_from_options``; close it (or use ``with``) when done.
    """

    def __init__(self, package: ModelPackage, detector: FaceDetector, options: RecognizerOptions) -> None:
        self.package, self.detector, self.options = package, detector, options
        # A graph that reads the mirror image itself answers a face and its mirror alike: a
        # second reading would double the classify work for the same probabilities.
        self._mirror = options.mirror and not package.reads_mirror
        if options.mirror and not self._mirror:
            log.info("mirror: %s already reads each face's mirror image in its graph; not read twice",
                     package.root.name)
        self.labels = package.labels
        self._log_weights = class_log_weights(self.labels, options.class_weights)  # before the backend: fail fast
        runtime = options.runtime
        if runtime.spin is None:
            # The detector's OpenCV threads run between classify calls on the same cores; a
            # spinning ORT worker takes a core from them (benchmarks/frame_pipeline.py, 2 cores:
            # 22 ms a frame spinning, 12 ms not). Without a detector, spinning makes batch 1 fast.
            runtime = dataclasses.replace(runtime, spin=detector.whole_image)
        if runtime.threads:
            # OpenCV (YuNet, resizing) has its own pool, sized to every core unless told: the app's
            # thread budget is for all of the pipeline. OpenCV's setting is per process.
            cv2.setNumThreads(runtime.threads)
        backend, precision = autotune.tuned_choice(package, options.backend, options.precision, runtime)
        self._backend = create_backend(package, backend=backend, precision=precision, options=runtime)
        self._closed = False
        self._active = 0
        self._idle = threading.Condition()

    @classmethod
    def create_from_options(cls, options: RecognizerOptions) -> "EmotionRecognizer":
        """Builds a recognizer from options.

        Raises:
            PackageError: the package is missing, malformed or tampered with.
            BackendUnavailableError: the backend or detector cannot run here.
            OptionError: bad option values (the message names the accepted ones).
        """
        if not isinstance(options.runtime, BackendOptions):
            raise OptionError(f"runtime must be a BackendOptions, not {type(options.runtime).__name__}")
        _check_int("threads", options.runtime.threads, 0, MAX_THREADS, "0 lets the runtime choose")
        _check_int("min_face", options.min_face, 0, 1 << 16, "the smallest face side in pixels")
        _check_int("max_faces", options.max_faces, 1, 1 << 16, "faces kept per image")
        for name in ("smoothing", "redetect_change", "redetect_drop"):
            value = getattr(options, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise OptionError(f"{name} {value!r} must be a finite number")
        if not 0.0 <= options.smoothing < 1.0:
            raise OptionError(f"smoothing {options.smoothing!r} must be in [0, 1): 0 = none, 0.9 = very smooth")
        if not isinstance(options.mirror, bool):
            raise OptionError(f"mirror {options.mirror!r} must be True or False")
        if not isinstance(options.detect_every, int) or options.detect_every < 1:
            raise OptionError(f"detect_every {options.detect_every!r} must be an integer >= 1 (1 = every frame)")
        if not 0.0 <= options.redetect_change <= 255.0 or not 0.0 <= options.redetect_drop <= 1.0:
            raise OptionError(f"redetect_change {options.redetect_change!r} must be in [0, 255] and redetect_drop "
                              f"{options.redetect_drop!r} in [0, 1] (the largest values never re-detect)")
        package = load_package(options.model)  # None or "default": the embedded model
        yunet, yunet_bytes = options.yunet_model, None
        if yunet is None and "yunet" in package.manifest.get("assets_roles", {}) and options.detector != "none":
            rel = package.manifest["assets_roles"]["yunet"]
            yunet = package.root / rel
            # The detector is built from these verified bytes, in every thread: never the path again.
            yunet_bytes = read_verified(package.root, rel, package.manifest["assets"][rel])
        if yunet is None and os.environ.get("MOTIVNET_YUNET"):
            yunet = os.environ["MOTIVNET_YUNET"]
        detector = create_detector(options.detector, yunet_model=yunet, min_face=max(1, options.min_face),
                                   yunet_bytes=yunet_bytes)
        return cls(package, detector, options)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, *, backend: str = "auto",
                        precision: str = "auto", detector: str = "auto", threads: int = 0,
                        **kwargs) -> "EmotionRecognizer":
        """Loads a package (None: the embedded default) with the given runtime choices.

        Other keyword options are those of RecognizerOptions, or of BackendOptions (threads,
        providers, device, trt_cache_dir, trt_int8_table, autotune), which go to ``runtime``.

        Raises:
            TypeError: an option neither dataclass has.
            As create_from_options otherwise.
        """
        runtime = {k: kwargs.pop(k) for k in list(kwargs) if k in _RUNTIME_FIELDS}
        if "providers" in runtime:
            runtime["providers"] = tuple(runtime["providers"])
        return cls.create_from_options(RecognizerOptions(
            model=path, backend=backend, precision=precision, detector=detector,
            runtime=BackendOptions(threads=threads, **runtime), **kwargs))

    @property
    def mirror(self) -> bool:
        """Whether ``classify`` reads each face's mirror image beside it: the ``mirror`` option,
        except for a package whose graph reads it already (``ModelPackage.reads_mirror``)."""
        return self._mirror

    # -- inference -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise MotivnetError("this EmotionRecognizer is closed; create a new one")

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities (N, K) for preprocessed uint8 crops (N, H, W[, C]).

        Raises:
            MotivnetError: the recognizer is closed.
            InvalidImageError: the crops do not have the model's input shape.
        """
        if len(crops) == 0:
            self._check_open()
            return np.zeros((0, len(self.labels)), np.float32)
        h, w = self.package.preprocessing.input_size
        piece = max(1, MAX_BATCH * 48 * 48 // (h * w))
        if len(crops) > piece:  # what a backend call may allocate grows with its batch
            return np.concatenate([self.classify(crops[i:i + piece]) for i in range(0, len(crops), piece)])
        x = to_tensor(crops, self.package.preprocessing)
        with self._running():
            if not self._mirror:
                return softmax(self._backend.run(x) + self._log_weights)
            # An expression reads the same in a mirror, and the model saw mirrored faces in
            # training: averaging the two readings cancels part of each one's noise. One call
            # of batch 2N costs less than two calls of N.
            both = self._backend.run(np.ascontiguousarray(np.concatenate([x, x[..., ::-1]])))
            return softmax(both + self._log_weights).reshape(2, len(x), -1).mean(0)

    def _probs(self, image: np.ndarray, dets: Sequence[Detection]) -> np.ndarray:
        """Class probabilities (N, K) of the detected faces, cut the way the model wants them."""
        pp = self.package.preprocessing
        crops = [face_crop(image, pp, box=None if self.detector.whole_image else d.box,
                           landmarks=d.landmarks, detector=self.detector.name) for d in dets]
        return self.classify(np.stack(crops)) if crops else np.zeros((0, len(self.labels)), np.float32)

    def _predictions(self, image: np.ndarray, dets: Sequence[Detection]) -> list[FacePrediction]:
        return [self._prediction(d.box, d.score, d.landmarks, p) for d, p in zip(dets, self._probs(image, dets))]

    def _prediction(self, box, score: float, landmarks, probs: np.ndarray,
                    track_id: int | None = None) -> FacePrediction:
        """The one place a FacePrediction is assembled from a face and its class scores."""
        k = int(np.argmax(probs))
        scores = MappingProxyType({lab: float(v) for lab, v in zip(self.labels, probs)})
        return FacePrediction(tuple(float(v) for v in box), float(score), landmarks, self.labels[k], float(probs[k]),
                              scores, track_id)

    def detect(self, image) -> list[Detection]:
        """Faces in an image (see ``predict`` for accepted inputs), largest-score first."""
        self._check_open()
        img = load_image(image)
        dets = [d for d in self.detector.detect(img) if min(d.box[2], d.box[3]) >= self.options.min_face
                or self.detector.whole_image]
        return dets[: self.options.max_faces]

    def predict(self, image) -> list[FacePrediction]:
        """Emotions of every face in an image.

        Args:
            image: uint8 numpy array (BGR, BGRA or gray), a file path, or encoded bytes.

        Returns:
            One FacePrediction per face; an empty list when there is no face.

        Raises:
            InvalidImageError: the image cannot be read or has a bad shape/dtype/size.
        """
        img = load_image(image)
        return self._predictions(img, self.detect(img))

    def predict_faces(self, crops: Iterable) -> list[FacePrediction]:
        """Emotions of face crops (each already a face: no detection, whole-image crop).

        Raises:
            InvalidImageError: a crop is not a valid image.
        """
        self._check_open()
        if isinstance(crops, np.ndarray) and (crops.ndim == 2 or (crops.ndim == 3 and crops.shape[-1] in (3, 4))):
            # One image, not a sequence of crops: iterating it would make each pixel row a "face".
            raise InvalidImageError(f"predict_faces takes a list of face crops, got one image of shape {crops.shape}; "
                                    "pass [crop] for one face (or a batch array of shape (N, H, W[, C]))")
        if isinstance(crops, (str, os.PathLike, bytes)):
            raise InvalidImageError("predict_faces takes a list of face crops; pass [path] for one face")
        if not isinstance(crops, Iterable):
            raise InvalidImageError(f"predict_faces takes a list of face crops (arrays, paths or encoded bytes), "
                                    f"not {type(crops).__name__}")
        imgs = [load_image(c) for c in crops]
        if not imgs:
            return []
        pp = self.package.preprocessing
        probs = self.classify(np.stack([face_crop(im, pp) for im in imgs]))
        return [self._prediction((0, 0, im.shape[1], im.shape[0]), 1.0, None, p) for im, p in zip(imgs, probs)]

    def stream(self, frames: Iterable | str | os.PathLike | int, *,
               max_frames: int | None = None) -> Iterator[FrameResult]:
        """Predictions for each video frame, with stable track ids and smoothed scores.

        Each ``FrameResult`` is the sequence of the frame's faces and carries the decoded
        frame (``.image``) and its position (``.index``), for drawing or saving.

        Args:
            frames: an iterable of images, a video file path, or a camera index (int).
                Files and cameras are decoded on a background thread, ahead of inference.
            max_frames: stop after this many frames (None: until the source ends).

        Raises:
            InvalidImageError: a frame is not a valid image, or the source cannot be opened.
        """
        from .media import read_frames

        if isinstance(frames, bool) or (isinstance(frames, int) and frames < 0):
            raise InvalidImageError(f"camera index {frames!r}: cameras are numbered from 0 (the first camera)")
        if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 0):
            raise OptionError(f"max_frames {max_frames!r} must be None or a whole number >= 0")
        if isinstance(frames, (str, os.PathLike)) and Path(frames).suffix.lower() in IMAGE_SUFFIXES:
            frames = [Path(frames)]  # one photo: read (and refused when corrupt) as predict reads it
        elif isinstance(frames, (str, os.PathLike, int)):
            frames = read_frames(frames, max_frames=max_frames)
        elif max_frames is not None:
            frames = itertools.islice(frames, max_frames)
        yield from follow_faces(self, frames)

    def describe(self) -> str:
        return f"{self._backend.describe()} {self._backend.precision}, detector {self.detector.name}"

    # -- lifetime --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _running(self):
        """Marks a backend call in flight, so ``close`` waits for it instead of pulling the session away."""
        with self._idle:
            self._check_open()
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def close(self) -> None:
        """Releases the model; waits for calls already running. Later calls raise MotivnetError."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
            self._idle.wait_for(lambda: self._active == 0)
            self._backend.close()

    def __enter__(self) -> "EmotionRecognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["EmotionRecognizer", "RecognizerOptions", "FacePrediction", "InvalidImageError"]
