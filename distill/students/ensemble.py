"""An ensemble of finished runs as one run folder: the mean of their students' class probabilities.

Two students of different families (the pico ViT and the resnet teacher) err on different faces,
so the mean of their probabilities beats either (benchmarks/results/ensemble_teacher.json). Put
in one graph, the ensemble is a model like any other: one ONNX file, one prior correction, one
INT8 path, one package. Its output is the log of the mean probability, so softmax, argmax and
the prior correction's logit offsets mean what they mean for any student. With ``--mirror`` the
graph also reads each face's mirror image (twice the compute, no more weights), so a package that
is meant to trade time for accuracy carries the trade itself; for any other package it stays the
runtime's option (``EmotionRecognizer``'s ``mirror``).

Members may declare their labels in other orders (labels are names): each member's probabilities
are reordered into the ensemble's order by name, and a member without one of them is refused.

    python -m motivnet_distill.students.ensemble --run runs/default.pt --run runs/teacher_resnet48_fresh --out runs/ens
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from motivnet_edge.errors import MotivnetError
from motivnet_edge.preprocess import Preprocessing

from .io import checkpoint_file, read_checkpoint, run_folder_cli, write_run_folder
from .ensemble_net import EnsembleConfig, EnsembleStudent
from .model import StudentConfig, create_student

class EnsembleError(MotivnetError, ValueError):
    """The students cannot form an ensemble (one member, other preprocessing, missing labels)."""


def combine(runs: Sequence[str | Path], *, mirror: bool = False) -> tuple[EnsembleStudent, Preprocessing, dict]:
    """The runs' best students as one ensemble (labels in the first member's order; with
    ``mirror``, each face's mirror image read too); returns (model, preprocessing, record of its members).

    Raises:
        EnsembleError: fewer than two runs, an unreadable checkpoint, members with other
            preprocessing, or a member without one of the first member's labels.
    """
    return _combine(_read(runs), mirror=mirror)


def _read(runs: Sequence[str | Path]) -> list[tuple[Path, dict]]:
    """Each run's checkpoint file and its contents, read once."""
    if len(runs) < 2:
        raise EnsembleError("an ensemble needs at least two members: pass --run twice or more")
    loaded = []
    for run in runs:
        path = checkpoint_file(run)
        ck = read_checkpoint(path)
        if ck["student"].get("arch") == "ensemble":
            raise EnsembleError(f"{path} is an ensemble already: name its members instead")
        loaded.append((path, ck))
    return loaded


def _combine(loaded: list[tuple[Path, dict]], *, mirror: bool) -> tuple[EnsembleStudent, Preprocessing, dict]:
    first_path, first = loaded[0]
    for path, ck in loaded[1:]:
        if ck["preprocessing"] != first["preprocessing"]:
            raise EnsembleError(f"{path} reads faces with other preprocessing than {first_path}: the members of one "
                                "graph must share one input (crop, size, colour, normalisation)")
    configs = tuple(StudentConfig.from_dict(ck["student"]) for _, ck in loaded)
    try:
        cfg = EnsembleConfig(configs, labels=configs[0].labels, mirror=mirror)
    except ValueError as exc:
        raise EnsembleError(str(exc)) from None
    model = create_student(cfg)
    for member, (path, ck) in zip(model.members, loaded):
        try:
            member.load_state_dict(ck["model"])
        except RuntimeError as exc:
            raise EnsembleError(f"{path}: weights do not fit its saved student config: {str(exc)[:200]}") from None
    record = {"members": [{"run": p.parent.name if p.name == "best.pt" else p.name,
                           "teacher": ck.get("provenance", {}).get("teacher")} for p, ck in loaded]}
    return model.eval(), Preprocessing.from_dict(first["preprocessing"]), record


def write_ensemble(runs: Sequence[str | Path], out: str | Path, *, mirror: bool = False,
                   command: str | None = None) -> Path:
    """The ensemble as a new run folder ``out`` (best.pt, an empty log, and the recipe of the
    first member that is a run folder: its config.json, provenance and licence), written all at
    once; ``make_default.py`` and ``domains.py`` take it as is.

    Raises:
        EnsembleError: see ``combine``; no member is a run folder; ``out`` already holds a run or
            other files.
    """
    loaded = _read(runs)
    model, pp, record = _combine(loaded, mirror=mirror)
    # A member given as a bare .pt (a package rebuilt by from_package) has no recipe of its own.
    base = next(((p, ck) for p, ck in loaded if p.name == "best.pt" and (p.parent / "config.json").is_file()), None)
    if base is None:
        raise EnsembleError("no member is a distill run folder with a config.json: name at least one run folder, "
                            "whose recipe (domains, training settings) the package records")
    path, ck = base
    teachers = sorted({m["teacher"] for m in record["members"] if m["teacher"]})
    provenance = {k: v for k, v in ck.get("provenance", {}).items() if k != "student_preset"}  # not one preset
    provenance.update(ensemble=record, teacher=" + ".join(teachers) or None)
    try:
        return write_run_folder(out, model, model.cfg, pp, provenance=provenance, license=ck.get("license", {}),
                                config_from=path.parent, command=command)
    except FileExistsError as exc:
        raise EnsembleError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="a run folder or student .pt (repeat)")
    ap.add_argument("--out", type=Path, required=True, help="the ensemble's run folder")
    ap.add_argument("--mirror", action="store_true", help="the graph reads each face's mirror image too and "
                    "averages both views (twice the compute)")
    args = ap.parse_args(argv)
    return run_folder_cli("ensemble", lambda command: write_ensemble(args.run, args.out, mirror=args.mirror,
                                                                     command=command), argv)


if __name__ == "__main__":
    sys.exit(main())
