"""A student checkpoint on disk: weights, shape, preprocessing, provenance, licence and metrics.

One module writes it (training) and reads it (export, evaluation, ``--init``), so the three
never disagree on its layout. Reading goes through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from motivnet_edge.atomic import atomic_path
from motivnet_edge.errors import MotivnetError
from motivnet_edge.preprocess import Preprocessing

from .model import StudentConfig, ViTStudent, config_from_dict, create_student

#: The entries every student checkpoint has.
REQUIRED = ("model", "student", "preprocessing")


class StudentCheckpointError(MotivnetError, ValueError):
    """The file is not a readable motivnet-edge student checkpoint."""


@dataclass
class StudentCheckpoint:
    """A loaded student (in eval mode) and what its checkpoint says about it."""

    model: ViTStudent
    preprocessing: Preprocessing
    provenance: dict = field(default_factory=dict)
    license: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.cfg.labels


def save_student(path: str | Path, model: torch.nn.Module, cfg, pp: Preprocessing, *,
                 metrics: dict | None = None, **extra) -> None:
    """Writes the checkpoint atomically (temp file + rename); ``cfg``: a StudentConfig or an
    EnsembleConfig; ``extra``: provenance, license, ..."""
    with atomic_path(path) as tmp:
        torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "student": cfg.to_dict(),
                    "preprocessing": pp.to_dict(), "metrics": metrics or {}, **extra}, tmp)


def write_run_folder(out: str | Path, model: torch.nn.Module, cfg, pp: Preprocessing, *, provenance: dict,
                     license: dict, config_from: Path | None, command: str | None = None) -> Path:
    """A run folder for a model made of finished runs (a soup, an ensemble): best.pt, the
    config.json of ``config_from`` with this provenance, an empty log.jsonl (no epochs of its
    own) and commands.txt. Built in a hidden folder beside ``out`` and renamed onto it, so a
    killed write leaves no folder and a run folder never lacks its config (make_default would
    then package a student without its recipe).

    Raises:
        FileExistsError: ``out`` already holds a run, or is a file or a folder with files.
    """
    import json
    import os
    import shutil
    import tempfile

    out = Path(out)
    if (out / "best.pt").exists() or (out / "log.jsonl").exists():
        raise FileExistsError(f"{out} already holds a run: choose a new --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder: choose a new --out")
    config_path = None if config_from is None else Path(config_from) / "config.json"
    config = json.loads(config_path.read_text()) if config_path is not None and config_path.is_file() else {}
    config["provenance"] = {**config.get("provenance", {}), **provenance}
    if config.get("student") is not None:
        config["student"] = cfg.to_dict()  # the shape this folder's best.pt has
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would make it the one run folder others cannot read
        save_student(tmp / "best.pt", model, cfg, pp, metrics=None, provenance=provenance, license=license)
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        (tmp / "log.jsonl").write_bytes(b"")
        if command:
            (tmp / "commands.txt").write_text(command + "\n")
        os.replace(tmp, out)  # an empty ``out`` is replaced; a folder that filled meanwhile is refused by the OS
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def run_folder_cli(tool: str, write, argv) -> int:
    """The CLI ending of a tool that writes a run folder (soup, ensemble): ``write(command)``
    makes it (``command``: this invocation, for its commands.txt); an error is one line on
    stderr and exit code 2, never a traceback."""
    import shlex
    import sys

    command = shlex.join(["python", "-m", f"motivnet_distill.students.{tool}", *(sys.argv[1:] if argv is None else argv)])
    try:
        out = write(command)
    except MotivnetError as exc:
        print(f"{tool}: error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict (weights-only unpickling).

    Raises:
        StudentCheckpointError: missing, unreadable, or not a student checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise StudentCheckpointError(f"{path} does not exist; pass a distill run folder or its best.pt")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors differ by cause
        raise StudentCheckpointError(f"{path} is not a readable torch checkpoint ({type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:160]})") from None
    if not isinstance(ck, dict) or not set(REQUIRED) <= set(ck):
        raise StudentCheckpointError(f"{path} is not a motivnet-edge student checkpoint (needs model, student "
                                     "and preprocessing entries); train one with `motivnet-edge distill`")
    return ck


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint a user names: a run folder means its ``best.pt``, anything else the file itself."""
    path = Path(path)
    return path / "best.pt" if path.is_dir() else path


def load_student(path: str | Path) -> StudentCheckpoint:
    """A run folder (its best.pt) or a student checkpoint file, as a ready model.

    Raises:
        StudentCheckpointError: see ``read_checkpoint``, or weights that do not fit the saved shape.
    """
    path = checkpoint_file(path)
    ck = read_checkpoint(path)
    try:
        cfg = config_from_dict(ck["student"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StudentCheckpointError(f"{path}: its student config cannot be read ({exc})") from None
    model = create_student(cfg)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise StudentCheckpointError(f"{path}: weights do not fit the saved student config: {str(exc)[:300]}") from None
    prov = {"student": ck["student"], "checkpoint": path.name, **ck.get("provenance", {})}
    prov.setdefault("description", description(cfg, prov))
    terms = dict(ck.get("license", {}))
    if "faces" not in terms and prov.get("domains"):  # a run recorded before distill wrote its faces' terms
        from motivnet_edge.datasets.domains import faces_licence

        from ..mixture import trained_domains

        terms["faces"] = faces_licence(trained_domains(prov["domains"]))
    return StudentCheckpoint(model.eval(), Preprocessing.from_dict(ck["preprocessing"]), prov,
                             terms, {"validation": ck.get("metrics", {})})


def description(cfg: StudentConfig, provenance: dict) -> str:
    """What a student is, in one sentence, from its shape and its run's own record: the package's
    ``provenance.description``, which ``motivnet-edge info`` prints first."""
    from ..mixture import trained_domains

    if not any(k in provenance for k in ("teacher", "domains", "training_data")):
        return f"{cfg.describe()}; how it was trained is not recorded in its checkpoint"
    teacher = provenance.get("teacher")
    learnt = (f"distilled from {teacher} plus the datasets' labels" if teacher
              else "trained on the datasets' labels (no teacher)")
    members = provenance.get("ensemble", {}).get("members")
    if members:  # each member learnt its own way; the recipe recorded is the first run folder's
        learnt = "members " + "; ".join(m["run"] + (f" (distilled from {m['teacher']})" if m.get("teacher") else "")
                                        for m in members) + ", trained"
    report = provenance.get("domains")
    if report:
        trained, selection = trained_domains(report), list(report.get("selection", {}))
        domains = f"{len(trained)} domain{'s' if len(trained) != 1 else ''}"
        data = (f"{domains} ({', '.join(trained)} train parts; whole and YuNet-aligned crops, domain- and "
                f"class-balanced), selected on the mean of {', '.join(selection)} validation accuracy")
    else:
        data = (f"{provenance.get('training_data', 'unrecorded data')}, "
                f"selected on {provenance.get('selection_data', '?')}")
    preset = provenance.get("student_preset")
    return f"{cfg.describe()}{f' ({preset!r})' if preset else ''}, {learnt} on {data}"


def lineage(provenance: dict) -> list[dict]:
    """The teacher, label source and init file of a student's run, then of each run it started from.

    Runs from before the label_source field could only train on the FER+ votes.
    """
    chain, step = [], provenance
    while step:
        chain.append({"teacher": step.get("teacher"), "label_source": step.get("label_source") or "ferplus",
                      "init": (step.get("init") or {}).get("path")})
        step = step.get("init")
    return chain
