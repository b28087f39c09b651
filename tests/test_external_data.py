"""A model file may make the process read only files its package lists (motivnet_edge.onnx_refs).

ONNX Runtime and OpenVINO, given a model as bytes, resolve its external data against the
working directory; these tests put a readable "secret" there and show the runtime itself would
load it, then that motivnet-edge refuses the file first.
"""

import json
import shutil

import numpy as np
import pytest

from motivnet_edge import EmotionRecognizer
from motivnet_edge.errors import PackageError
from motivnet_edge.onnx_refs import check_beside, check_listed, external_locations
from motivnet_edge.package import sha256_file

onnx = pytest.importorskip("onnx", reason="crafting models needs the export extra")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _external(name: str, location: str, dims=(4,)) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims), data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", "0"), ("length", str(4 * int(np.prod(dims))))):
        t.external_data.add(key=k, value=v)
    return t


def _pointing_at(model_path, location: str) -> tuple[bytes, bytes]:
    """The package's model with its largest initializer moved to ``location``: (model bytes,
    the initializer's bytes, which a file at ``location`` must hold for the model to run)."""
    model = onnx.load(str(model_path))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    raw = numpy_helper.to_array(init).astype(np.float32).tobytes()
    ext = _external(init.name, location, tuple(init.dims))
    init.CopyFrom(ext)
    return model.SerializeToString(), raw


def _install(pkg, rel: str, data: bytes) -> None:
    (pkg / rel).write_bytes(data)
    m = json.loads((pkg / "manifest.json").read_text())
    for f in m["files"]:
        if f["path"] == rel:
            f["sha256"] = sha256_file(pkg / rel)
    (pkg / "manifest.json").write_text(json.dumps(m))


def test_a_model_cannot_read_the_working_directory(package_copy, tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    data, raw = _pointing_at(package_copy / "model.onnx", "secret.bin")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "secret.bin").write_bytes(raw)
    monkeypatch.chdir(cwd)
    ort.InferenceSession(data, providers=["CPUExecutionProvider"])  # the runtime alone reads ./secret.bin
    _install(package_copy, "model.onnx", data)
    with pytest.raises(PackageError, match="model.onnx reads external data from 'secret.bin'"):
        EmotionRecognizer.from_pretrained(package_copy, backend="onnxruntime", precision="fp32", detector="none")


def test_listed_external_data_loads_and_nothing_else_does(package_copy):
    with EmotionRecognizer.from_pretrained(package_copy, backend="onnxruntime", detector="none") as rec:
        want = rec.classify(np.full((1, 48, 48, 1), 120, np.uint8))
    data, raw = _pointing_at(package_copy / "model.onnx", "model.onnx.data")
    (package_copy / "model.onnx.data").write_bytes(raw)
    _install(package_copy, "model.onnx", data)
    m = json.loads((package_copy / "manifest.json").read_text())
    m["files"][0]["extra_files"] = {"model.onnx.data": sha256_file(package_copy / "model.onnx.data")}
    (package_copy / "manifest.json").write_text(json.dumps(m))
    with EmotionRecognizer.from_pretrained(package_copy, backend="onnxruntime", detector="none") as rec:
        np.testing.assert_allclose(rec.classify(np.full((1, 48, 48, 1), 120, np.uint8)), want, atol=1e-6)
    # the same listing, but the model now reads an unlisted file of the same folder
    shutil.copy(package_copy / "model.onnx.data", package_copy / "other.bin")
    _install(package_copy, "model.onnx", _pointing_at(package_copy / "model.onnx", "other.bin")[0])
    with pytest.raises(PackageError, match="'other.bin', which its manifest does not list"):
        EmotionRecognizer.from_pretrained(package_copy, backend="onnxruntime", detector="none")


def test_an_openvino_file_must_be_an_ir(package_copy, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    data, raw = _pointing_at(package_copy / "model.onnx", "secret.bin")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(raw)
    _install(package_copy, "openvino/model.xml", data)
    with pytest.raises(PackageError, match="not an OpenVINO IR"):
        EmotionRecognizer.from_pretrained(package_copy, backend="openvino", precision="fp32", detector="none")


def test_references_are_found_wherever_a_tensor_can_sit():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    sub = helper.make_graph([helper.make_node("Constant", [], ["c"], value=_external("C", "deep/b.bin"))], "s", [],
                            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    in_subgraph = helper.make_graph([helper.make_node("If", ["cond"], ["y"], then_branch=sub, else_branch=sub)],
                                    "g", [x], [y], [cond])
    assert external_locations(helper.make_model(in_subgraph).SerializeToString()) == ["deep/b.bin"] * 2
    fn = helper.make_function("d", "F", ["x"], ["y"], [helper.make_node("Constant", [], ["y"], value=_external("K", "f.bin"))],
                              [helper.make_opsetid("", 17)])
    g = helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="d")], "g", [x], [y])
    assert external_locations(helper.make_model(g, functions=[fn]).SerializeToString()) == ["f.bin"]
    sparse = helper.make_sparse_tensor(_external("V", "s.bin"), numpy_helper.from_array(np.arange(4, dtype=np.int64)), [4])
    g = helper.make_graph([], "g", [x], [y], sparse_initializer=[sparse])
    assert external_locations(helper.make_model(g).SerializeToString()) == ["s.bin"]
    nameless = TensorProto(name="Z", data_type=TensorProto.FLOAT, dims=[1], data_location=TensorProto.EXTERNAL)
    data = helper.make_model(helper.make_graph([], "g", [x], [y], [nameless])).SerializeToString()
    assert external_locations(data) == [""]
    with pytest.raises(PackageError, match="reads external data from ''"):
        check_listed(data, "model.onnx", ())
    for loc in ("../model.onnx.data", "/abs/model.onnx.data", "sub/../../model.onnx.data"):
        d = helper.make_model(helper.make_graph([], "g", [x], [y], [_external("W", loc)])).SerializeToString()
        with pytest.raises(PackageError, match="does not list"):
            check_listed(d, "model.onnx", ("model.onnx.data",))
    with pytest.raises(PackageError, match="is not an ONNX model"):
        check_listed(b"\x0f\xff\xff", "model.onnx", ())


@pytest.mark.parametrize("loc, ok", [("w.bin", True), ("sub/w.bin", False), (".w.bin", False),
                                     ("../w.bin", False), ("link.bin", False)])
def test_a_teacher_reads_only_plain_files_beside_it(tmp_path, loc, ok):
    (tmp_path / "sub").mkdir()
    for name in ("w.bin", "sub/w.bin", ".w.bin"):
        (tmp_path / name).write_bytes(bytes(16))
    (tmp_path / "link.bin").symlink_to(tmp_path / "w.bin")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    g = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g", [x],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [_external("W", loc)])
    path = tmp_path / "teacher.onnx"
    path.write_bytes(helper.make_model(g).SerializeToString())
    if ok:
        assert check_beside(path) == path.read_bytes()
    else:
        with pytest.raises(PackageError, match="only plain files beside the model"):
            check_beside(path)


def test_openvino_reads_a_lean_packages_onnx_but_not_unlisted_external_data(tiny_checkpoint, tmp_path, monkeypatch):
    """A lean package's OpenVINO entry names model.onnx (export --lean): it loads and agrees with
    ONNX Runtime, and the same scan refuses it once the graph names an unlisted file."""
    pytest.importorskip("openvino")
    from motivnet_export.exporter import export

    pkg = export(tiny_checkpoint, tmp_path / "lean", formats=("onnx", "openvino"), latency=False, lean=True)
    faces = np.random.default_rng(0).integers(0, 255, (3, 48, 48, 1), dtype=np.uint8)
    got = {}
    for backend in ("onnxruntime", "openvino"):
        with EmotionRecognizer.from_pretrained(pkg, backend=backend, precision="fp32", detector="none") as rec:
            got[backend] = rec.classify(faces)
    np.testing.assert_allclose(got["openvino"], got["onnxruntime"], atol=1e-4)
    data, raw = _pointing_at(pkg / "model.onnx", "secret.bin")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(raw)
    _install(pkg, "model.onnx", data)  # both entries name this file: both hashes follow it
    with pytest.raises(PackageError, match="'secret.bin', which its manifest does not list"):
        EmotionRecognizer.from_pretrained(pkg, backend="openvino", precision="fp32", detector="none")
