"""FER2013's own formats: FER+ split folders (ten-annotator vote counts in label.csv), the original
FER2013 labels beside them (fer2013_labels.csv), and the FER2013 CSV of pixel strings.

Labels are remapped by name into the caller's order: FER+'s columns and FER2013's classes each
declare their own order (``motivnet_edge.labels``), and contempt, unknown and not-a-face are
dropped or mapped explicitly.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..labels import FER2013_LABELS, FERPLUS_COLUMNS, MOTIVNET_LABELS, remap_indices

from .faces import DataError, FaceSet, read_face_image

log = logging.getLogger(__name__)


def _member(folder: Path, name: str, where: str) -> Path:
    """A file a label file names, which must lie inside the dataset folder (no absolute path, no '..')."""
    p = Path(name)
    if not name or p.is_absolute() or ".." in p.parts:
        raise DataError(f"{where}: image {name!r} is not a path inside {folder}; label files name images "
                        "relative to their folder")
    return folder / p


def read_ferplus(folder: str | Path, *, labels: Sequence[str] = MOTIVNET_LABELS,
                 mapping: Mapping[str, str | None] | None = None, limit: int | None = None) -> FaceSet:
    """Reads a FER+ split folder: PNGs plus ``label.csv`` (image, box, 10 vote counts).

    Soft labels are the emotion votes over ``labels``; the hard label follows the FER+
    majority protocol (no label when the top vote is unknown, not-a-face, tied, or a
    class that ``mapping`` drops). FER+ has "contempt", which MotivNet lacks: pass
    ``mapping={"contempt": None}`` to drop it (the default does so and logs it).

    Raises:
        DataError: label.csv missing or a row malformed (the row is named).
        LabelError: a FER+ class has no target and the mapping does not say what to do.
    """
    folder = Path(folder)
    csv_path = folder / "label.csv"
    if not csv_path.is_file():
        raise DataError(f"{folder} has no label.csv; a FER+ split folder holds PNGs and label.csv")
    if "contempt" not in labels and "contempt" not in (mapping or {}):
        mapping = {"contempt": None, **(mapping or {})}
        log.info("FER+ 'contempt' votes dropped: %s has no contempt class", list(labels))
    emo = FERPLUS_COLUMNS[:8]
    to_target = remap_indices(emo, labels, mapping=mapping)
    images, votes, files = [], [], []
    with open(csv_path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if limit is not None and len(images) >= limit:
                break
            if len(row) != 12:
                raise DataError(f"{csv_path}:{n}: expected 12 fields (image, box, 10 votes), got {len(row)}")
            try:
                v = np.array([float(x) for x in row[2:]], dtype=np.float32)
            except ValueError:
                raise DataError(f"{csv_path}:{n}: vote counts must be numbers: {row[2:]}") from None
            if not np.isfinite(v).all() or (v < 0).any():
                raise DataError(f"{csv_path}:{n}: vote counts must be finite and >= 0, got {row[2:]}")
            images.append(read_face_image(_member(folder, row[0], f"{csv_path}:{n}")))
            votes.append(v)
            files.append(row[0])
    if not images:
        raise DataError(f"{csv_path} lists no images")
    votes = np.stack(votes)
    soft = np.zeros((len(images), len(labels)), np.float32)
    for src, dst in enumerate(to_target):
        if dst >= 0:
            soft[:, dst] += votes[:, src]
    # FER+ majority: the top vote over all 10 columns must be a kept emotion, untied.
    full_top = votes.argmax(1)
    tied = (votes == votes.max(1, keepdims=True)).sum(1) > 1
    hard = np.where((full_top < 8) & ~tied, to_target[np.minimum(full_top, 7)], -1)
    total = soft.sum(1, keepdims=True)
    soft = np.divide(soft, total, out=np.zeros_like(soft), where=total > 0)
    return FaceSet(images, soft, hard.astype(np.int64), tuple(labels), files)


def read_fer2013_labels(csv_path: str | Path, folder: str | Path, *,
                        labels: Sequence[str] = MOTIVNET_LABELS) -> FaceSet:
    """FER+ images with their original FER2013 labels (``fer2013_labels.csv``: split,image,label)."""
    csv_path, folder = Path(csv_path), Path(folder)
    wanted = {p.name for p in folder.glob("*.png")}
    images, hard, files = [], [], []
    index = {name: i for i, name in enumerate(labels)}
    with open(csv_path, newline="") as f:
        for n, row in enumerate(csv.DictReader(f), 2):
            if row.get("image") not in wanted:
                continue
            name = row["fer2013_label"]
            dst = remap_indices([name], labels, on_missing="drop")[0]
            if dst < 0 and name not in index:
                continue
            images.append(read_face_image(folder / row["image"]))
            hard.append(dst)
            files.append(row["image"])
    if not images:
        raise DataError(f"no image of {folder} is listed in {csv_path}")
    hard = np.asarray(hard, np.int64)
    return FaceSet(images, np.eye(len(labels), dtype=np.float32)[hard], hard, tuple(labels), files)


def with_fer2013_labels(faces: FaceSet, csv_path: str | Path) -> FaceSet:
    """The same images (same order, so teacher caches still match) with their FER2013 labels.

    Images that ``csv_path`` does not list, or whose class ``faces.labels`` lacks, get no
    label (hard -1, soft zeros) and so carry only the teacher's loss.

    Raises:
        DataError: ``csv_path`` is missing or lists none of the images.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path} not found: FER2013 labels for FER+ images come from "
                        "fer2013_labels.csv (split,image,fer2013_label) beside the split folders")
    by_file = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            by_file[row.get("image")] = row.get("fer2013_label")
    names = [by_file.get(f) for f in faces.files]
    if not any(names):
        raise DataError(f"{csv_path} lists none of the {len(faces)} images; is it the right file?")
    # remap_indices canonicalises the FER2013 spellings ("angry" -> "anger"); unknown -> -1.
    kinds = sorted({n for n in names if n})
    index = dict(zip(kinds, remap_indices(kinds, faces.labels, on_missing="drop").tolist()))
    hard = np.asarray([index[n] if n else -1 for n in names], np.int64)
    soft = np.zeros((len(faces), len(faces.labels)), np.float32)
    soft[hard >= 0, hard[hard >= 0]] = 1.0
    log.info("FER2013 labels: %d of %d images labelled", int((hard >= 0).sum()), len(faces))
    return FaceSet(faces.images, soft, hard, faces.labels, faces.files)


def read_fer2013_csv(path: str | Path, *, usage: str | None = None,
                     labels: Sequence[str] = MOTIVNET_LABELS) -> FaceSet:
    """Reads Kaggle's ``fer2013.csv`` (emotion,pixels,Usage); ``usage`` filters e.g. "PrivateTest".

    Raises:
        DataError: missing columns or a row whose pixels are not 48x48 numbers.
    """
    path = Path(path)
    to_target = remap_indices(FER2013_LABELS, labels, on_missing="drop")
    images, hard, files = [], [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"emotion", "pixels"} <= set(reader.fieldnames):
            raise DataError(f"{path} needs columns emotion,pixels[,Usage]; found {reader.fieldnames}")
        for n, row in enumerate(reader, 2):
            if usage and row.get("Usage") != usage:
                continue
            try:
                px = np.array([int(v) for v in row["pixels"].split()], dtype=np.int64)
                emotion = int(row["emotion"])
            except (ValueError, AttributeError, TypeError):
                raise DataError(f"{path}:{n}: pixels/emotion are not integers") from None
            if px.size != 48 * 48 or not 0 <= emotion < 7 or px.min() < 0 or px.max() > 255:
                raise DataError(f"{path}:{n}: expected 2304 pixels in 0..255 and emotion 0..6")
            px = px.astype(np.uint8)
            if to_target[emotion] < 0:
                continue
            images.append(px.reshape(48, 48))
            hard.append(to_target[emotion])
            files.append(f"{path.name}:{n}")
    if not images:
        raise DataError(f"{path} has no rows{' with Usage=' + usage if usage else ''}")
    hard = np.asarray(hard, np.int64)
    return FaceSet(images, np.eye(len(labels), dtype=np.float32)[hard], hard, tuple(labels), files)
