"""Seeded augmented views of a face image, shared by the teacher cache and the student.

View ``v`` of image ``i`` is a deterministic function of (seed, i, v): the teacher's cached
logits for that view and the student's training input come from the same pixels. View 0
is the image itself. Augmentations suit faces: horizontal flip, small rotation, scale and
shift, contrast and brightness. Random erasing and ``degrade`` (a poorer capture of the face)
are applied to the student only (train.py): the teacher's target stays the clean view's.
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


#: What ``degrade`` does to a face, one chosen at random (see its docstring).
DEGRADATIONS = ("smaller", "blur", "jpeg")


def degrade(image: np.ndarray, rng: np.random.Generator, *, input_side: int = 48) -> np.ndarray:
    """The same face as a poorer camera or a farther subject gives it (uint8, same channels).

    One of: the face at 30-90 % of its size (the preprocessing brings it back to the input size,
    as ``predict`` does with a small face), a Gaussian blur of 0.3-1.2 input pixels, or JPEG at
    quality 15-60. A model trained only on sharp crops reads a blurred face as another domain: the
    default before this augmentation read AffectNet96 test crops blurred by one input pixel at
    11 % instead of 67 % (``benchmarks/robustness.py``).
    ``input_side`` is the model's input side, so a blur is measured where the model sees it.
    """
    h, w = image.shape[:2]
    kind = DEGRADATIONS[int(rng.integers(len(DEGRADATIONS)))]
    if kind == "smaller":
        s = float(rng.uniform(0.3, 0.9))
        return cv2.resize(image, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
    if kind == "blur":
        sigma = float(rng.uniform(0.3, 1.2)) * max(h, w) / input_side
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 61))])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else image


def mix_faces(images: list[np.ndarray], soft: np.ndarray, rng: np.random.Generator,
              alpha: float) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Mixup (Zhang et al. 2018) of each face with a partner from the same batch.

    Face i becomes ``lam_i * face_i + (1 - lam_i) * face_partner(i)``, lam ~ Beta(alpha, alpha),
    with its soft labels mixed alike. The partner is brought to face i's size and channels first
    (datasets differ in both). The mix is made on the images, not on a model's tensors, so a
    teacher with its own preprocessing reads the very face the student reads (Beyer et al. 2022:
    distillation works best when the teacher sees exactly the student's input).

    Returns:
        (mixed uint8 images, mixed soft labels (N, K), lam (N,)).
    """
    n = len(images)
    lam = rng.beta(alpha, alpha, n).astype(np.float32)
    partner = rng.permutation(n)
    out = []
    for im, j, w in zip(images, partner, lam):
        other = images[j]
        if other.ndim != im.ndim:
            other = cv2.cvtColor(other, cv2.COLOR_GRAY2BGR if im.ndim == 3 else cv2.COLOR_BGR2GRAY)
        if other.shape[:2] != im.shape[:2]:
            other = cv2.resize(other, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_AREA)
        mixed = w * im.astype(np.float32) + (1 - w) * other.astype(np.float32)
        out.append(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))
    w = lam[:, None]
    return out, (w * soft + (1 - w) * soft[partner]).astype(soft.dtype), lam
