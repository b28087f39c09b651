"""benchmarks/int8_error_sources.py: INT8 rounding inserted into an fp32 graph, one source at a time."""

import numpy as np
import pytest

from conftest import load_benchmark

onnx = pytest.importorskip("onnx", reason="the INT8 analysis edits ONNX graphs (export extra)")


def _two_convs(seed=0):
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(seed)
    w1, w2 = r.normal(0, 1, (4, 1, 3, 3)).astype(np.float32), r.normal(0, 1, (3, 4, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
         helper.make_node("Conv", ["b", "w2"], ["c"]), helper.make_node("ReduceMean", ["c"], ["y"], axes=[2, 3], keepdims=0)],
        "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(ies, model, x):
    s = ies._session(model, False)
    return s.run(None, {"x": x})[0]


def test_each_rounding_source_is_inserted_alone_and_nothing_else_changes():
    from onnx import numpy_helper

    ies = load_benchmark("int8_error_sources")
    model, x = _two_convs(), np.random.default_rng(1).uniform(-1, 1, (16, 1, 8, 8)).astype(np.float32)
    ranges = ies.activation_ranges(model, x)
    assert set(ranges) == {"x", "b"} and all(lo <= 0 <= hi for lo, hi in ranges.values())
    assert ranges["b"][0] == 0.0  # after a ReLU: the range starts at zero, not below
    fp32 = _run(ies, model, x)
    assert np.array_equal(_run(ies, ies.quantized(model, ranges, weight_bits=None, activations=False), x), fp32)

    w8 = ies.quantized(model, ranges, weight_bits=8, activations=False)
    for name in ("w1", "w2"):
        w = numpy_helper.to_array(next(i for i in w8.graph.initializer if i.name == name))
        per_channel = w.reshape(len(w), -1)
        steps = per_channel / (np.abs(per_channel).max(1, keepdims=True) / 127)
        assert np.allclose(steps, np.round(steps), atol=1e-3)  # on a 255-level grid per output channel
    assert not any(n.op_type == "QuantizeLinear" for n in w8.graph.node)
    assert 0 < np.abs(_run(ies, w8, x) - fp32).max() < 0.05

    a8 = ies.quantized(model, ranges, weight_bits=None, activations=True)
    assert [n.op_type for n in a8.graph.node].count("QuantizeLinear") == 2
    assert 0 < np.abs(_run(ies, a8, x) - fp32).max() < 0.1
    # Outside the calibration range an activation saturates: the rounding is really there.
    assert np.abs(_run(ies, a8, 4 * x) - _run(ies, model, 4 * x)).max() > 0.1
    only = ies.quantized(model, ranges, weight_bits=7, activations=True, only=1)
    assert [n.op_type for n in only.graph.node].count("QuantizeLinear") == 1
    assert np.array_equal(numpy_helper.to_array(next(i for i in only.graph.initializer if i.name == "w1")),
                          numpy_helper.to_array(model.graph.initializer[0]))
