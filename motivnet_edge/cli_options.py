"""Options and error handling shared by every ``motivnet-edge`` verb (the device's and the tooling's).

The runtime's own CLI (motivnet_edge.cli) and the tooling's (motivnet_distill.cli,
motivnet_export.cli) read their common options from here, so a device's CLI module carries
no tooling option and the tooling never reaches into the device's command module.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Sequence

import click

from .backends import BACKENDS, PRECISIONS
from .errors import MotivnetError


#: Characters that steer a terminal instead of printing: C0 and C1 controls (newline and CR forge
#: a result line, ESC starts colour and OSC sequences), DEL, and the bidirectional overrides that
#: reorder what is shown.
_STEERING = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(text: object) -> str:
    """``text`` as one printable line: every steering character becomes its escape (\\n, \\x1b, \\u202e)."""
    return _STEERING.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def say(text: object, *, err: bool = False) -> None:
    """Prints one line for a person. Every string a file, a model or a manifest supplied passes
    through here, escaped (``shown``); JSON output is printed as it is (json.dumps escapes)."""
    click.echo(shown(text), err=err)


class UsageFailure(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        say(f"motivnet-edge: error: {self.format_message()}", err=True)


#: Tooling verbs only (distill, eval, export): loading TorchScript / torch.export files runs code from them.
TRUST_CODE = click.option("--trust-code", is_flag=True,
                          help="Admit TorchScript / torch.export files: loading them runs code from the file. "
                               "Only for files you trust.")

#: Modules that only the optional extras install.
OPTIONAL_MODULES = {"torch", "onnx", "onnxscript", "nncf", "openvino", "h5py", "matplotlib", "skimage"}


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
            if exc.name not in OPTIONAL_MODULES:
                raise  # a broken install, not a missing extra: the traceback is the useful answer
            raise UsageFailure(f"{exc.name} is not installed; this verb needs "
                               "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu, "
                               "then pip install '.[distill,export]' in the motivnet-edge source") from None
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            raise UsageFailure(f"{exc.filename or ''}: {exc.strerror or exc}") from None
    return wrapper


def list_option(*decls: str, item: click.ParamType = click.STRING, split: bool = True, **kwargs):
    """The one form of list option: repeat it (``--threads 1 --threads 2``) or, for names and
    numbers (``split``), give a comma list (``--threads 1,2``). Items are checked by ``item``;
    paths are never split (a comma is a legal file-name character)."""

    def flatten(ctx, param, values):
        raw = [v for value in values or () for v in (value.split(",") if split else [value]) if v.strip()]
        return tuple(item.convert(v.strip(), param, ctx) for v in raw)

    return click.option(*decls, multiple=True, callback=flatten, **kwargs)


#: --backend and --precision, read from the runtime's tables (shared by predict, benchmark, eval).
BACKEND_OPTIONS = (
    click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True),
    click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                 help="bf16: OpenVINO on a CPU with AVX512_BF16/AMX; int8/fp16 where the package has them."),
)


def _class_weights(ctx, param, items: Sequence[str]) -> dict[str, float] | None:
    """``--class-weight LABEL=W`` options as a mapping (names and ranges are checked by the recognizer)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise UsageFailure(f"--class-weight {item!r}: write LABEL=W with W a number > 0, e.g. neutral=0.5")
    return out or None


#: --mirror, shared by predict and eval (the recognizer's mirror).
MIRROR = click.option("--mirror", is_flag=True,
                      help="Average each face's scores with its mirror image's: about a point more "
                           "accuracy for twice the classify time (a model whose graph reads the "
                           "mirror image itself, such as accurate, is read once).")

#: --class-weight, shared by predict and eval (the recognizer's class_weights).
CLASS_WEIGHT = click.option(
    "--class-weight", "class_weights", multiple=True, metavar="LABEL=W", callback=_class_weights,
    help="Multiply a class's probability by W before normalising (repeatable), e.g. neutral=0.5 "
         "for posed or subtle expressions read as neutral.")
