"""Issue 41: would an ensemble teach better than its best member? Scored on validation parts only.

    python benchmarks/ensemble_teacher.py --member default --member runs/pkg/teacher_resnet48
    python benchmarks/ensemble_teacher.py --member default --member runs/pkg/teacher_resnet48 \
        --member runs/pkg/accurate_resnet48     # the same run with its prior correction folded in

A distillation target is only as good as the teacher's reading of the face, so before a
student is re-distilled from a new teacher, the candidates are read as ``distill`` would read
them: each member alone, every pair (and, with three or more, all of them) as their mean
probability (``EnsembleTeacher``'s reading; each member is read once), each through the
mirrored reading ``--mirror-teacher`` trains with (``MirroredTeacher``), on the selection sets
``distill --domains`` selects on (the same crops, cached with the same key). The score is
``distill``'s: the mean of the domains' accuracies. Writes benchmarks/results/ensemble_teacher.json
(members' sha256, commit, date inside). Test parts are never read.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from common import ROOT, SHARED, require_data, write_result  # noqa: E402  (benchmarks/ is the script folder)

OUT = ROOT / "benchmarks" / "results" / "ensemble_teacher.json"


def member_probs(teacher, sets: dict) -> dict:
    """One teacher's probabilities on each set's labelled faces (in the sets' label order)."""
    out = {}
    for name, faces in sets.items():
        keep = faces.hard >= 0
        out[name] = teacher.probs([faces.images[i] for i in np.flatnonzero(keep)], labels=faces.labels)
    return out


def score(probs: list[dict], sets: dict) -> dict:
    """``distill``'s selection score of the mean of ``probs`` (EnsembleTeacher's reading: the mean
    member probability): per-domain accuracy and their mean."""
    per = {}
    for name, faces in sets.items():
        pred = np.mean([p[name] for p in probs], axis=0).argmax(1)
        per[name] = round(float((pred == faces.hard[faces.hard >= 0]).mean()), 4)
    return {"pooled": round(float(np.mean(list(per.values()))), 4), "domains": per}


def candidates(names: list[str]) -> list[tuple[str, ...]]:
    """Each member alone, every pair, and (three or more members) all of them together."""
    out = [(n,) for n in names] + list(itertools.combinations(names, 2))
    return out + ([tuple(names)] if len(names) > 2 else [])


def teachers_and_sets(models: list[str], shared: Path, cache_dir: Path, *, tool: str) -> tuple[dict, dict]:
    """Each model read as a teacher (``load_teacher``) and the selection sets as ``distill`` cuts them
    (its preprocessing, YuNet-aligned where the domain is measured so, crops cached in ``cache_dir``).
    A model that cannot be read ends the script with ``tool``'s name and the reason, no traceback."""
    from motivnet_distill.distill_options import STUDENT_PREPROCESSING
    from motivnet_distill.mixture import validation_sets
    from motivnet_distill.teachers.load import load_teacher
    from motivnet_edge.datasets.domains import shared_yunet
    from motivnet_edge.detectors import YuNetDetector
    from motivnet_edge.errors import MotivnetError

    require_data(shared)
    try:
        teachers = {m: load_teacher(m) for m in models}
    except MotivnetError as exc:  # a missing file, an unknown format: say which
        raise SystemExit(f"{tool}: {exc}") from None
    return teachers, validation_sets(shared, STUDENT_PREPROCESSING, YuNetDetector(shared_yunet(shared)),
                                     cache_dir=cache_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--member", action="append", required=True,
                    help="a teacher: package folder, .onnx, or an embedded model's name (repeat)")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "cache_kd",
                    help="distill's cache folder: the aligned selection crops are reused from it")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from motivnet_distill.teachers.load import MirroredTeacher
    from motivnet_edge.machine import machine_info

    members, sets = teachers_and_sets(args.member, args.shared, args.cache_dir, tool="ensemble_teacher")
    rows = []
    for mirror in (False, True):  # each member read once per mode; a candidate is the mean of its members'
        wrap = MirroredTeacher if mirror else (lambda t: t)
        probs = {m: member_probs(wrap(t), sets) for m, t in members.items()}
        for group in candidates(list(members)):
            rows.append({"teacher": "+".join(group), "mirrored": mirror, **score([probs[m] for m in group], sets)})
    write_result(args.out, {"members": {m: {"teacher": t.name, **_checkpoint(m)} for m, t in members.items()},
                            "selection_sets": {k: len(v) for k, v in sets.items()},
                            "score": "mean of the domains' validation accuracies (distill's val_acc)",
                            "rows": rows, "machine": machine_info()})
    for r in rows:
        print(f"{r['teacher']:<50} mirrored={r['mirrored']!s:<5} pooled {100 * r['pooled']:.1f}  " +
              " ".join(f"{k} {100 * v:.1f}" for k, v in r["domains"].items()))


def _checkpoint(member: str) -> dict:
    """Which epoch of which run a package member was exported from (its manifest's validation record)."""
    import json

    from motivnet_edge.package import resolve_model

    manifest = resolve_model(member) / "manifest.json"
    if not manifest.is_file():
        return {}
    validation = json.loads(manifest.read_text()).get("metrics", {}).get("validation", {})
    return {"epoch": validation.get("epoch"), "val_acc": validation.get("val_acc")}


if __name__ == "__main__":
    main()
