"""Trains a ViT student on faces: soft labels and/or a teacher's cached outputs.

Read top to bottom: student-only erasing, loss, data per step, the loop (settings:
``train_config``; the run folder's start, resume and checkpoints: ``run_folder``).
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
from dataclasses import dataclass
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from motivnet_edge.preprocess import Preprocessing, faces_to_tensor

from motivnet_edge.datasets.readers import FaceSet
from .run_folder import load_models, plot_curves, save_checkpoint, start_run
from .students.model import StudentConfig, count_flops
from .students.io import save_student
from .train_config import RESUME_MUST_MATCH, TrainConfig, TrainConfigError  # noqa: F401  (public here too)
from .views import degrade, mix_faces, view_image

log = logging.getLogger(__name__)


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
    """label_weight * CE(soft labels) + kd_weight * T^2 * KL(teacher_T || student_T); a row whose
    teacher target is NaN (a domain trained on labels alone) has no KD term."""
    loss = logits.new_zeros(())
    if soft is not None and cfg.label_weight > 0:
        k = soft.shape[1]
        target = soft * (1 - cfg.label_smoothing) + cfg.label_smoothing / k
        has = soft.sum(1) > 0  # unlabelled rows carry no label loss
        if has.any():
            ce = -(target * F.log_softmax(logits, 1)).sum(1)
            loss = loss + cfg.label_weight * ce[has].mean()
    if teacher is not None and cfg.kd_weight > 0:
        taught = torch.isfinite(teacher).all(1)
        if taught.any():
            t = cfg.temperature
            kl = F.kl_div(F.log_softmax(logits[taught] / t, 1), F.log_softmax(teacher[taught].float() / t, 1),
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


@dataclass
class _Loop:
    """What every step of a run shares: data, schedule, and where the process sits in a DDP group."""

    train_set: FaceSet
    pp: Preprocessing
    cfg: TrainConfig
    soft: torch.Tensor
    teacher: torch.Tensor | None
    online: object  # face images -> teacher log-probabilities (N, K), or None (cached or no teacher)
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
    seen, loss_sum, correct, agree, taught_seen = 0, 0.0, 0, 0, 0
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress or loop.rank != 0)
    for i in bar:
        idx = order[i * bs:(i + 1) * bs]
        for g in opt.param_groups:
            g["lr"] = _lr(epoch * steps + i, total, warm, cfg.lr)
        imgs = [view_image(loop.train_set.images[j], cfg.seed, int(j), int(views[j])) for j in idx]
        soft = loop.soft[idx]
        if cfg.mixup > 0:  # its own stream, from (seed, epoch, step): a resume mixes the same pairs
            imgs, mixed, _ = mix_faces(imgs, soft.numpy(), np.random.default_rng([cfg.seed, epoch, i]), cfg.mixup)
            soft = torch.from_numpy(mixed)
        clean = imgs
        if cfg.degrade_prob > 0:  # its own stream too; the teacher keeps the clean faces
            r = np.random.default_rng([cfg.seed, epoch, i, 1])
            hit = r.random(len(imgs)) < cfg.degrade_prob
            imgs = [degrade(im, r, input_side=max(loop.pp.input_size)) if h else im for im, h in zip(imgs, hit)]
        x = erase(batch_of(imgs, loop.pp), gen, cfg.erase_prob).contiguous(memory_format=torch.channels_last)
        part = slice(loop.rank * len(idx) // loop.world, (loop.rank + 1) * len(idx) // loop.world)
        if loop.online is not None:  # the teacher reads this rank's faces as they are, before erasing
            tb = torch.from_numpy(loop.online(clean[part])).to(loop.device)
        else:
            tb = loop.teacher[idx, views[idx]][part].to(loop.device) if loop.teacher is not None else None
        with torch.autocast(loop.device.type, dtype=torch.bfloat16, enabled=loop.device.type == "cuda"):
            logits = net(x[part].to(loop.device)).float()
        loss = distill_loss(logits, soft[part].to(loop.device), tb, cfg)
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
        correct += (pred.cpu() == soft[part].argmax(1)).sum().item()
        if tb is not None:
            taught = torch.isfinite(tb).all(1)
            agree += (pred == tb.argmax(1))[taught].sum().item()
            taught_seen += int(taught.sum())
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                        **({"agree": f"{agree / max(1, taught_seen):.3f}"} if tb is not None else {}))
    return {"train_loss": loss_sum / seen, "train_acc": correct / seen,
            **({"train_agreement": agree / max(1, taught_seen)} if loop.teacher is not None or loop.online is not None else {})}


def train(run: str | Path, train_set: FaceSet, val_set: FaceSet | Mapping[str, FaceSet], pp: Preprocessing,
          cfg: TrainConfig, *, teacher_logits: np.ndarray | None = None, resume: bool = False, progress: bool = True,
          extra: dict | None = None, stop_after: int | None = None, init: str | Path | None = None,
          sample_weights: np.ndarray | None = None, online_teacher=None) -> dict:
    """Trains a student into the run folder; returns the best validation metrics.

    ``val_set``: one selection set, or several by name (a domain each): the score is their mean.
    ``sample_weights`` (N,): draw probabilities; each epoch then draws ``cfg.samples_per_epoch``
    rows with replacement instead of visiting every row once.
    ``teacher_logits`` (N, views, K): cached teacher outputs for ``train_set``'s views.
    ``online_teacher``: instead, a function from face images to teacher log-probabilities (N, K),
    run on every batch as the student sees it (``cfg.online_teacher``; with ``cfg.mixup``, on the
    mixed faces).
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
    start_run(run, cfg, scfg, pp, val_set, resume, extra, rank)
    model, ema, opt, start, best = load_models(run, scfg, cfg, device, init, resume)
    net = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    teacher = torch.from_numpy(np.asarray(teacher_logits, np.float32)) if teacher_logits is not None else None
    if cfg.online_teacher != (online_teacher is not None) or (online_teacher is not None and teacher is not None):
        raise ValueError("online_teacher is set exactly when cfg.online_teacher is, and replaces teacher_logits")
    if cfg.mixup > 0 and teacher is not None:
        raise TrainConfigError("--mixup makes new faces that cached teacher outputs never saw: add --online-teacher "
                               "so the teacher reads the mixed faces")
    if teacher is not None and teacher.shape[:2] != (len(train_set), cfg.views):
        raise ValueError(f"teacher outputs {tuple(teacher.shape)} do not match {len(train_set)} images x {cfg.views} views")
    n = len(train_set)
    if sample_weights is not None and len(sample_weights) != n:
        raise ValueError(f"{len(sample_weights)} sample weights for {n} training rows")
    draws = (cfg.samples_per_epoch or n) if sample_weights is not None else n
    loop = _Loop(train_set, pp, cfg, torch.from_numpy(train_set.soft), teacher, online_teacher,
                 torch.as_tensor(np.asarray(sample_weights, np.float64)) if sample_weights is not None else None,
                 draws, math.ceil(draws / cfg.batch_size), rank, world, device, run)
    for epoch in range(start, cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)):
        t0, c0 = time.time(), time.process_time()
        stats = _epoch(loop, epoch, net, model, ema, opt, progress)
        if rank != 0:
            continue
        metrics = {"epoch": epoch + 1, **stats, "seconds": round(time.time() - t0, 1),
                   # CPU time of every thread of this process: what a run costs, whatever shares the machine
                   "cpu_seconds": round(time.process_time() - c0, 1),
                   "device": f"{device.type} x{world}", **evaluate(ema, val_set, pp)}
        with open(run / "log.jsonl", "a") as logf:
            logf.write(json.dumps(metrics) + "\n")
        log.info("epoch %d: %s", epoch + 1, metrics)
        if metrics["val_acc"] > best["val_acc"]:
            best = metrics
            save_student(run / "best.pt", ema, scfg, pp, metrics=metrics,
                         **{k: v for k, v in (extra or {}).items() if k != "command"})
        save_checkpoint({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
               "epoch": epoch, "best": best}, run / "last.pt")
        plot_curves(run)
    if world > 1:
        dist.barrier()
    return dict(best, gflops=count_flops(ema, (1, scfg.in_chans, *scfg.img_size)) / 1e9,
                params=sum(p.numel() for p in ema.parameters()))


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
    # None: no class has the 10 faces a recall needs (tiny selection sets).
    return {"val_acc": float(np.mean(list(out.values()))), "val_min_recall": min(recalls, default=None),
            "val_n": int(sum((p.hard >= 0).sum() for p in faces.values())), **out}
