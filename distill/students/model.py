"""The students: a compact Vision Transformer with timm's parameter names, and (``arch``
"resnet", ``cnn``) a residual conv net. One settings dataclass and one factory serve both.

One module covers every student: depth, width, heads, MLP ratio, patch size, input
resolution and channels are settings. Names follow timm's VisionTransformer
(patch_embed.proj, cls_token, pos_embed, blocks.N.{norm1,attn.qkv,attn.proj,norm2,
mlp.fc1,mlp.fc2}, norm, head) so a timm/DeiT state_dict a user holds loads with
``init_weights.load_timm_weights``. Attention is written as plain matmul + softmax: it exports to
ONNX as MatMul nodes that NNCF and TensorRT quantize well.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


ARCHS = ("vit", "resnet")
STEMS = ("patch", "conv", "conv_lite")
#: Activations of a conv stem. ReLU lets ONNX Runtime and OpenVINO fuse it into the convolution
#: (ORT's fused Conv takes ReLU-family activations only); GELU is a separate pass over the
#: 48x48 activation map.
STEM_ACTS = {"gelu": nn.GELU, "relu": nn.ReLU}


@dataclass(frozen=True)
class StudentConfig:
    """Shape of a student; saved as JSON beside its weights."""

    embed_dim: int = 128
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 3.0
    patch_size: int = 6
    img_size: tuple[int, int] = (48, 48)
    in_chans: int = 1
    num_classes: int = 7
    pool: str = "avg"  # "avg" over patch tokens, or "cls" (timm's default)
    stem: str = "patch"  # "patch": one strided conv (timm); "conv": 3x3 conv stem, then the patch conv;
    # "conv_lite": the conv stem without its stride-1 convs (48 of the pico's 104 MFLOPs)
    stem_act: str = "gelu"  # a conv stem's activation: "gelu" or "relu" (fused into the conv by the runtimes)
    drop_path: float = 0.05
    labels: tuple[str, ...] = field(default_factory=tuple)
    arch: str = "vit"  # "vit", or "resnet" (cnn.py: the fields below; the ViT fields above are unused)
    widths: tuple[int, ...] = ()  # resnet: channels of each stage
    stage_blocks: tuple[int, ...] = ()  # resnet: basic blocks in each stage
    stem_stride: int = 1  # resnet: 1 keeps the input resolution in the first stage, 2 halves it

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, not {self.arch!r}")
        if self.arch == "resnet":
            if not self.widths or len(self.widths) != len(self.stage_blocks) or min(self.widths + self.stage_blocks) < 1:
                raise ValueError(f"a resnet needs one width and one block count (>= 1) per stage, not widths "
                                 f"{self.widths} and stage_blocks {self.stage_blocks}")
            if self.stem_stride not in (1, 2):
                raise ValueError(f"stem_stride must be 1 or 2, not {self.stem_stride}")
            return
        h, w = self.img_size
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, not {self.stem!r}")
        if self.stem_act not in STEM_ACTS:
            raise ValueError(f"stem_act must be one of {', '.join(STEM_ACTS)}, not {self.stem_act!r}")
        if self.stem != "patch" and self.patch_size % 2:
            raise ValueError("a conv stem halves the resolution first: patch_size must be even")
        if self.pool not in ("avg", "cls"):
            raise ValueError(f"pool must be 'avg' or 'cls', not {self.pool!r}")

    def describe(self) -> str:
        """The shape in a few words, for a package's description."""
        size = f"{self.img_size[0]}x{self.img_size[1]} {'gray' if self.in_chans == 1 else 'colour'}"
        if self.arch == "resnet":
            return (f"ResNet student (basic blocks {'-'.join(map(str, self.stage_blocks))}, widths "
                    f"{'-'.join(map(str, self.widths))}, stem stride {self.stem_stride}), {size}")
        return (f"ViT student ({self.stem} stem, {self.depth} blocks, width {self.embed_dim}, "
                f"{self.num_heads} heads), {size}")

    @property
    def grid(self) -> tuple[int, int]:
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StudentConfig":
        d = dict(d)
        d["img_size"] = tuple(d.get("img_size", (48, 48)))
        d["labels"] = tuple(d.get("labels", ()))
        for key in ("widths", "stage_blocks"):
            d[key] = tuple(d.get(key, ()))
        return cls(**d)


#: Named shapes. vit_tiny/vit_small are DeiT's; the slimmer ones suit 48-64 px faces.
PRESETS: dict[str, dict] = {
    "vit_pico": dict(embed_dim=96, depth=4, num_heads=3, mlp_ratio=3.0, patch_size=6),
    "vit_nano": dict(embed_dim=128, depth=6, num_heads=4, mlp_ratio=3.0, patch_size=6),
    "vit_micro": dict(embed_dim=160, depth=8, num_heads=4, mlp_ratio=3.0, patch_size=4),
    # Conv patch embedding (stride 4 in convs, then 2x2 patches): learns from 28k faces.
    "vit_hybrid_femto": dict(embed_dim=64, depth=3, num_heads=2, mlp_ratio=3.0, patch_size=8, stem="conv"),
    "vit_hybrid_pico": dict(embed_dim=96, depth=4, num_heads=3, mlp_ratio=3.0, patch_size=8, stem="conv"),
    "vit_hybrid_nano": dict(embed_dim=128, depth=6, num_heads=4, mlp_ratio=3.0, patch_size=8, stem="conv"),
    # pico without its stem's stride-1 convs (56 instead of 104 MFLOPs); a pico's weights start it.
    "vit_hybrid_pico_lite": dict(embed_dim=96, depth=4, num_heads=3, mlp_ratio=3.0, patch_size=8, stem="conv_lite"),
    # pico_lite whose stem activations fuse into its convolutions (a pico_lite's weights start it).
    "vit_hybrid_pico_lite_relu": dict(embed_dim=96, depth=4, num_heads=3, mlp_ratio=3.0, patch_size=8,
                                      stem="conv_lite", stem_act="relu"),
    # the pico with ReLU in its stem (fused into each conv); a pico's weights start it.
    "vit_hybrid_pico_relu": dict(embed_dim=96, depth=4, num_heads=3, mlp_ratio=3.0, patch_size=8, stem="conv",
                                 stem_act="relu"),
    # pico's width and stem with four more blocks: the blocks cost little next to the stem at 48 px,
    # and a pico's weights start it (the new blocks begin as identities, see init_weights.identity_blocks).
    "vit_hybrid_pico8": dict(embed_dim=96, depth=8, num_heads=3, mlp_ratio=3.0, patch_size=8, stem="conv"),
    # a teacher-sized hybrid for a GPU (about 6 M parameters, 0.9 GFLOPs at 48 px): not for a device.
    "vit_hybrid_small": dict(embed_dim=256, depth=8, num_heads=4, mlp_ratio=3.0, patch_size=8, stem="conv"),
    # ResNet-18's basic blocks at half its width (2.8 M parameters); the stem halves the face, so
    # the first stage runs at 24x24 from 48 px (0.16 GFLOPs), at 32x32 from 64 px (0.28).
    # (With stem_stride=1 it is 0.62 GFLOPs at 48 px and trains 3x slower on a CPU.)
    "resnet_s": dict(arch="resnet", widths=(32, 64, 128, 256), stage_blocks=(2, 2, 2, 2), stem_stride=2),
    # resnet_s with a stride-1 stem: every stage at twice the resolution (48x48 first), 0.62 GFLOPs.
    # Its weights have resnet_s's shapes, so a trained resnet_s starts it (a FixRes-style continuation).
    "resnet_s1": dict(arch="resnet", widths=(32, 64, 128, 256), stage_blocks=(2, 2, 2, 2), stem_stride=1),
    "resnet_s64": dict(arch="resnet", widths=(32, 64, 128, 256), stage_blocks=(2, 2, 2, 2), stem_stride=2,
                       img_size=(64, 64)),
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, patch_size=16, img_size=(224, 224)),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0, patch_size=16, img_size=(224, 224)),
}


class PatchEmbed(nn.Module):
    """Image -> token sequence. A conv stem gives a ViT the locality prior that small
    datasets cannot teach it (Xiao et al. 2021, "Early convolutions help transformers")."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.stem = None
        in_ch, k = cfg.in_chans, cfg.patch_size
        if cfg.stem in ("conv", "conv_lite"):
            # Two conv stages per factor of 2 (down to stride 4 when the patch allows it);
            # the patch conv then only groups the remaining 2x2 (or 1x1) cells. "conv_lite"
            # keeps only each stage's strided conv: the stride-1 ones hold most of the FLOPs.
            stages = 2 if cfg.patch_size % 4 == 0 else 1
            widths = [cfg.embed_dim // 2 ** (stages - i) for i in range(stages + 1)]
            act = STEM_ACTS[cfg.stem_act]
            layers = [nn.Conv2d(in_ch, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), act()]
            for a, b in zip(widths[:-1], widths[1:]):
                layers += [nn.Conv2d(a, b, 3, 2, 1, bias=False), nn.BatchNorm2d(b), act()]
                if cfg.stem == "conv":
                    layers += [nn.Conv2d(b, b, 3, 1, 1, bias=False), nn.BatchNorm2d(b), act()]
            self.stem = nn.Sequential(*layers)
            in_ch, k = widths[-1], cfg.patch_size // 2 ** stages
        self.proj = nn.Conv2d(in_ch, cfg.embed_dim, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            x = self.stem(x)
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        # Stochastic depth: drop whole residual branches per sample while training.
        if not self.training or self.drop_path == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.drop_path
        return x * keep / (1 - self.drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._drop(self.attn(self.norm1(x)))
        return x + self._drop(self.mlp(self.norm2(x)))


class ViTStudent(nn.Module):
    """Patch embedding, position embedding, pre-norm blocks, final norm, linear head."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.grid[0] * cfg.grid[1]
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if cfg.pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, n + (cfg.pool == "cls"), cfg.embed_dim))
        dpr = [cfg.drop_path * i / max(1, cfg.depth - 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, p) for p in dpr)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self._init()

    def _init(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        x = x[:, 0] if self.cls_token is not None else x.mean(dim=1)
        return self.head(x)


def config_from_dict(d: dict):
    """A checkpoint's saved shape: a StudentConfig, or an ensemble's (``arch`` "ensemble": an
    ``ensemble_net.EnsembleConfig`` of StudentConfigs)."""
    if d.get("arch") != "ensemble":
        return StudentConfig.from_dict(d)
    from .ensemble_net import EnsembleConfig

    return EnsembleConfig(members=tuple(StudentConfig.from_dict(m) for m in d["members"]),
                          labels=tuple(d.get("labels", ())), mirror=bool(d.get("mirror", False)))


def create_student(name="vit_hybrid_pico", **overrides) -> nn.Module:
    """The one factory: a preset name (or a saved StudentConfig) plus keyword overrides
    (img_size, in_chans, labels, ...), or a saved EnsembleConfig (its members built here too).

    Raises:
        ValueError: unknown preset or inconsistent shape.
    """
    if getattr(name, "arch", None) == "ensemble":  # an ensemble_net.EnsembleConfig
        from .ensemble_net import EnsembleStudent

        return EnsembleStudent(name, [create_student(member) for member in name.members])
    if isinstance(name, StudentConfig):
        base = asdict(name)
    elif name in PRESETS:
        base = PRESETS[name]
    else:
        raise ValueError(f"unknown student {name!r}; presets: {sorted(PRESETS)}")
    cfg = StudentConfig(**{**base, **overrides})
    if cfg.arch == "resnet":
        from .cnn import ResNetStudent

        return ResNetStudent(cfg)
    return ViTStudent(cfg)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on an input of ``input_shape`` (batch included), counted by
    torch's FlopCounterMode: matmuls and convolutions, 2 per multiply-add; norms and softmax
    are not counted. One counter for students, teachers and exported packages."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(input_shape, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())
