"""The ensemble student (``arch`` "ensemble"): its members in one graph, the mean of their probabilities.

With ``mirror`` the graph also reads each face's mirror image and averages those probabilities in:
an expression reads the same in a mirror, so the mean of both views is a test-time ensemble that
costs twice the compute and no weights (the `accurate` model's trade: benchmarks/ensemble_teacher.py
measures it on validation). The runtime's own ``mirror`` option does the same for any package.

Its settings (``EnsembleConfig``, read back by ``model.config_from_dict``) and its members are
built by the one factory, ``model.create_student``; this module imports no other student module.
The output is the log of the mean probability, so softmax, argmax and the prior correction's
logit offsets (``logit_bias``) mean what they mean for any student. Tools that make an ensemble
from runs: ``ensemble``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

#: The smallest probability the log is taken of: an exported graph must never emit -inf.
FLOOR = 1e-6


@dataclass(frozen=True)
class EnsembleConfig:
    """Shape of an ensemble: its members' shapes and its label order; members
    may declare their labels in other orders (each member's output is reordered by name)."""

    members: tuple  # of model.StudentConfig (built by model.config_from_dict)
    labels: tuple[str, ...] = ()
    mirror: bool = False
    arch: str = "ensemble"

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ValueError("an ensemble needs at least two members")
        if not self.labels:
            raise ValueError("an ensemble needs its label order (the first member declares none)")
        for m in self.members:
            missing = set(self.labels) - set(m.labels)
            if missing:
                raise ValueError(f"a member ({m.describe()}) has no output for {sorted(missing)}")

    def describe(self) -> str:
        """The shape in a few words, for a package's description."""
        parts = "; ".join(m.describe() for m in self.members)
        views = " on each face and its mirror image" if self.mirror else ""
        return f"ensemble of {len(self.members)} students ({parts}), the mean of their probabilities{views}"

    def to_dict(self) -> dict:
        return {"arch": self.arch, "labels": list(self.labels), "mirror": self.mirror,
                "members": [m.to_dict() for m in self.members]}


class EnsembleStudent(nn.Module):
    """The members in one module; ``forward`` returns log mean probability (the ensemble's logits)
    plus ``logit_bias``, where an export folds its prior correction (zero until then)."""

    def __init__(self, cfg, members: list[nn.Module]) -> None:
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(members)
        self.register_buffer("logit_bias", torch.zeros(len(cfg.labels)))
        for i, m in enumerate(cfg.members):  # not saved: it follows from the configs
            self.register_buffer(f"order{i}", torch.tensor([m.labels.index(lab) for lab in cfg.labels]),
                                 persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.cfg.mirror:  # both views in one batch: one pass through each member
            x = torch.cat([x, x.flip(-1)])
        probs = torch.stack([F.softmax(member(x), dim=-1).index_select(-1, getattr(self, f"order{i}"))
                             for i, member in enumerate(self.members)]).mean(0)
        if self.cfg.mirror:
            probs = (probs[:n] + probs[n:]) / 2
        return torch.log(probs.clamp_min(FLOOR)) + self.logit_bias
