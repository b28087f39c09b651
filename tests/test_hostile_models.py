"""Crafted model files: a teacher's weights come from its own file, never from another one."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch", reason="teachers need the distill extra")
h5py = pytest.importorskip("h5py", reason="Keras HDF5 teachers need h5py (distill extra)")

from motivnet_distill.teachers.keras_graph import KerasFormatError  # noqa: E402
from motivnet_distill.teachers.load import load_teacher  # noqa: E402

SECRET = b"root:x:0:0:SECRET-PAYLOAD-1234567890:/root:/bin/sh\n"


def _config() -> str:
    return json.dumps({"class_name": "Model", "config": {"layers": [
        {"name": "dense", "class_name": "Dense", "config": {"batch_input_shape": [None, 4], "activation": "linear"},
         "inbound_nodes": []}], "output_layers": [["dense", 0, 0]]}})


def _keras(path, fill) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = _config()
        fill(f)


@pytest.fixture()
def secret(tmp_path):
    p = tmp_path / "secret.txt"
    p.write_bytes(SECRET)
    return p


def test_external_storage_is_refused(tmp_path, secret):
    path = tmp_path / "ext.h5"
    _keras(path, lambda f: f.create_group("model_weights/dense/dense").create_dataset(
        "kernel:0", shape=(len(SECRET),), dtype="u1", external=[(str(secret), 0, len(SECRET))]))
    with pytest.raises(KerasFormatError, match="external storage"):
        load_teacher(path)


def test_virtual_dataset_is_refused(tmp_path, secret):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("data", data=np.frombuffer(SECRET, np.uint8))
    path = tmp_path / "vds.h5"

    def fill(f):
        layout = h5py.VirtualLayout(shape=(len(SECRET),), dtype="u1")
        layout[:] = h5py.VirtualSource(str(other), "data", shape=(len(SECRET),))
        f.create_group("model_weights/dense/dense").create_virtual_dataset("kernel:0", layout)
    _keras(path, fill)
    with pytest.raises(KerasFormatError, match="virtual dataset"):
        load_teacher(path)


@pytest.mark.parametrize("where", ["model_weights", "model_weights/dense", "model_weights/dense/dense/kernel:0"])
def test_external_links_are_refused(tmp_path, where):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("data", data=np.frombuffer(SECRET, np.uint8))
        f.create_group("g/dense/dense").create_dataset("kernel:0", data=np.frombuffer(SECRET, np.uint8))
    path = tmp_path / "link.h5"

    def fill(f):
        parent, name = where.rsplit("/", 1) if "/" in where else ("/", where)
        group = f.require_group(parent)
        group[name] = h5py.ExternalLink(str(other), "/data" if where.endswith("0") else "/g")
    _keras(path, fill)
    with pytest.raises(KerasFormatError, match="link to another file"):
        load_teacher(path)


def test_soft_link_loop_is_refused(tmp_path):
    path = tmp_path / "loop.h5"

    def fill(f):
        g = f.create_group("model_weights/dense")
        g["dense"] = h5py.SoftLink("/model_weights")
    _keras(path, fill)
    with pytest.raises(KerasFormatError, match="link to another object"):
        load_teacher(path)


@pytest.mark.parametrize("config", ['{"class_name": "Model"}', '{"class_name": "Model", "config": {"layers": [{}]}}',
                                    "[" * 100000 + "]" * 100000])
def test_malformed_config_is_one_error(tmp_path, config):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = config
    with pytest.raises(Exception) as info:
        load_teacher(path)
    assert isinstance(info.value, KerasFormatError) or "not" in str(info.value), repr(info.value)
    assert "Traceback" not in str(info.value)


@pytest.mark.slow
def test_export_cli_never_ships_another_files_bytes(tmp_path, secret):
    path = tmp_path / "ext.h5"
    _keras(path, lambda f: f.create_group("model_weights/dense/dense").create_dataset(
        "kernel:0", shape=(len(SECRET),), dtype="u1", external=[(str(secret), 0, len(SECRET))]))
    r = subprocess.run([sys.executable, "-m", "motivnet_edge.cli", "export", str(path), "--out", str(tmp_path / "pkg"),
                        "--formats", "onnx"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "external storage" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "pkg").exists()
    assert not any(SECRET[:20] in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p != secret)
