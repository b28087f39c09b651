"""Readers for the face datasets users hold, with explicit label remapping.

Every reader returns a ``FaceSet``: uint8 images as the dataset stores them (faces already
cropped), per-image soft labels and hard labels in the *target* label order, and the file
names. Images go through ``motivnet_edge.preprocess.face_crop`` later, never here.
Formats: one-folder-per-class image trees and unlabelled folders (teacher-only distillation)
here; FER+ folders (label.csv vote counts) and the FER2013 CSV in ``fer``. ``read_dataset``
tells them apart.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import LabelError
from ..image_io import IMAGE_SUFFIXES
from ..labels import MOTIVNET_LABELS, remap_indices

from .faces import DataError, FaceSet, read_face_image
from .fer import read_fer2013_csv, read_ferplus, with_fer2013_labels

log = logging.getLogger(__name__)


def _images_in(folder: Path) -> list[Path]:
    named = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    # Regular files only: a FIFO or device named *.png would block the reader forever.
    skipped = [p for p in named if not p.is_file()]
    if skipped:
        log.warning("%d entries under %s are named like images but are not regular files (e.g. %s): skipped",
                    len(skipped), folder, skipped[0])
    return [p for p in named if p.is_file()]


def read_image_folder(folder: str | Path, *, labels: Sequence[str] = MOTIVNET_LABELS,
                      mapping: Mapping[str, str | None] | None = None) -> FaceSet:
    """One sub-folder per class (its name is the label, e.g. CK+48's ``happy/``).

    Raises:
        DataError: no class folders or no images.
        LabelError: a folder name has no target label and ``mapping`` does not drop it.
    """
    folder = Path(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise DataError(f"{folder} has no class sub-folders (expected e.g. {folder}/happy/*.png)")
    dest = remap_indices(classes, labels, mapping=mapping)
    images, hard, files = [], [], []
    for cls, dst in zip(classes, dest):
        if dst < 0:
            log.info("class folder %r dropped by the label mapping", cls)
            continue
        found = _images_in(folder / cls)
        if not found:
            raise DataError(f"class folder {folder / cls} holds no images ({', '.join(IMAGE_SUFFIXES)}); add "
                            f"images or drop the class with --map {cls}=none")
        for p in found:
            images.append(read_face_image(p))
            hard.append(dst)
            files.append(str(p.relative_to(folder)))
    if not images:
        raise DataError(f"{folder} holds no images in its class folders")
    hard = np.asarray(hard, np.int64)
    return FaceSet(images, np.eye(len(labels), dtype=np.float32)[hard], hard, tuple(labels), files)


def person_of(file: str) -> str:
    """The person in an LFW-style file name ("anger/Aaron_Eckhart_0001.jpg" -> "Aaron_Eckhart")."""
    return re.sub(r"_\d+$", "", Path(file).stem)


def split_by_person(faces: FaceSet, *, part: str, val_fraction: float = 0.2) -> FaceSet:
    """The "train" or "val" part of a set, split by person (never by image) with a fixed hash.

    A person's every image falls on the same side, so validation faces belong to people the
    model never saw; the split depends on names only, not on order or on what else is in the folder.

    Raises:
        DataError: unknown ``part``, or the part would be empty.
    """
    if part not in ("train", "val"):
        raise DataError(f"part {part!r}: use 'train' or 'val'")
    in_val = np.array([int(hashlib.sha256(person_of(f).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < val_fraction
                       for f in faces.files])
    idx = np.flatnonzero(in_val if part == "val" else ~in_val)
    if not len(idx):
        raise DataError(f"the {part} part of the person split is empty ({len(faces)} faces)")
    return faces.subset(idx)


def concat(sets: Sequence[FaceSet]) -> FaceSet:
    """Several sets as one (same label order required; file names keep their order).

    Raises:
        DataError: no sets, or sets declaring different label orders.
    """
    if not sets:
        raise DataError("no face sets to join")
    labels = sets[0].labels
    for s in sets[1:]:
        if s.labels != labels:
            raise DataError(f"cannot join sets with label orders {labels} and {s.labels}; remap them first")
    return FaceSet([im for s in sets for im in s.images], np.concatenate([s.soft for s in sets]),
                   np.concatenate([s.hard for s in sets]), labels, [f for s in sets for f in s.files])


def read_unlabelled(folder: str | Path, *, labels: Sequence[str] = MOTIVNET_LABELS) -> FaceSet:
    """Every image under ``folder`` with no label: the teacher provides the targets."""
    files = _images_in(Path(folder))
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    n = len(files)
    return FaceSet([read_face_image(p) for p in files], np.zeros((n, len(labels)), np.float32),
                   np.full(n, -1, np.int64), tuple(labels), [str(p) for p in files])


#: Which labels of a FER+ split are read: the ten-annotator votes or the original FER2013 label.
LABEL_SOURCES = ("ferplus", "fer2013")


def read_dataset(path: str | Path, *, labels: Sequence[str] = MOTIVNET_LABELS,
                 mapping: Mapping[str, str | None] | None = None, label_source: str = "ferplus") -> FaceSet:
    """Detects the format of ``path`` and reads it (FER+ split, FER2013 CSV, class folders).

    Args:
        label_source: for a FER+ split, "ferplus" (votes) or "fer2013" (the original labels
            from ``fer2013_labels.csv`` beside the split folder); other formats carry one source.

    Raises:
        DataError: the path matches no known format, or ``label_source`` does not apply.
    """
    path = Path(path)
    if label_source not in LABEL_SOURCES:
        raise DataError(f"label source {label_source!r}: use one of {', '.join(LABEL_SOURCES)}")
    if (path / "label.csv").is_file():
        faces = read_ferplus(path, labels=labels, mapping=mapping)
        if label_source == "fer2013":
            faces = with_fer2013_labels(faces, path.parent / "fer2013_labels.csv")
        return faces
    if label_source == "fer2013":
        raise DataError(f"label source 'fer2013' applies to FER+ split folders (with label.csv); "
                        f"{path} is not one: drop the option")
    if path.is_file() and path.suffix == ".csv":
        return read_fer2013_csv(path, labels=labels)
    if path.is_dir() and any(p.is_dir() for p in path.iterdir()):
        return read_image_folder(path, labels=labels, mapping=mapping)
    if path.is_dir():
        return read_unlabelled(path, labels=labels)
    raise DataError(f"{path} is not a dataset: pass a FER+ split folder (label.csv), a FER2013 "
                    "CSV, or a folder with one sub-folder per class")


__all__ = ["FaceSet", "DataError", "LabelError", "concat", "read_dataset", "read_image_folder", "read_unlabelled",
           "person_of", "split_by_person"]
