"""Labels bound to the hashed bytes: each model file declares its output order, and it must be the manifest's.

The manifest is not hashed, so its ``labels`` alone could be edited to rename the outputs
(happiness <-> anger) while every file still verifies. Every exported model file carries its
labels inside itself: ONNX in its metadata (``labels``, a JSON list), an OpenVINO IR in its
``rt_info`` (``framework/labels``, copied from the ONNX it was converted from). A package whose
manifest disagrees with any of its model files, or whose model file declares no labels, is refused.
"""

from __future__ import annotations

import html
import json
import re

from ..errors import PackageError
from ..onnx_refs import _fields

_METADATA_PROPS = 14  # ModelProto.metadata_props (StringStringEntryProto: key 1, value 2)
# The IR's own rt_info is the last element of <net>, after its edges; its framework section holds
# what the converter copied from the ONNX metadata.
_IR_LABELS = re.compile(rb'</edges>\s*<rt_info>.*?<framework>.*?<labels value="([^"]*)"', re.DOTALL)


def onnx_metadata(data: bytes) -> dict[str, str]:
    """The metadata_props of the ONNX model in ``data`` (read from its protobuf, no onnx import).

    Raises:
        ValueError: ``data`` is not a well-formed protobuf message.
    """
    out = {}
    for field, value in _fields(memoryview(data)):
        if field == _METADATA_PROPS and isinstance(value, memoryview):
            entry = {f: bytes(v).decode("utf-8", "replace") for f, v in _fields(value) if isinstance(v, memoryview)}
            out[entry.get(1, "")] = entry.get(2, "")
    return out


def declared_labels(data: bytes, rel: str) -> list | None:
    """The labels a model file declares (ONNX metadata or OpenVINO rt_info), None if it declares none.

    Raises:
        PackageError: the declaration is there but is not a JSON list of names.
    """
    if data.lstrip()[:5] in (b"<?xml", b"<net "):
        m = _IR_LABELS.search(data[-65536:])
        text = html.unescape(m.group(1).decode("utf-8", "replace")) if m else None
    else:
        try:
            text = onnx_metadata(data).get("labels")
        except ValueError:
            raise PackageError(f"{rel} is not an ONNX model or OpenVINO IR; re-export the package") from None
    if text is None:
        return None
    try:
        labels = json.loads(text)
    except ValueError:
        labels = None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise PackageError(f"{rel} declares labels {text[:80]!r}, which is not a list of names; re-export the package")
    return labels


def check_labels(data: bytes, rel: str, labels) -> None:
    """Refuses a model file whose declared labels are not the manifest's ``labels``, in order.

    Raises:
        PackageError: names both orders, or says that the file declares none.
    """
    declared = declared_labels(data, rel)
    if declared is None:
        raise PackageError(f"{rel} does not declare its labels (ONNX metadata or OpenVINO rt_info 'labels'), so "
                           "nothing binds the manifest's to the verified model; re-export the package")
    if declared != list(labels):
        raise PackageError(f"the manifest's labels {list(labels)} are not those {rel} declares {declared}: the "
                           "manifest was edited or belongs to another model; re-export the package")
