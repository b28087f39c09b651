"""Face detectors behind one interface: YuNet (box + 5 landmarks), Haar cascade, none."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import BackendUnavailableError, MotivnetError, OptionError, PackageError
from .onnx_refs import DETECTOR_OPS, check_operators
from .tracking import iou

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    """One face: box (x, y, w, h) in pixels, confidence, optional 5x2 landmarks."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = None


class FaceDetector:
    """Base class. ``detect`` takes a BGR or gray uint8 image, returns detections.

    Detectors run on a downscaled copy: the scale is the largest that still shows a face of
    ``min_face`` pixels at the detector's own smallest reliable size (``smallest``), capped
    by ``max_side``. Boxes and landmarks come back in full-resolution pixels, so crops are
    cut from the original image. Time and memory then follow the copy, not the photo.
    """

    name = "base"
    whole_image = False  # True: the input is the face crop (no min_face filter, no box crop)
    smallest = 1     # smallest face side (px) the detector finds reliably
    max_side = 640   # longest side of the copy it runs on

    def __init__(self, *, min_face: int = 20) -> None:
        self.min_face = max(1, int(min_face))

    def scale_for(self, shape: tuple[int, ...]) -> float:
        h, w = shape[:2]
        return min(1.0, self.max_side / max(h, w), self.smallest / self.min_face)

    #: refine() searches a window of this many face sides around the face it is given
    refine_window = 1.6

    def detect(self, image: np.ndarray) -> list[Detection]:
        raise NotImplementedError

    def _window(self, image: np.ndarray, box) -> tuple[int, int, int, int] | None:
        x, y, w, h = box
        side = self.refine_window * max(w, h)
        ih, iw = image.shape[:2]
        x0, y0 = int(max(0, x + w / 2 - side / 2)), int(max(0, y + h / 2 - side / 2))
        x1, y1 = int(min(iw, x + w / 2 + side / 2)), int(min(ih, y + h / 2 + side / 2))
        return (x0, y0, x1, y1) if x1 - x0 >= 16 and y1 - y0 >= 16 else None

    def _search(self, image: np.ndarray, window, side: float) -> list[Detection]:
        """Faces in ``window`` (x0, y0, x1, y1) of ``image``, in image pixels; ``side``: the face size looked for."""
        x0, y0, x1, y1 = window
        out = []
        for d in self.detect(image[y0:y1, x0:x1]):
            lms = None if d.landmarks is None else tuple((x + x0, y + y0) for x, y in d.landmarks)
            out.append(Detection((d.box[0] + x0, d.box[1] + y0, d.box[2], d.box[3]), d.score, lms))
        return out

    def refine(self, image: np.ndarray, face: Detection) -> Detection | None:
        """The face again, searched only in a window around where ``face`` was (video: it moved
        a little since it was detected); None when it is no longer there."""
        window = self._window(image, face.box)
        if window is None:
            return None
        best = max(self._search(image, window, max(face.box[2], face.box[3])), key=lambda r: iou(r.box, face.box),
                   default=None)
        return best if best is not None and iou(best.box, face.box) > 0.3 else None


def shrink(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` (area averaging; the image itself when scale is 1)."""
    if scale >= 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


class NoDetector(FaceDetector):
    """The input already is a face crop: one detection covering the whole image."""

    name = "none"
    whole_image = True

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        return [Detection((0.0, 0.0, float(w), float(h)), 1.0, None)]

    def refine(self, image: np.ndarray, face: Detection) -> Detection | None:
        return self.detect(image)[0]


#: What a package that ships YuNet says of it (OpenCV Zoo publishes the model under Apache-2.0).
YUNET_LICENCE = "YuNet face detector (OpenCV Zoo), shipped as detector/yunet.onnx: Apache-2.0"


class YuNetDetector(FaceDetector):
    """YuNet through ``cv2.FaceDetectorYN``; thread-safe (one OpenCV net per thread)."""

    name = "yunet"

    # YuNet's finest anchors (stride 8) fire on 10-16 px faces, but on a 640x480 frame it missed
    # 9 of 120 tight face crops of 96-130 px shown at 16/48 scale; at 24/48 it missed none.
    smallest = 24
    max_side = 1920  # a 1920 px copy: faces from ~1 % of a big photo's side (peak memory: see tests)

    def __init__(self, model_path: str | Path, *, score_threshold: float = 0.7,
                 nms_threshold: float = 0.3, max_side: int = 1920, min_face: int = 20,
                 model_bytes: bytes | None = None) -> None:
        """``model_bytes``: the model's verified bytes (a package's asset); without them the file
        is read once, here. Every thread's OpenCV net is built from these bytes, never from the
        path again, so replacing the file after load changes nothing."""
        super().__init__(min_face=min_face)
        self.model_path = Path(model_path)
        if model_bytes is None:
            if not self.model_path.is_file():
                raise MotivnetError(f"YuNet model {self.model_path} not found; pass the path of "
                                    "face_detection_yunet_2023mar.onnx or use detector='haar'")
            if self.model_path.stat().st_size > self.max_model_bytes:
                raise MotivnetError(f"{self.model_path} is {self.model_path.stat().st_size >> 20} MB; YuNet is "
                                    "under 1 MB: pass the path of face_detection_yunet_2023mar.onnx")
            model_bytes = self.model_path.read_bytes()
        if not hasattr(cv2, "FaceDetectorYN"):
            raise BackendUnavailableError("this OpenCV build has no FaceDetectorYN; "
                                          "pip install 'opencv-python-headless>=4.8,<5'")
        try:
            check_operators(model_bytes, self.model_path.name, DETECTOR_OPS)
        except PackageError as exc:
            raise MotivnetError(f"{self.model_path} is not a YuNet ONNX model: {exc}") from None
        self._buffer = np.frombuffer(model_bytes, np.uint8)
        self.score_threshold, self.nms_threshold, self.max_side = score_threshold, nms_threshold, max_side
        self._local = threading.local()
        self._net()  # fail now, not on the first frame, if the file is not a YuNet model

    #: A YuNet file is 228 KB; anything this big is another file.
    max_model_bytes = 64 * 2**20

    def _net(self):
        net = getattr(self._local, "net", None)
        if net is None:
            try:
                net = cv2.FaceDetectorYN.create("onnx", self._buffer, np.zeros(0, np.uint8), (320, 320),
                                                self.score_threshold, self.nms_threshold, 5000)
                # Any ONNX file loads; only a forward pass shows whether it has YuNet's outputs.
                net.setInputSize((64, 64))
                net.detect(np.zeros((64, 64, 3), np.uint8))
            except cv2.error as exc:
                raise MotivnetError(f"{self.model_path} is not a YuNet ONNX model "
                                    f"({exc.msg.strip()})") from None
            self._local.net = net
        return net

    #: A face found on a downscaled copy is confirmed in a window around it where the face is
    #: at most this many pixels (full resolution for smaller faces): its landmarks, hence the
    #: alignment the classifier sees, then match a full-resolution detection (median landmark
    #: offset 1.7 % of the face side). The coarse pass uses a low score threshold, as the
    #: confirmation (at the normal threshold) filters what it lets through.
    refine_face = 96
    coarse_threshold = 0.3
    #: ... except a face the downscaled copy already shows this big, found at the normal score
    #: threshold: its landmarks are as close to a full-resolution detection's as a window
    #: search's (median offset 3.1 vs 3.0 % of the face side for 128-160 px faces, 2.5 vs 2.6 %
    #: for 160-200 px, 640x480 frames at min_face 48), so the window pass (1-2 ms) is skipped.
    direct_face = 64

    def _run(self, image: np.ndarray, scale: float, x0: int = 0, y0: int = 0,
             threshold: float | None = None) -> list[Detection]:
        small = shrink(image, scale)
        if small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
        net = self._net()
        net.setScoreThreshold(self.score_threshold if threshold is None else threshold)
        net.setInputSize((small.shape[1], small.shape[0]))
        _, faces = net.detect(small)
        out = []
        for row in (faces if faces is not None else []):
            x, y, w, h = (float(v) / scale for v in row[:4])
            lms = tuple((x0 + float(row[4 + 2 * i]) / scale, y0 + float(row[5 + 2 * i]) / scale) for i in range(5))
            out.append(Detection((x0 + x, y0 + y, w, h), float(row[14]), lms))
        return out

    def _search(self, image: np.ndarray, window, side: float) -> list[Detection]:
        # The face in the window is at most refine_face px: one small YuNet pass, any frame size.
        x0, y0, x1, y1 = window
        return self._run(image[y0:y1, x0:x1], min(1.0, self.refine_face / side), x0, y0)

    def detect(self, image: np.ndarray) -> list[Detection]:
        scale = self.scale_for(image.shape)
        if scale >= 1.0:
            out = self._run(image, 1.0)
        else:
            coarse = self._run(image, scale, threshold=min(self.coarse_threshold, self.score_threshold))
            out = [d if d.score >= self.score_threshold and max(d.box[2], d.box[3]) * scale >= self.direct_face
                   else self.refine(image, d) for d in coarse]
            out = [d for d in out if d is not None]
        return sorted(out, key=lambda d: -d.score)


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade: no landmarks, shipped inside opencv 4.x wheels."""

    name = "haar"

    smallest = 24    # the cascade's 24x24 window
    max_side = 1280  # its image pyramid costs memory and time with every pixel

    def __init__(self, *, min_size: int = 24, min_neighbors: int = 5, min_face: int = 20) -> None:
        super().__init__(min_face=min_face)
        data = getattr(getattr(cv2, "data", None), "haarcascades", None)
        path = Path(data or "") / "haarcascade_frontalface_default.xml"
        if not data or not path.is_file() or not hasattr(cv2, "CascadeClassifier"):
            raise BackendUnavailableError(
                "this OpenCV build has no Haar cascades (opencv 5.x dropped them); "
                "pip install 'opencv-python-headless>=4.8,<5' or use a YuNet model")
        self.path, self.min_size, self.min_neighbors = path, min_size, min_neighbors
        self._local = threading.local()

    def detect(self, image: np.ndarray) -> list[Detection]:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = self._local.cascade = cv2.CascadeClassifier(str(self.path))
        scale = self.scale_for(image.shape)
        gray = shrink(image, scale)
        gray = gray if gray.ndim == 2 else cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY)
        found, _, weights = cascade.detectMultiScale3(
            cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        dets = []
        for (x, y, w, h), wt in zip(np.asarray(found).reshape(-1, 4), np.asarray(weights).ravel()):
            # Cascade weights are unbounded; squash them into 0..1 so scores compare.
            dets.append(Detection(tuple(float(v) / scale for v in (x, y, w, h)),
                                  float(1 / (1 + np.exp(-float(wt)))), None))
        return sorted(dets, key=lambda d: -d.score)


#: Names ``create_detector`` (and the CLI's --detector) accepts.
DETECTORS = ("auto", "yunet", "haar", "none")


def create_detector(name: str = "auto", *, yunet_model: str | Path | None = None,
                    min_face: int = 20, yunet_bytes: bytes | None = None) -> FaceDetector:
    """Builds a detector by name: "auto", "yunet", "haar" or "none".

    "auto" is YuNet when a YuNet model path is known, else the Haar cascade. ``min_face``
    (pixels) sets how far the detector may downscale an image before it looks.

    Raises:
        OptionError: unknown name.
        MotivnetError: "yunet" without a model file.
    """
    if name == "none":
        return NoDetector()
    if name == "haar":
        return HaarDetector(min_face=min_face)
    if name == "yunet" or (name == "auto" and yunet_model is not None):
        if yunet_model is None:
            raise MotivnetError("detector 'yunet' needs a model file: pass yunet_model=PATH "
                                "(CLI: --yunet PATH) or set MOTIVNET_YUNET")
        return YuNetDetector(yunet_model, min_face=min_face, model_bytes=yunet_bytes)
    if name == "auto":
        log.info("no YuNet model given: using the Haar cascade (no landmarks, margin crops)")
        return HaarDetector(min_face=min_face)
    raise OptionError(f"unknown detector {name!r}; choose {', '.join(DETECTORS)}")
