"""The ``motivnet-edge`` command. Each verb is a thin shell over the Python API.

Verbs that need torch (distill, export, eval) import their packages lazily, so the
runtime CLI works on a device without torch; any MotivnetError becomes one line on
stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from .errors import MotivnetError


class UsageFailure(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"motivnet-edge: error: {self.format_message()}", err=True)


def friendly(fn):
    """Turns library errors (and a missing optional extra) into exit code 2, one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MotivnetError as exc:
            raise UsageFailure(str(exc)) from None
        except ModuleNotFoundError as exc:
            raise UsageFailure(f"{exc.name} is not installed; this verb needs "
                               "pip install 'motivnet-edge[export,distill]' (torch==2.13.0 first)") from None
        except OSError as exc:
            raise UsageFailure(f"{exc.filename or ''}: {exc.strerror or exc}") from None
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what is happening to stderr.")
@click.version_option(package_name="motivnet-edge")
def main(verbose: bool) -> None:
    """Facial emotion recognition on edge devices."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def _runtime_options(f):
    for opt in reversed([
        click.option("--model", type=click.Path(), default=None, help="Package folder or .zip (default: embedded)."),
        click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto"),
        click.option("--precision", type=click.Choice(["auto", "fp32", "int8"]), default="auto"),
        click.option("--detector", type=click.Choice(["auto", "yunet", "haar", "none"]), default="auto"),
        click.option("--yunet", type=click.Path(), default=None, help="YuNet .onnx (or $MOTIVNET_YUNET)."),
        click.option("--threads", type=click.IntRange(0, 256), default=0),
        click.option("--provider", "providers", multiple=True, help="ORT provider: cpu, cuda, tensorrt."),
    ]):
        f = opt(f)
    return f


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@_runtime_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image or frame on stdout.")
@click.option("--save", type=click.Path(file_okay=False), default=None, help="Write annotated copies here.")
@friendly
def predict(inputs, model, backend, precision, detector, yunet, threads, providers, as_json, save) -> None:
    """Recognise emotions in images, folders of images (recursive) and videos."""
    from tqdm import tqdm

    from .image_io import load_image
    from .media import VideoSink, annotate, expand_inputs, is_video, read_video, video_fps, write_image_atomic
    from .recognizer import EmotionRecognizer

    files = expand_inputs(inputs)
    save_dir = Path(save) if save else None
    with EmotionRecognizer.from_pretrained(model, backend=backend, precision=precision, detector=detector,
                                           threads=threads, yunet_model=yunet, providers=tuple(providers)) as rec:
        bar = tqdm(files, unit="file", disable=as_json or len(files) < 10, file=sys.stderr)

        def emit(name: str, faces, frame: int | None = None) -> None:
            if as_json:
                obj = {"input": name, **({"frame": frame} if frame is not None else {}),
                       "faces": [f.to_dict() for f in faces]}
                click.echo(json.dumps(obj))
            else:
                where = name if frame is None else f"{name}#{frame}"
                if not faces:
                    click.echo(f"{where}: no face")
                for f in faces:
                    x, y, w, h = (round(v) for v in f.box)
                    tid = f" track {f.track_id}" if f.track_id is not None else ""
                    click.echo(f"{where}: face at x={x} y={y} w={w} h={h}{tid}: {f.label} ({f.confidence:.0%})")

        for path in bar:
            if is_video(path):
                sink = VideoSink(save_dir / (path.stem + ".annotated.mp4"), video_fps(path)) if save_dir else None
                ok = False
                try:
                    frames = read_video(path)
                    for i, (frame, faces) in enumerate(_pair(frames, rec)):
                        emit(str(path), faces, i)
                        if sink:
                            sink.write(annotate(frame, faces))
                    ok = True
                finally:
                    if sink:
                        sink.close(ok)
                continue
            image = load_image(path)
            faces = rec.predict(image)
            emit(str(path), faces)
            if save_dir:
                write_image_atomic(save_dir / (path.stem + ".annotated.png"), annotate(image, faces))


def _pair(frames, rec):
    """Yields (frame, tracked faces) for a video, keeping the frame for annotation."""
    held = []

    def tap():
        for fr in frames:
            held.append(fr)
            yield fr
    for faces in rec.stream(tap()):
        yield held.pop(0), faces


@main.command()
@click.argument("package", required=False, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@friendly
def info(package, as_json) -> None:
    """Describe a model package (default: the embedded model)."""
    from .package import load_package
    from .recognizer import DEFAULT_MODEL

    pkg = load_package(package or DEFAULT_MODEL)
    if as_json:
        click.echo(json.dumps(pkg.manifest, indent=1))
        return
    pp, prov = pkg.preprocessing, pkg.provenance
    click.echo(f"package:       {pkg.root}")
    click.echo(f"what:          {prov.get('description', 'n/a')}")
    click.echo(f"labels:        {', '.join(pkg.labels)}")
    click.echo(f"input:         {pp.input_size[0]}x{pp.input_size[1]} {pp.color}, crop {pp.crop}")
    for f in pkg.files:
        size = (pkg.root / f.path).stat().st_size + sum((pkg.root / p).stat().st_size for p in f.extra_files)
        click.echo(f"file:          {f.backend} {f.precision} {f.path} ({size / 1e6:.2f} MB, sha256 {f.sha256[:12]})")
    for key, val in pkg.metrics.items():
        if key != "file_sizes":
            click.echo(f"metric:        {key}: {json.dumps(val)}")
    if pkg.license:
        click.echo(f"licence:       {json.dumps(pkg.license)}")


@main.command(name="export")
@click.argument("source", type=click.Path())
@click.option("--out", type=click.Path(), required=True, help="Package folder to write.")
@click.option("--formats", default="onnx,openvino", show_default=True)
@friendly
def export_cmd(source, out, formats) -> None:
    """Export a distilled student (run folder or checkpoint) to a model package."""
    from motivnet_export.exporter import export

    path = export(source, out, formats=tuple(f.strip() for f in formats.split(",") if f.strip()))
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
