"""Training packs: round trip, damaged files refused with the fix, training from a pack."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="distillation needs the distill extra")

from motivnet_edge.datasets.readers import FaceSet  # noqa: E402
from motivnet_edge.labels import MOTIVNET_LABELS  # noqa: E402

from distill_helpers import synthetic  # noqa: E402


def _write_synthetic_pack(path, size=56):
    from motivnet_distill.pack import save_pack

    a, b = synthetic(40), synthetic(24, seed=3)
    big = FaceSet([np.kron(im, np.ones((2, 2), np.uint8)) for im in b.images], b.soft, b.hard, b.labels, b.files)
    from motivnet_edge.datasets.readers import concat

    train = concat([a, big])
    report = {"ferplus": {"faces": 40, "rows": 40, "detector_misses": None},
              "affectnet96": {"faces": 24, "rows": 24, "detector_misses": 0}}
    val = {"ferplus": synthetic(16, seed=1), "affectnet96": synthetic(12, seed=2)}
    from motivnet_distill.distill_options import STUDENT_PREPROCESSING

    save_pack(path, train, val, report=report, recipe={}, preprocessing=STUDENT_PREPROCESSING, size=size)
    return train, val


def test_a_pack_round_trips_rows_labels_and_domains(tmp_path):
    from motivnet_distill.pack import read_pack

    train, val = _write_synthetic_pack(tmp_path / "p.npz")
    got, got_val, manifest = read_pack(tmp_path / "p.npz")
    assert len(got) == 64 and got.files == train.files and np.allclose(got.soft, train.soft, atol=1e-3)
    assert np.array_equal(got.hard, train.hard) and got.labels == tuple(MOTIVNET_LABELS)
    assert got.images[0].shape == (48, 48) and got.images[50].shape == (56, 56)  # 96 px rows capped at 56
    # Lossy, but the same picture: WebP at quality 75 stays close to the stored pixels.
    assert np.abs(got.images[0].astype(int) - train.images[0].astype(int)).mean() < 12
    assert {k: len(v) for k, v in got_val.items()} == {"ferplus": 16, "affectnet96": 12}
    assert list(manifest["sources"]) == ["ferplus", "affectnet96"] and manifest["encoding"]["max_side"] == 56


@pytest.mark.parametrize("damage, message", [
    ("missing", "does not exist"), ("text", "is not a training pack"), ("pickle", "is not a training pack"),
    ("version", "pack version 99"), ("offsets", "disagree"), ("rows", "counts 99 train rows"),
])
def test_a_bad_pack_is_one_error_naming_the_fix(tmp_path, damage, message):
    from motivnet_distill.pack import PackError, read_pack

    p = tmp_path / "p.npz"
    _write_synthetic_pack(p)
    if damage == "missing":
        p.unlink()
    elif damage == "text":
        p.write_text("not a pack")
    elif damage == "pickle":
        with open(p, "wb") as f:
            np.save(f, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    else:
        z = dict(np.load(p))
        m = json.loads(bytes(z["manifest"]))
        if damage == "version":
            m["version"] = 99
        elif damage == "rows":
            m["sources"]["ferplus"]["rows"] = 75
        else:
            z["train.offsets"] = z["train.offsets"][::-1].copy()
        z["manifest"] = np.frombuffer(json.dumps(m).encode(), np.uint8)
        with open(p, "wb") as f:
            np.savez(f, **z)
    with pytest.raises(PackError, match=message):
        read_pack(p)


def test_distill_trains_from_a_pack_with_its_domains_and_selection_sets(tmp_path):
    from motivnet_distill.distill_options import DistillOptions
    from motivnet_distill.pipeline import distill

    _write_synthetic_pack(tmp_path / "p.npz")
    best = distill(DistillOptions(pack=tmp_path / "p.npz", out=tmp_path / "run", student="vit_hybrid_femto",
                                  epochs=1, views=2, progress=False,
                                  train={"samples_per_epoch": 48, "batch_size": 16, "degrade_prob": 0.3}))
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    prov = cfg["provenance"]["domains"]
    assert prov["pack"]["encoding"]["codec"] == "webp" and prov["selection"] == {"ferplus": 16, "affectnet96": 12}
    log = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert {"val_acc_ferplus", "val_acc_affectnet96"} <= set(log) and "val_acc" in best
    with pytest.raises(Exception, match="pass one of --data"):
        distill(DistillOptions(pack=tmp_path / "p.npz", domains=tmp_path, out=tmp_path / "run2", progress=False))
