"""Builds a MotivNet teacher from public Sapiens weights: train the ML-Decoder head only.

The authors froze the backbone (lr 1e-8) and trained the head with cross-entropy, AdamW
lr 1e-5, cosine warm restarts (T0 = 10), 10 epochs, batch 32, no augmentation, on
"stretch"-resized 1024x768 RGB faces. ``HeadRecipe()`` is that recipe; every number is a
field. The result is a MotivNet state_dict that ``load_motivnet`` reads back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from motivnet_edge.atomic import atomic_path
from motivnet_edge.errors import MotivnetError

from .checkpoints import load_motivnet
from motivnet_edge.datasets.readers import FaceSet
from .motivnet import MOTIVNET_PREPROCESSING, MotivNet
from ..train import batch_of

log = logging.getLogger(__name__)


@dataclass
class HeadRecipe:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 0.01
    restart_epochs: int = 10   # CosineAnnealingWarmRestarts T0, in epochs
    seed: int = 0


def train_head(backbone: str | Path | MotivNet, faces: FaceSet, out: str | Path, *, recipe: HeadRecipe = HeadRecipe(),
               img_size=(1024, 768), device: str | None = None, progress: bool = True, **load_kw) -> Path:
    """Trains MotivNet's head on a frozen Sapiens backbone and writes ``out`` (a .pth state_dict).

    Raises:
        CheckpointError: the backbone file cannot be loaded.
        MotivnetError: ``faces`` has no labels or other label names than MotivNet's.
    """
    from tqdm import tqdm

    if tuple(faces.labels) != MotivNet.labels:
        raise MotivnetError(f"faces are labelled {faces.labels}; read them with MotivNet's label order")
    keep = np.flatnonzero(faces.hard >= 0)
    if len(keep) == 0:
        raise MotivnetError("no labelled faces to train the head on: pass a labelled --data set")
    if isinstance(backbone, MotivNet):
        model = backbone
    else:
        model, _ = load_motivnet(backbone, img_size=img_size, require_head=False, **load_kw)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    model.pose_encoder.requires_grad_(False).eval()
    head = model.decoder
    params = [p for p in head.parameters() if p.requires_grad]  # query embeddings stay frozen
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = -(-len(keep) // recipe.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=recipe.restart_epochs * steps)
    pp = MOTIVNET_PREPROCESSING["stretch"]
    if tuple(pp.input_size) != tuple(model.cfg.img_size):
        pp = type(pp).from_dict({**pp.to_dict(), "input_size": list(model.cfg.img_size)})
    gen = torch.Generator().manual_seed(recipe.seed)
    history = []
    for epoch in range(recipe.epochs):
        head.train()
        order = torch.from_numpy(keep)[torch.randperm(len(keep), generator=gen)]
        total, correct, loss_sum = 0, 0, 0.0
        for i in tqdm(range(steps), desc=f"head epoch {epoch + 1}", disable=not progress):
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size].numpy()
            x = batch_of([faces.images[j] for j in idx], pp).to(device)
            y = torch.from_numpy(faces.hard[idx]).to(device)
            with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                feats = model.pose_encoder(x)
            logits = head(feats.float())
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            loss_sum += loss.item() * len(idx)
        history.append({"epoch": epoch + 1, "loss": loss_sum / total, "acc": correct / total})
        log.info("head epoch %d: %s", epoch + 1, history[-1])
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    out.with_suffix(".json").write_text(json.dumps({"recipe": asdict(recipe), "history": history,
                                                    "config": model.config_dict()}, indent=1))
    return out
