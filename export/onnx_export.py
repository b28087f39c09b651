"""torch -> ONNX (dynamic batch, checked, labels and preprocessing in metadata) and -> OpenVINO IR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from motivnet_edge.preprocess import Preprocessing

OPSET = 20
INPUT, OUTPUT = "input", "logits"


#: Node metadata the dynamo exporter writes that holds source file paths of the exporting machine.
_MACHINE_KEYS = ("pkg.torch.onnx.stack_trace",)


def strip_machine_paths(model) -> None:
    """Removes the exporter's per-node stack traces (absolute paths of this machine's files, torch's
    and ours) from an ONNX ModelProto, in place, subgraphs included; the graph is unchanged."""
    def walk(graph) -> None:
        for node in graph.node:
            keep = [p for p in node.metadata_props if p.key not in _MACHINE_KEYS]
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)
    walk(model.graph)


def export_onnx(model: torch.nn.Module, pp: Preprocessing, labels, path: Path, *,
                external_data: bool = False, license: dict | None = None) -> Path:
    """Exports with torch's current (dynamo) exporter, a dynamic batch axis, ONNX-checked.

    ``external_data`` stores weights beside the graph: needed above protobuf's 2 GB.
    ``license`` (part -> terms) travels in the metadata, so a student taught by this file
    records the teacher's licence (``load_teacher`` reads it).
    """
    import onnx

    model.eval()
    dummy = torch.zeros(2, pp.channels, *pp.input_size)
    name = next(iter(__import__("inspect").signature(model.forward).parameters))
    program = torch.onnx.export(model, (dummy,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                dynamic_shapes={name: {0: torch.export.Dim("batch", min=1, max=65536)}},
                                opset_version=OPSET, verbose=False)
    m = program.model_proto
    strip_machine_paths(m)  # a package must not carry the exporting machine's paths
    meta = {"labels": json.dumps(list(labels)), "preprocessing": json.dumps(pp.to_dict()),
            "producer": "motivnet-edge"}
    if license:
        meta["license"] = "; ".join(f"{part}: {terms}" for part, terms in license.items())
    for k, v in meta.items():
        m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    if external_data:
        onnx.save_model(m, str(path), save_as_external_data=True, location=path.name + ".data")
        onnx.checker.check_model(str(path))
    else:
        onnx.checker.check_model(m)
        onnx.save_model(m, str(path))
    return path


def onnx_to_openvino(onnx_path: Path, xml_path: Path) -> Path:
    """Converts ONNX to an OpenVINO IR (xml + bin) in fp32 (no fp16 weight compression)."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def max_abs_diff(model: torch.nn.Module, onnx_path: Path, x: np.ndarray) -> float:
    """Largest |torch - onnxruntime| logit difference on ``x``: the export's own check."""
    import onnxruntime as ort

    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return float(np.abs(sess.run(None, {INPUT: x})[0] - ref).max())
