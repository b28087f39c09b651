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
