"""Starting a student from weights made for another shape.

A timm/DeiT checkpoint (position embeddings resampled, a colour patch kernel summed to gray),
a shallower student (the extra blocks start as identities) and a full conv stem for a
"conv_lite" one (the strided convs keep their weights) all load here, so ``--init`` accepts
any of them and reports what it could not load.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .model import ViTStudent


def identity_blocks(model: ViTStudent, names: list[str]) -> list[int]:
    """Makes every block none of whose weights were loaded (``names``: the not-loaded names) an
    identity: its attention and MLP outputs start at zero, so a deeper student initialised from a
    shallower one computes exactly what the shallower one did, then learns from there. Returns the
    blocks it changed (none for a student without transformer blocks: a resnet)."""
    missing = set(names)
    changed = []
    for i, blk in enumerate(getattr(model, "blocks", ())):
        own = [f"blocks.{i}.{k}" for k, _ in blk.named_parameters()]
        if own and all(k in missing for k in own):
            with torch.no_grad():
                for layer in (blk.attn.proj, blk.mlp.fc2):
                    layer.weight.zero_()
                    layer.bias.zero_()
            changed.append(i)
    return changed


def _lite_stem(sd: dict) -> dict:
    """A full conv stem's weights renamed for a "conv_lite" stem: each stage's strided conv
    (and its norm) keeps its weights under its new index; the stride-1 convs are dropped."""
    out = {k: v for k, v in sd.items() if not k.startswith("patch_embed.stem.")}
    for k, v in sd.items():
        if not k.startswith("patch_embed.stem."):
            continue
        i, rest = k[len("patch_embed.stem."):].split(".", 1)
        i = int(i)
        if i < 3:  # the first conv (full resolution) and its norm
            out[k] = v
        elif (i - 3) % 6 < 3:  # stage k's strided conv: full index 3 + 6k + j -> lite 3 + 3k + j
            out[f"patch_embed.stem.{3 + 3 * ((i - 3) // 6) + (i - 3) % 6}.{rest}"] = v
    return out


def load_timm_weights(model: ViTStudent, path: str | Path) -> list[str]:
    """Initialises a student from a timm/DeiT checkpoint file (weights_only), adapting shapes.

    Position embeddings are resized (bicubic) to the student's grid, a 3-channel patch
    conv is summed to 1 channel for gray students, and the classifier head is skipped
    when its class count differs. Returns the names that were not loaded.

    Raises:
        ValueError: the file holds no tensors with timm's names.
    """
    from ..teachers.checkpoints import resample_pos_embed

    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    own = model.state_dict()
    if not any(k in own for k in sd):
        raise ValueError(f"{path} holds no timm ViT weights (keys like {list(sd)[:3]})")
    if model.cfg.stem == "conv_lite" and any(k.startswith("patch_embed.stem.9.") for k in sd):
        sd = _lite_stem(sd)
    w = sd.get("patch_embed.proj.weight")
    if w is not None and w.shape[1] == 3 and model.cfg.in_chans == 1:
        sd["patch_embed.proj.weight"] = w.sum(1, keepdim=True)
    # Resize the patch kernel to the student's own (a hybrid's conv stem makes it smaller than
    # patch_size, so the target is the student's kernel, not patch_size).
    kernel = own["patch_embed.proj.weight"].shape[-2:] if "patch_embed.proj.weight" in own else None
    if w is not None and kernel is not None and sd["patch_embed.proj.weight"].shape[-2:] != kernel:
        sd["patch_embed.proj.weight"] = F.interpolate(sd["patch_embed.proj.weight"], size=tuple(kernel), mode="bicubic")
    pos = sd.get("pos_embed")
    if pos is not None and pos.shape != own["pos_embed"].shape:
        has_cls = pos.shape[1] != int(math.isqrt(pos.shape[1])) ** 2
        cls, grid = (pos[:, :1], pos[:, 1:]) if has_cls else (pos[:, :0], pos)
        grid = resample_pos_embed(grid, model.cfg.grid)
        sd["pos_embed"] = torch.cat([cls, grid], 1) if model.cls_token is not None else grid
    loadable = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(loadable, strict=False)
    return sorted(set(own) - set(loadable))
