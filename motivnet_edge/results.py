"""What the recognizer returns: frozen, read-only results for a face and for a video frame."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FacePrediction:
    """One face: box (x, y, w, h) px, detector score, landmarks, top label, scores by label.

    Immutable through and through: ``scores`` is a read-only mapping.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...] | None
    label: str
    confidence: float
    scores: Mapping[str, float]
    track_id: int | None = None

    def to_dict(self) -> dict:
        d = {"box": [round(v, 1) for v in self.box], "score": round(self.score, 4), "label": self.label,
             "confidence": round(self.confidence, 4),
             "scores": {k: round(v, 4) for k, v in self.scores.items()}}
        if self.landmarks is not None:
            d["landmarks"] = [[round(x, 1), round(y, 1)] for x, y in self.landmarks]
        if self.track_id is not None:
            d["track_id"] = self.track_id
        return d


@dataclass(frozen=True, eq=False)
class FrameResult:
    """One video frame and its tracked faces, as ``EmotionRecognizer.stream`` yields them.

    Reads as the list of the frame's ``FacePrediction``s (``len``, indexing, iteration), with the
    decoded frame beside them, so a caller reading a file or camera can draw on the very
    image the faces were found in. It holds the frame's pixels: to keep the results of a long
    video, keep ``faces``, not the ``FrameResult``.

    Attributes:
        index: position of the frame in the stream, from 0.
        image: the decoded frame (H, W, 3 BGR or H, W gray uint8); read-only.
        faces: the tracked faces, in detection order.
    """

    index: int
    image: np.ndarray
    faces: tuple[FacePrediction, ...]

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i):
        return self.faces[i]

    def __iter__(self) -> Iterator[FacePrediction]:
        return iter(self.faces)

    def to_dict(self) -> dict:
        return {"frame": self.index, "faces": [f.to_dict() for f in self.faces]}
