"""backend="auto" and precision="auto" decided on this device, by measuring, once per package and CPU.

Latency figures a package carries were taken on the machine that exported it; another CPU
(VNNI or not, AVX-512 or not) can rank the same files the other way round. So the first time
a package runs with an "auto" choice on a CPU, each candidate (backend, precision) is timed
here, each in its own process (two runtimes in one process distort each other), batch 1, and
the answer is cached in the user cache under the package's file hashes, the CPU and the
runtime versions. Later runs read the cache. INT8 must beat fp32 by ``INT8_MARGIN`` to be
chosen: it costs some accuracy, so a tie goes to fp32. Timing is opt-in (``autotune=True`` or
``MOTIVNET_AUTOTUNE=1``): a first load must not cost seconds, and by default the manifest's
figures decide (see motivnet_edge.backends).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from .atomic import write_json
from .cache import read_entry, user_cache
from .cpu import cpu_info

log = logging.getLogger(__name__)

#: INT8 is chosen only when its p50 is at most this fraction of fp32's on the same backend.
INT8_MARGIN = 0.9


def enabled(option: bool | None) -> bool:
    """``option`` when given; else MOTIVNET_AUTOTUNE=1 turns timing on (it is off by default)."""
    if option is not None:
        return bool(option)
    return os.environ.get("MOTIVNET_AUTOTUNE", "0").lower() in ("1", "true", "yes", "on")


def _key(package, threads: int, candidates) -> str:
    from importlib import metadata

    versions = []
    for dist in ("onnxruntime", "openvino"):
        try:
            versions.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    name, flags = cpu_info()
    text = json.dumps([sorted(f.sha256 for f in package.files), name, sorted(flags), threads, os.cpu_count(),
                       versions, sorted(candidates)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def pick(p50: dict[tuple[str, str], float]) -> tuple[str, str]:
    """The rule on measured p50s: INT8 replaces fp32 on its backend only when at most
    ``INT8_MARGIN`` of fp32's time; then the fastest backend wins."""
    best = {}
    for b in dict.fromkeys(b for b, _ in p50):
        fp32, int8 = p50.get((b, "fp32")), p50.get((b, "int8"))
        if fp32 is None or (int8 is not None and int8 <= INT8_MARGIN * fp32):
            best[b] = ("int8", int8) if int8 is not None else ("fp32", fp32)
        else:
            best[b] = ("fp32", fp32)
    backend = min(best, key=lambda b: best[b][1])
    return backend, best[backend][0]


def cache_path(package, threads: int, candidates) -> Path:
    return user_cache("autotune", _key(package, threads, candidates) + ".json")


def tuned_choice(package, backend: str, precision: str, options) -> tuple[str, str]:
    """(backend, precision) for ``create_backend``: "auto" resolved by timing here when autotune
    is on (``options.autotune`` or MOTIVNET_AUTOTUNE=1), else passed through unchanged."""
    from .backends import auto_candidates

    if not enabled(options.autotune):
        return backend, precision
    candidates = auto_candidates(package, backend, precision, options)
    return choose(package, candidates, threads=options.threads) if candidates else (backend, precision)


def choose(package, candidates: list[tuple[str, str]], *, threads: int) -> tuple[str, str]:
    """The (backend, precision) to use among ``candidates``, measured here once and cached."""
    if len(candidates) == 1:
        return candidates[0]
    path = cache_path(package, threads, candidates)
    try:
        saved = json.loads(read_entry(path))
        choice = tuple(saved["choice"])
        if choice in {tuple(c) for c in candidates}:
            log.info("auto choice from %s: %s %s", path, *choice)
            return choice
        log.warning("ignoring the autotune cache entry %s: its choice %s is not one of %s; measuring again",
                    path, list(choice), candidates)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        log.warning("ignoring the unreadable autotune cache entry %s; measuring again", path)
    from .timing import BenchConfig, compare

    log.info("timing %s once on this CPU to choose backend/precision (cached in %s)",
             ", ".join(f"{b} {p}" for b, p in candidates), path.parent)
    rows = compare(package.root, [BenchConfig(b, p, threads, 1) for b, p in candidates], rounds=1, iters=300,
                   seconds=0.3)
    p50 = {(r["backend"], r["precision"]): r["p50_ms"] for r in rows}
    choice = pick(p50)
    record = {"choice": list(choice), "p50_ms": {f"{b} {p}": round(v, 4) for (b, p), v in p50.items()},
              "cpu": cpu_info()[0], "threads": threads, "int8_margin": INT8_MARGIN}
    try:
        write_json(path, record)
    except OSError as exc:  # a read-only home still gets the measured answer, just not cached
        log.warning("could not cache the auto choice in %s: %s", path, exc)
    log.info("auto choice measured here: %s %s (%s)", *choice, record["p50_ms"])
    return choice
