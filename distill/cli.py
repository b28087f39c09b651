"""The distillation verbs of ``motivnet-edge``: distill, train-head, eval.

Loaded by the main command group only when one of them runs; heavy imports (torch) happen
inside each verb, so ``motivnet-edge --help`` stays fast and torch-free.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from motivnet_edge.cli_options import (BACKEND_OPTIONS, CLASS_WEIGHT, MIRROR, TRUST_CODE, UsageFailure, friendly,
                                       list_option, say)
from motivnet_edge.errors import LabelError

from motivnet_edge.datasets.readers import LABEL_SOURCES


MAP_OPTION = list_option(
    "--map", "maps", metavar="SRC=DST",
    help="Explicit label remapping; an empty DST or 'none' drops the class (e.g. contempt=none).")


def parse_maps(maps: tuple[str, ...]) -> dict[str, str | None] | None:
    """``--map SRC=DST`` options as a label mapping (None drops SRC); None when none given."""
    mapping = {}
    for m in maps:
        if "=" not in m:
            raise UsageFailure(f"--map {m!r}: write SRC=DST, e.g. contempt=none")
        src, dst = m.split("=", 1)
        mapping[src] = None if dst.strip().lower() in ("", "none") else dst
    return mapping or None


def _per_domain(items, domains, *, option: str, ok, value_words: str, example: str) -> dict[str, float]:
    """``DOMAIN=NUMBER`` items of ``option`` as a mapping; names checked, and each number by ``ok``."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or name not in domains or number is None or not ok(number):
            raise UsageFailure(f"{option} {item}: write DOMAIN={value_words.split()[0].upper()} with a domain of "
                               f"{', '.join(domains)} and a {value_words}, e.g. {example}")
        out[name] = number
    return out


def _domain_powers(items, domains) -> dict[str, float]:
    """``--domain-class-power DOMAIN=POWER`` items (a power from 0 to 1)."""
    return _per_domain(items, domains, option="--domain-class-power", ok=lambda p: 0 <= p <= 1,
                       value_words="power from 0 to 1", example="ferplus=1")


def _domain_scales(items, domains) -> dict[str, float]:
    """``--domain-scale DOMAIN=FACTOR`` items (0 to 100; 0 keeps the domain's rows, and so the
    teacher cache, but never draws them: an ablation that costs no new cache)."""
    return _per_domain(items, domains, option="--domain-scale", ok=lambda f: 0 <= f <= 100,
                       value_words="factor from 0 (read and cached, never drawn) to 100", example="ferplus=2")


def _meta_bars(items, domains) -> dict[str, dict[str, float]]:
    """``--meta-min DOMAIN.COLUMN=VALUE`` items as {domain: {column: bar}}."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        domain, dot, column = key.partition(".")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not dot or not column or domain not in domains or number is None or number != number:
            raise UsageFailure(f"--meta-min {item}: write DOMAIN.COLUMN=NUMBER with a domain of {', '.join(domains)} "
                               "and a column of its meta.csv, e.g. expw.detector_confidence=30")
        out.setdefault(domain, {})[column] = number
    return out


def _kept_domains(without, domains) -> tuple[str, ...]:
    """The domains left after ``--without`` (names checked; leaving out every one is refused)."""
    unknown = [d for d in without if d not in domains]
    if unknown or len(set(without)) >= len(domains):
        raise UsageFailure(f"--without {', '.join(unknown or without)}: name some of {', '.join(domains)}, "
                           "not all of them")
    return tuple(d for d in domains if d not in without)


def _domain_teachers(items, domains) -> dict[str, list[str]]:
    """``--domain-teacher DOMAIN=FILE`` items as {domain: [files]} (repeat a domain for an ensemble)."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in domains or not path:
            raise UsageFailure(f"--domain-teacher {item}: write DOMAIN=FILE with a domain of {', '.join(domains)}, "
                               "e.g. ferplus=runs/pkg/fer_teacher/model.onnx, or expw=none (labels only)")
        out.setdefault(name, []).append(path)
    return out


def missing_class_hint(exc: LabelError, data: str) -> UsageFailure:
    """The usage error for a dataset class the model lacks, naming the --map that fixes it."""
    hint = " ".join(f"--map {m}=none" for m in exc.missing)
    return UsageFailure(f"{data} has classes the model lacks: {', '.join(exc.missing)}; drop them with {hint} "
                        f"or rename them with --map {exc.missing[0]}=LABEL")


@click.command()
@click.option("--data", type=click.Path(), default=None, help="Training faces (FER+ split, CSV, class folders).")
@click.option("--domains", type=click.Path(file_okay=False), default=None,
              help="Instead of --data: the shared/ folder; train on every domain's train part (whole and "
                   "YuNet-aligned crops, domain- and class-balanced) and select on their validation parts.")
@click.option("--pack", type=click.Path(dir_okay=False), default=None,
              help="Instead of --data or --domains: a training pack (motivnet-edge pack), the same mix in one file.")
@click.option("--samples-per-epoch", type=click.IntRange(1, 10_000_000), default=None,
              help="With --domains: faces drawn per epoch  [default: 30000].")
@list_option("--without", "without", metavar="DOMAIN",
             help="With --domains: leave these domains' train parts out (ablations), e.g. --without kdef.")
@click.option("--no-balance", is_flag=True,
              help="With --domains: draw faces as stored (no domain or class balancing; ablation).")
@click.option("--class-power", type=click.FloatRange(0, 1), default=None,
              help="With --domains: a class's share inside its domain grows as count**POWER (1: as stored, "
                   "0: every class equally often)  [default: 0.5].")
@list_option("--domain-class-power", "domain_class_power", metavar="DOMAIN=POWER",
             help="With --domains: --class-power for one domain (repeatable), e.g. ferplus=1 draws FER+ as stored.")
@list_option("--domain-scale", "domain_scale", metavar="DOMAIN=FACTOR",
             help="With --domains: multiply one domain's share of an epoch (repeatable; replaces that domain's "
                  "built-in factor, facial_expressions=0.5), e.g. ferplus=2.")
@list_option("--meta-min", "meta_min", metavar="DOMAIN.COLUMN=VALUE",
             help="A bar on a domain's meta.csv column, e.g. expw.detector_confidence=30: faces under it are noisy "
                  "rows, drawn --meta-weight times as often (repeatable).")
@click.option("--meta-weight", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Draw weight of noisy rows next to clean ones of their class (0: filtered out).")
@list_option("--extra-data", item=click.Path(), split=False,
              help="More labelled faces (repeatable); only the train part of their by-person split is used.")
@MAP_OPTION
@click.option("--out", type=click.Path(), required=True, help="Run folder.")
@list_option("--teacher", "teachers", item=click.Path(), split=False, help="Teacher file; repeat for an ensemble.")
@list_option("--domain-teacher", "domain_teacher", metavar="DOMAIN=FILE", split=False,
             help="With --domains and --teacher: this domain's train rows learn from FILE instead (repeat for an "
                  "ensemble), e.g. ferplus=FER_SPECIALIST.onnx; FILE 'none': that domain learns from its labels "
                  "alone, e.g. expw=none for noisy labels the teacher reads poorly.")
@click.option("--val", type=click.Path(), default=None, help="Selection set (default: FER2013Valid beside the data).")
@click.option("--student", default="vit_hybrid_pico", show_default=True,
              help="Student preset (vit_hybrid_femto/pico/pico_relu/pico_lite/pico_lite_relu/pico8/nano/small, vit_pico/nano/micro, vit_tiny/small; convolutional: resnet_s, resnet_s64 at 64 px); --init with a shallower student starts the extra blocks as identities, a pico_lite from a pico keeps its strided stem convs.")
@click.option("--epochs", type=click.IntRange(1, 10000), default=10, show_default=True)
@click.option("--views", type=click.IntRange(1, 1_000_000), default=8, show_default=True,
              help="Seeded augmented views per image (each cached once per teacher: at most 64 unless the "
                   "teacher runs online).")
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
@click.option("--label-source", type=click.Choice(LABEL_SOURCES), default="ferplus", show_default=True,
              help="FER+ splits: train and select on the FER+ votes or the original FER2013 labels.")
@click.option("--mirror-teacher", is_flag=True,
              help="Target = the teacher's mean reading of each view and its mirror image: a student without "
                   "the teacher's left/right bias (the teacher runs twice per view, once, into its own cache).")
@click.option("--online-teacher", is_flag=True,
              help="The teacher reads every training batch as the student sees it, instead of a cache of --views "
                   "views per image: fresh views every epoch (e.g. --views 1000) and --mixup, for a teacher pass "
                   "per step.")
@click.option("--mixup", type=click.FloatRange(0, None), default=0.0, show_default=True,
              help="Mix pairs of training faces and their labels with Beta(A, A) weights (0: off); with a teacher, "
                   "needs --online-teacher so the teacher reads the mixed faces.")
@click.option("--degrade", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Fraction of the student's faces made smaller, blurred or JPEG-compressed (the teacher reads "
                   "them clean): robustness to poorer cameras and smaller faces.")
@click.option("--resume", is_flag=True, help="Continue the run in --out after an interruption.")
@click.option("--stop-after", type=click.IntRange(1, None), default=None,
              help="End this sitting after N more epochs (the schedule stays --epochs long): a long run trained in "
                   "bounded sittings, each continued with --resume.")
@TRUST_CODE
@friendly
def distill(data, domains, pack, samples_per_epoch, without, no_balance, class_power, domain_class_power, domain_scale,
            meta_min, meta_weight, extra_data, maps, out, teachers, domain_teacher, val, student, epochs, views, threads, kd_weight, label_weight, temperature,
            batch_size, lr, cache_dir, init, label_source, mirror_teacher, online_teacher, mixup, degrade,
            resume, stop_after, trust_code) -> None:
    """Distil a teacher (or several) into a small student (a ViT or a resnet)."""
    from .distill_options import DistillOptions
    from .mixture import MixRecipe
    from .pipeline import distill as run_distill

    mixed = domains is not None or pack is not None
    if (without or no_balance or samples_per_epoch or class_power is not None or domain_class_power
            or domain_scale or domain_teacher or meta_min) and not mixed:
        raise UsageFailure("--without, --no-balance, --class-power, --domain-class-power, --domain-scale, "
                           "--meta-min, --domain-teacher and --samples-per-epoch apply to --domains (or --pack) training")
    if meta_min and pack is not None:
        raise UsageFailure("--meta-min reads each domain's meta.csv beside its faces, which a pack does not hold: "
                           "train with --domains")
    if no_balance and (class_power is not None or domain_class_power or domain_scale):
        raise UsageFailure("--no-balance draws every face as stored: drop --class-power / --domain-class-power / "
                           "--domain-scale")
    mix, routed = None, None
    if mixed:
        from motivnet_edge.datasets.domains import DOMAINS

        routed = _domain_teachers(domain_teacher, DOMAINS) or None
        per_domain = _domain_powers(domain_class_power, DOMAINS)
        scales = {} if no_balance else {**MixRecipe().domain_scale, **_domain_scales(domain_scale, DOMAINS)}
        bars = _meta_bars(meta_min, DOMAINS)
        mix = MixRecipe(domains=_kept_domains(without, DOMAINS), domain_class_power=per_domain, domain_scale=scales,
                        **({"meta_min": bars, "meta_weight": meta_weight} if bars else {}),
                        **({"samples_per_epoch": samples_per_epoch} if samples_per_epoch else {}),
                        **({"domain_power": 1.0, "class_power": 1.0} if no_balance else {}),
                        **({"class_power": class_power} if class_power is not None else {}))
    options = DistillOptions(
        out=out, data=data, domains=domains, pack=pack, mix=mix, val=val, teachers=tuple(teachers),
        domain_teachers=routed, student=student, init=init, epochs=epochs, stop_after=stop_after, resume=resume,
        views=views, kd_weight=kd_weight, label_weight=label_weight, temperature=temperature, cache_dir=cache_dir,
        label_source=label_source, extra_data=tuple(extra_data), mapping=parse_maps(maps), trust_code=trust_code,
        mirror_teacher=mirror_teacher, online_teacher=online_teacher, mixup=mixup,
        train={"batch_size": batch_size, "lr": lr, "threads": threads, "degrade_prob": degrade},
        command=shlex.join(["motivnet-edge", *sys.argv[1:]]))
    options.check()
    if _finished_or_taken(Path(out), resume, epochs):
        return
    if not teachers:
        say("distill: no --teacher: the student learns from the labels alone (no distillation)", err=True)
    say(f"distill: reading the training faces{' and cutting their aligned variants (cached after the first run)' if domains else ''}",
        err=True)
    try:
        best = run_distill(options)
    except LabelError as exc:
        if not exc.missing:
            raise
        raise missing_class_hint(exc, ", ".join([str(p) for p in (data, val, *extra_data) if p])) from None
    click.echo(json.dumps(best))
    rows = _log_rows(Path(out))
    done = rows[-1].get("epoch", 0) if rows else 0
    if done < epochs:
        say(f"distill: paused after epoch {done} of {epochs}; continue with the same command and --resume", err=True)
        return
    say(f"next: motivnet-edge export {out} --out PACKAGE --int8 --calib FACES/  (a device package)", err=True)


def _log_rows(run: Path) -> list[dict]:
    """The epochs a run folder has logged; none when its log is absent or unreadable (the resume
    itself reports an unreadable run)."""
    try:
        from .run_folder import read_log

        return read_log(run)
    except (OSError, ValueError):
        return []


def _finished_or_taken(run: Path, resume: bool, epochs: int) -> bool:
    """Checks --out before any face is read: a run already there needs --resume; a resumed run that
    has trained all its epochs says so and stops (True)."""
    has_run = (run / "last.pt").is_file() or (run / "log.jsonl").is_file()
    if has_run and not resume:
        raise UsageFailure(f"{run} already holds a run: pass --resume to continue it, or choose a new --out")
    if not (has_run and resume and (run / "log.jsonl").is_file()):
        return False
    rows = _log_rows(run)
    if rows and rows[-1].get("epoch", 0) >= epochs:
        best = max(rows, key=lambda r: r.get("val_acc", 0))
        say(f"{run} is complete: {rows[-1]['epoch']} of {epochs} epochs trained; best epoch {best.get('epoch')} "
            f"(validation {best.get('val_acc', 0):.4f}) is {run / 'best.pt'}. Nothing to do", err=True)
        say(f"next: motivnet-edge export {run} --out PACKAGE --int8 --calib FACES/", err=True)
        return True
    return False


@click.command(name="pack")
@click.option("--domains", type=click.Path(file_okay=False, exists=True), required=True,
              help="The shared/ folder whose domains go in (as distill --domains reads them).")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Pack file to write (.npz).")
@list_option("--without", "without", metavar="DOMAIN", help="Leave these domains out, e.g. --without sfew.")
@click.option("--size", type=click.IntRange(8, 512), default=56, show_default=True,
              help="Longest image side kept, in pixels (students read 48x48).")
@click.option("--quality", type=click.IntRange(1, 100), default=75, show_default=True, help="WebP quality.")
@click.option("--cache-dir", type=click.Path(), default=None,
              help="Aligned-crop cache (share distill's: default OUT's folder/cache).")
@friendly
def pack_cmd(domains, out, without, size, quality, cache_dir) -> None:
    """Pack the multi-domain training mix and its validation parts into one file (for a GPU host)."""
    from motivnet_edge.detectors import YuNetDetector

    from motivnet_edge.datasets.domains import DOMAINS, shared_yunet
    from .mixture import MixRecipe
    from .pack import write_pack
    from .distill_options import STUDENT_PREPROCESSING

    kept = _kept_domains(without, DOMAINS)
    yunet = shared_yunet(domains)
    if not yunet.is_file():
        raise UsageFailure(f"{yunet} not found: --domains is the shared/ folder, with the YuNet model in models/yunet")
    manifest = write_pack(domains, out, preprocessing=STUDENT_PREPROCESSING, detector=YuNetDetector(yunet),
                          recipe=MixRecipe(domains=kept),
                          cache_dir=cache_dir or Path(out).parent / "cache", size=size, quality=quality)
    rows = sum(s["rows"] for s in manifest["sources"].values())
    say(f"{out}: {rows} train rows, selection {manifest['selection']}, "
               f"{Path(out).stat().st_size / 2**20:.1f} MiB")


@click.command(name="train-head")
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
    from motivnet_edge.datasets.readers import read_dataset
    from .teachers.head import HeadRecipe, train_head

    path = train_head(backbone, read_dataset(data), out, num_heads=num_heads,
                      recipe=HeadRecipe(epochs=epochs, batch_size=batch_size, lr=lr))
    say(f"wrote {path}")


@click.command(name="eval")
@click.argument("model", type=click.Path())
@click.option("--data", type=click.Path(), required=True,
              help="A dataset, or the shared/ folder for the standard protocols. MODEL 'default' is the embedded model.")
@click.option("--teacher", type=click.Path(), default=None, help="Also report top-1 agreement with it.")
@click.option("--plots", type=click.Path(file_okay=False), default=None, help="Write confusion PNGs here.")
@BACKEND_OPTIONS[0]
@BACKEND_OPTIONS[1]
@MAP_OPTION
@CLASS_WEIGHT
@MIRROR
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@TRUST_CODE
@friendly
def eval_cmd(model, data, teacher, plots, backend, precision, maps, class_weights, mirror, as_json,
             trust_code) -> None:
    """Evaluate a package, checkpoint or teacher: accuracy, UAR, macro-F1, confusion."""
    from .evaluate import evaluate_model, plot_confusion, runs_on, summary

    if not Path(data).exists():
        raise UsageFailure(f"--data {data} does not exist; give a dataset folder or the shared/ folder")
    say(f"eval: scoring {model} on {data} (reading and cutting the faces first)", err=True)
    try:
        results = evaluate_model(model, data, teacher=teacher, backend=backend, precision=precision,
                                 mapping=parse_maps(maps), trust_code=trust_code, class_weights=class_weights,
                                 mirror=mirror, progress=sys.stderr.isatty())
    except LabelError as exc:
        if not exc.missing:
            raise
        raise missing_class_hint(exc, data) from None
    if plots:
        for name, m in results.items():
            plot_confusion(m, Path(plots) / f"confusion_{name}.png", f"{Path(model).name} on {name}")
    if as_json:
        click.echo(json.dumps({k: v.to_dict() for k, v in results.items()}))
    else:
        for line in summary(results, runs_on=runs_on(model, backend=backend, precision=precision)).splitlines():
            say(line)
