"""The backend table: every fact about a backend, in one row.

Adding a backend is one ``BackendSpec`` here (plus its module, a ``Backend`` subclass): the
package reader checks manifest entries against ``file_precisions``, ``--backend`` and
``create_backend`` take the names, the auto rules try them in table order, and the exporter's
format table (``motivnet_export.formats``) names the backend each format serves. Nothing here
imports a runtime: a device that has only one installed reads the same table.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class BackendSpec:
    """One backend: its name, what installs it and what a package may hold for it."""

    name: str                              # as manifests, --backend and create_backend spell it
    module: str                            # the runtime's Python package, probed to tell whether it is installed
    install: str                           # the command that installs it (error messages name it)
    opener: str                            # "module:Class" of its Backend, imported only when a model opens
    file_precisions: tuple[str, ...]       # precisions a package file for it may declare
    run_precisions: tuple[str, ...] = ()   # precisions it runs from another file (OpenVINO: bf16 from fp32)

    def backend_class(self):
        """The ``Backend`` subclass that opens this backend's files (imports its runtime)."""
        module, cls = self.opener.split(":")
        return getattr(importlib.import_module(module, __package__), cls)


#: In auto order: backend="auto" without recorded latencies tries them in this order.
BACKEND_SPECS = (
    BackendSpec("onnxruntime", "onnxruntime", "pip install onnxruntime",
                ".onnxruntime_backend:OnnxRuntimeBackend", ("fp32", "fp16", "int8")),
    BackendSpec("openvino", "openvino", "pip install openvino",
                ".openvino_backend:OpenVinoBackend", ("fp32", "fp16", "int8"), run_precisions=("bf16",)),
)
SPECS = {s.name: s for s in BACKEND_SPECS}
#: Tried in this order by backend="auto" (measured: see benchmarks/results).
AUTO_ORDER = tuple(SPECS)
#: Names ``create_backend`` (and the CLI's --backend) accepts.
BACKENDS = ("auto", *AUTO_ORDER)
#: Precisions a package's model file may have.
FILE_PRECISIONS = tuple(dict.fromkeys(p for s in BACKEND_SPECS for p in s.file_precisions))
#: Precisions ``create_backend`` (and --precision) accepts.
PRECISIONS = ("auto", *dict.fromkeys(p for s in BACKEND_SPECS for p in (*s.file_precisions, *s.run_precisions)))


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as absent
        return False


def installed_backends() -> list[str]:
    """Backends whose Python package is importable here, in AUTO_ORDER."""
    return [s.name for s in BACKEND_SPECS if _findable(s.module)]
