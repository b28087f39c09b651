"""Export -> reload -> predict for every format and precision; INT8 and what it records."""

import numpy as np
import pytest

pytest.importorskip("torch", reason="export needs the export extra")
pytest.importorskip("nncf", reason="INT8 needs the export extra")

from motivnet_edge import EmotionRecognizer  # noqa: E402
from motivnet_edge.errors import MotivnetError  # noqa: E402
from motivnet_edge.package import load_package  # noqa: E402
from motivnet_export.exporter import export  # noqa: E402

from conftest import face_crops  # noqa: E402


@pytest.fixture(scope="module")
def int8_package(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    calib = face_crops(root / "calib", 300)
    val = root / "val"
    for k, cls in enumerate(("happy", "sad", "neutral")):
        face_crops(val / cls, 20, seed=k + 1)
    return export(tiny_checkpoint, root / "pkg", int8=True, calib=calib, val=val, latency_rounds=1)


def test_every_format_and_precision_reloads_and_predicts(int8_package, astronaut):
    pkg = load_package(int8_package)
    have = {(f.backend, f.precision) for f in pkg.files}
    assert have == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    ref = None
    for backend, precision in sorted(have):
        with EmotionRecognizer.from_pretrained(int8_package, backend=backend, precision=precision,
                                               detector="haar") as rec:
            faces = rec.predict(astronaut)
            assert len(faces) == 1 and rec.describe().endswith("detector haar")
            if precision == "fp32":
                ref = ref or faces[0].scores
                assert faces[0].scores == pytest.approx(ref, abs=1e-4)


def test_int8_metrics_and_tensorrt_table(int8_package):
    m = load_package(int8_package).manifest
    by_runtime = m["metrics"]["int8"]
    # every INT8 file is scored against its own fp32 source, on the 60 labelled validation faces
    assert set(by_runtime) == {"onnxruntime", "tensorrt", "openvino"}
    for runtime, q in by_runtime.items():
        assert q["agreement_faces"] == 60 and q["shipped"] is True
        assert q["val_accuracy_drop"] == pytest.approx(q["val_accuracy_fp32"] - q["val_accuracy_int8"])
        assert (int8_package / q["file"]).is_file()
    q = by_runtime["onnxruntime"]
    lat = m["metrics"]["latency"]["onnxruntime"]
    assert {"fp32_ms", "int8_ms", "cpu_int8_flags"} <= set(lat)
    assert any(k.startswith("tensorrt/calibration") for k in m["assets"])
    # ORT's CPU file is dynamically quantized (no Q/DQ round trips); TensorRT gets NNCF's QDQ graph
    import onnx
    cpu_ops = {n.op_type for n in onnx.load(str(int8_package / "model.int8.onnx")).graph.node}
    assert "QuantizeLinear" not in cpu_ops and cpu_ops & {"MatMulInteger", "DynamicQuantizeLinear"}
    assert by_runtime["onnxruntime"]["method"].startswith("dynamic")
    # The files every CPU runs keep 7-bit weights (no 16-bit saturation without VNNI); TensorRT's does not.
    assert "7-bit" in by_runtime["openvino"]["weights"] and by_runtime["tensorrt"]["weights"] == "8-bit weights"
    qdq = m["assets_roles"]["tensorrt_int8"]
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(int8_package / qdq)).graph.node}
    assert by_runtime["tensorrt"]["file"] == qdq
    sizes = m["metrics"]["file_sizes"]
    assert sizes["model.int8.onnx"] < sizes["model.onnx"]


def test_accuracy_control_scores_real_validation_faces(int8_package):
    """NNCF's accuracy control must judge candidates on the labelled validation faces it is given."""
    from motivnet_edge.datasets.readers import read_dataset
    from motivnet_export.int8 import prepare_data
    from motivnet_export.nncf_ptq import onnx_accuracy, quantize_onnx

    root, pkg = int8_package.parent, load_package(int8_package)
    data = prepare_data(read_dataset(root / "calib"), pkg.preprocessing, val_faces=read_dataset(root / "val"),
                        labels=pkg.labels)
    seen = []

    def accuracy(model, x, y):
        seen.append((len(x), tuple(y)))
        return onnx_accuracy(model, x, y)

    quantize_onnx(int8_package / "model.onnx", root / "controlled.int8.onnx", data, max_drop=0.5,
                  accuracy=accuracy)
    full = [s for s in seen if s[0] == len(data.val_y)]
    assert full and all(labels == tuple(data.val_y) for _, labels in full)  # real faces, real labels


def test_int8_ladder_keeps_the_cheapest_scheme_that_agrees(int8_package):
    """NNCF files record every rung tried, most fp32 first; the kept one is the last rung at the
    target, else the first (most accurate) rung, and the climb stops at the first miss."""
    from motivnet_export.nncf_ptq import AGREEMENT_TARGET

    for runtime in ("openvino", "tensorrt"):
        q = load_package(int8_package).metrics["int8"][runtime]
        rungs = q["ladder"]
        assert rungs and q["ladder_faces"] == 60 and q["agreement_target"] == AGREEMENT_TARGET
        assert all(0.0 <= r["agreement"] <= 1.0 for r in rungs)
        hit = [r for r in rungs if r["agreement"] >= AGREEMENT_TARGET]
        kept = hit[-1] if hit else rungs[0]
        assert q["scheme"] == kept["scheme"], runtime
        assert all(r["agreement"] >= AGREEMENT_TARGET for r in rungs[:-1])  # only the last rung may miss
        assert len(hit) == len(rungs) or len(hit) == len(rungs) - 1
        assert abs(q["agreement_int8_vs_fp32"] - kept["agreement"]) < 1e-3 or q.get("accuracy_control")


def test_ladder_schemes_keep_leading_convolutions():
    from motivnet_export.nncf_ptq import LADDER, Scheme

    convs = ["c0", "c1", "c2", "c3", "c4", "patch"]
    assert Scheme(2, "minmax").kept(convs) == ["c0", "c1"]
    assert Scheme(-1, "minmax").kept(convs) == convs[:-1]
    assert Scheme(None, "minmax").kept(convs) == convs
    assert Scheme(2, "mean_minmax").describe(convs) == "2 of 6 convolutions fp32, mean-min-max ranges"
    # each rung keeps at least as many convolutions in fp32 as the one before
    assert [len(s.kept(convs)) for s in LADDER] == sorted(len(s.kept(convs)) for s in LADDER)


def test_the_default_pico_tries_every_rung_of_the_ladder():
    """The pico's convolutions hold a third of its weights: its every-convolution-fp32 rung (the
    MatMuls alone INT8) stays on the ladder, most fp32 first."""
    import onnx

    from motivnet_edge.package import DEFAULT_MODEL
    from motivnet_export.nncf_ptq import LADDER, _convs, _rungs

    model = onnx.load(str(DEFAULT_MODEL / "model.onnx"))
    assert _rungs(model, _convs(model)) == list(reversed(LADDER))


def test_int8_of_one_format_reports_only_that_format(tiny_checkpoint, int8_package, tmp_path):
    """--formats openvino --int8 writes and scores the OpenVINO INT8 IR alone (no ONNX INT8 metrics)."""
    root = int8_package.parent
    pkg = export(tiny_checkpoint, tmp_path / "ov", formats=("openvino",), int8=True, calib=root / "calib",
                 val=root / "val", latency=False)
    m = load_package(pkg).manifest
    assert set(m["metrics"]["int8"]) == {"openvino"}
    assert {(f["backend"], f["precision"]) for f in m["files"]} == {("openvino", "fp32"), ("openvino", "int8")}
    assert not (pkg / "model.onnx").exists() and not (pkg / "tensorrt").exists()


def test_onnx_metadata_survives_quantization(int8_package):
    """The INT8 file names its labels and preprocessing exactly as the manifest does."""
    import json

    import onnx

    manifest = json.loads((int8_package / "manifest.json").read_text())
    for name in ("model.onnx", "model.int8.onnx"):
        meta = {p.key: p.value for p in onnx.load(str(int8_package / name)).metadata_props}
        assert json.loads(meta["labels"]) == manifest["labels"], name
        assert json.loads(meta["preprocessing"]) == manifest["preprocessing"], name


def test_package_with_embedded_yunet_uses_it(tiny_checkpoint, yunet_path, astronaut, tmp_path):
    pkg = export(tiny_checkpoint, tmp_path / "p", formats=("onnx",), latency=False, yunet=yunet_path)
    with EmotionRecognizer.from_pretrained(pkg) as rec:
        assert rec.detector.name == "yunet" and rec.predict(astronaut)[0].landmarks is not None
    # The detector's terms travel with it; a package without one says nothing of a detector.
    assert "Apache-2.0" in load_package(pkg).license["detector"]
    # A student's package says what it is (`info`'s first line) without a hand-written description.
    assert load_package(pkg).provenance["description"].startswith("ViT student")
    assert "detector" not in load_package(export(tiny_checkpoint, tmp_path / "q", formats=("onnx",),
                                                 latency=False)).license
    (pkg / "detector" / "yunet.onnx").write_bytes(b"swapped")
    with pytest.raises(MotivnetError, match="yunet.onnx does not match its sha256"):
        EmotionRecognizer.from_pretrained(pkg)


def test_tensorrt_table_lands_in_the_engine_cache(int8_package, tmp_path):
    from motivnet_edge.backends import BackendOptions, _package_trt_table
    opts = _package_trt_table(load_package(int8_package), BackendOptions(providers=("tensorrt",),
                                                                          trt_cache_dir=str(tmp_path / "trt")))
    assert opts.trt_int8_table == "calibration.flatbuffers"
    assert (tmp_path / "trt" / "calibration.flatbuffers").read_bytes() == \
        (int8_package / "tensorrt" / "calibration.flatbuffers").read_bytes()


@pytest.mark.slow
def test_int8_export_of_the_keras_peer_never_ends_in_a_traceback(tmp_path):
    """The mini-Xception (Keras HDF5) through `export --int8`: every runtime that can run its INT8
    file ships one; one that cannot is named with its fallback, never a traceback."""
    import json
    import shutil
    import subprocess
    import sys

    from conftest import FERPLUS, SHARED

    keras = SHARED / "models" / "xception_fer2013" / "fer2013_mini_XCEPTION.102-0.66.hdf5"
    if not keras.is_file() or not FERPLUS.is_dir():
        pytest.skip("../shared models or FER+ data are absent")
    calib = tmp_path / "calib"
    calib.mkdir()
    for p in sorted((FERPLUS / "FER2013Valid").glob("*.png"))[:320]:
        shutil.copy(p, calib / p.name)
    r = subprocess.run([sys.executable, "-m", "motivnet_edge.cli", "export", str(keras), "--out", str(tmp_path / "pkg"),
                        "--int8", "--calib", str(calib), "--no-latency"], capture_output=True, text=True, timeout=900)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    int8 = manifest["metrics"]["int8"]
    assert any(v["shipped"] for v in int8.values()), int8
    for runtime, v in int8.items():
        assert v["shipped"] or ("error" in v and "fallback" in v) or "val_accuracy_drop" in v, (runtime, v)
    # A convolution-only graph gives dynamic INT8 nothing to quantize: ONNX Runtime's CPU file is
    # NNCF's static QDQ graph instead (7-bit weights: it runs on CPUs without VNNI too), never
    # the fp32 model under an INT8 name.
    ort8 = int8["onnxruntime"]
    assert ort8["shipped"] is True and ort8["method"].startswith("static QDQ") and "7-bit" in ort8["weights"], ort8
    assert ort8["agreement_int8_vs_fp32"] > 0.9, ort8
    assert "int8 onnxruntime (model.int8.onnx)" in r.stdout
    import onnx

    ops = [n.op_type for n in onnx.load(str(tmp_path / "pkg" / "model.int8.onnx")).graph.node]
    assert ops.count("QuantizeLinear") >= 10 and "MatMulInteger" not in ops
    rec = EmotionRecognizer.from_pretrained(tmp_path / "pkg", backend="onnxruntime", precision="int8", detector="none")
    fp32 = EmotionRecognizer.from_pretrained(tmp_path / "pkg", backend="onnxruntime", precision="fp32", detector="none")
    faces = sorted((FERPLUS / "FER2013Valid").glob("*.png"))[-40:]  # not among the calibration faces
    q, f = ([list(p.scores.values()) for p in r.predict_faces(faces)] for r in (rec, fp32))
    q, f = np.array(q), np.array(f)
    assert q.shape == f.shape == (40, 7) and not np.allclose(q, f)  # a different file really ran
    assert (q.argmax(1) == f.argmax(1)).mean() >= 0.85
    # TensorRT's calibration table needs only the fp32 graph: it ships whatever happened to the QDQ file.
    assert "tensorrt/calibration.flatbuffers" in manifest["assets"]
    # The QDQ file has one scale per activation tensor (all TensorRT takes; NNCF's default gives the
    # inputs of depthwise convolutions one per channel, which ONNX Runtime's QLinearConv rejected).
    from onnx import numpy_helper

    assert int8["tensorrt"]["shipped"] is True and int8["tensorrt"]["agreement_int8_vs_fp32"] > 0.9, int8["tensorrt"]
    qdq = onnx.load(str(tmp_path / "pkg" / int8["tensorrt"]["file"]))
    consts = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    scales = [consts[n.input[1]].size for n in qdq.graph.node  # activations: inputs that are not weights
              if n.op_type == "QuantizeLinear" and n.input[0] not in consts and n.input[1] in consts]
    assert scales and set(scales) == {1}, scales


def test_exported_files_carry_no_paths_of_this_machine(int8_package):
    for path in int8_package.rglob("*.onnx"):
        assert b"site-packages" not in path.read_bytes() and b".py\", line" not in path.read_bytes(), path


def test_onnxruntime_files_run_fused_attention_and_tensorrt_gets_the_plain_graph(int8_package):
    import onnx

    m = load_package(int8_package).manifest
    assert m["provenance"]["export"]["onnxruntime_fusion"]["attention_blocks"] == 2  # the tiny student's depth
    ops = {name: [n.op_type for n in onnx.load(str(int8_package / name)).graph.node]
           for name in ("model.onnx", "model.int8.onnx", "tensorrt/model.int8.qdq.onnx")}
    assert ops["model.onnx"].count("Attention") == 2 and "Softmax" not in ops["model.onnx"]
    assert ops["model.int8.onnx"].count("Attention") == 2
    assert "Attention" not in ops["tensorrt/model.int8.qdq.onnx"]  # TensorRT has no contrib ops
    assert not list(int8_package.glob("*fused*"))  # the build's temporary graph is not shipped


def test_a_convolutional_student_exports_with_its_convolutions_in_int8(tmp_path, astronaut):
    """A resnet student goes through the same exporter: every format reloads and agrees with
    torch in fp32, and INT8 keeps at most a few leading convolutions fp32 (its convolutions hold
    nearly all its weights: no rung may leave it an fp32 model under an INT8 name)."""
    from dataclasses import asdict

    import torch

    from motivnet_distill.students.model import create_student
    from motivnet_edge.labels import MOTIVNET_LABELS
    from motivnet_edge.preprocess import Preprocessing, faces_to_tensor

    torch.manual_seed(0)
    model = create_student("resnet_s", widths=(8, 16, 16), stage_blocks=(1, 1, 1), labels=MOTIVNET_LABELS).eval()
    pp = Preprocessing()
    torch.save({"model": model.state_dict(), "student": asdict(model.cfg), "preprocessing": pp.to_dict()},
               tmp_path / "cnn.pt")
    out = export(tmp_path / "cnn.pt", tmp_path / "pkg", int8=True, calib=face_crops(tmp_path / "calib", 300),
                 latency_rounds=1)
    pkg = load_package(out)
    assert {(f.backend, f.precision) for f in pkg.files} == {
        ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    # Dynamic INT8 would quantize the Gemm head alone: the resnet's ONNX Runtime file is static QDQ.
    assert pkg.metrics["int8"]["onnxruntime"]["method"].startswith("static QDQ"), pkg.metrics["int8"]["onnxruntime"]
    for runtime in ("openvino", "tensorrt"):
        q = pkg.metrics["int8"][runtime]
        for rung in q["ladder"]:
            fp32, total = (int(w) for w in rung["scheme"].split(" convolutions")[0].split(" of "))
            assert fp32 <= 4 < total, rung
    import cv2

    face = cv2.imread(str(next(face_crops(tmp_path / "one", 1).iterdir())))
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(faces_to_tensor([face], pp))), 1)[0].numpy()
    for backend in ("onnxruntime", "openvino"):
        with EmotionRecognizer.from_pretrained(out, backend=backend, precision="fp32", detector="haar") as rec:
            got = rec.predict_faces([face])[0]
            assert np.asarray([got.scores[k] for k in MOTIVNET_LABELS]) == pytest.approx(want, abs=1e-4), backend


def test_a_lean_package_keeps_two_weight_files_that_every_runtime_reads(tmp_path, astronaut):
    """--lean: OpenVINO reads model.onnx and one static QDQ model.int8.onnx serves ONNX Runtime,
    OpenVINO and TensorRT; each (runtime, precision) loads and agrees with torch or with fp32."""
    from dataclasses import asdict

    import cv2
    import onnx
    import torch

    from motivnet_distill.students.model import create_student
    from motivnet_edge.labels import MOTIVNET_LABELS
    from motivnet_edge.preprocess import Preprocessing, faces_to_tensor

    torch.manual_seed(0)
    model = create_student("resnet_s", widths=(8, 16, 16), stage_blocks=(1, 1, 1), labels=MOTIVNET_LABELS).eval()
    pp = Preprocessing()
    torch.save({"model": model.state_dict(), "student": asdict(model.cfg), "preprocessing": pp.to_dict()},
               tmp_path / "cnn.pt")
    calib = face_crops(tmp_path / "calib", 300)
    out = export(tmp_path / "cnn.pt", tmp_path / "pkg", int8=True, calib=calib, latency=False, lean=True)
    pkg = load_package(out)
    assert {(f.backend, f.precision, f.path) for f in pkg.files} == {
        ("onnxruntime", "fp32", "model.onnx"), ("openvino", "fp32", "model.onnx"),
        ("onnxruntime", "int8", "model.int8.onnx"), ("openvino", "int8", "model.int8.onnx")}
    assert pkg.manifest["assets_roles"]["tensorrt_int8"] == "model.int8.onnx"
    assert not (out / "openvino").exists() and not (out / "tensorrt" / "model.int8.qdq.onnx").exists()
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # static QDQ around the convolutions
    assert pkg.provenance["export"]["lean"] is True
    for runtime in ("onnxruntime", "openvino", "tensorrt"):
        assert pkg.metrics["int8"][runtime]["agreement_int8_vs_fp32"] >= 0.8, runtime
    faces = [cv2.imread(str(p)) for p in sorted(face_crops(tmp_path / "few", 8, seed=1).iterdir())]
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(faces_to_tensor(faces, pp))), 1).numpy()
    for backend in ("onnxruntime", "openvino"):
        for precision, tol in (("fp32", 1e-4), ("int8", 0.15)):
            with EmotionRecognizer.from_pretrained(out, backend=backend, precision=precision, detector="none") as rec:
                got = np.asarray([[p.scores[k] for k in MOTIVNET_LABELS] for p in rec.predict_faces(faces)])
            np.testing.assert_allclose(got, want, atol=tol, err_msg=f"{backend} {precision}")
    with pytest.raises(MotivnetError, match="keep the onnx format"):
        export(tmp_path / "cnn.pt", tmp_path / "ov_only", formats=("openvino",), lean=True)
