"""A residual convolutional student: ResNet-18's basic blocks, sized for 48-96 px faces.

Why a convolutional net beside the ViTs: from tens of thousands of faces and a few CPU-hours,
BatchNorm'd 3x3 convolutions learn faster per FLOP than attention, which has to learn its
locality from data (the FER literature's VGG/ResNet baselines reach their accuracy in tens of
epochs). Unlike ImageNet's ResNet there is no 7x7 stride-2 stem and no max-pool: a 48 px face
would be 12 px after them. The stem keeps the input resolution (``stem_stride`` 1) or halves
it (2), each later stage halves it again.

Every op exports to plain ONNX (Conv, BatchNormalization folded by the runtimes, Relu, Add,
ReduceMean, Gemm) that ONNX Runtime, OpenVINO and NNCF's INT8 handle as any CNN.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _conv_bn(cin: int, cout: int, stride: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut (a 1x1 conv where the shape changes), as in ResNet-18."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, stride)
        self.conv2 = _conv_bn(cout, cout, 1)
        self.shortcut = _conv_bn(cin, cout, stride, kernel=1) if stride != 1 or cin != cout else nn.Identity()
        # The residual branch starts at zero (its last BatchNorm's scale), so a deep net begins
        # as a shallow one and trains from the first step (Goyal et al. 2017).
        nn.init.zeros_(self.conv2[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.shortcut(x) + self.conv2(torch.relu(self.conv1(x))))


class ResNetStudent(nn.Module):
    """Stem, stages of basic blocks (each after the first halves the resolution), mean pool, head."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        widths, blocks = cfg.widths, cfg.stage_blocks
        self.stem = nn.Sequential(*_conv_bn(cfg.in_chans, widths[0], cfg.stem_stride), nn.ReLU())
        stages, cin = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            layers = [BasicBlock(cin if j == 0 else width, width, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*layers))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.drop = nn.Dropout(cfg.drop_path)  # the ViTs' drop_path rate, spent here on the pooled features
        self.head = nn.Linear(widths[-1], cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(self.drop(x.mean(dim=(2, 3))))
