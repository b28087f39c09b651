"""``motivnet-edge export``: a student run, checkpoint or teacher -> model package.

Loaded by the main command group only when this verb runs, so a device without torch
still has the runtime verbs.
"""

from __future__ import annotations

import click

from motivnet_edge.datasets.readers import LABEL_SOURCES
from motivnet_edge.cli_options import TRUST_CODE, friendly, list_option, say


@click.command(name="export")
@click.argument("source", type=click.Path())
@click.option("--out", type=click.Path(), required=True, help="Package folder to write.")
@list_option("--formats", default=("onnx", "openvino"), show_default=True,
             help="Package formats (repeat or comma list): onnx (ONNX Runtime), openvino.")
@click.option("--int8", is_flag=True, help="Also write INT8 models (NNCF post-training quantization).")
@click.option("--calib", type=click.Path(), default=None, help="Calibration faces (>= 300).")
@click.option("--val", type=click.Path(), default=None, help="Labelled faces: fp32/int8 accuracy.")
@click.option("--val-labels", type=click.Choice(LABEL_SOURCES), default="ferplus", show_default=True,
              help="Which labels of a FER+ --val split to score on (those the model was trained on).")
@click.option("--max-drop", type=click.FloatRange(0, 1), default=None, help="Accuracy control bound, e.g. 0.01.")
@click.option("--no-latency", is_flag=True, help="Skip timing fp32 vs int8 on this machine.")
@click.option("--yunet", type=click.Path(), default=None, help="Ship this YuNet .onnx inside the package.")
@click.option("--prior-correction", is_flag=True,
              help="Fold a class-prior logit offset, fitted on --val, into the student (no class folded into neutral).")
@click.option("--lean", is_flag=True,
              help="Two copies of the weights, not five: OpenVINO reads model.onnx, and one static INT8 "
                   "model.int8.onnx serves ONNX Runtime, OpenVINO and TensorRT (for convolutional students, "
                   "whose fp32 weights make each copy large).")
@TRUST_CODE
@friendly
def export_cmd(source, out, formats, int8, calib, val, val_labels, max_drop, no_latency, yunet, prior_correction,
               lean, trust_code) -> None:
    """Export a student run/checkpoint or a teacher to a model package."""
    import time

    from motivnet_edge.package import load_package

    from .exporter import export

    t0 = time.perf_counter()

    def progress(stage: str) -> None:
        say(f"export [{time.perf_counter() - t0:5.0f} s] {stage}", err=True)

    path = export(source, out, formats=formats, int8=int8,
                  calib=calib, val=val, val_label_source=val_labels, max_drop=max_drop, latency=not no_latency,
                  yunet=yunet, teacher_options={"trust_code": True} if trust_code else None,
                  prior_correction=prior_correction, lean=lean, progress=progress)
    m = load_package(path).metrics
    say(f"wrote {path}")
    sizes = m.get("file_sizes", {})
    for f in sizes:
        say(f"  {f}: {sizes[f] / 1e6:.2f} MB")
    for runtime, q in m.get("int8", {}).items():
        if "error" in q:
            say(f"  int8 {runtime}: not shipped ({q['error']}); {q['fallback']}")
            continue
        line = f"  int8 {runtime} ({q['file']}{'' if q['shipped'] else ', not shipped'}): "
        if "val_accuracy_fp32" in q:
            line += (f"accuracy fp32 {q['val_accuracy_fp32']:.2%}, int8 {q['val_accuracy_int8']:.2%}, "
                     f"drop {q['val_accuracy_drop']:.2%}; ")
        say(line + f"top-1 agreement with fp32 {q['agreement_int8_vs_fp32']:.2%} on {q['agreement_faces']} faces"
                   + (f"; {q['method']}" if "method" in q else ""))
    if "model.onnx" in sizes and "model.int8.onnx" in sizes:
        say(f"  compression {sizes['model.onnx'] / sizes['model.int8.onnx']:.2f}x (ONNX file size)")
    for backend, lat in m.get("latency", {}).items():
        line = f"  {backend}: fp32 {lat.get('fp32_ms', float('nan')):.3f} ms"
        if "int8_ms" in lat:
            line += f", int8 {lat['int8_ms']:.3f} ms, speed-up {lat['fp32_ms'] / lat['int8_ms']:.2f}x"
        say(line + f" (batch 1, {lat['threads']} thread, {lat['cpu']})")
