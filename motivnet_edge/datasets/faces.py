"""Faces in memory (``FaceSet``), the error every dataset reader raises, and the one way a reader
loads an image: the runtime's own loader, so training sees what ``predict`` sees."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MotivnetError


class DataError(MotivnetError, ValueError):
    """A dataset file is missing or malformed."""


@dataclass
class FaceSet:
    """Faces in memory: images (list of HxW or HxWx3 uint8), soft (N, K), hard (N,), -1 = none."""

    images: list[np.ndarray]
    soft: np.ndarray
    hard: np.ndarray
    labels: tuple[str, ...]
    files: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> "FaceSet":
        idx = np.asarray(idx)
        return FaceSet([self.images[i] for i in idx], self.soft[idx], self.hard[idx], self.labels,
                       [self.files[i] for i in idx])


def read_face_image(path: Path) -> np.ndarray:
    """A training or test image through the runtime's own loader: 8-bit gray or BGR whatever the
    file's depth (a 16-bit PNG becomes 0..255, as ``predict`` sees it), bombs and non-files refused."""
    from ..errors import InvalidImageError
    from ..image_io import load_image

    try:
        return load_image(path)
    except InvalidImageError as exc:
        raise DataError(f"{exc} (or remove it from the dataset)") from None
