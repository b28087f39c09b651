"""Loads what ``motivnet-edge export`` accepts as a source: a run folder or a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from motivnet_edge.errors import MotivnetError
from motivnet_edge.preprocess import Preprocessing
from motivnet_distill.students.io import StudentCheckpointError, load_student


class SourceError(MotivnetError, ValueError):
    """The export source is not a model this project can read."""


@dataclass
class ExportSource:
    """A torch model ready to export, with what the package must say about it."""

    model: torch.nn.Module
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    provenance: dict = field(default_factory=dict)
    license: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def load_source(path: str | Path, **teacher_options) -> ExportSource:
    """A run folder (its best.pt) or a student checkpoint written by ``motivnet-edge distill``.

    Raises:
        SourceError: missing file, not a torch checkpoint, or not a student checkpoint.
    """
    from motivnet_distill.model_files import ModelFileError, model_kind

    path = Path(path)
    try:
        kind = model_kind(path)
    except ModelFileError as exc:
        raise SourceError(str(exc)) from None
    if kind == "package":
        raise SourceError(f"{path} is already a model package; export the run or checkpoint it was made from")
    if kind in ("keras", "onnx", "motivnet"):
        try:
            return _teacher_source(path, **teacher_options)
        except SourceError as exc:
            if path.suffix.lower() != ".pt":
                raise
            raise SourceError(f"{path.name} is not a motivnet-edge student checkpoint (train one with `motivnet-edge "
                              f"distill`) nor a MotivNet teacher checkpoint ({exc})") from None
    try:
        ck = load_student(path)
    except StudentCheckpointError as exc:
        raise SourceError(str(exc)) from None
    return ExportSource(ck.model, ck.labels, ck.preprocessing, ck.provenance, ck.license, ck.metrics)


def _teacher_source(path: Path, **teacher_options) -> ExportSource:
    """A Keras teacher (e.g. the FER2013 Xception peers) exported through the same path."""
    from motivnet_distill.teachers.load import load_teacher

    from motivnet_edge.errors import MotivnetError

    try:
        t = load_teacher(path, **teacher_options)
    except MotivnetError as exc:
        raise SourceError(str(exc)) from None
    if t.module is None:
        raise SourceError(f"{path.name} is already an ONNX model; use it as a teacher, not an export source")
    return ExportSource(t.module, t.labels, t.preprocessing, {"teacher_file": path.name, "description":
                        f"teacher {t.name}"}, {"weights": t.license})
