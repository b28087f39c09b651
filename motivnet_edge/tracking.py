"""Stable face ids across video frames (greedy IoU matching) and score smoothing (EMA)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    id: int
    box: tuple
    scores: np.ndarray
    missed: int = 0


class FaceTracker:
    """Assigns track ids by IoU with the previous boxes and smooths their score vectors.

    Args:
        iou_threshold: minimum overlap to continue a track.
        smoothing: EMA weight of the past (0 = no smoothing, 0.9 = very smooth).
        max_missed: frames a track survives without a matching face.
    """

    def __init__(self, *, iou_threshold: float = 0.3, smoothing: float = 0.6, max_missed: int = 5) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.iou_threshold, self.smoothing, self.max_missed = iou_threshold, smoothing, max_missed
        self._tracks: list[_Track] = []
        self._next = 0

    def update(self, boxes: list, scores: list[np.ndarray]) -> list[tuple[int, np.ndarray]]:
        """Matches this frame's faces to tracks; returns (track_id, smoothed scores) per face."""
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self._tracks)
                        for bi, b in enumerate(boxes)), reverse=True)
        used_t, assigned = set(), {}
        for overlap, ti, bi in pairs:
            if overlap < self.iou_threshold or ti in used_t or bi in assigned:
                continue
            used_t.add(ti)
            assigned[bi] = ti
        out = []
        for bi, (box, s) in enumerate(zip(boxes, scores)):
            if bi in assigned:
                t = self._tracks[assigned[bi]]
                t.scores = self.smoothing * t.scores + (1 - self.smoothing) * s
                t.box, t.missed = box, 0
            else:
                t = _Track(self._next, box, np.asarray(s, dtype=np.float64))
                self._next += 1
                self._tracks.append(t)
                used_t.add(len(self._tracks) - 1)
            out.append((t.id, t.scores))
        for ti, t in enumerate(self._tracks):
            if ti not in used_t:
                t.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        return out


class FaceTemplate:
    """A face as it looked when the detector last located it, to follow it between detections.

    Between YuNet passes a stream only needs to know where a face moved to. Matching a small
    gray template (``SIDE`` px across) in a window around its last box costs a fraction of a
    millisecond, a YuNet pass on that window 1-2 ms; the landmarks move with the match, so the
    aligned crop follows the face. A match below ``min_score`` (the face turned, scaled, or was
    covered) returns None, and the caller asks the detector. Every match is against the
    detector's own view of the face, never a previous match, so errors do not accumulate.
    """

    SIDE = 32

    def __init__(self, patch: np.ndarray, face, scale: float) -> None:
        self.patch, self.face, self.scale = patch, face, scale

    @staticmethod
    def _gray(image: np.ndarray) -> np.ndarray:
        import cv2

        return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)

    @classmethod
    def of(cls, image: np.ndarray, face) -> "FaceTemplate | None":
        """The template of ``face`` (a Detection) in ``image``; None when the box leaves the image."""
        import cv2

        x, y, w, h = face.box
        ih, iw = image.shape[:2]
        if x < 0 or y < 0 or x + w > iw or y + h > ih or min(w, h) < 8:
            return None
        scale = cls.SIDE / max(w, h)
        tw, th = max(4, round(w * scale)), max(4, round(h * scale))
        patch = cv2.resize(cls._gray(image[int(y):int(y + h), int(x):int(x + w)]), (tw, th),
                           interpolation=cv2.INTER_AREA)
        if float(patch.std()) < 2.0:  # a flat patch matches anywhere
            return None
        return cls(patch, face, scale)

    def follow(self, image: np.ndarray, near, *, window: float = 1.6, min_score: float = 0.85):
        """The face again in a window of ``window`` face sides around box ``near``, as a
        Detection shifted from the template's; None when no place matches well enough."""
        import cv2

        x, y, w, h = near
        side = window * max(w, h)
        ih, iw = image.shape[:2]
        x0, y0 = int(max(0, x + w / 2 - side / 2)), int(max(0, y + h / 2 - side / 2))
        x1, y1 = int(min(iw, x + w / 2 + side / 2)), int(min(ih, y + h / 2 + side / 2))
        rw, rh = round((x1 - x0) * self.scale), round((y1 - y0) * self.scale)
        ph, pw = self.patch.shape
        if rw < pw + 2 or rh < ph + 2:
            return None
        region = cv2.resize(self._gray(image[y0:y1, x0:x1]), (rw, rh), interpolation=cv2.INTER_AREA)
        res = cv2.matchTemplate(region, self.patch, cv2.TM_CCOEFF_NORMED)
        _, score, _, (mx, my) = cv2.minMaxLoc(res)
        if not score >= min_score:  # also refuses NaN (a flat region)
            return None
        # Sub-pixel peak: a parabola through the best score and its two neighbours, per axis.
        def peak(a: float, b: float, c: float) -> float:
            den = a - 2 * b + c
            return 0.0 if den >= 0 else 0.5 * (a - c) / den
        dx = peak(res[my, mx - 1], res[my, mx], res[my, mx + 1]) if 0 < mx < res.shape[1] - 1 else 0.0
        dy = peak(res[my - 1, mx], res[my, mx], res[my + 1, mx]) if 0 < my < res.shape[0] - 1 else 0.0
        # The patch was cut at the box's whole-pixel corner; the region was resized by rw/(x1-x0).
        fx, fy, fw, fh = self.face.box
        sx = x0 + (mx + dx) * (x1 - x0) / rw - int(fx)
        sy = y0 + (my + dy) * (y1 - y0) / rh - int(fy)
        sx, sy = float(sx), float(sy)  # plain floats: results are JSON-serialised as they are
        nx, ny = fx + sx, fy + sy
        lms = None if self.face.landmarks is None else tuple((px + sx, py + sy) for px, py in self.face.landmarks)
        return type(self.face)((nx, ny, fw, fh), self.face.score, lms)
