"""The one face preprocessing definition: crop/align, resize, colour, normalise.

Training, calibration, evaluation and the runtime all call ``face_crop`` and ``to_tensor``
with a model's ``Preprocessing``, so a student sees on a device exactly what it saw in
training. Every crop is one affine warp from the source image into the model's input:

* ``align5``: a similarity transform maps the detector's 5 landmarks onto ``TEMPLATE_5``;
* ``margin``: the box, expanded by ``BOX_FRAME``, is mapped onto the output square;
* no box at all: the whole image is the face (dataset crops such as FER+).

The template and the box framing were measured on FER+ training images with this project's
own detectors (``python -m motivnet_distill.calibrate_framing``), so an aligned crop of a
photo frames the face the way the FER crops the students learn from do.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from .errors import InvalidImageError, PackageError

# Where YuNet's 5 landmarks (right eye, left eye, nose tip, right and left mouth corner,
# as seen in the image: left to right) fall in a FER+ crop, as fractions of its side.
TEMPLATE_5 = np.array([
    [0.3027, 0.3800], [0.6831, 0.3827], [0.4917, 0.5937], [0.3458, 0.7541], [0.6463, 0.7556],
], dtype=np.float64)
# A detector box (x, y, w, h) -> crop square: centre offset (fractions of the box size)
# and side (fraction of the larger box side), per detector kind.
BOX_FRAME = {
    "yunet": (0.0052, -0.0124, 1.0158),
    "haar": (0.0047, 0.0109, 1.1963),
}

_INTERP = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC,
           "nearest": cv2.INTER_NEAREST}


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its face crops; saved in every package manifest.

    Attributes:
        input_size: (height, width) of the model input.
        color: "gray", "rgb" or "bgr" channel order of the model input.
        mean: per-channel mean on the 0..255 scale.
        std: per-channel std on the 0..255 scale.
        crop: "align5" (landmarks when the detector gives them, else margin) or "margin".
        interpolation: "linear", "area", "cubic" or "nearest" for the final resize.
    """

    input_size: tuple[int, int] = (48, 48)
    color: str = "gray"
    mean: tuple[float, ...] = (127.5,)
    std: tuple[float, ...] = (127.5,)
    crop: str = "align5"
    interpolation: str = "area"
    resize: str = "stretch"  # whole-image faces: "stretch" to the input, or "letterbox" (keep aspect)
    pad_value: int = 255     # letterbox border (MotivNet pads with white)
    template: tuple[tuple[float, float], ...] = field(
        default_factory=lambda: tuple(map(tuple, TEMPLATE_5.tolist())))

    def __post_init__(self) -> None:
        channels = 1 if self.color == "gray" else 3
        problems = []
        size = tuple(self.input_size) if isinstance(self.input_size, (tuple, list)) else ()
        if not (len(size) == 2 and all(isinstance(v, int) and 8 <= v <= 4096 for v in size)):
            problems.append(f"input_size {self.input_size} must be two integers (height, width) in 8..4096")
        if self.color not in ("gray", "rgb", "bgr"):
            problems.append(f"color {self.color!r} must be gray, rgb or bgr")
        if len(self.mean) != channels or len(self.std) != channels or not all(
                math.isfinite(v) for v in (*self.mean, *self.std)) or min(self.std, default=0) <= 0:
            problems.append(f"mean/std need {channels} finite values (std > 0) for color {self.color!r}")
        if self.crop not in ("align5", "margin"):
            problems.append(f"crop {self.crop!r} must be align5 or margin")
        if self.interpolation not in _INTERP:
            problems.append(f"interpolation {self.interpolation!r} must be one of {sorted(_INTERP)}")
        if self.resize not in ("stretch", "letterbox"):
            problems.append(f"resize {self.resize!r} must be stretch or letterbox")
        if isinstance(self.pad_value, bool) or not isinstance(self.pad_value, (int, float)) \
                or not (math.isfinite(self.pad_value) and 0 <= self.pad_value <= 255):
            problems.append(f"pad_value {self.pad_value!r} must be a gray level 0..255")
        if len(self.template) != 5 or not all(
                len(pt) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v) and -4 <= v <= 5 for v in pt)
                for pt in self.template):
            problems.append("template needs 5 (x, y) points, finite fractions of the crop side")
        if any(abs(v) > 1e4 for v in self.mean) or any(not 1e-3 <= v <= 1e4 for v in self.std):
            problems.append(f"mean {self.mean} / std {self.std} are not pixel statistics (|mean| <= 1e4, "
                            "1e-3 <= std <= 1e4 on the 0..255 scale)")
        if problems:
            raise PackageError("invalid preprocessing: " + "; ".join(problems))

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["template"] = [list(p) for p in self.template]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        """Builds from a manifest dict. Raises PackageError on unknown or bad fields."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise PackageError(f"unknown preprocessing fields {sorted(unknown)}; known: {sorted(known)}")
        try:
            kw = dict(d)
            kw["input_size"] = tuple(int(v) for v in kw.get("input_size", (48, 48)))
            for key in ("mean", "std"):
                if key in kw:
                    kw[key] = tuple(float(v) for v in kw[key])
            if "template" in kw:
                if not all(isinstance(pt, (list, tuple)) and len(pt) == 2 for pt in kw["template"]):
                    raise PackageError("invalid preprocessing: template needs 5 (x, y) points")
                kw["template"] = tuple((float(x), float(y)) for x, y in kw["template"])
        except (TypeError, ValueError) as exc:
            raise PackageError(f"invalid preprocessing values: {exc}") from None
        return cls(**kw)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform src -> dst (rotation, uniform scale, shift; no reflection), 2x3.

    In 2D a similarity is multiplication by one complex number z plus a shift, so the
    least-squares fit is closed form: z = sum(conj(s) * d) / sum(|s|^2) over centred points.
    It is the same optimum as Umeyama's SVD with reflections excluded, without an SVD per face.
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = float((s ** 2).sum())
    if var <= 0:  # all landmarks on one point: no rotation or scale can be read from them
        a, b = 1.0, 0.0
    else:
        a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / var
        b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / var
    m = np.array([[a, -b, 0.0], [b, a, 0.0]])
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def crop_matrix(image_shape: tuple[int, ...], pp: Preprocessing, *, box=None, landmarks=None,
                detector: str = "yunet") -> np.ndarray:
    """The 2x3 affine map from continuous image coordinates to the unit crop square (0..1)."""
    h, w = image_shape[:2]
    if landmarks is not None and pp.crop == "align5":
        pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
        return _similarity(pts, np.asarray(pp.template, dtype=np.float64))
    if box is not None:
        x, y, bw, bh = (float(v) for v in box)
        dx, dy, side = BOX_FRAME.get(detector, BOX_FRAME["haar"])
        cx, cy = x + bw / 2 + dx * bw, y + bh / 2 + dy * bh
        s = side * max(bw, bh)
        if s <= 0:
            raise InvalidImageError(f"face box {box} has zero size")
        return np.array([[1 / s, 0, 0.5 - cx / s], [0, 1 / s, 0.5 - cy / s]])
    if pp.resize == "letterbox":
        # Keep the aspect ratio: the larger relative side fills the input, the rest is border.
        out_h, out_w = pp.input_size
        s = min(out_w / w, out_h / h)
        return np.array([[s / out_w, 0, 0.5 - s * w / 2 / out_w], [0, s / out_h, 0.5 - s * h / 2 / out_h]])
    # The whole image is the face: stretch it onto the unit square.
    return np.array([[1 / w, 0, 0], [0, 1 / h, 0]], dtype=np.float64)


def _to_color(image: np.ndarray, color: str) -> np.ndarray:
    if image.ndim == 2:
        return image if color == "gray" else cv2.cvtColor(
            image, cv2.COLOR_GRAY2RGB if color == "rgb" else cv2.COLOR_GRAY2BGR)
    if color == "gray":
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color == "rgb" else image


def _footprint(m: np.ndarray, out_w: int, out_h: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The source pixels (x0, y0, x1, y1), clipped to the image, that warpAffine(m) samples."""
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [out_w, 0, 1], [0, out_h, 1], [out_w, out_h, 1]], np.float64) @ inv.T
    h, w = shape[:2]
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 3
    x0, x1 = int(np.clip(x0, 0, w - 1)), int(np.clip(x1, 1, w))
    y0, y1 = int(np.clip(y0, 0, h - 1)), int(np.clip(y1, 1, h))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def face_crop(image: np.ndarray, pp: Preprocessing, *, box=None, landmarks=None,
              detector: str = "yunet") -> np.ndarray:
    """Cuts one face out of a BGR or grayscale uint8 image, in the model's colour order.

    Args:
        image: HxW (gray) or HxWx3 (BGR) uint8 array.
        pp: the model's preprocessing.
        box: (x, y, w, h) face box in pixels, or None when the image is the face.
        landmarks: 5x2 landmarks from the detector, or None.
        detector: which detector produced ``box`` (its framing differs).

    Returns:
        uint8 array of shape (H, W) for gray models or (H, W, 3).
    """
    out_h, out_w = pp.input_size
    unit = crop_matrix(image.shape, pp, box=box, landmarks=landmarks, detector=detector)
    # Shrinking by more than 2x through one bilinear warp aliases; warp to an integer
    # multiple of the output first, then area-average down to the output size.
    scale = math.sqrt(abs(np.linalg.det(unit[:, :2]))) * max(out_h, out_w)
    k = int(min(8, max(1, math.floor(1 / scale)))) if scale > 0 else 1
    # Unit coordinates are continuous (pixel i spans i..i+1, its centre is i + 0.5), the
    # convention of cv2.resize: a whole-image crop then equals cv2.resize exactly.
    unit = unit.copy()
    unit[:, 2] += unit[:, :2] @ np.array([0.5, 0.5])
    m = unit * np.array([[out_w * k], [out_h * k]], dtype=np.float64)
    m[:, 2] -= 0.5
    # Convert only the region the warp reads (its footprint plus a 2 px margin for the
    # interpolation), never the whole photo once per face.
    x0, y0, x1, y1 = _footprint(m, out_w * k, out_h * k, image.shape)
    m[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)
    region = image[y0:y1, x0:x1]
    step = math.ceil(max(region.shape[:2]) / 32000)
    if step > 1:
        # OpenCV's warp takes sides below 32767 px; a face spanning more is subsampled first
        # (it ends up 48-224 px anyway), with the map rescaled to the coarser grid.
        region = region[::step, ::step]
        m[:, :2] *= step
    src = _to_color(region, pp.color)
    interp = cv2.INTER_LINEAR if k > 1 or pp.interpolation == "area" else _INTERP[pp.interpolation]
    letterbox = box is None and landmarks is None and pp.resize == "letterbox"
    border = dict(borderMode=cv2.BORDER_CONSTANT, borderValue=(pp.pad_value,) * 3) if letterbox \
        else dict(borderMode=cv2.BORDER_REPLICATE)
    crop = cv2.warpAffine(src, m, (out_w * k, out_h * k), flags=interp, **border)
    if k > 1:
        crop = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA)
    return crop


def faces_to_tensor(images, pp: Preprocessing) -> np.ndarray:
    """Whole-image faces (dataset crops) -> the model's normalised float32 NCHW batch."""
    return to_tensor(np.stack([face_crop(im, pp) for im in images]), pp)


def to_tensor(crops, pp: Preprocessing) -> np.ndarray:
    """Stacks uint8 crops (N, H, W[, C]) into a normalised float32 NCHW batch.

    Raises:
        InvalidImageError: a crop's size or channel count does not match ``pp``.
    """
    batch = np.asarray(crops)
    if batch.ndim == 2 or (batch.ndim == 3 and pp.channels == 3 and batch.shape[-1] == 3):
        batch = batch[None]
    if batch.ndim == 3:
        batch = batch[..., None]
    expect = (*pp.input_size, pp.channels)
    if batch.ndim != 4 or batch.shape[1:] != expect:
        raise InvalidImageError(f"crops have shape {batch.shape[1:]}, the model needs {expect}; "
                                "cut them with face_crop() using the model's preprocessing")
    x = batch.astype(np.float32)
    x -= np.asarray(pp.mean, dtype=np.float32)
    x /= np.asarray(pp.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
