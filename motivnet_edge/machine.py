"""What a results record says about where it was made: CPU, flags, cores, library versions,
commit and date. The runtime's ``benchmark`` records it with its figures; the exporter and
benchmarks/ with theirs."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path


def git_commit() -> str:
    """The checkout's short commit (results files and manifests name the code that made them)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return commit or "unknown"


def machine_info() -> dict:
    """CPU model, INT8/AVX flags, cores, library versions, commit and date for a results file."""
    from .cpu import cpu_info, reported_flags

    cpu = cpu_info()[0]
    from importlib import metadata

    versions = {}
    for dist in ("numpy", "opencv-python-headless", "onnxruntime", "openvino", "torch", "nncf", "motivnet-edge"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
            "flags": reported_flags(),
            "python": platform.python_version(), "versions": versions, "commit": git_commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
