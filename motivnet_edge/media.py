"""CLI inputs and outputs: expanding paths into images and videos, drawing results."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from .atomic import atomic_path, write_bytes
from .errors import InvalidImageError
from .image_io import IMAGE_SUFFIXES

#: Bytes of decoded frames allowed to wait in the decode-ahead queue (at least one frame).
PREFETCH_BYTES = 256 * 2**20
#: Video frames above this many pixels are refused from the container's header. 8K UHD is 33 MP;
#: OpenCV's decoder alone holds about 2.5 frames while it decodes one (measured: 767 MB for a
#: 100 MP MJPG frame), so the photo limit (100 MP) would put a video past 1 GB.
MAX_VIDEO_PIXELS = 40_000_000

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def expand_inputs(inputs) -> list[Path]:
    """Files to process: images and videos as given, directories walked recursively, sorted.

    Nothing is refused here: a missing path, an empty folder or a FIFO is kept in its place and
    fails on its own when processed (one line for it; the rest of the batch goes on).
    """
    out = []
    for raw in inputs:
        p = Path(raw)
        found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES) \
            if p.is_dir() else []
        out += found or [p]
    return out


def check_input(path: Path) -> None:
    """Raises the one-line error of a batch entry that is not an image or video file.

    Raises:
        InvalidImageError: a folder without images (the batch found none in it), or a missing path.
    """
    if path.is_dir():
        raise InvalidImageError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if not path.exists():
        raise InvalidImageError(f"cannot read {path}: no such file or directory")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def open_capture(source: int | str | os.PathLike) -> cv2.VideoCapture:
    """A camera (an int, or a string of digits) or a video file, opened.

    Raises:
        InvalidImageError: the camera or file cannot be opened.
    """
    if isinstance(source, bool) or (isinstance(source, int) and source < 0):
        # cv2.VideoCapture(-1) picks "any camera" and crashes the process where there is none.
        raise InvalidImageError(f"camera index {source!r}: cameras are numbered from 0 (the first camera)")
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        with _quiet_opencv():  # OpenCV prints [ WARN ] lines for a missing camera; our error says it
            cap = cv2.VideoCapture(int(source))
        if not cap.isOpened():
            raise InvalidImageError(f"cannot open camera {int(source)}; is it connected, and is the index right "
                                    "(0 is the first camera)?")
        return cap
    path = Path(source)
    if not path.is_file():
        raise InvalidImageError(f"cannot read {path}: no such file")
    with _quiet_opencv():
        cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InvalidImageError(f"cannot open video {path}; is it a video file OpenCV can decode?")
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if w * h > MAX_VIDEO_PIXELS:
        cap.release()  # refused from the container's header, before any frame is decoded
        raise InvalidImageError(f"{path}: frames of {w}x{h} pixels, above the limit of {MAX_VIDEO_PIXELS:,}; "
                                "downscale the video first")
    return cap


class _quiet_opencv:
    """OpenCV's own log lines silenced for a block (its errors still raise)."""

    def __enter__(self):
        try:
            self.level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        except AttributeError:
            self.level = None
        return self

    def __exit__(self, *exc) -> None:
        if self.level is not None:
            cv2.utils.logging.setLogLevel(self.level)


def frame_count(source) -> int | None:
    """Frames a video file says it has (None for cameras or when unknown)."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return None
    cap = open_capture(source)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n if n > 0 else None


def _read_in_turn(cap, source, max_frames: int | None) -> Iterator[np.ndarray]:
    """Frames decoded one at a time, on the caller's thread (no frame waits in memory)."""
    try:
        n = 0
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if frame.shape[0] * frame.shape[1] > MAX_VIDEO_PIXELS:
                raise InvalidImageError(f"{source}: frame {n} is {frame.shape[1]}x{frame.shape[0]} pixels, "
                                        f"above the limit of {MAX_VIDEO_PIXELS:,}")
            n += 1
            yield frame
            del frame
        if n == 0:
            raise InvalidImageError(f"no frame could be decoded from {source}; is it a video OpenCV can read?")
    finally:
        cap.release()


def read_frames(source, *, max_frames: int | None = None, prefetch: int = 4) -> Iterator[np.ndarray]:
    """BGR frames of a camera or video file, decoded on a background thread.

    Decoding the next frames overlaps with whatever the caller does with this one; at most
    ``prefetch`` decoded frames wait in memory. Stopping early (break, close) stops the reader.

    Raises:
        InvalidImageError: the source cannot be opened (raised before the first frame).
    """
    cap = open_capture(source)
    # Decoded frames waiting in memory are bounded in bytes, not frames: big frames get a shorter
    # queue, and frames so big that even one waiting frame exceeds the budget are not decoded
    # ahead at all (a 100 MP frame is 300 MB: one in use, one waiting and one being decoded
    # peaked at 1.7 GB).
    frame_bytes = 3 * max(1, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) * int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    if frame_bytes > PREFETCH_BYTES:
        yield from _read_in_turn(cap, source, max_frames)
        return
    prefetch = max(1, min(prefetch, PREFETCH_BYTES // frame_bytes))
    frames: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    end = object()

    def reader() -> None:
        n = 0
        try:
            while not stop.is_set() and (max_frames is None or n < max_frames):
                ok, frame = cap.read()
                if not ok:
                    break
                if frame.shape[0] * frame.shape[1] > MAX_VIDEO_PIXELS:
                    frame = InvalidImageError(f"{source}: frame {n} is {frame.shape[1]}x{frame.shape[0]} pixels, "
                                              f"above the limit of {MAX_VIDEO_PIXELS:,}")
                n += 1
                while not stop.is_set():
                    try:
                        frames.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        finally:
            cap.release()
            while not stop.is_set():
                try:
                    frames.put(end, timeout=0.1)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=reader, name="motivnet-frames", daemon=True)
    thread.start()
    try:
        n = 0
        while (frame := frames.get()) is not end:
            if isinstance(frame, InvalidImageError):
                raise frame
            n += 1
            yield frame
        if n == 0 and not isinstance(source, int) and not str(source).isdigit():
            raise InvalidImageError(f"no frame could be decoded from {source}; is it a video OpenCV can read?")
    finally:
        stop.set()
        thread.join(timeout=5)


def video_fps(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.release()
    return fps if fps > 0 else 25.0


def annotate(image: np.ndarray, faces) -> np.ndarray:
    """A copy of the image with each face's box, label and confidence drawn on it."""
    img = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    thick = max(1, round(max(img.shape[:2]) / 400))
    for f in faces:
        x, y, w, h = (int(round(v)) for v in f.box)
        cv2.rectangle(img, (x, y), (x + w, y + h), (0, 200, 0), thick)
        tag = f"{f.label} {f.confidence:.2f}" + (f" #{f.track_id}" if f.track_id is not None else "")
        cv2.putText(img, tag, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, (0, 200, 0), thick)
    return img


def write_image_atomic(path: Path, image: np.ndarray) -> None:
    """Encodes by the suffix and renames into place, so a reader never sees half a file."""
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise InvalidImageError(f"cannot encode {path.name}; use a .png or .jpg name")
    write_bytes(path, buf.tobytes())


class VideoSink:
    """Writes annotated frames to a temp file created exclusively beside ``path`` (a planted link
    is never followed, two saves of one video never share it), renamed into place on ``close``."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps, self.writer = path, fps, None
        self._target = None

    def write(self, frame: np.ndarray) -> None:
        if self.writer is None:
            self._target = atomic_path(self.path, suffix=self.path.suffix)
            self.tmp = self._target.__enter__()
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        self.writer.write(frame)

    def close(self, ok: bool = True) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            if ok:
                self._target.__exit__(None, None, None)
            else:
                self._target.__exit__(InvalidImageError, InvalidImageError("stopped"), None)  # removes the temp file
