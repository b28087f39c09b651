"""The video loop of ``EmotionRecognizer.stream``: detect every few frames, follow faces between.

A full detection every ``detect_every`` frames; in between, each carried face is checked with a
16x16 thumbnail. A face that moved is followed by template matching (``tracking.FaceTemplate``)
or, where that fails, searched by the detector in a window around its last box; a face whose
confidence fell is searched again the same way; one that left its window costs a full detection.
Faces are classified once per frame, at their current place, and tracked for stable ids and
smoothed scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .detectors import Detection
from .image_io import load_image
from .results import FrameResult
from .tracking import FaceTemplate, FaceTracker


def _thumbnail(image: np.ndarray, box) -> np.ndarray:
    """A 16x16 gray thumbnail of ``box``: enough to see that a face moved or changed."""
    import cv2

    h, w = image.shape[:2]
    x, y, bw, bh = box
    x0, y0 = int(max(0, min(w - 1, x))), int(max(0, min(h - 1, y)))
    x1, y1 = int(max(x0 + 1, min(w, x + bw))), int(max(y0 + 1, min(h, y + bh)))
    patch = image[y0:y1, x0:x1]
    if patch.ndim == 3:
        patch = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
    return cv2.resize(patch, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)


@dataclass
class _Located:
    """A carried face as the detector last found it: its 16x16 thumbnail (moved along as the face
    is followed), its confidence then, and its template (None: follow it with the detector)."""

    thumb: np.ndarray
    conf: float
    template: FaceTemplate | None


def _change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def follow_faces(rec, frames: Iterable) -> Iterator[FrameResult]:
    """``FrameResult`` per frame of ``frames`` (opened: paths, bytes or arrays) from ``rec``, an
    ``EmotionRecognizer`` (not imported here: it imports this module), by its options."""
    tracker = FaceTracker(smoothing=rec.options.smoothing)
    carried: list[Detection] = []
    located: list[_Located] = []  # per carried face: how it looked when the detector last found it
    for i, frame in enumerate(frames):
        img = load_image(frame)
        fresh, moved, refined = i % rec.options.detect_every == 0 or not carried, [], []
        if not fresh:
            # A face whose thumbnail changed is followed by template matching, or, where
            # that fails, searched by the detector in a window; then classified once, at
            # its new place (a crop of the stale box would be wasted).
            moved = [j for j, d in enumerate(carried)
                     if _change(_thumbnail(img, d.box), located[j].thumb) > rec.options.redetect_change]
            carried = list(carried)
            for j in moved:
                template = located[j].template
                found = template.follow(img, carried[j].box) if template is not None else None
                if found is None:
                    refined.append(j)
                else:
                    carried[j], located[j].thumb = found, _thumbnail(img, found.box)
            carried, fresh = _relocate(rec, img, carried, refined)
        if fresh:
            carried = rec.detect(img)
        probs = rec._probs(img, carried)
        if not fresh:
            # A face whose confidence fell since it was located may have turned or been
            # covered: look for it again and read it there.
            dropped = [j for j in range(len(carried)) if j not in refined
                       and probs[j].max() < located[j].conf - rec.options.redetect_drop]
            carried, fresh = _relocate(rec, img, carried, dropped)
            if fresh:
                carried = rec.detect(img)
                probs = rec._probs(img, carried)
            else:
                if dropped:
                    probs[dropped] = rec._probs(img, [carried[j] for j in dropped])
                for j in (*refined, *dropped):
                    located[j] = _located(rec, img, carried[j], probs[j])
        if fresh:
            located = [_located(rec, img, d, p) for d, p in zip(carried, probs)]
        tracked = tracker.update([d.box for d in carried], list(probs))
        frame_view = img.view()
        frame_view.flags.writeable = False  # the caller's array stays theirs; ours is read-only
        yield FrameResult(i, frame_view, tuple(rec._prediction(d.box, d.score, d.landmarks, s, tid)
                                               for d, (tid, s) in zip(carried, tracked)))


def _located(rec, img: np.ndarray, face: Detection, probs: np.ndarray) -> _Located:
    # A template is only ever used between detections: none when every frame is detected.
    template = FaceTemplate.of(img, face) if rec.options.detect_every > 1 else None
    return _Located(_thumbnail(img, face.box), float(probs.max()), template)

def _relocate(rec, img: np.ndarray, carried: list[Detection],
              which: list[int]) -> tuple[list[Detection], bool]:
    """``carried`` with the faces at ``which`` searched again near where they were, and
    whether a whole-frame detection is needed instead (one of them left its window)."""
    if not which:
        return carried, False
    again = [rec.detector.refine(img, carried[j]) for j in which]
    if any(d is None for d in again):
        return carried, True
    carried = list(carried)
    for j, d in zip(which, again):
        carried[j] = d
    return carried, False
