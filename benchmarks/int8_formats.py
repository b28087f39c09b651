"""Why the QDQ INT8 ONNX is slow on ONNX Runtime CPU, and what INT8 ONNX is not.

    python benchmarks/int8_formats.py [--package PKG]

Times, in one ONNX Runtime process, interleaved, batch 1: the package's fp32 ONNX, its QDQ
INT8 ONNX (NNCF, what TensorRT consumes), and a dynamically quantized copy made here with
ONNX Runtime's own tool (MatMul/Gemm weights int8, activations quantized per call, which
runs on VNNI where the CPU has it). Also counts the Quantize/Dequantize nodes that remain in
each graph after ORT's optimiser, which is where the QDQ file's time goes. Writes
benchmarks/results/int8_formats.json (CPU flags inside) and prints the speed-ups.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from common import ROOT, write_result  # noqa: E402  (benchmarks/ is the script folder)




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8_formats.json")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from motivnet_edge.machine import machine_info
    from motivnet_edge.timing import time_interleaved
    from motivnet_edge.recognizer import DEFAULT_MODEL

    pkg = args.package or DEFAULT_MODEL
    with tempfile.TemporaryDirectory() as tmp:
        dyn = Path(tmp) / "model.dynamic-int8.onnx"
        quantize_dynamic(str(pkg / "model.onnx"), str(dyn), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])
        from motivnet_edge.package import load_package

        # Packages from before the split kept the QDQ file as model.int8.onnx.
        qdq = load_package(pkg).manifest.get("assets_roles", {}).get("tensorrt_int8", "model.int8.onnx")
        files = {"fp32": pkg / "model.onnx", "int8 QDQ (NNCF)": pkg / qdq, "int8 dynamic (ORT)": dyn}
        sessions, after = {}, {}
        for name, path in files.items():
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
            so.optimized_model_filepath = str(Path(tmp) / f"opt-{len(after)}.onnx")
            sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            ops = Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
            after[name] = {"nodes": sum(ops.values()), "QuantizeLinear": ops.get("QuantizeLinear", 0),
                           "DequantizeLinear": ops.get("DequantizeLinear", 0),
                           "int8 compute ops": sum(v for k, v in ops.items()
                                                   if k.startswith(("QLinear", "MatMulInteger", "ConvInteger"))
                                                   or k in ("DynamicQuantizeMatMul", "QGemm", "MatMulIntegerToFloat")),
                           "file_bytes": path.stat().st_size}
        x = np.random.default_rng(0).random((1, 1, 48, 48), dtype=np.float32)
        times = time_interleaved({k: (lambda s=s: s.run(None, {"input": x})) for k, s in sessions.items()},
                                 seconds=args.seconds)
        ref = sessions["fp32"].run(None, {"input": x})[0]
        agree = {k: float(np.abs(s.run(None, {"input": x})[0] - ref).max()) for k, s in sessions.items()}
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    rows = [{"model": k, "p50_ms": round(p50[k], 4), "speedup_vs_fp32": round(p50["fp32"] / p50[k], 3),
             "max_abs_logit_diff_vs_fp32": round(agree[k], 4), **after[k]} for k in sessions]
    results = {"machine": machine_info(), "package": str(pkg), "threads": args.threads, "rows": rows}
    write_result(args.out, results)
    for r in rows:
        print(f"{r['model']:20s} p50 {r['p50_ms']:.3f} ms  x{r['speedup_vs_fp32']:.2f} vs fp32; after ORT's optimiser "
              f"{r['nodes']} nodes, {r['QuantizeLinear']} Q + {r['DequantizeLinear']} DQ left, "
              f"{r['int8 compute ops']} int8 compute ops")
    print(f"CPU {results['machine']['cpu']} flags {results['machine']['flags']}; wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
