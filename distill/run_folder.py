"""A run folder's life: checked and recorded at the start (config.json, commands.txt), its
student built fresh, from ``--init`` or resumed from last.pt, checkpoints written atomically,
and its curves plotted from log.jsonl."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch

from motivnet_edge.atomic import atomic_path, write_json
from motivnet_edge.preprocess import Preprocessing

from .students.model import StudentConfig, create_student
from .train_config import TrainConfig, TrainConfigError, check_run_folder

log = logging.getLogger(__name__)


def save_checkpoint(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_log(run: str | Path) -> list[dict]:
    """The epochs a run folder has logged (log.jsonl: one JSON object per finished epoch, in order).

    Raises:
        OSError: the run has no log; ValueError: a line is not JSON (a damaged log).
    """
    return [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines() if line.strip()]


def plot_curves(run: Path) -> None:
    """Training curves (loss, train/val accuracy, teacher agreement) from log.jsonl to curves.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(run)
    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(ep, [r["train_loss"] for r in rows], marker="o")
    a.set(xlabel="epoch", ylabel="train loss")
    for key in ("train_acc", "val_acc", "train_agreement"):
        if key in rows[0]:
            b.plot(ep, [r[key] for r in rows], marker="o", label=key)
    b.set(xlabel="epoch", ylabel="fraction")
    b.legend()
    fig.tight_layout()
    fig.savefig(run / "curves.png", dpi=100)
    plt.close(fig)


def short_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}"


def start_run(run: Path, cfg: TrainConfig, scfg: StudentConfig, pp: Preprocessing, val_set, resume: bool,
               extra: dict | None, rank: int) -> None:
    """Checks the run folder and selection sets, then records the config and the command line."""
    provenance = (extra or {}).get("provenance", {})
    check_run_folder(run, cfg, scfg, resume, teacher=provenance.get("teacher"),
                     mix=(provenance.get("domains") or {}).get("mix"))
    for name, part in (val_set.items() if isinstance(val_set, Mapping) else [("--val", val_set)]):
        if not (part.hard >= 0).any():
            raise TrainConfigError(f"the selection set {name} has no labelled faces: the best epoch cannot be "
                                   "chosen; pass a labelled --val (class folders, a FER+ split or a CSV)")
    if rank != 0:
        return
    run.mkdir(parents=True, exist_ok=True)
    if (extra or {}).get("command"):
        # Every invocation (the first and each --resume) is kept, so the run can be reproduced.
        with open(run / "commands.txt", "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {extra['command']}\n")
    write_json(run / "config.json", {"train": asdict(cfg), "student": json.loads(scfg.to_json()),
                                     "preprocessing": pp.to_dict(), **(extra or {})})


def load_models(run: Path, scfg: StudentConfig, cfg: TrainConfig, device, init, resume: bool):
    """(model, ema, optimizer, first epoch, best metrics): fresh, from ``init``, or resumed from last.pt."""
    torch.manual_seed(cfg.seed)
    model, ema = create_student(scfg), create_student(scfg)
    if init is not None:
        from .students.init_weights import load_timm_weights

        try:
            skipped = load_timm_weights(model, init)
        except Exception as exc:  # unreadable, truncated, pickled code, no tensors of ours
            raise TrainConfigError(f"--init {init} cannot be read as weights ({short_error(exc)}); pass a run's "
                                   "best.pt or a timm/DeiT checkpoint") from None
        log.info("initialised from %s; not loaded: %s", init, skipped)
        from .students.init_weights import identity_blocks

        deepened = identity_blocks(model, skipped)
        if deepened:
            log.info("blocks %s were not in %s: they start as identities (a deeper student)", deepened, init)
    # channels_last: oneDNN's conv kernels (the stem's forward and backward) are faster in NHWC.
    model.to(device, memory_format=torch.channels_last), ema.to(device, memory_format=torch.channels_last)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best = 0, {"val_acc": -1.0}
    if resume and (run / "last.pt").is_file():
        try:
            ck = torch.load(run / "last.pt", map_location=device, weights_only=True)
            model.load_state_dict(ck["model"]), ema.load_state_dict(ck["ema"]), opt.load_state_dict(ck["opt"])
            start, best = int(ck["epoch"]) + 1, dict(ck["best"])
        except Exception as exc:  # truncated, empty, pickled code, or a file of another shape
            raise TrainConfigError(f"{run / 'last.pt'} cannot be resumed ({short_error(exc)}); the run's last good "
                                   f"weights are {run / 'best.pt'}: start a new --out with --init that file, or "
                                   "delete last.pt to restart this run") from None
        log.info("resumed %s at epoch %d", run, start)
    return model, ema, opt, start, best
