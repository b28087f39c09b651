"""Loads what ``motivnet-edge export`` accepts as a source: a run folder or a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from motivnet_edge.errors import MotivnetError
from motivnet_edge.preprocess import Preprocessing
from motivnet_distill.student import StudentConfig, ViTStudent


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
    path = Path(path)
    if path.suffix.lower() in (".hdf5", ".h5", ".pth", ".ckpt", ".pt2", ".onnx"):
        return _teacher_source(path, **teacher_options)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise SourceError(f"{path} does not exist; pass a distill run folder or its best.pt")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors differ by cause
        raise SourceError(f"{path} is not a readable torch checkpoint ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160]})") from None
    if not isinstance(ck, dict) or not {"model", "student", "preprocessing"} <= set(ck):
        raise SourceError(f"{path} is not a motivnet-edge student checkpoint (needs model, student "
                          "and preprocessing entries); train one with `motivnet-edge distill`")
    cfg = StudentConfig.from_dict(ck["student"])
    model = ViTStudent(cfg)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise SourceError(f"{path}: weights do not fit the saved student config: {str(exc)[:300]}") from None
    model.eval()
    prov = {"student": ck["student"], "checkpoint": path.name, **ck.get("provenance", {})}
    return ExportSource(model, cfg.labels, Preprocessing.from_dict(ck["preprocessing"]), prov,
                        ck.get("license", {}), {"validation": ck.get("metrics", {})})


def _teacher_source(path: Path, **teacher_options) -> ExportSource:
    """A Keras teacher (e.g. the FER2013 Xception peers) exported through the same path."""
    from motivnet_distill.teachers import load_teacher

    from motivnet_edge.errors import MotivnetError

    try:
        t = load_teacher(path, **teacher_options)
    except MotivnetError as exc:
        raise SourceError(str(exc)) from None
    if t.module is None:
        raise SourceError(f"{path.name} is already an ONNX model; use it as a teacher, not an export source")
    return ExportSource(t.module, t.labels, t.preprocessing, {"teacher_file": path.name, "description":
                        f"teacher {t.name}"}, {"weights": t.license})
