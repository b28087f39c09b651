"""Attention fusion for ONNX Runtime: same logits, fewer nodes, nothing fused that differs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="exporting a student needs the export extra")
onnx = pytest.importorskip("onnx")

import onnxruntime as ort  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from motivnet_distill.students.model import create_student  # noqa: E402
from motivnet_edge.preprocess import Preprocessing  # noqa: E402
from motivnet_export.graph_fusion import fuse_attention, fuse_for_onnxruntime  # noqa: E402
from motivnet_export.onnx_export import export_onnx  # noqa: E402

X = np.random.default_rng(3).normal(size=(3, 1, 48, 48)).astype(np.float32)


def _logits(model_or_path) -> np.ndarray:
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"input": X})[0]


@pytest.fixture(scope="module")
def student_onnx(tmp_path_factory):
    torch.manual_seed(1)
    model = create_student("vit_hybrid_femto", depth=3, num_heads=2)
    return export_onnx(model, Preprocessing(), [str(i) for i in range(7)],
                       tmp_path_factory.mktemp("fusion") / "model.onnx")


def test_every_block_fused_with_the_same_logits(student_onnx):
    model = onnx.load(str(student_onnx))
    before = len(model.graph.node)
    assert fuse_attention(model) == 3
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Attention") == 3 and "Softmax" not in ops and "Squeeze" not in ops
    assert len(model.graph.node) <= before - 3 * 15
    np.testing.assert_allclose(_logits(model), _logits(student_onnx), atol=1e-5)


def test_openvino_reads_the_fused_graph(student_onnx, tmp_path):
    import openvino as ov

    model = onnx.load(str(student_onnx))
    fuse_attention(model)
    onnx.save_model(model, str(tmp_path / "fused.onnx"))
    compiled = ov.Core().compile_model(ov.convert_model(str(tmp_path / "fused.onnx")), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(compiled(X)[0], _logits(student_onnx), atol=1e-4)


def test_a_block_with_another_scale_is_left_alone(student_onnx):
    model = onnx.load(str(student_onnx))
    muls = [n for n in model.graph.node if n.op_type == "Mul"
            and any(i.name == n.input[1] and i.dims == [] for i in model.graph.initializer)]
    assert muls, "the exported attention scales q with a Mul by a scalar"
    shared = next(i for i in model.graph.initializer if i.name == muls[0].input[1])
    model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(shared) * 2, "scale_x2"))
    muls[0].input[1] = "scale_x2"  # the blocks share one scale constant: give the first its own
    expected = _logits(model)
    assert fuse_attention(model) == 2  # the changed block no longer computes softmax(qk^T/sqrt(d))v
    np.testing.assert_allclose(_logits(model), expected, atol=1e-5)


def test_a_graph_without_attention_is_unchanged(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 46 * 46, 7))
    path = export_onnx(net, Preprocessing(), [str(i) for i in range(7)], tmp_path / "conv.onnx")
    model = onnx.load(str(path))
    before = model.SerializeToString()
    assert fuse_attention(model) == 0 and model.SerializeToString() == before
    assert fuse_for_onnxruntime(path, tmp_path / "out.onnx") == {"attention_blocks": 0}
    assert (tmp_path / "out.onnx").read_bytes() == path.read_bytes()


def test_fused_file_records_what_it_did(student_onnx, tmp_path):
    report = fuse_for_onnxruntime(student_onnx, tmp_path / "fused.onnx")
    assert report["attention_blocks"] == 3 and report["max_abs_diff"] <= 1e-5
    np.testing.assert_allclose(_logits(tmp_path / "fused.onnx"), _logits(student_onnx), atol=1e-5)
