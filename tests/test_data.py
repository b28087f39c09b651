"""Dataset readers: each format, label remapping, bad rows."""

import cv2
import numpy as np
import pytest

from motivnet_edge.datasets.readers import DataError, read_dataset, read_image_folder, read_unlabelled
from motivnet_edge.datasets.fer import read_fer2013_csv, read_ferplus
from motivnet_edge.errors import LabelError
from motivnet_edge.labels import MOTIVNET_LABELS

from conftest import CKPLUS, FERPLUS


def _ferplus(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, votes in enumerate(rows):
        cv2.imwrite(str(folder / f"f{i}.png"), np.full((48, 48), 10 * i, np.uint8))
        lines.append(f'f{i}.png,"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
    (folder / "label.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_ferplus_soft_labels_majority_and_contempt(tmp_path):
    # columns: neutral happiness surprise sadness anger disgust fear contempt unknown NF
    d = _ferplus(tmp_path / "s", [[0, 8, 2, 0, 0, 0, 0, 0, 0, 0],
                                  [5, 5, 0, 0, 0, 0, 0, 0, 0, 0],    # tie -> no majority
                                  [0, 0, 0, 0, 1, 0, 0, 6, 3, 0],    # contempt majority -> dropped
                                  [0, 0, 0, 0, 0, 0, 0, 0, 10, 0]])  # unknown
    fs = read_ferplus(d)
    assert fs.labels == MOTIVNET_LABELS
    assert fs.soft[0, MOTIVNET_LABELS.index("happiness")] == pytest.approx(0.8)
    assert fs.soft[0, MOTIVNET_LABELS.index("surprise")] == pytest.approx(0.2)
    assert fs.hard.tolist() == [1, -1, -1, -1]
    assert fs.soft[2, MOTIVNET_LABELS.index("anger")] == 1.0  # contempt votes dropped, not moved
    mapped = read_ferplus(d, mapping={"contempt": "disgust"})
    assert mapped.hard[2] == MOTIVNET_LABELS.index("disgust")


def test_ferplus_bad_rows(tmp_path):
    d = _ferplus(tmp_path / "s", [[0, 8, 2, 0, 0, 0, 0, 0, 0, 0]])
    (d / "label.csv").write_text('f0.png,"(0, 0, 48, 48)",1,2\n')
    with pytest.raises(DataError, match="label.csv:1: expected 12 fields"):
        read_ferplus(d)
    (d / "label.csv").write_text('f0.png,"(0, 0, 48, 48)",a,0,0,0,0,0,0,0,0,0\n')
    with pytest.raises(DataError, match="must be numbers"):
        read_ferplus(d)
    (d / "label.csv").write_text('missing.png,"(0, 0, 48, 48)",1,0,0,0,0,0,0,0,0,0\n')
    with pytest.raises(DataError, match="missing.png: no such file"):
        read_ferplus(d)
    with pytest.raises(DataError, match="no label.csv"):
        read_ferplus(tmp_path)
    for votes in ("nan", "inf", "-1"):
        (d / "label.csv").write_text(f'f0.png,"(0, 0, 48, 48)",{votes},8,0,0,0,0,0,0,0,0\n')
        with pytest.raises(DataError, match="finite and >= 0"):
            read_ferplus(d)
    for name in ("/etc/hostname", "../s/f0.png"):
        (d / "label.csv").write_text(f'{name},"(0, 0, 48, 48)",1,8,0,0,0,0,0,0,0,0\n')
        with pytest.raises(DataError, match="not a path inside"):
            read_ferplus(d)


def test_hostile_dataset_files(tmp_path):
    """16-bit images are read as the runtime reads them; bad pixels, empty classes and FIFOs are named."""
    import os

    import cv2

    from motivnet_edge.datasets.readers import read_image_folder
    from motivnet_edge.datasets.fer import read_fer2013_csv

    face = np.random.default_rng(0).integers(0, 256, (48, 48)).astype(np.uint8)
    (tmp_path / "set" / "happy").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "set" / "happy" / "a16.png"), face.astype(np.uint16) * 257)  # 16-bit PNG
    faces = read_image_folder(tmp_path / "set")
    assert faces.images[0].dtype == np.uint8 and np.abs(faces.images[0].astype(int) - face).max() <= 1
    os.mkfifo(tmp_path / "set" / "happy" / "pipe.png")  # would block a reader forever
    assert len(read_image_folder(tmp_path / "set")) == 1
    (tmp_path / "set" / "sad").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        read_image_folder(tmp_path / "set")
    for pixels in ("300", "-1"):
        csv = tmp_path / f"fer{pixels}.csv"
        csv.write_text("emotion,pixels,Usage\n0," + " ".join([pixels] + ["0"] * 2303) + ",Training\n")
        with pytest.raises(DataError, match="0..255"):
            read_fer2013_csv(csv)


def test_fer2013_csv_remaps_by_name(tmp_path):
    px = " ".join(["7"] * 2304)
    p = tmp_path / "fer2013.csv"
    p.write_text(f"emotion,pixels,Usage\n3,{px},Training\n0,{px},PrivateTest\n6,{px},PrivateTest\n")
    fs = read_fer2013_csv(p, usage="PrivateTest")
    assert [fs.labels[i] for i in fs.hard] == ["anger", "neutral"]
    p.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    with pytest.raises(DataError, match="2304 pixels"):
        read_fer2013_csv(p)
    p.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="needs columns"):
        read_fer2013_csv(p)


def test_class_folders_need_explicit_mapping(tmp_path):
    for cls in ("happy", "contempt"):
        (tmp_path / cls).mkdir()
        cv2.imwrite(str(tmp_path / cls / "a.png"), np.zeros((48, 48), np.uint8))
    with pytest.raises(LabelError, match="contempt"):
        read_image_folder(tmp_path)
    fs = read_image_folder(tmp_path, mapping={"contempt": None})
    assert len(fs) == 1 and fs.labels[fs.hard[0]] == "happiness"
    assert len(read_dataset(tmp_path, mapping={"contempt": None})) == 1


def test_fer2013_label_source_keeps_images_and_order(tmp_path):
    d = _ferplus(tmp_path / "Train", [[0, 8, 2, 0, 0, 0, 0, 0, 0, 0], [5, 5, 0, 0, 0, 0, 0, 0, 0, 0],
                                      [0, 0, 0, 0, 9, 0, 0, 0, 1, 0]])
    csv_path = tmp_path / "fer2013_labels.csv"
    csv_path.write_text("split,image,fer2013_label\nTrain,f2.png,angry\nTrain,f0.png,sad\n")
    plus, orig = read_dataset(d), read_dataset(d, label_source="fer2013")
    assert orig.files == plus.files and np.array_equal(orig.images[1], plus.images[1])  # teacher caches still match
    assert orig.hard.tolist() == [MOTIVNET_LABELS.index("sadness"), -1, MOTIVNET_LABELS.index("anger")]
    assert orig.soft[1].sum() == 0 and orig.soft[0].sum() == 1  # unlisted image: teacher loss only
    csv_path.write_text("split,image,fer2013_label\nTrain,other.png,angry\n")
    with pytest.raises(DataError, match="lists none of the 3 images"):
        read_dataset(d, label_source="fer2013")
    csv_path.unlink()
    with pytest.raises(DataError, match="fer2013_labels.csv .*not found|not found"):
        read_dataset(d, label_source="fer2013")
    with pytest.raises(DataError, match="applies to FER\\+ split folders"):
        read_dataset(tmp_path, label_source="fer2013")
    with pytest.raises(DataError, match="use one of ferplus, fer2013"):
        read_dataset(d, label_source="affectnet")


def test_unlabelled_folder(tmp_path):
    cv2.imwrite(str(tmp_path / "x.jpg"), np.zeros((30, 30, 3), np.uint8))
    fs = read_unlabelled(tmp_path)
    assert len(fs) == 1 and fs.hard[0] == -1 and fs.soft.sum() == 0
    with pytest.raises(DataError, match="not a dataset"):
        read_dataset(tmp_path / "nope")


def test_real_ferplus_and_ckplus():
    if not FERPLUS.is_dir() or not CKPLUS.is_dir():
        pytest.skip("../shared data is absent")
    fs = read_ferplus(FERPLUS / "FER2013Test", limit=300)
    assert len(fs) == 300 and fs.images[0].shape == (48, 48)
    ck = read_image_folder(CKPLUS, mapping={"contempt": None})
    assert len(ck) == 927 and "contempt" not in {ck.labels[i] for i in ck.hard}


def test_map_applies_to_the_training_and_selection_sets_too(tmp_path):
    """--map is one mapping for --data, --val and --extra-data: the error never asks for the flag just given."""
    import cv2

    from motivnet_edge.datasets.readers import read_dataset

    for split in ("train", "val"):
        for cls in ("happy", "contempt"):
            (tmp_path / split / cls).mkdir(parents=True)
            cv2.imwrite(str(tmp_path / split / cls / "a.png"), np.zeros((48, 48), np.uint8))
    with pytest.raises(LabelError, match="contempt"):
        read_dataset(tmp_path / "train")
    faces = read_dataset(tmp_path / "train", mapping={"contempt": None})
    assert len(faces) == 1 and faces.labels[faces.hard[0]] == "happiness"


@pytest.mark.slow
def test_distill_map_reaches_data_and_val(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("torch", reason="distill needs the distill extra")
    for split in ("train", "val"):
        for i, cls in enumerate(("happy", "sad", "contempt")):
            (tmp_path / split / cls).mkdir(parents=True)
            for j in range(4):
                cv2.imwrite(str(tmp_path / split / cls / f"{j}.png"), np.full((48, 48), 60 * i + j, np.uint8))
    cmd = [sys.executable, "-m", "motivnet_edge.cli", "distill", "--data", str(tmp_path / "train"), "--val",
           str(tmp_path / "val"), "--out", str(tmp_path / "run"), "--student", "vit_hybrid_femto", "--epochs", "1",
           "--views", "1", "--batch-size", "4"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--map contempt=none" in r.stderr
    r = subprocess.run(cmd + ["--map", "contempt=none"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-1500:]
    assert (tmp_path / "run" / "best.pt").is_file()
