"""``DistillOptions``: what one distillation run is made of, checked before any face is read.

The CLI fills it from its flags; Python callers build it directly:

    from motivnet_distill.distill_options import DistillOptions
    from motivnet_distill.pipeline import distill
    distill(DistillOptions(out="runs/x", domains="../shared", teachers=("model.onnx",), epochs=40))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from motivnet_edge.errors import MotivnetError
from motivnet_edge.labels import MOTIVNET_LABELS
from motivnet_edge.preprocess import Preprocessing

from .students.model import PRESETS

#: A cached teacher runs once per view of every image before training starts.
MAX_CACHED_VIEWS = 64
#: The students' input: 48x48 gray, the resolution of FER-style face crops.
STUDENT_PREPROCESSING = Preprocessing(input_size=(48, 48), color="gray", mean=(127.5,), std=(64.0,))


@dataclass(frozen=True)
class DistillOptions:
    """One run: its data, teachers, student and schedule.

    Attributes:
        out: run folder (config.json, best.pt, last.pt, log.jsonl, commands.txt).
        data: one training set (FER+ split folder, FER2013 CSV, class folders, unlabelled folder).
        domains: instead of ``data``, the shared/ folder: every domain's train part (whole and
            YuNet-aligned crops, drawn by ``mix``), selected on the mean of their validation parts.
        pack: instead of either, a training pack (``motivnet-edge pack``): the same mix from one file.
        mix: the ``MixRecipe`` for ``domains`` or ``pack`` (default: ``MixRecipe()``).
        yunet: the YuNet model that aligns ``domains`` faces (default: shared/models/yunet).
        val: selection set for ``data`` (default: a FER+ "FER2013Valid" beside a "FER2013Train").
        teachers: teacher files; several are averaged as an ensemble. None: labels only.
        domain_teachers: with ``domains``, a domain's train rows learn from these files instead,
            e.g. {"ferplus": [a FER+ specialist]}. Cached only.
        student: a preset name of ``students.model.PRESETS``.
        init: a timm/DeiT checkpoint or a run's best.pt to start the student from.
        epochs: the schedule's length; ``stop_after`` ends this sitting sooner (``resume`` goes on).
        views: seeded augmented views per image, each cached once per teacher.
        kd_weight: weight of the distillation term (None: 1 with a teacher, else 0).
        label_weight, temperature: the label term's weight and the KD temperature.
        cache_dir: where teacher outputs and aligned crops are cached (default: ``out``/cache).
        label_source: which labels of a FER+ split train and select: "ferplus" votes or "fer2013".
        extra_data: more labelled sets; only the train part of each one's by-person split is used.
        mapping: explicit renames/drops (None) of dataset classes, e.g. {"contempt": None}.
        trust_code: admit TorchScript / torch.export teachers (loading them runs code from the file).
        mirror_teacher: a view's target is the teacher's mean reading of it and of its mirror image.
        online_teacher: the teacher reads every batch as the student sees it (no cache).
        mixup: Beta(mixup, mixup) mixing of face pairs and their labels (0: off; needs
            ``online_teacher`` when there is a teacher).
        train: ``TrainConfig`` fields to override (batch_size, lr, threads, degrade_prob, ...).
        command: the command line that started this, recorded in commands.txt.
    """

    out: str | Path
    data: str | Path | None = None
    domains: str | Path | None = None
    pack: str | Path | None = None
    mix: object | None = None
    yunet: str | Path | None = None
    val: str | Path | None = None
    teachers: Sequence[str | Path] = ()
    domain_teachers: Mapping[str, Sequence[str | Path]] | None = None
    student: str = "vit_hybrid_pico"
    init: str | Path | None = None
    epochs: int = 10
    stop_after: int | None = None
    resume: bool = False
    views: int = 8
    kd_weight: float | None = None
    label_weight: float = 1.0
    temperature: float = 2.0
    cache_dir: str | Path | None = None
    preprocessing: Preprocessing = STUDENT_PREPROCESSING
    labels: Sequence[str] = MOTIVNET_LABELS
    label_source: str = "ferplus"
    extra_data: Sequence[str | Path] = ()
    mapping: Mapping[str, str | None] | None = None
    trust_code: bool = False
    mirror_teacher: bool = False
    online_teacher: bool = False
    mixup: float = 0.0
    progress: bool = True
    train: Mapping[str, object] = field(default_factory=dict)
    command: str | None = None

    def check(self) -> None:
        """Refuses combinations that cannot train, before anything is read.

        Raises:
            MotivnetError: the message names the option to change.
        """
        from dataclasses import fields

        from .targets import check_domain_teachers
        from .train_config import TrainConfig

        unknown = sorted(set(self.train) - {f.name for f in fields(TrainConfig)})
        if unknown:
            raise MotivnetError(f"unknown training settings {', '.join(unknown)}; TrainConfig has "
                                f"{', '.join(f.name for f in fields(TrainConfig))}")
        if self.student not in PRESETS:
            raise MotivnetError(f"unknown student {self.student!r}; presets: {', '.join(sorted(PRESETS))}")
        if self.mirror_teacher and not self.teachers:
            raise MotivnetError("--mirror-teacher averages a teacher's readings of a face and its mirror: "
                                "add --teacher FILE")
        if self.online_teacher and not self.teachers:
            raise MotivnetError("--online-teacher runs a teacher on every training batch: add --teacher FILE")
        if self.teachers and not self.online_teacher and self.views > MAX_CACHED_VIEWS:
            raise MotivnetError(f"--views {self.views} would cache the teacher's outputs for {self.views} views of "
                                f"every image: use at most {MAX_CACHED_VIEWS}, or add --online-teacher (no cache)")
        if self.mixup and self.teachers and not self.online_teacher:
            raise MotivnetError("--mixup makes new faces that cached teacher outputs never saw: add --online-teacher "
                                "so the teacher reads the mixed faces")
        if sum(x is not None for x in (self.data, self.domains, self.pack)) != 1:
            raise MotivnetError("pass one of --data (one training set), --domains SHARED (every domain of shared/) "
                                "or --pack FILE (those domains, packed by motivnet-edge pack)")
        if self.domain_teachers:
            check_domain_teachers(self.domain_teachers, self.teachers, self.domains or self.pack,
                                  self.online_teacher)
        if (self.domains is not None or self.pack is not None) and (self.val is not None or self.extra_data):
            raise MotivnetError("--domains and --pack select on the domains' validation parts and train on their "
                                "train parts: drop --val and --extra-data")

    @property
    def cache(self) -> Path:
        """The cache folder this run reads and fills."""
        return Path(self.cache_dir or Path(self.out) / "cache")
