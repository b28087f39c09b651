"""The students: one settings dataclass and one factory (``model``), their architectures
(``model``: the ViTs; ``cnn``: the resnets), and what is done with their weights.

  model         StudentConfig, PRESETS, create_student, count_flops; the ViT student
  cnn           the residual conv-net student (arch "resnet")
  init_weights  starting a student from timm/DeiT files or a shallower run
  io            a student checkpoint: save, read, load, lineage
  from_package  a model package's student rebuilt as a checkpoint, to train on from it
  soup          a weight mean of runs of one shape (``python -m motivnet_distill.students.soup``)
  ensemble_net  the ensemble student (arch "ensemble", EnsembleConfig): its members' mean probability
  ensemble      finished runs of any shape as one ensemble run folder
                (``python -m motivnet_distill.students.ensemble``)
"""

from .model import ARCHS, PRESETS, STEM_ACTS, STEMS, StudentConfig, ViTStudent, count_flops, create_student

__all__ = ["ARCHS", "PRESETS", "STEMS", "STEM_ACTS", "StudentConfig", "ViTStudent", "count_flops", "create_student"]
