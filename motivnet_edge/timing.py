"""Latency of a package on this device: each backend/precision in its own process.

Two runtimes' thread pools in one process distort each other (up to 3x measured), and
timings drift between rounds (+-25-30 % on small shared machines), so every
configuration runs in a fresh subprocess and rounds are interleaved (A B A B ...);
results quote the median over rounds with the spread (min..max of round medians).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import MotivnetError


@dataclass(frozen=True)
class BenchConfig:
    """One timed configuration; ``providers`` are ONNX Runtime's (e.g. "tensorrt" on a Jetson)."""

    backend: str = "onnxruntime"
    precision: str = "fp32"
    threads: int = 1
    batch: int = 1
    providers: tuple[str, ...] = ()


def precisions_here(package, *, providers: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(backend, precision) pairs this device can run for ``package``: its files on the installed
    backends, plus OpenVINO bf16 (the fp32 IR) where the CPU has AVX512_BF16/AMX. With ONNX
    Runtime ``providers`` (CUDA, TensorRT), only ONNX Runtime's files."""
    from .backends import installed_backends
    from .cpu import has_bf16

    pairs = [(f.backend, f.precision) for f in package.files if f.backend in installed_backends()]
    if providers:
        return [p for p in pairs if p[0] == "onnxruntime"]
    if has_bf16() and ("openvino", "fp32") in pairs:
        pairs.append(("openvino", "bf16"))
    return pairs


def time_in_process(package: str | Path, cfg: BenchConfig, *, iters: int = 200, warmup: int = 20,
                    seconds: float = 5.0) -> dict:
    """Times classify() on random crops in this process; returns per-call latencies (ms)."""
    from .backends import BackendOptions, create_backend
    from .package import load_package
    from .preprocess import to_tensor

    pkg = load_package(package)
    backend = create_backend(pkg, backend=cfg.backend, precision=cfg.precision,
                             options=BackendOptions(threads=cfg.threads, providers=tuple(cfg.providers)))
    crops = np.random.default_rng(0).integers(0, 255, (cfg.batch, *pkg.preprocessing.input_size,
                                                       pkg.preprocessing.channels), dtype=np.uint8)
    x = to_tensor(crops, pkg.preprocessing)
    for _ in range(warmup):
        backend.run(x)
    times, start = [], time.perf_counter()
    while len(times) < iters and (time.perf_counter() - start < seconds or len(times) < 10):
        t = time.perf_counter()
        backend.run(x)
        times.append((time.perf_counter() - t) * 1e3)
    return {"latency_ms": times, "backend": backend.describe(), "peak_rss_mb": peak_rss_mb()}


def time_interleaved(calls: Mapping[str, Callable[[], object]], *, seconds: float,
                     warmup: int = 50) -> dict[str, list[float]]:
    """Per-call latencies (ms) of several callables timed one call each in turn, in one process.

    For comparing models with each other on a shared machine: drift hits all alike. Each
    call is warmed up first (the first calls allocate and pick kernels).
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    end = time.time() + seconds
    while time.time() < end:
        for name, call in calls.items():
            t = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - t) * 1e3)
    return times


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux's VmHWM belongs to the address space that exec() created, whereas ru_maxrss keeps the
    parent's high-water mark across fork+exec: a worker started by a 500 MB parent would
    report 500 MB whatever it loaded.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB elsewhere


def _die_with_parent() -> None:
    """In the worker, before exec: ask Linux to end it when its parent dies (a killed export)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def run_isolated(package: str | Path, cfg: BenchConfig, *, iters: int = 200, seconds: float = 5.0) -> dict:
    """``time_in_process`` in a fresh interpreter (nothing else loaded in it).

    Raises:
        MotivnetError: the worker failed (its last stderr line is quoted).
    """
    args = [sys.executable, "-m", "motivnet_edge.timing", str(package), json.dumps(asdict(cfg)),
            str(iters), str(seconds)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, preexec_fn=_die_with_parent)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise MotivnetError(f"benchmark worker for {cfg} failed: {tail}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def summarize(per_round: list[list[float]], batch: int) -> dict:
    """Medians over rounds of p50/p90/p99, spread of round p50s, throughput (faces/s)."""
    p = lambda q: [float(np.percentile(r, q)) for r in per_round]  # noqa: E731
    p50 = p(50)
    med = float(np.median(p50))
    return {"p50_ms": med, "p90_ms": float(np.median(p(90))), "p99_ms": float(np.median(p(99))),
            "p50_spread_ms": [min(p50), max(p50)], "rounds": len(per_round),
            "throughput_fps": batch * 1e3 / med, "calls": sum(len(r) for r in per_round)}


def compare(package: str | Path, configs: list[BenchConfig], *, rounds: int = 3, iters: int = 200,
            seconds: float = 5.0, progress=None) -> list[dict]:
    """Interleaved rounds over ``configs``, each call in its own process; one summary per config."""
    samples: dict[int, list[list[float]]] = {i: [] for i in range(len(configs))}
    described, peak = {}, {}
    for _ in range(rounds):
        for i, cfg in enumerate(configs):
            out = run_isolated(package, cfg, iters=iters, seconds=seconds)
            samples[i].append(out["latency_ms"])
            described[i] = out["backend"]
            peak[i] = max(peak.get(i, 0.0), out.get("peak_rss_mb", 0.0))
            if progress:
                progress(cfg)
    return [{**asdict(cfg), "runtime": described[i], "peak_rss_mb": round(peak[i], 1),
             **summarize(samples[i], cfg.batch)}
            for i, cfg in enumerate(configs)]


if __name__ == "__main__":
    # Worker mode: python -m motivnet_edge.timing PACKAGE CONFIG_JSON ITERS SECONDS
    res = time_in_process(sys.argv[1], BenchConfig(**json.loads(sys.argv[2])), iters=int(sys.argv[3]),
                          seconds=float(sys.argv[4]))
    print(json.dumps(res))
