"""Command-line plumbing shared by every stage: one-line errors, common flags, value checks, and the one shape of
a stage's parameters: a dataclass of defaults, a second instance of it as the --smoke preset."""
import argparse
import dataclasses
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .errors import UserError

NO_MODEL = "none"  # --improved none: the baseline alone
DEBUG_VARIABLE = "STRESSTEST_DEBUG"  # set to 1: every one-line error also shows its traceback


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show (flags, presets resolved later)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (no usage dump), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def make_parser(description: str | None) -> Parser:
    return Parser(description=description, formatter_class=HelpFormatter)


SEED_UNUSED = "accepted so that every script takes the same flags; this stage draws nothing random"


@dataclass(frozen=True)
class Common:
    """The settings every stage has (the flags every script takes); each stage's parameters extend it."""
    data_dir: Path = Path("data")
    device: str = "auto"
    seed: int = 0


@dataclass(frozen=True)
class BothModels(Common):
    """The common settings and the two models a study C stage compares (the flags of add_checkpoint_args): study A's
    by default, any imported ones when given; `--improved none` analyses the baseline alone."""
    baseline: Path = paths.checkpoint_path("baseline")
    improved: Path = paths.checkpoint_path("improved")

    @property
    def checkpoints(self) -> dict:
        """{tag: checkpoint path} of the models given, in paths.RUNS's order."""
        return {tag: getattr(self, tag) for tag in paths.RUNS if getattr(self, tag) != Path(NO_MODEL)}


def add_common_args(parser: argparse.ArgumentParser, seed_help: str = "random seed") -> None:
    """The flags of every stage: --data-dir, --device, --seed, and --debug."""
    parser.add_argument("--data-dir", type=Path, default=Common.data_dir,
                        help="folder that holds cifar-10-batches-py/ (downloaded there when missing and online)")
    parser.add_argument("--device", default=Common.device, choices=["auto", "cpu", "cuda", "mps"],
                        help="where to run; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=Common.seed, help=seed_help)
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback behind a one-line error (or set {DEBUG_VARIABLE}=1)")


def flag(help: str, type=None, **options) -> dict:
    """The metadata that makes a parameter dataclass's field a flag (add_flags): its help text, the function that
    parses and checks its value, and argparse's other options (choices, metavar, required); `name` for a flag named
    other than the field, `default_text` for a default too long to print, `repeats=True` for several values whose
    repeats count (per-channel values: 0.5 0.5 0.5)."""
    return {"help": help, "type": type, **options}


def value_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "none"
    return str(value)


def add_flags(parser: argparse.ArgumentParser, defaults, smoke=None) -> None:
    """One flag per field of the parameter dataclass `defaults` that carries flag() metadata, named as the field
    (`--field-name`) unless it says otherwise: a bool switches on, a tuple takes several values, any other value
    is parsed by the field's `type` (else the default's own type). Its help ends with the default and, where it
    differs, the --smoke preset's value; it parses to None when not given, so params_from can tell."""
    for field in dataclasses.fields(defaults):
        if "help" not in field.metadata:
            continue
        options = {key: value for key, value in field.metadata.items() if value is not None}
        text, name = options.pop("help"), options.pop("name", "--" + field.name.replace("_", "-"))
        options.pop("repeats", None)
        default, shown = getattr(defaults, field.name), options.pop("default_text", None)
        if isinstance(default, bool):  # off by default: a switch; on: --name / --no-name (metadata's action)
            parser.add_argument(name, dest=field.name, action=options.pop("action", "store_true"), default=default,
                                help=text)
            continue
        if isinstance(default, tuple):
            options.setdefault("nargs", "+")
        else:
            options.setdefault("type", type(default))
        said = [] if default is None or options.get("required") else \
            [f"default {shown if shown is not None else value_text(default)}"]
        if smoke is not None and getattr(smoke, field.name) != default:
            said.append(f"--smoke: {value_text(getattr(smoke, field.name))}")
        parser.add_argument(name, dest=field.name, default=None, **options,
                            help=f"{text} ({'; '.join(said)})" if said else text)


def params_from(args: argparse.Namespace, defaults, smoke=None):
    """The stage's parameters (a dataclass like `defaults`) from parsed flags named as its fields: a flag given
    wins; one left at None takes the --smoke preset's value when --smoke is on, else the default. Fields without
    a flag keep the default (or the preset's). A list given (nargs) becomes a tuple without repeats, unless its
    flag counts them (flag(repeats=True))."""
    base = smoke if smoke is not None and getattr(args, "smoke", False) else defaults
    values = {}
    for field in dataclasses.fields(defaults):
        given = getattr(args, field.name, None)
        if isinstance(given, list):
            given = tuple(given if field.metadata.get("repeats") else dict.fromkeys(given))
        values[field.name] = getattr(base, field.name) if given is None else given
    return dataclasses.replace(defaults, **values)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def unit_interval(text: str) -> float:
    """A value in [0, 1): label smoothing, thresholds."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def open_fraction(text: str) -> float:
    """A value in (0, 1): dataset fractions."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


class Terminated(Exception):
    """SIGTERM: a scheduler preempting the job, or torchrun stopping it because another process failed."""


def _raise_terminated(signum, frame):
    raise Terminated


def run_main(main, debug: bool = False) -> None:
    """Run a stage's main(); user mistakes become one line on stderr and exit status 2 (with the traceback above
    it when `debug` or STRESSTEST_DEBUG=1); Ctrl-C and SIGTERM stop it with one line too (writes are atomic, so
    what was written is complete)."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        main()
    except UserError as error:
        if debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, Terminated) as stop:
        how = "interrupted" if isinstance(stop, KeyboardInterrupt) else "stopped by SIGTERM (preempted, or " \
            "torchrun ended the job because another process failed)"
        print(f"{how}: outputs written so far are complete; rerun the same command (training: with --resume) "
              "to continue", file=sys.stderr)
        sys.exit(130 if isinstance(stop, KeyboardInterrupt) else 143)


def add_checkpoint_args(parser: argparse.ArgumentParser, improved_optional: bool = True) -> None:
    """--baseline and --improved: the study A checkpoints at their usual places by default, or any model
    import_model.py brought in; `--improved none` analyses the baseline alone where the stage allows it."""
    parser.add_argument("--baseline", type=Path, default=paths.checkpoint_path("baseline"),
                        help=f"baseline checkpoint ({paths.producer('baseline')}, or experiments/<name>/best_model.pth "
                             "of import_model.py)")
    parser.add_argument("--improved", type=Path, default=paths.checkpoint_path("improved"),
                        help=f"the model compared with it ({paths.producer('improved')}, or an imported one)"
                             + (f"; '{NO_MODEL}': the baseline alone" if improved_optional else ""))
