"""Seeded augmented views of a face image, shared by the teacher cache and the student.

View ``v`` of image ``i`` is a deterministic function of (seed, i, v): the teacher's cached
logits for that view and the student's training input come from the same pixels. View 0
is the image itself. Augmentations suit faces: horizontal flip, small rotation, scale and
shift, contrast and brightness. Random erasing is applied to the student only (train.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ViewParams:
    flip: bool = False
    angle: float = 0.0       # degrees
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)  # fractions of width, height
    contrast: float = 1.0
    brightness: float = 0.0  # on the 0..255 scale


def view_params(seed: int, index: int, view: int) -> ViewParams:
    """The parameters of view ``view`` of image ``index`` (view 0: identity)."""
    if view == 0:
        return ViewParams()
    r = np.random.default_rng([seed, index, view])
    return ViewParams(bool(r.random() < 0.5), float(r.uniform(-12, 12)), float(r.uniform(0.9, 1.1)),
                      (float(r.uniform(-0.08, 0.08)), float(r.uniform(-0.08, 0.08))),
                      float(r.uniform(0.7, 1.3)), float(r.uniform(-25, 25)))


def apply_view(image: np.ndarray, p: ViewParams) -> np.ndarray:
    """The augmented uint8 image (same size and channels as ``image``)."""
    if p == ViewParams():
        return image
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), p.angle, p.scale)
    m[:, 2] += (p.shift[0] * w, p.shift[1] * h)
    if p.flip:
        m = np.array([[-1, 0, w], [0, 1, 0]], np.float64) @ np.vstack([m, [0, 0, 1]])
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if p.contrast != 1.0 or p.brightness != 0.0:
        mean = float(out.mean())
        out = np.clip((out.astype(np.float32) - mean) * p.contrast + mean + p.brightness, 0, 255).astype(np.uint8)
    return out


def view_image(image: np.ndarray, seed: int, index: int, view: int) -> np.ndarray:
    return apply_view(image, view_params(seed, index, view))
