"""The ``motivnet-edge`` command. Each verb is a thin shell over the Python API.

Verbs that need torch (distill, export, eval) import their packages lazily, so the
runtime CLI works on a device without torch; any MotivnetError becomes one line on
stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import sys
from pathlib import Path

import click

from .errors import LabelError, MotivnetError


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
        except BrokenPipeError:
            # The reader (e.g. `| head`) went away: stop quietly, as Unix tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
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
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "int8"]), default="auto", help="bf16: OpenVINO on a CPU with AVX512_BF16/AMX."),
        click.option("--detector", type=click.Choice(["auto", "yunet", "haar", "none"]), default="auto"),
        click.option("--yunet", type=click.Path(), default=None, help="YuNet .onnx (or $MOTIVNET_YUNET)."),
        click.option("--threads", type=click.IntRange(0, 256), default=0),
        click.option("--provider", "providers", multiple=True, help="ORT provider: cpu, cuda, tensorrt."),
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
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image or frame on stdout.")
@click.option("--save", type=click.Path(file_okay=False), default=None, help="Write annotated copies here.")
@friendly
def predict(inputs, model, backend, precision, detector, yunet, threads, providers, camera, max_frames,
            detect_every, min_face, as_json, save) -> None:
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
                                           detect_every=detect_every, min_face=min_face) as rec:
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

        failed, used = 0, set()
        for path in bar:
            # One bad file is reported on one line and the batch goes on; the exit code says so.
            try:
                _predict_one(path, rec, emit, _save_name(save_dir, path, used) if save_dir else None,
                             max_frames=max_frames, quiet=not sys.stderr.isatty())
            except MotivnetError as exc:
                failed += 1
                click.echo(f"motivnet-edge: error: {exc}", err=True)
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
    from .media import VideoSink, annotate, frame_count, is_video, read_frames, video_fps, write_image_atomic

    if isinstance(path, int) or is_video(path):
        name = f"camera {path}" if isinstance(path, int) else str(path)
        total = frame_count(path)
        total = min(total, max_frames) if total and max_frames else total or max_frames
        sink = VideoSink(save, 25.0 if isinstance(path, int) else video_fps(path)) if save else None
        ok, n, t0 = False, 0, time.perf_counter()
        bar = tqdm(total=total, unit="frame", desc=name, file=sys.stderr, disable=quiet, leave=False)
        try:
            for frame, faces in _pair(read_frames(path, max_frames=max_frames), rec):
                emit(name, faces, n)
                n += 1
                bar.update()
                if sink:
                    sink.write(annotate(frame, faces))
            ok = True
        finally:
            bar.close()
            if sink:
                sink.close(ok)
        seconds = time.perf_counter() - t0
        click.echo(f"{name}: {n} frames in {seconds:.1f} s, {n / max(seconds, 1e-9):.1f} fps "
                   f"(detect every {rec.options.detect_every})", err=True)
        return
    image = load_image(path)
    faces = rec.predict(image)
    emit(str(path), faces)
    if save:
        write_image_atomic(save, annotate(image, faces))


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
    m = pkg.metrics
    if "gflops" in m:
        click.echo(f"compute:       {m['gflops']:.3f} GFLOPs per face")
    for name, by_precision in m.get("test", {}).items():
        for precision, t in by_precision.items():
            low = [f"{k} {v:.0%}" for k, v in t.get("per_class_recall", {}).items() if v < 0.3]
            click.echo(f"accuracy:      {name} {precision}: {t['accuracy']:.2%} (UAR {t['uar']:.2%}, n={t['n']})"
                       + (f"; recall under 30 %: {', '.join(low)}" if low else ""))
    if "int8" in m and "val_accuracy_drop" in m["int8"]:
        click.echo(f"int8:          validation accuracy drop {m['int8']['val_accuracy_drop']:.2%}")
    for backend, lat in m.get("latency", {}).items():
        click.echo(f"latency:       {backend}: " + ", ".join(f"{k[:-3]} {v:.3f} ms" for k, v in lat.items()
                                                            if k.endswith("_ms") and isinstance(v, (int, float)))
                   + f" (batch 1, {lat.get('threads')} thread(s), {lat.get('cpu')}, measured at export)")
    pc = pkg.provenance.get("prior_correction")
    if pc:
        click.echo(f"calibration:   prior correction tau={pc['tau']} fitted on {Path(pc.get('fitted_on', '?')).name}")
    for role, rel in pkg.manifest.get("assets_roles", {}).items():
        click.echo(f"asset:         {role}: {rel}")
    for key, val in pkg.license.items():
        click.echo(f"licence:       {key}: {val}")


@main.command()
@click.argument("package", required=False, type=click.Path())
@click.option("--threads", default="1,2", show_default=True, help="Comma-separated thread counts.")
@click.option("--batch", default="1,8", show_default=True, help="Comma-separated batch sizes (>= 1).")
@click.option("--rounds", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Interleaved rounds per configuration (each in its own process).")
@click.option("--seconds", type=click.FloatRange(0.1, 600), default=2.0, show_default=True,
              help="Timing per configuration and round.")
@click.option("--json", "as_json", is_flag=True, help="Print machine facts and rows as JSON.")
@friendly
def benchmark(package, threads, batch, rounds, seconds, as_json) -> None:
    """Classify latency of a package on this device: every backend and precision, each in its own process."""
    from .backends import installed_backends
    from .benchmark import BenchConfig, compare, machine_info
    from .package import load_package
    from .recognizer import DEFAULT_MODEL

    try:
        ts, bs = [int(t) for t in threads.split(",")], [int(b) for b in batch.split(",")]
    except ValueError:
        raise UsageFailure("--threads and --batch take comma-separated integers, e.g. 1,2") from None
    if min(bs) < 1 or min(ts) < 0:
        raise UsageFailure("--batch sizes must be >= 1 and --threads >= 0 (0: the runtime's default), e.g. --batch 1,8")
    path = Path(package) if package else DEFAULT_MODEL
    pkg = load_package(path)
    configs = [BenchConfig(f.backend, f.precision, t, b) for f in pkg.files if f.backend in installed_backends()
               for b in bs for t in ts]
    from tqdm import tqdm

    with tqdm(total=len(configs) * rounds, unit="run", desc="benchmark", file=sys.stderr, leave=False,
              disable=not sys.stderr.isatty()) as bar:
        rows = compare(path, configs, rounds=rounds, seconds=seconds, progress=lambda cfg: bar.update())
    if as_json:
        click.echo(json.dumps({"machine": machine_info(), "rows": rows}))
        return
    click.echo(f"{'backend':12s} {'prec':5s} {'batch':>5s} {'thr':>3s} {'p50 ms':>8s} {'spread':>17s} "
               f"{'p99 ms':>8s} {'faces/s':>8s}")
    for r in rows:
        lo, hi = r["p50_spread_ms"]
        click.echo(f"{r['backend']:12s} {r['precision']:5s} {r['batch']:5d} {r['threads']:3d} {r['p50_ms']:8.3f} "
                   f"{lo:8.3f}-{hi:8.3f} {r['p99_ms']:8.3f} {r['throughput_fps']:8.0f}")


@main.command(name="export")
@click.argument("source", type=click.Path())
@click.option("--out", type=click.Path(), required=True, help="Package folder to write.")
@click.option("--formats", default="onnx,openvino", show_default=True)
@click.option("--int8", is_flag=True, help="Also write INT8 models (NNCF post-training quantization).")
@click.option("--calib", type=click.Path(), default=None, help="Calibration faces (>= 300).")
@click.option("--val", type=click.Path(), default=None, help="Labelled faces: fp32/int8 accuracy.")
@click.option("--val-labels", type=click.Choice(["ferplus", "fer2013"]), default="ferplus", show_default=True,
              help="Which labels of a FER+ --val split to score on (those the model was trained on).")
@click.option("--max-drop", type=click.FloatRange(0, 1), default=None, help="Accuracy control bound, e.g. 0.01.")
@click.option("--no-latency", is_flag=True, help="Skip timing fp32 vs int8 on this machine.")
@click.option("--yunet", type=click.Path(), default=None, help="Ship this YuNet .onnx inside the package.")
@click.option("--prior-correction", is_flag=True,
              help="Fold a class-prior logit offset, fitted on --val, into the student (no class folded into neutral).")
@click.option("--trust-code", is_flag=True,
              help="Admit TorchScript / torch.export files: loading them runs code from the file. Only for files you trust.")
@friendly
def export_cmd(source, out, formats, int8, calib, val, val_labels, max_drop, no_latency, yunet, prior_correction,
               trust_code) -> None:
    """Export a student run/checkpoint or a teacher to a model package."""
    from motivnet_export.exporter import export

    from .package import load_package

    path = export(source, out, formats=tuple(f.strip() for f in formats.split(",") if f.strip()), int8=int8,
                  calib=calib, val=val, val_label_source=val_labels, max_drop=max_drop, latency=not no_latency,
                  yunet=yunet, teacher_options={"trust_code": True} if trust_code else None,
                  prior_correction=prior_correction)
    m = load_package(path).metrics
    click.echo(f"wrote {path}")
    sizes = m.get("file_sizes", {})
    for f in sizes:
        click.echo(f"  {f}: {sizes[f] / 1e6:.2f} MB")
    if "int8" in m:
        q = m["int8"]
        if "val_accuracy_fp32" in q:
            click.echo(f"  accuracy fp32 {q['val_accuracy_fp32']:.2%}, int8 {q['val_accuracy_int8']:.2%}, "
                       f"drop {q['val_accuracy_drop']:.2%}")
        click.echo(f"  int8 vs fp32 top-1 agreement {q['agreement_int8_vs_fp32']:.2%} on {q['agreement_faces']} faces")
        if "model.onnx" in sizes and "model.int8.onnx" in sizes:
            click.echo(f"  compression {sizes['model.onnx'] / sizes['model.int8.onnx']:.2f}x (ONNX file size)")
    for backend, lat in m.get("latency", {}).items():
        line = f"  {backend}: fp32 {lat.get('fp32_ms', float('nan')):.3f} ms"
        if "int8_ms" in lat:
            line += f", int8 {lat['int8_ms']:.3f} ms, speed-up {lat['fp32_ms'] / lat['int8_ms']:.2f}x"
        click.echo(line + f" (batch 1, {lat['threads']} thread, {lat['cpu']})")


@main.command()
@click.option("--data", type=click.Path(), required=True, help="Training faces (FER+ split, CSV, class folders).")
@click.option("--out", type=click.Path(), required=True, help="Run folder.")
@click.option("--teacher", "teachers", multiple=True, help="Teacher file; repeat for an ensemble.")
@click.option("--val", type=click.Path(), default=None, help="Selection set (default: FER2013Valid beside the data).")
@click.option("--student", default="vit_hybrid_pico", show_default=True,
              help="Student preset (vit_hybrid_femto/pico/nano, vit_pico/nano/micro, vit_tiny/small).")
@click.option("--epochs", type=click.IntRange(1, 10000), default=10, show_default=True)
@click.option("--views", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Seeded augmented views per image (each cached once per teacher).")
@click.option("--threads", type=click.IntRange(0, 256), default=0, show_default=True,
              help="Training threads (0: torch's default).")
@click.option("--kd-weight", type=float, default=None, help="Weight of the distillation term (default 1 with a teacher).")
@click.option("--label-weight", type=float, default=1.0, show_default=True, help="Weight of the label term.")
@click.option("--temperature", type=float, default=2.0, show_default=True, help="KD temperature (> 0).")
@click.option("--batch-size", type=click.IntRange(1, 65536), default=128, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--cache-dir", type=click.Path(), default=None, help="Teacher output cache (default: OUT/cache).")
@click.option("--init", type=click.Path(), default=None,
              help="timm/DeiT checkpoint, or a run's best.pt, to start the student from.")
@click.option("--label-source", type=click.Choice(["ferplus", "fer2013"]), default="ferplus", show_default=True,
              help="FER+ splits: train and select on the FER+ votes or the original FER2013 labels.")
@click.option("--resume", is_flag=True, help="Continue the run in --out after an interruption.")
@click.option("--trust-code", is_flag=True,
              help="Admit TorchScript / torch.export files: loading them runs code from the file. Only for files you trust.")
@friendly
def distill(data, out, teachers, val, student, epochs, views, threads, kd_weight, label_weight, temperature,
            batch_size, lr, cache_dir, init, label_source, resume, trust_code) -> None:
    """Distil a teacher (or several) into a small ViT student."""
    from motivnet_distill.pipeline import distill as run_distill

    best = run_distill(data=data, out=out, val=val, teachers=list(teachers), student=student, epochs=epochs,
                       views=views, kd_weight=kd_weight, label_weight=label_weight, temperature=temperature,
                       resume=resume, batch_size=batch_size, lr=lr, cache_dir=cache_dir, init=init, threads=threads,
                       label_source=label_source, trust_code=trust_code,
                       command=shlex.join(["motivnet-edge", *sys.argv[1:]]))
    click.echo(json.dumps(best))


@main.command(name="train-head")
@click.option("--backbone", type=click.Path(), required=True, help="Sapiens weights (any supported format).")
@click.option("--data", type=click.Path(), required=True, help="Labelled faces (FER+, CSV, class folders).")
@click.option("--out", type=click.Path(), required=True, help="MotivNet .pth to write.")
@click.option("--epochs", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option("--lr", type=float, default=1e-5, show_default=True)
@click.option("--num-heads", type=int, default=None, help="Backbone heads, for non-published widths.")
@friendly
def train_head_cmd(backbone, data, out, epochs, batch_size, lr, num_heads) -> None:
    """Build a MotivNet teacher: train the ML-Decoder head on a frozen Sapiens backbone."""
    from motivnet_distill.data import read_dataset
    from motivnet_distill.teacher_head import HeadRecipe, train_head

    path = train_head(backbone, read_dataset(data), out, num_heads=num_heads,
                      recipe=HeadRecipe(epochs=epochs, batch_size=batch_size, lr=lr))
    click.echo(f"wrote {path}")


@main.command(name="eval")
@click.argument("model", type=click.Path())
@click.option("--data", type=click.Path(), required=True,
              help="A dataset, or the shared/ folder for the standard protocols. MODEL 'default' is the embedded model.")
@click.option("--teacher", type=click.Path(), default=None, help="Also report top-1 agreement with it.")
@click.option("--plots", type=click.Path(file_okay=False), default=None, help="Write confusion PNGs here.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "int8"]), default="auto", help="bf16: OpenVINO on a CPU with AVX512_BF16/AMX.")
@click.option("--map", "maps", multiple=True, metavar="SRC=DST",
              help="Explicit label remapping; an empty DST or 'none' drops the class (e.g. contempt=none).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@click.option("--trust-code", is_flag=True,
              help="Admit TorchScript / torch.export files: loading them runs code from the file. Only for files you trust.")
@friendly
def eval_cmd(model, data, teacher, plots, backend, precision, maps, as_json, trust_code) -> None:
    """Evaluate a package, checkpoint or teacher: accuracy, UAR, macro-F1, confusion."""
    from motivnet_distill.evaluate import evaluate_model, plot_confusion, summary

    mapping = {}
    for m in maps:
        if "=" not in m:
            raise UsageFailure(f"--map {m!r}: write SRC=DST, e.g. contempt=none")
        src, dst = m.split("=", 1)
        mapping[src] = None if dst.strip().lower() in ("", "none") else dst
    try:
        results = evaluate_model(model, data, teacher=teacher, backend=backend, precision=precision,
                                 mapping=mapping or None, trust_code=trust_code, progress=sys.stderr.isatty())
    except LabelError as exc:
        if not exc.missing:
            raise
        hint = " ".join(f"--map {m}=none" for m in exc.missing)
        raise UsageFailure(f"{data} has classes the model lacks: {', '.join(exc.missing)}; drop them with {hint} "
                           f"or rename them with --map {exc.missing[0]}=LABEL") from None
    if plots:
        for name, m in results.items():
            plot_confusion(m, Path(plots) / f"confusion_{name}.png", f"{Path(model).name} on {name}")
    click.echo(json.dumps({k: v.to_dict() for k, v in results.items()}) if as_json else summary(results))


if __name__ == "__main__":
    main()
