"""What every benchmark script shares: where things are, named models, and writing a results file.

Scripts import it as ``from common import ...`` (Python puts a script's folder on sys.path).
A results file is committed, so it must not carry the paths of the machine that wrote it:
``write_result`` rewrites every absolute path under the checkout or ../shared to a relative one.
"""

from __future__ import annotations

from pathlib import Path

from motivnet_edge.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def relative_paths(obj):
    """``obj`` with absolute paths under the checkout written from its root, and ../shared's as ../shared."""
    if isinstance(obj, dict):
        return {k: relative_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relative_paths(v) for v in obj]
    if isinstance(obj, str) and "/" in obj:
        for base, repl in ((str(ROOT.parent / "shared") + "/", "../shared/"), (str(ROOT) + "/", "")):
            obj = obj.replace(base, repl)
    return obj


#: Kinds of CPU whose timings and kernel roundings differ; each kind's results live apart.
CPU_CLASSES = ("avx512", "avx2", "baseline")


def cpu_class() -> str:
    """'avx512' (AVX-512F), 'avx2' (AVX2 without AVX-512) or 'baseline': the kind of this CPU."""
    from motivnet_edge.cpu import cpu_flags

    flags = cpu_flags()
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "baseline"


def results_dir(kind: str | None = None) -> Path:
    """The folder of one kind of CPU's results: benchmarks/results/ for AVX-512 (the reference
    kind), benchmarks/results/<kind>/ for any other, so a run on one kind never overwrites the
    other kind's figures. ``kind`` defaults to this CPU's."""
    kind = kind or cpu_class()
    results = ROOT / "benchmarks" / "results"
    return results if kind == "avx512" else results / kind


def per_cpu_result(name: str, kind: str | None = None) -> Path:
    """Where a benchmark whose figures depend on the CPU writes ``name`` (see ``results_dir``)."""
    return results_dir(kind) / name


def per_cpu_out(ap, name: str) -> None:
    """The --out option of a benchmark whose figures depend on the CPU."""
    ap.add_argument("--out", type=Path, default=per_cpu_result(name),
                    help=f"results file (default: benchmarks/results/{name}, or its avx2/ copy on an AVX2-only CPU)")


def write_result(path: str | Path, obj) -> None:
    """Writes a results JSON atomically, machine paths made relative."""
    write_json(path, relative_paths(obj))


def fer_calibration(shared: Path, dest: Path, count: int = 600) -> Path:
    """``dest`` (created) holding the first ``count`` FER2013Train faces in name order: the calibration
    folder the INT8 benchmarks hand ``export --calib``."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for p in sorted((shared / "data" / "ferplus" / "FER2013Train").glob("*.png"))[:count]:
        shutil.copy(p, dest / p.name)
    return dest


def named(items: list[str], default: dict[str, str] | None = None) -> dict[str, str]:
    """``NAME=PATH`` (or a bare PATH, named by its folder) options as {name: path}."""
    out = dict(default or {})
    for item in items:
        name, sep, path = item.partition("=")
        out.update({name: path} if sep else {Path(item).name: item})
    return out


def require_data(shared: Path) -> None:
    """Ends a script with a one-line reason when ``shared`` holds no data/ folder."""
    if not (shared / "data").is_dir():
        raise SystemExit(f"{shared} has no data/: point --shared at the shared data folder")


def board_arguments(ap, results_file: str) -> None:
    """The options every accuracy board takes: --shared, --model (repeat), --no-peers, --out."""
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--model", action="append", default=[], help="NAME=PATH or PATH ('default': the embedded model)")
    ap.add_argument("--no-peers", action="store_true", help="leave out the peers (FER2013 Xceptions, OpenCV Zoo)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / results_file)


def scored_models(items: list[str], shared: Path, *, peers: bool = True) -> dict[str, str]:
    """``--model`` options as {name: path} (the embedded default when none), then the peers of
    ``shared`` (the FER2013 Xceptions, OpenCV Zoo's model) unless ``peers`` is off: the model list
    of every accuracy board."""
    models = named(items or ["default=default"])
    if peers:
        for f in sorted((shared / "models" / "xception_fer2013").glob("*.hdf5")):
            models["xception_" + f.name.split("_")[1]] = str(f)
        from zoo_package import zoo_peer

        zoo = zoo_peer(shared)  # OpenCV Zoo's model, packaged with its own preprocessing
        if zoo:
            models["opencv_zoo"] = zoo
    return models


def pct(v) -> str:
    """A fraction as a percentage with one decimal ('' for None)."""
    return "" if v is None else f"{100 * v:.1f}"


def stamp(m: dict) -> str:
    """A results file's machine record as 'CPU (flags), commit C, date'."""
    return f"{m['cpu']} ({', '.join(m['flags'])}), commit {m['commit']}, {m['date']}"
