"""Synthetic faces, a counting teacher and tiny training settings shared by the distillation tests."""

import numpy as np

from motivnet_edge.datasets.readers import FaceSet
from motivnet_distill.teachers.load import Teacher
from motivnet_distill.train import TrainConfig
from motivnet_edge.labels import MOTIVNET_LABELS
from motivnet_edge.preprocess import Preprocessing


def synthetic(n=64, seed=0):
    """Faces whose class is readable from pixel statistics, so a student can learn something."""
    r = np.random.default_rng(seed)
    hard = r.integers(0, 7, n)
    imgs = [np.clip(r.normal(30 + 30 * h, 20, (48, 48)), 0, 255).astype(np.uint8) for h in hard]
    return FaceSet(imgs, np.eye(7, dtype=np.float32)[hard], hard.astype(np.int64), MOTIVNET_LABELS,
                   [f"s{i}.png" for i in range(n)])


class CountingTeacher(Teacher):
    def __init__(self):
        pp = Preprocessing(input_size=(48, 48))
        super().__init__("count", tuple(reversed(MOTIVNET_LABELS)), pp,
                         lambda x: np.stack([x.mean((1, 2, 3)) * k for k in range(7)], 1))
        self.calls = 0

    def logits(self, images, *, batch=256):
        self.calls += len(images)
        return super().logits(images, batch=batch)


def tiny_cfg(**kw):
    return TrainConfig(student=dict(embed_dim=32, depth=2, num_heads=2, patch_size=8, drop_path=0.0),
                       epochs=1, batch_size=16, views=1, **kw)


def class_folder(root, classes, people, seed):
    import cv2
    r = np.random.default_rng(seed)
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for p in people:
            for i in range(2):
                img = np.clip(r.normal(30 + 30 * k, 20, (48, 48)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(root / cls / f"{p}_{i + 1:04d}.png"), img)
    return root
