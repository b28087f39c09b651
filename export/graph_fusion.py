"""One ONNX Runtime ``Attention`` node per student block, in place of the exporter's 17 nodes.

torch's exporter writes a student's attention as MatMul, Add, Reshape, Transpose, three
Slice/Squeeze pairs, Mul, Transpose, MatMul, Softmax, MatMul, Transpose, Reshape, and ONNX
Runtime's own fusions do not recognise that pattern (its ViT fusion expects other shapes), so
every block paid for 17 small kernels and their thread hand-offs. ``fuse_attention`` matches
the pattern exactly (weights, head count, scale, slice order all checked) and rewrites it
into the ``com.microsoft.Attention`` contrib op, which computes the same thing in one kernel:
QKV projection, scaled dot product, softmax, and the heads merged back. A subgraph that does
not match in every detail is left as it is. ONNX Runtime (CPU and CUDA) and OpenVINO's ONNX
reader run the op; TensorRT does not, which is why only the files ONNX Runtime loads are
rewritten and the NNCF/TensorRT files are made from the plain graph.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DOMAIN = "com.microsoft"


def _const(model, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _attr(node, name: str, default=None):
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


class _Graph:
    """Producer/consumer lookups over one graph."""

    def __init__(self, model) -> None:
        self.model = model
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in model.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in model.graph.output}

    def op(self, tensor: str, op_type: str):
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == op_type else None

    def private(self, node) -> bool:
        """The node's outputs feed only one consumer and are not graph outputs."""
        return all(o not in self.outputs and len(self.consumers.get(o, [])) <= 1 for o in node.output)


def _qkv_part(g: _Graph, tensor: str, part: int, permute) -> bool:
    """``tensor`` is Squeeze(Slice(permute, part:part+1, axis 0), axis 0)."""
    sq = g.op(tensor, "Squeeze")
    sl = g.op(sq.input[0], "Slice") if sq is not None else None
    if sl is None or g.producer.get(sl.input[0]) is not permute:
        return False
    axes = _const(g.model, sq.input[1]) if len(sq.input) > 1 else np.array(_attr(sq, "axes", []))
    starts, ends = _const(g.model, sl.input[1]), _const(g.model, sl.input[2])
    slice_axes = _const(g.model, sl.input[3]) if len(sl.input) > 3 else np.array([0])
    steps = _const(g.model, sl.input[4]) if len(sl.input) > 4 else np.array([1])
    if any(v is None for v in (axes, starts, ends, slice_axes, steps)):
        return False
    return (axes.tolist() == [0] and slice_axes.tolist() == [0] and steps.tolist() == [1]
            and starts.tolist() == [part] and ends.tolist() == [part + 1])


def _match(g: _Graph, softmax) -> tuple[list, object, list[str], int] | None:
    """(nodes to remove, the final Reshape, Attention inputs, heads) for one block, or None."""
    cons = g.consumers.get(softmax.output[0], [])
    if len(cons) != 1 or cons[0].op_type != "MatMul" or cons[0].input[0] != softmax.output[0]:
        return None
    av = cons[0]
    qk = g.op(softmax.input[0], "MatMul")
    if qk is None or _attr(softmax, "axis", -1) not in (-1, 3):
        return None
    mul, kt = g.op(qk.input[0], "Mul"), g.op(qk.input[1], "Transpose")
    if mul is None or kt is None or list(_attr(kt, "perm", [])) != [0, 1, 3, 2]:
        return None
    scale = _const(g.model, mul.input[1])
    q = mul.input[0]
    sq_q = g.op(q, "Squeeze")
    sl_q = g.op(sq_q.input[0], "Slice") if sq_q is not None else None
    permute = g.op(sl_q.input[0], "Transpose") if sl_q is not None else None
    if scale is None or scale.size != 1 or permute is None or list(_attr(permute, "perm", [])) != [2, 0, 3, 1, 4]:
        return None
    if not (_qkv_part(g, q, 0, permute) and _qkv_part(g, kt.input[0], 1, permute)
            and _qkv_part(g, av.input[1], 2, permute)):
        return None
    reshape_in = g.op(permute.input[0], "Reshape")
    add = g.op(reshape_in.input[0], "Add") if reshape_in is not None else None
    proj = g.op(add.input[0], "MatMul") if add is not None else None
    if proj is None:
        return None
    weight, bias = _const(g.model, proj.input[1]), _const(g.model, add.input[1])
    shape = _const(g.model, reshape_in.input[1])
    if weight is None or bias is None or shape is None or weight.ndim != 2 or shape.size != 5:
        return None
    hidden, heads = weight.shape[0], int(shape[3])
    if weight.shape[1] != 3 * hidden or bias.shape != (3 * hidden,) or shape[2] != 3 or heads * int(shape[4]) != hidden:
        return None
    if not np.isclose(float(scale.reshape(())), (hidden // heads) ** -0.5, rtol=1e-5):
        return None
    merge = [c for c in g.consumers.get(av.output[0], []) if c.op_type == "Transpose"]
    if len(merge) != 1 or list(_attr(merge[0], "perm", [])) != [0, 2, 1, 3]:
        return None
    out = [c for c in g.consumers.get(merge[0].output[0], []) if c.op_type == "Reshape"]
    if len(out) != 1:
        return None
    slices = [g.producer[g.op(t, "Squeeze").input[0]] for t in (q, kt.input[0], av.input[1])]
    squeezes = [g.op(t, "Squeeze") for t in (q, kt.input[0], av.input[1])]
    inner = [proj, add, reshape_in, *slices, *squeezes, mul, kt, qk, softmax, av, merge[0]]
    # The permuted qkv feeds exactly the three slices; everything else feeds one node.
    if len(g.consumers.get(permute.output[0], [])) != 3 or any(o in g.outputs for o in permute.output):
        return None
    if not all(g.private(n) for n in inner):
        return None
    return [*inner, permute, out[0]], out[0], [proj.input[0], proj.input[1], add.input[1]], heads


def fuse_attention(model) -> int:
    """Rewrites every matching attention block of an ONNX ModelProto in place.

    Returns:
        How many blocks were fused (0 leaves the model untouched).
    """
    from onnx import helper

    g = _Graph(model)
    removed, replace = set(), {}
    for node in list(model.graph.node):
        if node.op_type != "Softmax":
            continue
        found = _match(g, node)
        if found is None or any(id(n) in removed for n in found[0]):
            continue
        nodes, last, inputs, heads = found
        removed |= {id(n) for n in nodes}
        replace[id(last)] = helper.make_node("Attention", inputs, [last.output[0]], domain=DOMAIN,
                                             name=(last.name or "attention") + "_fused", num_heads=heads)
    if not replace:
        return 0
    kept = [replace.get(id(n), n) for n in model.graph.node if id(n) not in removed or id(n) in replace]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {i for n in model.graph.node for i in n.input}
    unused = [init for init in model.graph.initializer if init.name not in used]
    for init in unused:
        model.graph.initializer.remove(init)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return len(replace)


def fuse_for_onnxruntime(plain: Path, out: Path, *, tolerance: float = 1e-4) -> dict:
    """Writes ``plain`` with its attention fused (export.graph_fusion) to ``out``, or an unchanged
    copy when nothing matches or ONNX Runtime's logits differ by more than ``tolerance``.

    Returns:
        {"attention_blocks": fused count, "max_abs_diff": fused vs plain logits} (or a reason).
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(plain))
    count = fuse_attention(model)
    if not count:
        shutil.copyfile(plain, out)
        return {"attention_blocks": 0}
    onnx.checker.check_model(model)
    shape = [d.dim_value or 4 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    runs = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {model.graph.input[0].name: x})[0]
            for m in (str(plain), model.SerializeToString())]
    diff = float(np.abs(runs[0] - runs[1]).max())
    if diff > tolerance:  # never ship a rewrite that changes answers
        log.warning("attention fusion left out: logits differ by %.2g (> %.0e)", diff, tolerance)
        shutil.copyfile(plain, out)
        return {"attention_blocks": 0, "rejected_max_abs_diff": diff}
    onnx.save_model(model, str(out))
    return {"attention_blocks": count, "max_abs_diff": diff}
