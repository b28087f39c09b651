"""Teacher outputs computed once per image and view, stored as float16, reused by every epoch.

The cache file is keyed by the teacher's identity (file hash), the dataset (file names),
the label order, the number of views and the view seed; a different teacher or dataset
never reads another's cache. Building is batched and resumable: rows are written into a
memory-mapped ``.partial`` file and a progress counter, so a killed build continues where
it stopped. Stored values are log-probabilities in the student's label order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from motivnet_edge.atomic import write_json

from motivnet_edge.datasets.readers import FaceSet
from .load import Teacher
from ..views import view_image

log = logging.getLogger(__name__)


def teacher_logprobs(teacher: Teacher, images, labels) -> np.ndarray:
    """The teacher's target for face images: log-probabilities in ``labels`` order, renormalised
    over the classes both share and floored at 1e-6 (float32, (N, K)). The cache stores these;
    an online teacher (``TrainConfig.online_teacher``) computes them per batch."""
    p = teacher.probs(images, labels=labels)
    p /= np.maximum(p.sum(1, keepdims=True), 1e-8)  # classes the target lacks were dropped
    return np.log(np.clip(p, 1e-6, 1.0)).astype(np.float32)


def cache_key(teacher: Teacher, faces: FaceSet, labels, views: int, seed: int, index_offset: int = 0) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([teacher.name, list(labels), views, seed, teacher.preprocessing.to_dict(),
                         len(faces)] + ([index_offset] if index_offset else [])).encode())
    for f in faces.files:
        h.update(f.encode())
    return h.hexdigest()[:20]


def build_cache(teacher: Teacher, faces: FaceSet, cache_dir: str | Path, *, labels, views: int = 4,
                seed: int = 0, batch: int = 512, progress: bool = True, index_offset: int = 0) -> np.ndarray:
    """Returns (N, views, K) float16 teacher log-probabilities, computing only what is missing.

    ``index_offset``: where ``faces`` start in the training set the student reads, when they are a
    slice of it (one domain's rows, ``distill(domain_teachers=...)``): view ``v`` of face ``i`` is then
    the student's view ``v`` of row ``index_offset + i``, the same pixels.
    """
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(teacher, faces, labels, views, seed, index_offset)
    final = cache_dir / f"teacher-{key}.npy"
    if final.is_file():
        log.info("teacher cache hit: %s", final.name)
        return np.load(final, mmap_mode="r")
    partial, state = cache_dir / f"teacher-{key}.partial", cache_dir / f"teacher-{key}.json"
    n, k = len(faces), len(labels)
    done = json.loads(state.read_text())["done"] if state.is_file() and partial.is_file() else 0
    mode = "r+" if done else "w+"
    arr = np.lib.format.open_memmap(partial, mode=mode, dtype=np.float16, shape=(n * views, k))
    total = n * views
    bar = tqdm(total=total, initial=done, desc="teacher cache", disable=not progress, unit="view")
    t0 = time.time()
    for start in range(done, total, batch):
        rows = range(start, min(total, start + batch))
        imgs = [view_image(faces.images[r // views], seed, index_offset + r // views, r % views) for r in rows]
        arr[rows.start:rows.stop] = teacher_logprobs(teacher, imgs, labels).astype(np.float16)
        arr.flush()
        write_json(state, {"done": rows.stop, "teacher": teacher.name, "views": views}, indent=None)
        bar.update(len(rows))
    bar.close()
    del arr
    os.replace(partial, final)
    state.unlink(missing_ok=True)
    (cache_dir / f"teacher-{key}.meta.json").write_text(json.dumps(
        {"teacher": teacher.name, "labels": list(labels), "views": views, "seed": seed, "images": n,
         "index_offset": index_offset,
         "seconds": round(time.time() - t0, 1), "views_computed": total - done}))
    return np.load(final, mmap_mode="r")


def load_cached(arr: np.ndarray, n: int, views: int) -> np.ndarray:
    """The flat (N*views, K) cache as (N, views, K) float32."""
    return np.asarray(arr, dtype=np.float32).reshape(n, views, -1)
