"""Trains a ViT student on faces: soft labels and/or a teacher's cached outputs.

Read top to bottom: settings, student-only erasing, loss, data per step, the loop.
Each epoch draws its order, views and erasing from (seed, epoch) only, so ``resume``
after a kill reaches the same weights as an uninterrupted run, and ranks under torchrun
split each global batch instead of drawing their own (DDP = single process, up to float).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from motivnet_edge.atomic import atomic_path
from motivnet_edge.errors import MotivnetError
from motivnet_edge.preprocess import Preprocessing, faces_to_tensor

from .data import FaceSet
from .student import StudentConfig, count_flops, create_student
from .student_io import save_student
from .views import view_image

log = logging.getLogger(__name__)


class TrainConfigError(MotivnetError, ValueError):
    """A training option or run folder that cannot give a sound run (the message names the fix)."""


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as config.json in the run folder."""

    student: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    label_weight: float = 1.0       # cross-entropy to the (soft) dataset labels
    kd_weight: float = 0.0          # KL to the teacher's temperature-scaled probabilities
    temperature: float = 2.0
    label_smoothing: float = 0.0
    views: int = 8                  # seeded augmented views per image (teacher cache size)
    erase_prob: float = 0.25
    seed: int = 0
    threads: int = 0                # 0: torch's default
    samples_per_epoch: int = 0      # with sample weights: draws per epoch (0: one per training row)

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> TrainConfigError:
            return TrainConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r} is invalid: it must be {rule}")

        finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
        if not finite(self.temperature) or self.temperature <= 0:
            raise bad("temperature", "a finite number > 0")
        for name in ("lr", "kd_weight", "label_weight", "weight_decay", "warmup_epochs", "grad_clip"):
            if not finite(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "a finite number >= 0")
        for name in ("label_smoothing", "erase_prob", "ema_decay"):
            if not finite(getattr(self, name)) or not 0 <= getattr(self, name) < 1:
                raise bad(name, "in [0, 1)")
        if not isinstance(self.samples_per_epoch, int) or self.samples_per_epoch < 0:
            raise bad("samples_per_epoch", "an integer >= 0")
        for name in ("epochs", "batch_size", "views"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        if self.kd_weight == 0 and self.label_weight == 0:
            raise TrainConfigError("--kd-weight and --label-weight are both 0: nothing to learn from")


def erase(x: torch.Tensor, gen: torch.Generator, prob: float) -> torch.Tensor:
    """Random erasing (student only): one rectangle of noise in a fraction ``prob`` of faces."""
    b, _, h, w = x.shape
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=gen)  # noqa: E731
    eh, ew = (u(0.1, 0.4) * h).long(), (u(0.1, 0.4) * w).long()
    y0, x0 = (torch.rand(b, generator=gen) * (h - eh)).long(), (torch.rand(b, generator=gen) * (w - ew)).long()
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    box = ((ys >= y0.view(b, 1, 1)) & (ys < (y0 + eh).view(b, 1, 1)) &
           (xs >= x0.view(b, 1, 1)) & (xs < (x0 + ew).view(b, 1, 1)))
    box &= (torch.rand(b, generator=gen) < prob).view(b, 1, 1)
    return torch.where(box.unsqueeze(1), torch.randn(x.shape, generator=gen), x)


def distill_loss(logits: torch.Tensor, soft: torch.Tensor | None, teacher: torch.Tensor | None,
                 cfg: TrainConfig) -> torch.Tensor:
    """label_weight * CE(soft labels) + kd_weight * T^2 * KL(teacher_T || student_T)."""
    loss = logits.new_zeros(())
    if soft is not None and cfg.label_weight > 0:
        k = soft.shape[1]
        target = soft * (1 - cfg.label_smoothing) + cfg.label_smoothing / k
        has = soft.sum(1) > 0  # unlabelled rows carry no label loss
        if has.any():
            ce = -(target * F.log_softmax(logits, 1)).sum(1)
            loss = loss + cfg.label_weight * ce[has].mean()
    if teacher is not None and cfg.kd_weight > 0:
        t = cfg.temperature
        kl = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher.float() / t, 1),
                      log_target=True, reduction="batchmean")
        loss = loss + cfg.kd_weight * t * t * kl
    return loss


def batch_of(images, pp: Preprocessing) -> torch.Tensor:
    """Faces (whole-image crops) through the runtime's own preprocessing, as a torch batch."""
    return torch.from_numpy(faces_to_tensor(images, pp))


@torch.no_grad()
def predict_logits(model: torch.nn.Module, faces: FaceSet, pp: Preprocessing, batch: int = 512) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(batch_of(faces.images[i:i + batch], pp).to(device)).float().cpu()
                      for i in range(0, len(faces), batch)])


def _lr(step: int, total: int, warm: int, base: float) -> float:
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _world() -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group when launched by torchrun."""
    cuda = torch.cuda.is_available()
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        local = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, torch.device("cuda" if cuda else "cpu")


def plot_curves(run: Path) -> None:
    """Training curves (loss, train/val accuracy, teacher agreement) from log.jsonl to curves.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
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


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}"


def _start_run(run: Path, cfg: TrainConfig, scfg: StudentConfig, pp: Preprocessing, val_set, resume: bool,
               extra: dict | None, rank: int) -> None:
    """Checks the run folder and selection sets, then records the config and the command line."""
    _check_run_folder(run, cfg, scfg, resume)
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
    (run / "config.json").write_text(json.dumps({"train": asdict(cfg), "student": json.loads(scfg.to_json()),
                                                 "preprocessing": pp.to_dict(), **(extra or {})}, indent=1))


def _models(run: Path, scfg: StudentConfig, cfg: TrainConfig, device, init, resume: bool):
    """(model, ema, optimizer, first epoch, best metrics): fresh, from ``init``, or resumed from last.pt."""
    torch.manual_seed(cfg.seed)
    model, ema = create_student(scfg), create_student(scfg)
    if init is not None:
        from .student import load_timm_weights

        try:
            skipped = load_timm_weights(model, init)
        except Exception as exc:  # unreadable, truncated, pickled code, no tensors of ours
            raise TrainConfigError(f"--init {init} cannot be read as weights ({_short(exc)}); pass a run's "
                                   "best.pt or a timm/DeiT checkpoint") from None
        log.info("initialised from %s; not loaded: %s", init, skipped)
        from .student import identity_blocks

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
            raise TrainConfigError(f"{run / 'last.pt'} cannot be resumed ({_short(exc)}); the run's last good "
                                   f"weights are {run / 'best.pt'}: start a new --out with --init that file, or "
                                   "delete last.pt to restart this run") from None
        log.info("resumed %s at epoch %d", run, start)
    return model, ema, opt, start, best


@dataclass
class _Loop:
    """What every step of a run shares: data, schedule, and where the process sits in a DDP group."""

    train_set: FaceSet
    pp: Preprocessing
    cfg: TrainConfig
    soft: torch.Tensor
    teacher: torch.Tensor | None
    weights: torch.Tensor | None
    draws: int
    steps: int
    rank: int
    world: int
    device: torch.device
    run: Path


def _epoch(loop: _Loop, epoch: int, net, model, ema, opt, progress: bool) -> dict:
    """One epoch; its order, views and erasing come from (seed, epoch) only. Returns train stats."""
    from tqdm import tqdm

    cfg, n, bs, steps = loop.cfg, len(loop.train_set), loop.cfg.batch_size, loop.steps
    total, warm = cfg.epochs * steps, int(cfg.warmup_epochs * steps)
    torch.manual_seed(cfg.seed * 1000 + epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    order = (torch.multinomial(loop.weights, loop.draws, replacement=True, generator=gen) if loop.weights is not None
             else torch.randperm(n, generator=gen))
    views = torch.randint(cfg.views, (n,), generator=gen)
    net.train()
    seen, loss_sum, correct, agree = 0, 0.0, 0, 0
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress or loop.rank != 0)
    for i in bar:
        idx = order[i * bs:(i + 1) * bs]
        for g in opt.param_groups:
            g["lr"] = _lr(epoch * steps + i, total, warm, cfg.lr)
        imgs = [view_image(loop.train_set.images[j], cfg.seed, int(j), int(views[j])) for j in idx]
        x = erase(batch_of(imgs, loop.pp), gen, cfg.erase_prob).contiguous(memory_format=torch.channels_last)
        part = slice(loop.rank * len(idx) // loop.world, (loop.rank + 1) * len(idx) // loop.world)
        tb = loop.teacher[idx, views[idx]][part].to(loop.device) if loop.teacher is not None else None
        with torch.autocast(loop.device.type, dtype=torch.bfloat16, enabled=loop.device.type == "cuda"):
            logits = net(x[part].to(loop.device)).float()
        loss = distill_loss(logits, loop.soft[idx][part].to(loop.device), tb, cfg)
        if not torch.isfinite(loss):
            raise TrainConfigError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}: "
                                   "training diverged; lower --lr (a higher --temperature also softens the KD term), "
                                   f"then --resume from the last good epoch in {loop.run}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            d = min(cfg.ema_decay, (1 + epoch * steps + i) / (10 + epoch * steps + i))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
            for be, bm in zip(ema.buffers(), model.buffers()):
                be.copy_(bm)
        pred = logits.argmax(1)
        seen += len(pred)
        loss_sum += loss.item() * len(pred)
        correct += (pred.cpu() == loop.soft[idx][part].argmax(1)).sum().item()
        if tb is not None:
            agree += (pred == tb.argmax(1)).sum().item()
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                        **({"agree": f"{agree / seen:.3f}"} if tb is not None else {}))
    return {"train_loss": loss_sum / seen, "train_acc": correct / seen,
            **({"train_agreement": agree / seen} if loop.teacher is not None else {})}


def train(run: str | Path, train_set: FaceSet, val_set: FaceSet | Mapping[str, FaceSet], pp: Preprocessing,
          cfg: TrainConfig, *, teacher_logits: np.ndarray | None = None, resume: bool = False, progress: bool = True,
          extra: dict | None = None, stop_after: int | None = None, init: str | Path | None = None,
          sample_weights: np.ndarray | None = None) -> dict:
    """Trains a student into the run folder; returns the best validation metrics.

    ``val_set``: one selection set, or several by name (a domain each): the score is their mean.
    ``sample_weights`` (N,): draw probabilities; each epoch then draws ``cfg.samples_per_epoch``
    rows with replacement instead of visiting every row once.
    ``teacher_logits`` (N, views, K): cached teacher outputs for ``train_set``'s views.
    ``stop_after`` ends the process's work after that many epochs (tests of resume).
    ``init``: a timm/DeiT checkpoint file to start from instead of random weights.
    On a GPU the step runs in bfloat16 autocast; under torchrun each rank uses its own GPU.
    """
    rank, world, device = _world()
    run = Path(run)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    scfg = StudentConfig.from_dict({**cfg.student, "labels": list(train_set.labels),
                                    "img_size": list(pp.input_size), "in_chans": pp.channels,
                                    "num_classes": len(train_set.labels)})
    if cfg.batch_size % world:
        raise TrainConfigError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
    _start_run(run, cfg, scfg, pp, val_set, resume, extra, rank)
    model, ema, opt, start, best = _models(run, scfg, cfg, device, init, resume)
    net = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    teacher = torch.from_numpy(np.asarray(teacher_logits, np.float32)) if teacher_logits is not None else None
    if teacher is not None and teacher.shape[:2] != (len(train_set), cfg.views):
        raise ValueError(f"teacher outputs {tuple(teacher.shape)} do not match {len(train_set)} images x {cfg.views} views")
    n = len(train_set)
    if sample_weights is not None and len(sample_weights) != n:
        raise ValueError(f"{len(sample_weights)} sample weights for {n} training rows")
    draws = (cfg.samples_per_epoch or n) if sample_weights is not None else n
    loop = _Loop(train_set, pp, cfg, torch.from_numpy(train_set.soft), teacher,
                 torch.as_tensor(np.asarray(sample_weights, np.float64)) if sample_weights is not None else None,
                 draws, math.ceil(draws / cfg.batch_size), rank, world, device, run)
    for epoch in range(start, cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)):
        t0 = time.time()
        stats = _epoch(loop, epoch, net, model, ema, opt, progress)
        if rank != 0:
            continue
        metrics = {"epoch": epoch + 1, **stats, "seconds": round(time.time() - t0, 1),
                   "device": f"{device.type} x{world}", **evaluate(ema, val_set, pp)}
        with open(run / "log.jsonl", "a") as logf:
            logf.write(json.dumps(metrics) + "\n")
        log.info("epoch %d: %s", epoch + 1, metrics)
        if metrics["val_acc"] > best["val_acc"]:
            best = metrics
            save_student(run / "best.pt", ema, scfg, pp, metrics=metrics,
                         **{k: v for k, v in (extra or {}).items() if k != "command"})
        _save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
               "epoch": epoch, "best": best}, run / "last.pt")
        plot_curves(run)
    if world > 1:
        dist.barrier()
    return dict(best, gflops=count_flops(ema, (1, scfg.in_chans, *scfg.img_size)) / 1e9,
                params=sum(p.numel() for p in ema.parameters()))


#: Settings a resumed run must share with the run it continues (others, e.g. epochs, may change).
RESUME_MUST_MATCH = ("batch_size", "views", "seed", "kd_weight", "label_weight", "temperature", "samples_per_epoch")


def _check_run_folder(run: Path, cfg: TrainConfig, scfg: StudentConfig, resume: bool) -> None:
    """A fresh run never writes into an old one; a resumed run continues the same recipe."""
    has_run = (run / "last.pt").is_file() or (run / "log.jsonl").is_file()
    if has_run and not resume:
        raise TrainConfigError(f"{run} already holds a run: pass --resume to continue it, or choose a new --out")
    if not (resume and (run / "config.json").is_file()):
        return
    try:
        saved = json.loads((run / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainConfigError(f"{run}/config.json is unreadable ({exc}); start a new run in a new --out") from None
    # A setting older runs did not record had its default value then.
    defaults = TrainConfig()
    was = {k: saved.get("train", {}).get(k, getattr(defaults, k)) for k in RESUME_MUST_MATCH}
    diffs = [f"{k}: run {was[k]!r}, now {getattr(cfg, k)!r}" for k in RESUME_MUST_MATCH if was[k] != getattr(cfg, k)]
    old_student = {k: v for k, v in saved.get("student", {}).items() if k != "labels"}
    new_student = {k: v for k, v in json.loads(scfg.to_json()).items() if k != "labels"}
    if old_student != new_student:
        diffs.append("student shape differs (a different --student)")
    if diffs:
        raise TrainConfigError(f"--resume would continue {run} with other settings ({'; '.join(diffs)}); "
                               "use the run's own options or a new --out")


def evaluate(model: torch.nn.Module, faces: FaceSet | Mapping[str, FaceSet], pp: Preprocessing) -> dict:
    """Majority-label accuracy on ``faces`` (rows without a label are skipped).

    Several sets by name: ``val_acc`` is the mean of their accuracies (each domain counts the
    same, whatever its size), ``val_min_recall`` the lowest class recall in any of them, and
    each set's accuracy is kept as ``val_acc_<name>``.
    """
    if isinstance(faces, FaceSet):
        pred = predict_logits(model, faces, pp).argmax(1).numpy()
        keep = faces.hard >= 0
        return {"val_acc": float((pred[keep] == faces.hard[keep]).mean()), "val_n": int(keep.sum())}
    out, recalls = {}, []
    for name, part in faces.items():
        pred = predict_logits(model, part, pp).argmax(1).numpy()
        keep = part.hard >= 0
        p, t = pred[keep], part.hard[keep]
        out[f"val_acc_{name}"] = float((p == t).mean())
        recalls += [float((p[t == c] == c).mean()) for c in np.unique(t) if (t == c).sum() >= 10]
    return {"val_acc": float(np.mean(list(out.values()))), "val_min_recall": min(recalls),
            "val_n": int(sum((p.hard >= 0).sum() for p in faces.values())), **out}
