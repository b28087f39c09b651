"""The teachers a student learns from, and how their outputs are cached.

  load         Teacher, load_teacher (MotivNet/Sapiens checkpoints, Keras HDF5, ONNX), ensembles, mirroring
  motivnet     the MotivNet architecture (Sapiens ViT + ML-Decoder) in torch
  checkpoints  reading MotivNet/Sapiens checkpoint files without unpickling code
  keras_graph  a Keras HDF5 classifier rebuilt in torch from its file
  head         training a MotivNet head on a frozen Sapiens backbone (``train-head``)
  cache        a teacher's outputs per seeded view, cached once per teacher
"""

from .load import EnsembleTeacher, MirroredTeacher, Teacher, TeacherError, load_teacher

__all__ = ["EnsembleTeacher", "MirroredTeacher", "Teacher", "TeacherError", "load_teacher"]
