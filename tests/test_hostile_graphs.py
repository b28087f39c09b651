"""Issue 42 (2, 7, 8): a package's graph cannot allocate without bound, and misused API arguments
are MotivnetErrors, never a TypeError, a crash or gigabytes of memory.

The crafted graphs are tiny files (a few hundred bytes) that pass sha256 verification: only what
they would do when run makes them hostile.
"""

import hashlib
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from motivnet_edge import EmotionRecognizer
from motivnet_edge.errors import InvalidImageError, MotivnetError, OptionError, PackageError
from motivnet_edge.labels import MOTIVNET_LABELS
from motivnet_edge.package import load_package
from motivnet_edge.preprocess import Preprocessing

onnx = pytest.importorskip("onnx", reason="crafting graphs needs onnx (export extra)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

_IN = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 48, 48])
_OUT = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 7])


def _model(nodes, inits=(), opset=17) -> bytes:
    """A graph that declares the package's labels, as an exported model does: only its graph is hostile."""
    g = helper.make_graph(nodes, "g", [_IN], [_OUT], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    helper.set_model_props(m, {"labels": json.dumps(list(MOTIVNET_LABELS))})
    return m.SerializeToString()


def _to_logits(src: str) -> list:
    """Nodes that reduce ``src`` to a scalar and add it to seven zeros: a (1, 7) 'logits' output."""
    return [helper.make_node("ReduceMean", [src], ["mean"], keepdims=0),
            helper.make_node("Add", ["zeros", "mean"], ["logits"])]


_ZEROS = numpy_helper.from_array(np.zeros((1, 7), np.float32), "zeros")


def constant_of_shape() -> bytes:
    """Folds to a 3.6 GB tensor (30000 x 30000 float32) from an 16-byte shape."""
    shape = numpy_helper.from_array(np.array([30000, 30000], np.int64), "shape")
    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    return _model([helper.make_node("ConstantOfShape", ["shape"], ["big"], value=value), *_to_logits("big")],
                  [shape, _ZEROS])


def if_branch() -> bytes:
    """An If whose taken branch makes the 3.6 GB tensor."""
    shape = numpy_helper.from_array(np.array([30000, 30000], np.int64), "shape")
    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    out = helper.make_tensor_value_info("b", TensorProto.FLOAT, None)
    branch = helper.make_graph([helper.make_node("ConstantOfShape", ["shape"], ["b"], value=value)], "br", [], [out])
    cond = numpy_helper.from_array(np.array(True), "cond")
    return _model([helper.make_node("If", ["cond"], ["big"], then_branch=branch, else_branch=branch),
                   *_to_logits("big")], [shape, cond, _ZEROS])


def loop() -> bytes:
    """A Loop of 4000 rounds, each concatenating another megabyte."""
    trip = numpy_helper.from_array(np.array(4000, np.int64), "trip")
    cond = numpy_helper.from_array(np.array(True), "cond")
    mb = numpy_helper.from_array(np.zeros(1, np.float32), "seed")
    body_in = [helper.make_tensor_value_info("i", TensorProto.INT64, []),
               helper.make_tensor_value_info("c", TensorProto.BOOL, []),
               helper.make_tensor_value_info("acc", TensorProto.FLOAT, None)]
    body_out = [helper.make_tensor_value_info("c2", TensorProto.BOOL, []),
                helper.make_tensor_value_info("acc2", TensorProto.FLOAT, None)]
    grow = numpy_helper.from_array(np.array([262144], np.int64), "grow")
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c2"]),
                              helper.make_node("ConstantOfShape", ["grow"], ["mb"]),
                              helper.make_node("Concat", ["acc", "mb"], ["acc2"], axis=0)], "body", body_in, body_out,
                             [grow])
    return _model([helper.make_node("Loop", ["trip", "cond", "seed"], ["big"], body=body), *_to_logits("big")],
                  [trip, cond, mb, _ZEROS])


def broadcast() -> bytes:
    """Only ordinary operators: the face's 2304 pixels as a column plus themselves as a row, twice:
    2304^2 values, then (2304^2)^2 = 2.8e13 (112 TB)."""
    col = numpy_helper.from_array(np.array([-1, 1], np.int64), "col")
    row = numpy_helper.from_array(np.array([1, -1], np.int64), "row")
    nodes, cur = [], "input"
    for i in range(2):
        nodes += [helper.make_node("Reshape", [cur, "col"], [f"c{i}"]), helper.make_node("Reshape", [cur, "row"], [f"r{i}"]),
                  helper.make_node("Add", [f"c{i}", f"r{i}"], [f"s{i}"])]
        cur = f"s{i}"
    return _model([*nodes, *_to_logits(cur)], [col, row, _ZEROS])


def _package(root, tiny_package, data: bytes, *, openvino_ir=None):
    """The tiny package with its ONNX model replaced by ``data`` (sha256 updated: it verifies)."""
    shutil.copytree(tiny_package, root)
    (root / "model.onnx").write_bytes(data)
    m = json.loads((root / "manifest.json").read_text())
    m["files"] = [f for f in m["files"] if f["backend"] == "onnxruntime"]
    m["files"][0]["sha256"] = hashlib.sha256(data).hexdigest()
    if openvino_ir is not None:
        xml, binary = openvino_ir
        (root / "openvino" / "model.xml").write_bytes(xml)
        (root / "openvino" / "model.bin").write_bytes(binary)
        m["files"] = [{"backend": "openvino", "precision": "fp32", "path": "openvino/model.xml",
                       "sha256": hashlib.sha256(xml).hexdigest(), "input_name": "input", "output_name": "logits",
                       "extra_files": {"openvino/model.bin": hashlib.sha256(binary).hexdigest()}}]
    (root / "manifest.json").write_text(json.dumps(m))
    return root


GRAPHS = {"constant_of_shape": constant_of_shape, "if_branch": if_branch, "loop": loop, "broadcast": broadcast}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_a_graph_that_allocates_without_bound_is_refused_at_load(tmp_path, tiny_package, name):
    pkg = _package(tmp_path / "pkg", tiny_package, GRAPHS[name]())
    load_package(pkg)  # its files verify: the bytes are what the manifest says
    with pytest.raises(PackageError, match="operators a face model|fails on one face at load"):
        EmotionRecognizer.from_pretrained(pkg, detector="none", backend="onnxruntime")


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_cli_answers_a_hostile_graph_in_one_line_under_1_gb(tmp_path, tiny_package, astronaut_path, name):
    pkg = _package(tmp_path / "pkg", tiny_package, GRAPHS[name]())
    from conftest import PEAK_CLI, peak_mb

    r = subprocess.run([sys.executable, "-c", PEAK_CLI, "predict", astronaut_path, "--model", str(pkg),
                        "--backend", "onnxruntime"], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("PEAK_MB")]
    peak = peak_mb(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert peak < 1024, f"{peak} MB"


def test_an_openvino_ir_that_broadcasts_to_terabytes_is_refused(tmp_path, tiny_package):
    ov = pytest.importorskip("openvino", reason="the OpenVINO backend is optional")
    src = tmp_path / "b.onnx"
    src.write_bytes(broadcast())
    ov.save_model(ov.convert_model(str(src)), str(tmp_path / "b.xml"), compress_to_fp16=False)
    pkg = _package(tmp_path / "pkg", tiny_package, (tiny_package / "model.onnx").read_bytes(),
                   openvino_ir=((tmp_path / "b.xml").read_bytes(), (tmp_path / "b.bin").read_bytes()))
    with pytest.raises(PackageError, match="values for one face"):
        EmotionRecognizer.from_pretrained(pkg, detector="none", backend="openvino")


def test_a_large_batch_runs_in_bounded_pieces(tiny_package):
    """10,000 crops in one call: classified in pieces, the same answers as one at a time."""
    crops = np.random.default_rng(0).integers(0, 256, (1000, 48, 48), dtype=np.uint8)
    with EmotionRecognizer.from_pretrained(tiny_package, detector="none", threads=1) as rec:
        whole = rec.classify(np.concatenate([crops] * 10))
        one = rec.classify(crops[:3])
    assert whole.shape == (10000, 7)
    np.testing.assert_allclose(whole[:3], one, atol=1e-5)
    np.testing.assert_allclose(whole[1000:1003], one, atol=1e-5)


@pytest.mark.parametrize("kwargs, words", [
    (dict(threads=2.5), "threads 2.5 must be a whole number"),
    (dict(threads=10**6), "threads 1000000 must be a whole number in 0..256"),
    (dict(threads=True), "threads True"),
    (dict(min_face=math.nan), "min_face nan"),
    (dict(min_face=-1), "min_face -1"),
    (dict(max_faces=0), "max_faces 0"),
    (dict(smoothing=math.nan), "smoothing nan"),
    (dict(redetect_drop=math.nan), "redetect_drop nan"),
])
def test_bad_option_values_are_option_errors(tiny_package, kwargs, words):
    with pytest.raises(OptionError, match=words.replace(".", r"\.")):
        EmotionRecognizer.from_pretrained(tiny_package, detector="none", **kwargs)


@pytest.mark.parametrize("crops", [None, 5, 2.5, object()])
def test_predict_faces_of_what_is_not_a_list_of_crops(tiny_package, crops):
    with EmotionRecognizer.from_pretrained(tiny_package, detector="none", threads=1) as rec:
        with pytest.raises(InvalidImageError, match="list of face crops"):
            rec.predict_faces(crops)


@pytest.mark.parametrize("source", [-1, -5, True])
def test_a_negative_camera_index_is_an_error_not_a_crash(tiny_package, source):
    """cv2.VideoCapture(-1) segfaulted the host process on a machine without a camera."""
    with EmotionRecognizer.from_pretrained(tiny_package, detector="none", threads=1) as rec:
        with pytest.raises(InvalidImageError, match="numbered from 0"):
            next(iter(rec.stream(source)))


def test_a_nan_pad_value_is_blamed_on_pad_value():
    d = Preprocessing().to_dict()
    d["pad_value"] = float("nan")
    with pytest.raises(PackageError) as info:
        Preprocessing.from_dict(d)
    assert "pad_value nan" in str(info.value) and "resize" not in str(info.value)


def test_every_option_error_is_a_motivnet_error():
    assert issubclass(OptionError, MotivnetError) and issubclass(InvalidImageError, MotivnetError)


def test_benchmark_refuses_a_batch_larger_than_the_runtime_runs(tiny_package):
    from conftest import cli

    r = cli("benchmark", tiny_package, "--batch", "65536", "--rounds", "1", "--seconds", "0.1")
    assert r.returncode == 2 and "65536 is not in the range 1<=x<=256" in r.stderr and "Traceback" not in r.stderr, \
        r.stderr
