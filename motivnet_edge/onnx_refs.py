"""Which files an ONNX model would make a runtime read: its external-data locations.

An ONNX tensor may keep its bytes in another file (``data_location = EXTERNAL``, a relative
``location``). Runtimes resolve it on their own: ONNX Runtime and OpenVINO, given a model as
bytes, look in the process's working directory (measured: a model naming ``secret.bin`` loaded
that file's bytes as weights in both), and ONNX Runtime before its own path checks (1.17) reads
absolute paths too. So a model file alone could make the process read, and a later export ship,
a file nobody listed. Every ONNX file motivnet-edge loads is scanned here first, and what it
references must be a file its package lists (``check_listed``) or, for a teacher given by path,
a plain file beside it (``check_beside``).

The scan walks the protobuf wire format directly (no ``onnx`` import: the device runtime does
not install it), descending only into the messages that can hold tensors: graphs, nodes,
attributes (subgraphs included), functions, training graphs and sparse tensors.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from .errors import PackageError

# field number -> kind of sub-message, for each message kind that can (transitively) hold a tensor
_CHILDREN = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node", 11: "attribute"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_EXTERNAL_DATA, _DATA_LOCATION, _EXTERNAL = 13, 14, 1  # TensorProto fields; DataLocation.EXTERNAL


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not b & 0x80:
            return value, i


def _fields(buf: memoryview):
    """(field number, value) of one message: ints for varints, memoryviews for length-delimited."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i:i + length], i + length
        elif wire in (1, 5):
            value, i = None, i + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"wire type {wire} is not used by ONNX")
        if i > len(buf):
            raise ValueError("truncated field")
        yield field, value


def _location(entry: memoryview) -> str | None:
    """The value of a StringStringEntryProto whose key is "location" (None for other keys)."""
    key = value = None
    for field, v in _fields(entry):
        if isinstance(v, memoryview):
            key, value = (bytes(v), value) if field == 1 else (key, bytes(v)) if field == 2 else (key, value)
    return value.decode("utf-8", "replace") if key == b"location" and value is not None else None


def _messages(data: bytes):
    """(kind, bytes) of the model and every message below it that can hold a tensor or a node
    (``_CHILDREN``), walked without recursion.

    Raises:
        ValueError: ``data`` is not a well-formed protobuf message (when the walk reaches the fault).
    """
    stack = [("model", memoryview(data))]
    while stack:
        kind, buf = stack.pop()
        yield kind, buf
        for field, value in _fields(buf):
            if isinstance(value, memoryview) and field in _CHILDREN.get(kind, {}):
                stack.append((_CHILDREN[kind][field], value))


def external_locations(data: bytes) -> list[str]:
    """Every external-data location the ONNX model in ``data`` names (one per tensor, in no
    particular order); a tensor marked external without a location counts as ''.

    Raises:
        ValueError: ``data`` is not a well-formed protobuf message.
    """
    found: list[str] = []
    for kind, buf in _messages(data):
        if kind != "tensor":
            continue
        external, locations = False, []
        for field, value in _fields(buf):
            if field == _DATA_LOCATION:
                external |= value == _EXTERNAL
            elif field == _EXTERNAL_DATA and isinstance(value, memoryview):
                external = True  # an external_data entry is a reference whatever data_location says
                loc = _location(value)
                if loc is not None:
                    locations.append(loc)
        if external:
            found += locations or [""]
    return found


def _scan(data: bytes, name: str) -> list[str]:
    try:
        return external_locations(data)
    except ValueError as exc:
        raise PackageError(f"{name} is not an ONNX model ({exc}); re-export it") from None


def check_listed(data: bytes, model_rel: str, listed) -> None:
    """Refuses a package's ONNX file that references any file but those its manifest lists.

    ``model_rel``: the model's package-relative path; ``listed``: package-relative paths of the
    files the manifest lists beside it (its ``extra_files``).

    Raises:
        PackageError: an external-data location the manifest does not list, or a malformed file.
    """
    folder, listed = posixpath.dirname(model_rel), set(listed)
    for loc in _scan(data, model_rel):
        rel = posixpath.normpath(posixpath.join(folder, loc)) if loc else ""
        if not loc or loc.startswith(("/", "\\")) or "\\" in loc or ":" in loc or rel not in listed:
            raise PackageError(f"{model_rel} reads external data from {loc!r}, which its manifest does not list; "
                               "a model may only read files of its own package: re-export the package")


def check_beside(path: Path) -> bytes:
    """A model file given by path (a teacher): its bytes, once every file it references is a
    plain, visible, regular file in its own folder (no subfolder, no link, no dot-file).

    Raises:
        PackageError: a reference to anything else, or a malformed file.
    """
    data = path.read_bytes()
    for loc in _scan(data, path.name):
        target = path.parent / loc
        if (not loc or loc != Path(loc).name or loc.startswith(".") or "\\" in loc or ":" in loc
                or target.is_symlink() or not target.is_file()):
            raise PackageError(f"{path.name} reads external data from {loc!r}: only plain files beside the model "
                               "(same folder, no links or dot-files) are read; move its data files there")
    return data


#: The operators a classifier graph may use (default domain, then ONNX Runtime's own). Each one's
#: output is bounded by its inputs and the file's own tensors; what is left out can allocate
#: from a value computed at run time (ConstantOfShape, Expand, Tile, Range, Pad, Resize, OneHot)
#: or loop (Loop, If, Scan: their subgraphs are refused with them). Broadcasting can still
#: multiply sizes, so the backends also bound what a graph allocates (see the backends).
CLASSIFIER_OPS = frozenset("""
Abs Add And ArgMax AveragePool BatchNormalization Cast Ceil Clip Concat Constant Conv ConvInteger
DequantizeLinear Div Dropout DynamicQuantizeLinear Einsum Elu Equal Erf Exp Flatten Floor Gather Gelu
Gemm GlobalAveragePool GlobalMaxPool Greater HardSigmoid HardSwish Identity InstanceNormalization
LayerNormalization LeakyRelu Less Log LogSoftmax MatMul MatMulInteger Max MaxPool Mean Min Mul Neg Not
Or Pad PRelu Pow QLinearConv QLinearMatMul QuantizeLinear Reciprocal ReduceL2 ReduceMax ReduceMean
ReduceMin ReduceSum Relu Reshape Shape Sigmoid Sign Slice Softmax Split Sqrt Squeeze Sub Sum Tanh
Transpose Unsqueeze Where
""".split())
MICROSOFT_OPS = frozenset("""
Attention BiasAdd BiasGelu DynamicQuantizeMatMul FastGelu FusedConv FusedGemm FusedMatMul Gelu
MatMulIntegerToFloat QGemm QLinearAdd QLinearAveragePool QLinearConcat QLinearGlobalAveragePool
QLinearMul QLinearSigmoid QLinearSoftmax QuickGelu SkipLayerNormalization
""".split())
#: YuNet's graph also upsamples (Resize) its feature maps.
DETECTOR_OPS = CLASSIFIER_OPS | {"Resize"}
_NODE_OP, _NODE_DOMAIN, _ATTR_G, _ATTR_GS = 4, 7, 6, 11


def graph_operators(data: bytes) -> list[tuple[str, str]]:
    """(domain, op_type) of every node in the ONNX model in ``data``, functions and subgraphs
    included; a subgraph itself counts as the operator "<subgraph>".

    Raises:
        ValueError: ``data`` is not a well-formed protobuf message.
    """
    found: list[tuple[str, str]] = []
    for kind, buf in _messages(data):
        if kind == "node":
            text = {f: bytes(v).decode("utf-8", "replace") for f, v in _fields(buf)
                    if f in (_NODE_OP, _NODE_DOMAIN) and isinstance(v, memoryview)}
            found.append((text.get(_NODE_DOMAIN, ""), text.get(_NODE_OP, "")))
        elif kind == "attribute" and any(f in (_ATTR_G, _ATTR_GS) for f, _ in _fields(buf)):
            found.append(("", "<subgraph>"))
    return found


def check_operators(data: bytes, name: str, allowed: frozenset = CLASSIFIER_OPS) -> None:
    """Refuses an ONNX model using an operator outside ``allowed`` (ONNX Runtime's com.microsoft
    operators are allowed too), or any subgraph (Loop, If, Scan bodies).

    Raises:
        PackageError: names the first operators that are not allowed, or a malformed file.
    """
    try:
        ops = graph_operators(data)
    except ValueError as exc:
        raise PackageError(f"{name} is not an ONNX model ({exc}); re-export it") from None
    bad = sorted({f"{d + '.' if d else ''}{op}" for d, op in ops
                  if not ((d in ("", "ai.onnx") and op in allowed) or (d == "com.microsoft" and op in MICROSOFT_OPS))})
    if bad:
        raise PackageError(f"{name} uses operators a face model has no need of ({', '.join(bad[:5])}): such a "
                           "graph can allocate without bound, so it is not loaded; re-export the model "
                           "with `motivnet-edge export`")
