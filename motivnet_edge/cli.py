"""The ``motivnet-edge`` command. Each verb is a thin shell over the Python API.

Verbs that need torch (distill, export, eval) import their packages lazily, so the
runtime CLI works on a device without torch; any MotivnetError becomes one line on
stderr and exit code 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from .cli_options import BACKEND_OPTIONS, CLASS_WEIGHT, MIRROR, UsageFailure, friendly, list_option, say
from .detectors import DETECTORS
from .errors import MotivnetError


class VerbGroup(click.Group):
    """Device verbs live here; tooling verbs are imported from their own package when they run."""

    #: verb -> "module:command"; these need the [distill]/[export] extras (torch).
    TOOLING = {"distill": "motivnet_distill.cli:distill", "pack": "motivnet_distill.cli:pack_cmd",
               "train-head": "motivnet_distill.cli:train_head_cmd",
               "eval": "motivnet_distill.cli:eval_cmd", "export": "motivnet_export.cli:export_cmd"}

    #: tooling verbs that run without torch on model packages (eval scores a package on a device)
    NO_TORCH = ("eval",)

    def list_commands(self, ctx) -> list[str]:
        return [*super().list_commands(ctx), *self.TOOLING]

    def get_command(self, ctx, name):
        if name not in self.TOOLING:
            return super().get_command(ctx, name)
        import importlib

        module, attr = self.TOOLING[name].split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            lacking = exc.name

        @click.command(name=name, help=f"(needs the torch extras: {lacking} is missing)",
                       context_settings={"ignore_unknown_options": True})
        @click.argument("args", nargs=-1, type=click.UNPROCESSED)
        def missing(args) -> None:
            raise UsageFailure(f"`{name}` needs {lacking}: pip install torch==2.13.0 && "
                               "pip install '.[distill,export]' in the motivnet-edge source")
        return missing

    def format_commands(self, ctx, formatter) -> None:
        for title, names in (("On a device", [*super().list_commands(ctx), *self.NO_TORCH]),
                             ("Model building (torch extras)", [n for n in self.TOOLING if n not in self.NO_TORCH])):
            rows = [(n, self.get_command(ctx, n).get_short_help_str(70)) for n in names]
            with formatter.section(title):
                formatter.write_dl(rows)


@click.group(cls=VerbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what is happening to stderr.")
@click.version_option(package_name="motivnet-edge")
def main(verbose: bool) -> None:
    """Facial emotion recognition on edge devices."""
    if not verbose:
        _silence_native_stderr()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def _silence_native_stderr() -> None:
    """C libraries (libpng, FFmpeg) print their own complaints to file descriptor 2 before our
    error says what is wrong and what to do. Python's stderr keeps the terminal; descriptor 2
    goes to /dev/null for the rest of the command (``-v`` keeps both)."""
    try:
        sys.stderr.flush()
        keep = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(keep, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="replace")
    except (OSError, ValueError, AttributeError):
        pass  # no real descriptor 2 (embedded, redirected to a non-file): leave it as it is


def _runtime_options(f):
    for opt in reversed([
        click.option("--model", type=click.Path(), default=None,
                     help="Package folder or .zip, or an embedded model's name  [default: the embedded 'default']"),
        *BACKEND_OPTIONS,
        click.option("--detector", type=click.Choice(DETECTORS), default="auto", show_default=True,
                     help="auto: YuNet when the package ships it (or --yunet), else Haar; none: the image is the face."),
        click.option("--yunet", type=click.Path(), default=None, help="YuNet .onnx (or $MOTIVNET_YUNET)."),
        click.option("--threads", type=click.IntRange(0, 256), default=0, show_default=True,
                     help="Inference threads (0: the runtime's default, all cores)."),
        list_option("--provider", "providers", help="ORT provider: cpu, cuda, tensorrt (repeat or comma list)."),
    ]):
        f = opt(f)
    return f


@main.command()
@click.argument("inputs", nargs=-1)
@_runtime_options
@click.option("--camera", type=click.IntRange(0, 99), default=None, help="Also read this camera (0: the first).")
@click.option("--max-frames", type=click.IntRange(1), default=None, help="Stop each video or camera after N frames.")
@click.option("--detect-every", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Videos and cameras: detect faces every Nth frame, carry them between.")
@click.option("--min-face", type=click.IntRange(1, 10000), default=20, show_default=True,
              help="Smallest face side (px) to find; larger values let detection run on a smaller copy.")
@CLASS_WEIGHT
@MIRROR
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image or frame on stdout.")
@click.option("--save", type=click.Path(file_okay=False), default=None, help="Write annotated copies here.")
@friendly
def predict(inputs, model, backend, precision, detector, yunet, threads, providers, camera, max_frames,
            detect_every, min_face, class_weights, mirror, as_json, save) -> None:
    """Recognise emotions in images, folders of images (recursive), videos and a camera."""
    from tqdm import tqdm

    from .media import expand_inputs
    from .recognizer import EmotionRecognizer

    if not inputs and camera is None:
        raise UsageFailure("nothing to read: pass images, folders or videos, or --camera 0")
    files = expand_inputs(inputs) + ([camera] if camera is not None else [])
    save_dir = Path(save) if save else None
    with EmotionRecognizer.from_pretrained(model, backend=backend, precision=precision, detector=detector,
                                           threads=threads, yunet_model=yunet, providers=tuple(providers),
                                           detect_every=detect_every, min_face=min_face,
                                           class_weights=class_weights, mirror=mirror) as rec:
        bar = tqdm(files, unit="file", disable=as_json or len(files) < 10, file=sys.stderr)

        def emit(name: str, faces, frame: int | None = None) -> None:
            if as_json:
                obj = {"input": name, **({"frame": frame} if frame is not None else {}),
                       "faces": [f.to_dict() for f in faces]}
                click.echo(json.dumps(obj))
            else:
                where = name if frame is None else f"{name}#{frame}"
                if not faces:
                    say(f"{where}: no face")
                for f in faces:
                    x, y, w, h = (round(v) for v in f.box)
                    tid = f" track {f.track_id}" if f.track_id is not None else ""
                    say(f"{where}: face at x={x} y={y} w={w} h={h}{tid}: {f.label} ({f.confidence:.0%})")

        failed, used = 0, set()
        for path in bar:
            # One bad file is reported on one line and the batch goes on; the exit code says so.
            try:
                _predict_one(path, rec, emit, _save_name(save_dir, path, used) if save_dir else None,
                             max_frames=max_frames, quiet=not sys.stderr.isatty())
            except MotivnetError as exc:
                failed += 1
                say(f"motivnet-edge: error: {exc}", err=True)
        if failed:
            sys.exit(UsageFailure.exit_code)  # each failure already has its line on stderr


def _save_name(save_dir: Path, path: Path | int, used: set) -> Path:
    """An annotated copy's name, unique in this run: a.png and b/a.png become a.annotated and a-2.annotated."""
    from .media import is_video

    if isinstance(path, int):
        ext, stem, n = ".mp4", f"camera{path}", 1
    else:
        ext, stem, n = (".mp4" if is_video(path) else ".png"), path.stem, 1
    while (name := f"{stem}{'' if n == 1 else f'-{n}'}.annotated{ext}") in used:
        n += 1
    used.add(name)
    return save_dir / name


def _predict_one(path: Path | int, rec, emit, save: Path | None, max_frames: int | None = None,
                 quiet: bool = False) -> None:
    import time

    from tqdm import tqdm

    from .image_io import load_image
    from .media import VideoSink, annotate, check_input, frame_count, is_video, video_fps, write_image_atomic

    if not isinstance(path, int):
        check_input(path)
    if isinstance(path, int) or is_video(path):
        name = f"camera {path}" if isinstance(path, int) else str(path)
        total = frame_count(path)
        total = min(total, max_frames) if total and max_frames else total or max_frames
        sink = VideoSink(save, 25.0 if isinstance(path, int) else video_fps(path)) if save else None
        ok, n, t0 = False, 0, time.perf_counter()
        bar = tqdm(total=total, unit="frame", desc=name, file=sys.stderr, disable=quiet, leave=False)
        try:
            for result in rec.stream(path, max_frames=max_frames):
                emit(name, result, n)
                n += 1
                bar.update()
                if sink:
                    sink.write(annotate(result.image, result))
            ok = True
        finally:
            bar.close()
            if sink:
                sink.close(ok)
        seconds = time.perf_counter() - t0
        say(f"{name}: {n} frames in {seconds:.1f} s, {n / max(seconds, 1e-9):.1f} fps "
                   f"(detect every {rec.options.detect_every})", err=True)
        return
    image = load_image(path)
    faces = rec.predict(image)
    emit(str(path), faces)
    if save:
        write_image_atomic(save, annotate(image, faces))


@main.command()
@click.argument("package", required=False, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@friendly
def info(package, as_json) -> None:
    """Describe a model package: a folder, a .zip or an embedded model's name (default: 'default')."""
    from .package import load_package
    from .package.describe import describe_package

    pkg = load_package(package)
    if as_json:
        click.echo(json.dumps(pkg.manifest, indent=1))
        return
    for line in describe_package(pkg):
        say(line)


@main.command()
@click.argument("package", required=False, type=click.Path())
@list_option("--threads", item=click.IntRange(0, 256), default=("1", "2"), show_default=True,
             help="Thread counts (repeat or comma list; 0: the runtime's default).")
@list_option("--batch", item=click.IntRange(1, 256), default=("1", "8"), show_default=True,
             help="Batch sizes, 1-256 (repeat or comma list; the runtime classifies larger batches 256 at a time).")
@click.option("--rounds", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Interleaved rounds per configuration (each in its own process).")
@click.option("--seconds", type=click.FloatRange(0.1, 600), default=2.0, show_default=True,
              help="Timing per configuration and round.")
@list_option("--provider", "providers",
             help="ONNX Runtime providers, e.g. tensorrt or cuda on a Jetson (repeat or comma list; default CPU).")
@click.option("--json", "as_json", is_flag=True, help="Print machine facts and rows as JSON.")
@friendly
def benchmark(package, threads, batch, rounds, seconds, providers, as_json) -> None:
    """Classify latency of a package on this device: every backend and precision, each in its own process."""
    from tqdm import tqdm

    from .machine import machine_info
    from .timing import BenchConfig, compare, precisions_here
    from .package import load_package, resolve_model

    ts, bs = threads, batch
    path = resolve_model(package)
    pkg = load_package(path)
    configs = [BenchConfig(backend, precision, t, b, tuple(providers))
               for backend, precision in precisions_here(pkg, providers=tuple(providers)) for b in bs for t in ts]
    with tqdm(total=len(configs) * rounds, unit="run", desc="benchmark", file=sys.stderr, leave=False,
              disable=not sys.stderr.isatty()) as bar:
        rows = compare(path, configs, rounds=rounds, seconds=seconds, progress=lambda cfg: bar.update())
    if as_json:
        click.echo(json.dumps({"machine": machine_info(), "rows": rows}))
        return
    width = max(len(r["runtime"]) for r in rows) if rows else 8
    say(f"{'runtime':{width}s} {'prec':5s} {'batch':>5s} {'thr':>3s} {'p50 ms':>8s} {'spread':>17s} "
               f"{'p99 ms':>8s} {'faces/s':>8s}")
    for r in rows:
        lo, hi = r["p50_spread_ms"]
        say(f"{r['runtime']:{width}s} {r['precision']:5s} {r['batch']:5d} {r['threads']:3d} {r['p50_ms']:8.3f} "
                   f"{lo:8.3f}-{hi:8.3f} {r['p99_ms']:8.3f} {r['throughput_fps']:8.0f}")
    m = machine_info()
    single = [r for r in rows if r["batch"] == 1]
    if single:
        best = min(single, key=lambda r: r["p50_ms"])
        say(f"fastest at batch 1: {best['backend']} {best['precision']}, {best['threads']} thread(s), "
                   f"{best['p50_ms']:.3f} ms ({1e3 / best['p50_ms']:.0f} faces/s)")
    say(f"CPU: {m['cpu']}, {m['cores']} cores, flags {', '.join(m['flags']) or 'none of note'}")


if __name__ == "__main__":
    main()
