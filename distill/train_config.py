"""The settings of a training run (saved as the run folder's config.json), and the rule for
which of them a ``--resume`` must share with the run it continues."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from motivnet_edge.errors import MotivnetError

from .students.model import StudentConfig


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
    degrade_prob: float = 0.0       # student only: a face made smaller, blurred or JPEG-compressed (views.degrade)
    seed: int = 0
    threads: int = 0                # 0: torch's default
    samples_per_epoch: int = 0      # with sample weights: draws per epoch (0: one per training row)
    online_teacher: bool = False    # the teacher reads each batch as the student sees it (no cache)
    mixup: float = 0.0              # Beta(mixup, mixup) weights for pairs of faces (0: off)

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> TrainConfigError:
            return TrainConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r} is invalid: it must be {rule}")

        finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
        if not finite(self.temperature) or self.temperature <= 0:
            raise bad("temperature", "a finite number > 0")
        for name in ("lr", "kd_weight", "label_weight", "weight_decay", "warmup_epochs", "grad_clip"):
            if not finite(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "a finite number >= 0")
        if not finite(self.mixup) or self.mixup < 0:
            raise bad("mixup", "a finite number >= 0 (0: off)")
        for name in ("label_smoothing", "erase_prob", "degrade_prob", "ema_decay"):
            if not finite(getattr(self, name)) or not 0 <= getattr(self, name) < 1:
                raise bad(name, "in [0, 1)")
        if not isinstance(self.samples_per_epoch, int) or self.samples_per_epoch < 0:
            raise bad("samples_per_epoch", "an integer >= 0")
        for name in ("epochs", "batch_size", "views"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        if self.kd_weight == 0 and self.label_weight == 0:
            raise TrainConfigError("--kd-weight and --label-weight are both 0: nothing to learn from")


#: Settings a resumed run must share with the run it continues (others, e.g. epochs, may change).
RESUME_MUST_MATCH = ("batch_size", "views", "seed", "kd_weight", "label_weight", "temperature", "samples_per_epoch",
                     "online_teacher", "mixup", "degrade_prob")


def check_run_folder(run: Path, cfg: TrainConfig, scfg: StudentConfig, resume: bool,
                     teacher: str | None = None, mix: dict | None = None) -> None:
    """A fresh run never writes into an old one; a resumed run continues the same recipe.

    ``teacher``: the identity of the teacher now (``Teacher.name``, with its file hash and any
    ``mirror(...)``); a resume must use the teacher the run recorded, when both have one.
    ``mix``: the domain mix now (``MixRecipe.to_dict()``); a resume must draw the same mix.
    """
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
    try:  # through the dataclass, so a field older runs did not record reads as its default
        old_student = {k: v for k, v in json.loads(StudentConfig.from_dict(saved.get("student", {})).to_json()).items()
                       if k != "labels"}
    except (TypeError, ValueError):  # a field this code does not know, or a shape it refuses
        old_student = {k: v for k, v in saved.get("student", {}).items() if k != "labels"}
    new_student = {k: v for k, v in json.loads(scfg.to_json()).items() if k != "labels"}
    if old_student != new_student:
        diffs.append("student shape differs (a different --student)")
    was_teacher = saved.get("provenance", {}).get("teacher")
    if teacher and was_teacher and teacher != was_teacher:
        diffs.append(f"teacher: run {was_teacher!r}, now {teacher!r} (another --teacher file or --mirror-teacher)")
    was_mix = saved.get("provenance", {}).get("domains", {}).get("mix")
    if mix and was_mix and mix != was_mix:
        changed = sorted(k for k in set(mix) | set(was_mix) if mix.get(k) != was_mix.get(k))
        diffs.append(f"domain mix: {', '.join(f'{k} run {was_mix.get(k)!r}, now {mix.get(k)!r}' for k in changed)} "
                     "(--without, --no-balance, --class-power, --domain-class-power, --domain-scale)")
    if diffs:
        raise TrainConfigError(f"--resume would continue {run} with other settings ({'; '.join(diffs)}); "
                               "use the run's own options or a new --out")
