"""A weight average ("model soup", Wortsman et al. 2022) of students fine-tuned from one start.

Two rounds of training that begin at the same weights stay in one basin, so the mean of their
weights is a model too, usually as good as the better of them and sometimes better than both:
a round that learnt FER+ better and one that kept AffectNet and CK+ can meet halfway at no cost
in latency. The soup is a run folder like any other (``best.pt``, ``config.json``, an empty
``log.jsonl``), so ``select_default.py``, ``make_default.py`` and ``domains.py`` take it as is.

    python -m motivnet_distill.students.soup --run runs/md_pico_rd2_kd --run runs/md_pico_fer2_kd --out runs/soup
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from motivnet_edge.errors import MotivnetError
from motivnet_edge.preprocess import Preprocessing

from .model import StudentConfig, create_student
from .io import checkpoint_file, read_checkpoint, run_folder_cli, write_run_folder


class SoupError(MotivnetError, ValueError):
    """The students cannot be averaged (other shapes, labels or preprocessing), or bad weights."""


def _checkpoint(run: Path) -> tuple[Path, dict]:
    path = checkpoint_file(run)
    return path, read_checkpoint(path)


def average(runs: Sequence[str | Path], weights: Sequence[float] | None = None) -> tuple[dict, dict]:
    """The weighted mean of the runs' best weights; returns (checkpoint dict, soup record).

    Raises:
        SoupError: fewer than two runs, weights that do not match them or are not positive, or
            students that differ in shape, labels, preprocessing or integer buffers.
    """
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise SoupError("a soup needs at least two runs: pass --run twice or more")
    weights = [1.0] * len(runs) if not weights else [float(w) for w in weights]
    if len(weights) != len(runs) or not all(w > 0 and w < float("inf") for w in weights):
        raise SoupError(f"--weight: give one positive finite weight per --run ({len(runs)}), or none for equal weights")
    total = sum(weights)
    loaded = [_checkpoint(r) for r in runs]
    (first_path, first), members = loaded[0], []
    for (path, ck), w in zip(loaded, weights):
        for key in ("student", "preprocessing"):
            if ck[key] != first[key]:
                raise SoupError(f"{path} and {first_path} have another {key}: only students of one shape, label "
                                "order and preprocessing, fine-tuned from one start, can be averaged")
        members.append({"run": path.parent.name if path.name == "best.pt" else path.name, "weight": w / total,
                        "teacher": ck.get("provenance", {}).get("teacher")})
    model = {}
    for name, tensor in first["model"].items():
        if name.endswith("num_batches_tracked"):  # a BatchNorm's step counter, not a weight: training went on
            model[name] = max((ck["model"][name] for _, ck in loaded), key=int)
            continue
        if not tensor.is_floating_point():
            if any(not torch.equal(ck["model"][name], tensor) for _, ck in loaded):
                raise SoupError(f"the runs differ in the integer buffer {name}: they are not one model's fine-tunes")
            model[name] = tensor
            continue
        model[name] = sum(ck["model"][name].double() * (w / total) for (_, ck), w in zip(loaded, weights)).to(tensor.dtype)
    return {**first, "model": model}, {"members": members}


def write_soup(runs: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None,
               command: str | None = None) -> Path:
    """Averages ``runs`` into the new run folder ``out``, all at once: a killed soup leaves no folder.

    Raises:
        SoupError: see ``average``, or ``out`` already holds a run or other files.
    """
    ck, soup = average(runs, weights)
    teachers = sorted({m["teacher"] for m in soup["members"] if m["teacher"]})
    provenance = {**ck.get("provenance", {}), "soup": soup, "teacher": " + ".join(teachers) or None}
    cfg = StudentConfig.from_dict(ck["student"])
    model = create_student(cfg)
    model.load_state_dict(ck["model"])
    try:
        return write_run_folder(out, model, cfg, Preprocessing.from_dict(ck["preprocessing"]), provenance=provenance,
                                license=ck.get("license", {}), config_from=Path(runs[0]), command=command)
    except FileExistsError as exc:
        raise SoupError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="a run folder or student .pt (repeat)")
    ap.add_argument("--weight", type=float, action="append", help="one per --run (default: equal)")
    ap.add_argument("--out", type=Path, required=True, help="the soup's run folder")
    args = ap.parse_args(argv)
    return run_folder_cli("soup", lambda command: write_soup(args.run, args.out, args.weight, command=command), argv)


if __name__ == "__main__":
    sys.exit(main())
