"""Loads every MotivNet / Sapiens checkpoint format into the exact MotivNet module.

Formats (detected from the file, not its name): MotivNet.pth state_dicts (both patch-conv
key spellings), Lightning .ckpt, Sapiens pretrain ``*_clean.pth`` (class token dropped,
64x64 position grid resized bicubically to the input's grid), Sapiens task .pth from
mmengine, TorchScript and torch.export ``.pt2``. Everything goes through
``torch.load(weights_only=True)``; mmengine's pickled config objects are mapped to inert
stand-ins by an explicit allow-list of their names, and anything else (code) is refused.

TorchScript and torch.export archives are programs, not data: ``torch.jit.load`` runs the
archive's own code (``__setstate__``) and ``torch.export.load`` unpickles weight entries
marked ``use_pickle``. Both are refused unless the caller passes ``trust_code=True``
(``--trust-code`` on the command line), the way ``trust_remote_code`` works for hub models.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from motivnet_edge.errors import MotivnetError

from .motivnet import SAPIENS_SIZES, MotivNet, MotivNetConfig

HEADS_BY_WIDTH = {w: h for w, _, h in SAPIENS_SIZES.values()}


class CheckpointError(MotivnetError, ValueError):
    """A checkpoint cannot be read safely or does not fit the architecture."""


class _Inert:
    """Stands in for a pickled log/array object: keeps its state as data, runs nothing."""

    def __setstate__(self, state) -> None:
        self.state = state


class _InertMapping:
    """Stands in for a pickled dict subclass (mmengine's ConfigDict): becomes a plain mapping."""

    def __new__(cls, *_args):
        return OrderedDict()  # the only mapping type torch's safe unpickler fills item by item


def _inert(*_args, **_kwargs) -> _Inert:
    return _Inert()


# Only these names (mmengine's config/log containers and numpy's array plumbing inside
# them) may appear in a task checkpoint besides tensors; each becomes inert data.
MMENGINE_ALLOWED = [
    (_InertMapping, "mmengine.config.config.ConfigDict"), (_Inert, "mmengine.config.config.Config"),
    (_Inert, "mmengine.logging.history_buffer.HistoryBuffer"), (_Inert, "mmengine.logging.message_hub.MessageHub"),
    (_inert, "numpy.core.multiarray._reconstruct"), (_inert, "numpy._core.multiarray._reconstruct"),
    (_inert, "numpy.core.multiarray.scalar"), (_inert, "numpy._core.multiarray.scalar"),
    (_Inert, "numpy.ndarray"), (_inert, "numpy.dtype"), (_inert, "_codecs.encode"),
]


def archive_kind(path: str | Path) -> str | None:
    """"torch.export" or "torchscript" when ``path`` is such an archive (whatever its name), else None."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names) \
            and not any(n.endswith("data.pkl") for n in names):
        return "torch.export"
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    return None


def read_state(path: str | Path, *, trust_code: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a checkpoint file and the name of its format.

    Args:
        trust_code: allow TorchScript / torch.export archives, whose loading runs code from the file.

    Raises:
        CheckpointError: unreadable, holds pickled objects outside the allow-list, or is a
            code-carrying archive and ``trust_code`` is False.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    kind = archive_kind(path)
    if kind and not trust_code:
        raise CheckpointError(f"{path.name} is a {kind} archive: loading it runs code stored in the file. "
                              "Pass --trust-code (trust_code=True) only for a file from a source you trust, "
                              "or re-save its state_dict with torch.save")
    if kind == "torch.export":
        return _flat(torch.export.load(str(path)).module().state_dict()), "torch.export"
    if kind == "torchscript":
        sm = torch.jit.load(str(path), map_location="cpu")
        sd = sm.backbone.state_dict() if hasattr(sm, "backbone") else sm.state_dict()
        return dict(sd), "torchscript"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        fmt = "state_dict"
    except Exception as exc:  # noqa: BLE001 - weights_only raises UnpicklingError or RuntimeError
        msg = str(exc)
        if "mmengine" not in msg:
            raise CheckpointError(f"{path.name} is not a plain weights file ({_first(msg)}); it may carry pickled "
                                  "code, which is never executed. Re-save its state_dict with torch.save") from None
        try:
            with torch.serialization.safe_globals(MMENGINE_ALLOWED):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc2:  # noqa: BLE001
            raise CheckpointError(f"{path.name}: an mmengine checkpoint with objects outside the allow-list "
                                  f"({_first(str(exc2))}); refused") from None
        fmt = "mmengine"
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, not a state_dict")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        fmt = "lightning" if "hyper_parameters" in obj or "pytorch-lightning_version" in obj else fmt
        obj = obj["state_dict"]
    return _flat(obj), fmt


def _first(msg: str) -> str:
    import re

    msg = re.sub(r"\x1b\[[0-9;]*m", "", msg)  # torch colours parts of its messages for terminals
    return msg.strip().splitlines()[0][:200] if msg.strip() else "no detail"


def _flat(sd: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def to_motivnet_keys(sd: dict[str, torch.Tensor], grid: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Renames any known layout to MotivNet's keys; adapts Sapiens pretrain position grids."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^(model|module|net)\.", "", k)
        if k.startswith("backbone."):
            k = "pose_encoder." + k[len("backbone."):]
        elif k.startswith("head."):
            continue  # a Sapiens task head (pose, seg, ...) is not an emotion head
        elif not k.startswith(("pose_encoder.", "decoder.")):
            k = "pose_encoder." + k
        k = k.replace("pose_encoder.projection.", "pose_encoder.patch_embed.projection.")
        out[k] = v
    cls = out.pop("pose_encoder.cls_token", None)
    pos = out.get("pose_encoder.pos_embed")
    if pos is not None:
        n = pos.shape[1]
        if cls is not None or (math.isqrt(n - 1) ** 2 == n - 1 and math.isqrt(n) ** 2 != n):
            pos = pos[:, 1:]  # drop the class-token row (Sapiens pretrain: 1 + 64*64)
            n = pos.shape[1]
        if grid is not None and math.isqrt(n) ** 2 == n:
            pos = resample_pos_embed(pos, grid)
        out["pose_encoder.pos_embed"] = pos
    return out


def resample_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Position embeddings of a square grid, (1, S*S, D), resampled bicubically to ``grid``
    (rows, cols) as timm does; returned unchanged when the grid already matches.

    Raises:
        ValueError: ``pos`` is not a square grid of tokens (strip a class-token row first).
    """
    side = math.isqrt(pos.shape[1])
    if side * side != pos.shape[1]:
        raise ValueError(f"{pos.shape[1]} position tokens are not a square grid")
    if (side, side) == tuple(grid):
        return pos
    g = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    g = F.interpolate(g, size=tuple(grid), mode="bicubic", align_corners=False)
    return g.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(pos.dtype)


def infer_config(sd: dict[str, torch.Tensor], *, num_heads: int | None = None, **overrides) -> MotivNetConfig:
    """Backbone width/depth from tensor shapes; heads from the Sapiens widths unless given.

    Raises:
        CheckpointError: no backbone tensors, or a width with no known head count.
    """
    w = sd.get("pose_encoder.patch_embed.projection.weight")
    if w is None:
        raise CheckpointError("no patch embedding found (pose_encoder.patch_embed.projection.weight): "
                              "is this a Sapiens/MotivNet checkpoint?")
    width = w.shape[0]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"pose_encoder\.layers\.(\d+)\.", k)))
    heads = num_heads or HEADS_BY_WIDTH.get(width)
    if heads is None:
        raise CheckpointError(f"width {width} is not a published Sapiens size ({sorted(HEADS_BY_WIDTH)}); "
                              "pass num_heads=... (CLI: --num-heads)")
    cfg = MotivNetConfig(embed_dim=width, depth=depth, num_heads=heads, patch_size=w.shape[-1], **overrides)
    q = sd.get("decoder.decoder.query_embed.weight")
    if q is not None:
        cfg = replace(cfg, num_classes=q.shape[0], decoder_dim=q.shape[1],
                      decoder_ffn=sd["decoder.decoder.layers.0.linear1.weight"].shape[0],
                      decoder_layers=1 + max(int(m.group(1)) for k in sd
                                             if (m := re.match(r"decoder\.decoder\.layers\.(\d+)\.", k))))
    return cfg


def load_motivnet(path: str | Path, *, num_heads: int | None = None, img_size=(1024, 768),
                  patch_padding: int = 2, decoder_heads: int = 8,
                  require_head: bool = True, trust_code: bool = False) -> tuple[MotivNet, dict]:
    """Builds MotivNet from any supported checkpoint and loads it strictly.

    Shapes give width, depth, patch and head sizes; head counts are not in the tensors:
    ``num_heads`` (backbone; known for published widths) and ``decoder_heads`` (8 in MotivNet).
    ``require_head=False`` accepts backbone-only files (Sapiens weights): the head then
    keeps its initialisation, to be trained with ``train_head``. ``trust_code`` admits
    TorchScript / torch.export archives (their loading runs code from the file).

    Raises:
        CheckpointError: unsafe file, unknown layout, or missing/unexpected/mismatched tensors
            (all listed in one message).
    """
    raw, fmt = read_state(path, trust_code=trust_code)
    probe = to_motivnet_keys(raw)
    cfg = infer_config(probe, num_heads=num_heads, img_size=tuple(img_size), patch_padding=patch_padding,
                       decoder_heads=decoder_heads)
    model = MotivNet(cfg)
    sd = to_motivnet_keys(raw, grid=cfg.grid)
    own = model.state_dict()
    has_head = any(k.startswith("decoder.") for k in sd)
    if not has_head and require_head:
        raise CheckpointError(f"{Path(path).name} ({fmt}) holds a backbone only; train an emotion head with "
                              "train_head(...) or pass require_head=False")
    expected = set(own) if has_head else {k for k in own if k.startswith("pose_encoder.")}
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{Path(path).name} ({fmt}) does not fit MotivNet(width={cfg.embed_dim}, depth={cfg.depth}, "
                 f"input={cfg.img_size}):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                parts.append(f"{title} ({len(items)}): " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        raise CheckpointError(" ".join(parts))
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=has_head)
    return model.eval(), {"format": fmt, "config": cfg, "head_loaded": has_head}
