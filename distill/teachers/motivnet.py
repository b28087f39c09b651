"""MotivNet exactly: a Sapiens ViT backbone and an ML-Decoder head (see the teacher doc).

Module and parameter names follow the authors' checkpoints (``pose_encoder.*``,
``decoder.decoder.*``), so a MotivNet.pth loads with ``strict=True``. Sizes are data:
``SAPIENS_SIZES`` holds the four published shapes; any smaller width/depth builds the
same code for tests. Everything is plain torch; the group FC is an einsum, so the
whole model exports to ONNX.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from motivnet_edge.labels import MOTIVNET_LABELS
from motivnet_edge.preprocess import Preprocessing

#: name -> (width, layers, heads); MLP is 4x width everywhere.
SAPIENS_SIZES = {"0.3b": (1024, 24, 16), "0.6b": (1280, 32, 16), "1b": (1536, 40, 24), "2b": (1920, 48, 32)}
#: The authors' two ways to make a 1024x768 input: training stretches, inference letterboxes in white.
MOTIVNET_PREPROCESSING = {
    mode: Preprocessing(input_size=(1024, 768), color="rgb", mean=(123.5, 116.5, 103.5),
                        std=(58.5, 57.0, 57.5), interpolation="linear", resize=mode, pad_value=255)
    for mode in ("stretch", "letterbox")}


@dataclass(frozen=True)
class MotivNetConfig:
    """Backbone + head shape. Defaults: MotivNet-1B at 1024x768."""

    embed_dim: int = 1536
    depth: int = 40
    num_heads: int = 24
    img_size: tuple[int, int] = (1024, 768)
    patch_size: int = 16
    patch_padding: int = 2
    decoder_dim: int = 1152
    decoder_heads: int = 8
    decoder_ffn: int = 2048
    decoder_layers: int = 2
    num_classes: int = 7

    @classmethod
    def sapiens(cls, size: str, **kw) -> "MotivNetConfig":
        if size not in SAPIENS_SIZES:
            raise ValueError(f"unknown Sapiens size {size!r}; known: {sorted(SAPIENS_SIZES)}")
        w, d, h = SAPIENS_SIZES[size]
        return cls(embed_dim=w, depth=d, num_heads=h, **kw)

    @property
    def grid(self) -> tuple[int, int]:
        h, w = self.img_size
        p, pad = self.patch_size, self.patch_padding
        return (h + 2 * pad - p) // p + 1, (w + 2 * pad - p) // p + 1


class PatchEmbed(nn.Module):
    def __init__(self, cfg: MotivNetConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, cfg.embed_dim, cfg.patch_size, cfg.patch_size, cfg.patch_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x).flatten(2).transpose(1, 2)


class SapiensAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class FFN(nn.Module):
    """mmcv's FFN layout: layers.0 = Sequential(Linear, GELU), layers.1 = Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.GELU()), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SapiensLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = SapiensAttention(dim, heads)
        self.ffn = FFN(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class SapiensViT(nn.Module):
    """Patch conv (padding 2), learned position embedding without class token, pre-norm layers,
    final LayerNorm; returns the B x C x H/16 x W/16 feature map."""

    def __init__(self, cfg: MotivNetConfig) -> None:
        super().__init__()
        gh, gw = cfg.grid
        self.grid = (gh, gw)
        self.patch_embed = PatchEmbed(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, gh * gw, cfg.embed_dim))
        self.layers = nn.ModuleList(SapiensLayer(cfg.embed_dim, cfg.num_heads) for _ in range(cfg.depth))
        self.ln1 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for layer in self.layers:
            x = layer(x)
        x = self.ln1(x)
        return x.transpose(1, 2).reshape(x.shape[0], -1, *self.grid)


class DecoderLayer(nn.Module):
    """ML-Decoder's layer: no query self-attention, post-norm, sequence-first."""

    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads)  # named self_attn, attends to memory
        self.linear1, self.linear2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(0.1)

    def forward(self, t: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        t = self.norm1(t + self.dropout(t))
        t = self.norm2(t + self.dropout(self.self_attn(t, memory, memory, need_weights=False)[0]))
        return self.norm3(t + self.dropout(self.linear2(F.relu(self.linear1(t)))))


class MLDecoder(nn.Module):
    def __init__(self, cfg: MotivNetConfig) -> None:
        super().__init__()
        d = cfg.decoder_dim
        self.embed_standart = nn.Linear(cfg.embed_dim, d)
        # Frozen at their random init but saved in checkpoints: loaded, never re-initialised.
        self.query_embed = nn.Embedding(cfg.num_classes, d)
        self.query_embed.requires_grad_(False)
        self.layers = nn.ModuleList(DecoderLayer(d, cfg.decoder_heads, cfg.decoder_ffn)
                                    for _ in range(cfg.decoder_layers))
        self.duplicate_pooling = nn.Parameter(torch.empty(cfg.num_classes, d, 1))
        self.duplicate_pooling_bias = nn.Parameter(torch.zeros(cfg.num_classes))
        nn.init.xavier_normal_(self.duplicate_pooling)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        memory = F.relu(self.embed_standart(features.flatten(2).transpose(1, 2)))  # B, N, d
        memory = memory.transpose(0, 1)                                              # N, B, d
        t = self.query_embed.weight.unsqueeze(1).expand(-1, features.shape[0], -1)    # K, B, d
        for layer in self.layers:
            t = layer(t, memory)
        # Group FC: logit_k = h_k . W[k, :, 0] + b_k (the authors loop over k).
        return torch.einsum("kbd,kd->bk", t, self.duplicate_pooling[:, :, 0]) + self.duplicate_pooling_bias


class MLDecoderHead(nn.Module):
    def __init__(self, cfg: MotivNetConfig) -> None:
        super().__init__()
        self.decoder = MLDecoder(cfg)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)


class MotivNet(nn.Module):
    """Preprocessed 1024x768 RGB batch in, 7 logits out (MotivNet label order)."""

    labels = MOTIVNET_LABELS

    def __init__(self, cfg: MotivNetConfig = MotivNetConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.pose_encoder = SapiensViT(cfg)
        self.decoder = MLDecoderHead(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.pose_encoder(x))

    def config_dict(self) -> dict:
        return asdict(self.cfg)


def count_parameters(cfg: MotivNetConfig) -> dict[str, int]:
    """Parameter counts without allocating weights (meta device)."""
    with torch.device("meta"):
        m = MotivNet(cfg)
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    return {"backbone": n(m.pose_encoder), "head": n(m.decoder), "total": n(m)}


def benchmark_teacher(*, cpu_batch: int = 1, gpu_batches=(1, 8, 32), repeats: int = 3) -> list[dict]:
    """MotivNet-1B with random weights: CPU batch 1 (slow), GPU fp32/bf16 when torch sees a GPU."""
    rows = []
    cfg = MotivNetConfig()
    torch.manual_seed(0)
    model = MotivNet(cfg).eval()

    def timed(m, x, device, dtype, n):
        times = []
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
            for _ in range(n):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                m(x)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append((time.perf_counter() - t) * 1e3)
        return times

    x = torch.randn(cpu_batch, 3, *cfg.img_size)
    t = timed(model, x, "cpu", torch.float32, 1)
    rows.append({"model": "motivnet_1b", "device": "cpu", "dtype": "fp32", "batch": cpu_batch,
                 "p50_ms": float(t[0]), "runs": 1, "threads": torch.get_num_threads()})
    if torch.cuda.is_available():
        gpu = model.cuda()
        name = torch.cuda.get_device_name()
        for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            for b in gpu_batches:
                torch.cuda.reset_peak_memory_stats()
                x = torch.randn(b, 3, *cfg.img_size, device="cuda")
                timed(gpu, x, "cuda", dtype, 1)
                ts = sorted(timed(gpu, x, "cuda", dtype, repeats))
                rows.append({"model": "motivnet_1b", "device": name, "dtype": label, "batch": b,
                             "p50_ms": ts[len(ts) // 2], "runs": repeats,
                             "peak_mem_mb": torch.cuda.max_memory_allocated() / 2 ** 20})
    return rows
