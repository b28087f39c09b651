"""GEMM peak of this CPU, the yardstick run_suite.py divides a model's throughput by.

The probe runs in a fresh process (ONNX Runtime's thread pool must not share one with the
model being timed), building a one-node MatMul or MatMulInteger graph.
"""

from __future__ import annotations

import subprocess
import sys

from motivnet_edge.errors import MotivnetError


def gemm_peak_gflops(threads: int, n: int = 1024, seconds: float = 2.0, *, precision: str = "fp32") -> float:
    """GEMM peak with ``threads`` threads in a fresh process (ONNX Runtime, n x n): fp32 MatMul in
    GFLOP/s, or int8 MatMulInteger (uint8 x int8, the kernels VNNI/AVX2 INT8 use) in GOP/s.
    An INT8 model's throughput is compared with the int8 peak, an fp32 model's with fp32's."""
    if precision not in ("fp32", "int8"):
        raise MotivnetError(f"GEMM probe precision {precision!r}: fp32 or int8")
    if precision == "fp32":
        node, types, feeds = "helper.make_node('MatMul', ['a', 'b'], ['c'])", "(TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT)", \
            "a = np.random.rand({n}, {n}).astype(np.float32); b = a"
    else:
        node, types, feeds = "helper.make_node('MatMulInteger', ['a', 'b'], ['c'])", \
            "(TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32)", \
            "a = np.random.randint(0, 255, ({n}, {n})).astype(np.uint8); b = np.random.randint(-127, 127, ({n}, {n})).astype(np.int8)"
    code = f"""
import time, numpy as np, onnx, onnxruntime as ort
from onnx import helper, TensorProto
ta, tb, tc = {types}
g = helper.make_graph([{node}], 'g',
    [helper.make_tensor_value_info('a', ta, [{n}, {n}]), helper.make_tensor_value_info('b', tb, [{n}, {n}])],
    [helper.make_tensor_value_info('c', tc, [{n}, {n}])])
so = ort.SessionOptions(); so.intra_op_num_threads = {threads}
s = ort.InferenceSession(helper.make_model(g).SerializeToString(), so, providers=['CPUExecutionProvider'])
{feeds.format(n=n)}; feed = {{'a': a, 'b': b}}
for _ in range(3): s.run(None, feed)
best, t_end = 1e9, time.time() + {seconds}
while time.time() < t_end:
    t = time.perf_counter(); s.run(None, feed); best = min(best, time.perf_counter() - t)
print(2 * {n} ** 3 / best / 1e9)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise MotivnetError(f"GEMM probe failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return float(r.stdout.strip().splitlines()[-1])
