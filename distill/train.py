"""Trains a ViT student on faces: soft labels and/or a teacher's cached logits.

Read top to bottom: settings, augmentation, loss, one epoch, the loop with checkpoints.
Each epoch re-seeds every random source from (seed, epoch), so ``resume`` after a kill
reaches the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from motivnet_edge.preprocess import Preprocessing, face_crop

from .data import FaceSet
from .student import StudentConfig, ViTStudent, count_flops

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as config.json in the run folder."""

    student: dict = field(default_factory=dict)
    epochs: int = 12
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
    seed: int = 0
    threads: int = 0                # 0: torch's default


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Face-safe augmentation of a normalised batch: flip, small affine, contrast, erasing."""
    b = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=gen)  # noqa: E731
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    ang, scale = u(-0.2, 0.2), u(0.9, 1.1)
    tx, ty = u(-0.08, 0.08), u(-0.08, 0.08)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = x * u(0.7, 1.3).view(b, 1, 1, 1) + u(-0.3, 0.3).view(b, 1, 1, 1)
    # Random erasing: one rectangle of noise in a quarter of the faces.
    h, w = x.shape[-2:]
    eh, ew = (u(0.1, 0.4) * h).long(), (u(0.1, 0.4) * w).long()
    y0 = (torch.rand(b, generator=gen) * (h - eh)).long()
    x0 = (torch.rand(b, generator=gen) * (w - ew)).long()
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    box = ((ys >= y0.view(b, 1, 1)) & (ys < (y0 + eh).view(b, 1, 1)) &
           (xs >= x0.view(b, 1, 1)) & (xs < (x0 + ew).view(b, 1, 1)))
    box &= (torch.rand(b, generator=gen) < 0.25).view(b, 1, 1)
    noise = torch.randn(x.shape, generator=gen)
    return torch.where(box.unsqueeze(1), noise, x)


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


def crops_tensor(faces: FaceSet, pp: Preprocessing) -> torch.Tensor:
    """All faces through the runtime's own preprocessing, as a uint8 NHWC tensor."""
    crops = np.stack([face_crop(img, pp) for img in faces.images])
    if crops.ndim == 3:
        crops = crops[..., None]
    return torch.from_numpy(crops)


def normalise(batch_u8: torch.Tensor, pp: Preprocessing) -> torch.Tensor:
    mean = torch.tensor(pp.mean).view(1, -1, 1, 1)
    std = torch.tensor(pp.std).view(1, -1, 1, 1)
    return (batch_u8.permute(0, 3, 1, 2).float() - mean) / std


@torch.no_grad()
def predict_logits(model: torch.nn.Module, crops: torch.Tensor, pp: Preprocessing,
                   batch: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(normalise(crops[i:i + batch], pp)) for i in range(0, len(crops), batch)])


def _lr(step: int, total: int, warm: int, base: float) -> float:
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(run: str | Path, train_set: FaceSet, val_set: FaceSet, pp: Preprocessing, cfg: TrainConfig, *,
          teacher_logits: torch.Tensor | None = None, resume: bool = False,
          progress: bool = True) -> dict:
    """Trains a student into the run folder; returns the best validation metrics.

    ``teacher_logits`` (N, views, K) are the cached teacher outputs for ``train_set``.
    """
    from tqdm import tqdm

    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    scfg = StudentConfig.from_dict({**cfg.student, "labels": list(train_set.labels),
                                    "img_size": list(pp.input_size), "in_chans": pp.channels,
                                    "num_classes": len(train_set.labels)})
    (run / "config.json").write_text(json.dumps({"train": asdict(cfg), "student": json.loads(scfg.to_json()),
                                                 "preprocessing": pp.to_dict()}, indent=1))
    torch.manual_seed(cfg.seed)
    model = ViTStudent(scfg)
    ema = ViTStudent(scfg)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x_train, x_val = crops_tensor(train_set, pp), crops_tensor(val_set, pp)
    soft = torch.from_numpy(train_set.soft)
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total, warm = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)
    start, best = 0, {"val_acc": -1.0}
    if resume and (run / "last.pt").is_file():
        ck = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"]), ema.load_state_dict(ck["ema"]), opt.load_state_dict(ck["opt"])
        start, best = ck["epoch"] + 1, ck["best"]
        log.info("resumed %s at epoch %d", run, start)
    logf = open(run / "log.jsonl", "a")
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(x_train), generator=gen)
        model.train()
        t0, seen, loss_sum, correct = time.time(), 0, 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress)
        for i in bar:
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            step = epoch * steps_per_epoch + i
            for g in opt.param_groups:
                g["lr"] = _lr(step, total, warm, cfg.lr)
            xb = augment(normalise(x_train[idx], pp), gen)
            tb = None
            if teacher_logits is not None:
                view = torch.randint(teacher_logits.shape[1], (len(idx),), generator=gen)
                tb = teacher_logits[idx, view]
            logits = model(xb)
            loss = distill_loss(logits, soft[idx], tb, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                d = min(cfg.ema_decay, (1 + step) / (10 + step))
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(pm, 1 - d)
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == soft[idx].argmax(1)).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                   "seconds": time.time() - t0, **evaluate(ema, x_val, val_set, pp)}
        logf.write(json.dumps(metrics) + "\n")
        logf.flush()
        log.info("epoch %d: %s", epoch + 1, metrics)
        if metrics["val_acc"] > best["val_acc"]:
            best = metrics
            _save({"model": ema.state_dict(), "student": asdict(scfg), "preprocessing": pp.to_dict(),
                   "metrics": metrics}, run / "best.pt")
        _save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
               "epoch": epoch, "best": best}, run / "last.pt")
    logf.close()
    best["gflops"] = count_flops(scfg) / 1e9
    best["params"] = sum(p.numel() for p in ema.parameters())
    return best


def evaluate(model: torch.nn.Module, x: torch.Tensor, faces: FaceSet, pp: Preprocessing) -> dict:
    """Majority-label accuracy (rows without a label are skipped) on crops ``x``."""
    pred = predict_logits(model, x, pp).argmax(1).numpy()
    keep = faces.hard >= 0
    return {"val_acc": float((pred[keep] == faces.hard[keep]).mean()), "val_n": int(keep.sum())}
