"""import_model.py: a classifier from elsewhere into the project's checkpoint contract, checked on the test images,
so that every analysis stage and the report run on it (given as --baseline, --improved or --checkpoint)."""
import argparse
from dataclasses import dataclass, field
from pathlib import Path

from ..core.architecture import build_architecture, load_strict, read_weights
from ..core.cli import (SEED_UNUSED, Common, add_common_args, add_flags, flag, make_parser, params_from, positive_int,
                        run_main)
from ..core.errors import UserError
from ..core.record import write_record
from ..core.device import describe_device, resolve_device
from ..data.cifar10 import data_summary, load_cifar10
from ..importing import RAW_PIXELS, Preprocessing, check_and_save, check_name
from ..nn.inference import REPORTED_PRECISION


def channel_values(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (of pixels scaled to [0, 1]), got {text}")
    return value


@dataclass(frozen=True)
class ImportParams(Common):
    arch: str = field(default="", metadata=flag(
        "the network: a built-in name (resnet18), torchvision:<builder> (e.g. torchvision:resnet18), timm:<name> "
        "(pip install -e '.[timm]'), or your own code as path/to/file.py:callable or package.module:callable "
        "returning an nn.Module (called with num_classes=10 when it takes that argument). Your code runs as Python "
        "here and in every stage that loads the model; the checkpoint records its file's sha256", required=True))
    weights: Path = field(default=Path(), metadata=flag(
        "a state dict, or a checkpoint dict holding one (under state_dict, model, model_state_dict, net, ...); "
        "DDP's module. and torch.compile's _orig_mod. prefixes are removed; read with weights_only=True (a file "
        "that would run code is refused)", required=True))
    name: str = field(default="", metadata=flag("the run folder: experiments/<name>/best_model.pth", required=True))
    mean: tuple = field(default=Preprocessing.mean, metadata=flag(
        "per-channel mean the model subtracts, of pixels in [0, 1] (one value or R G B)", channel_values,
        default_text="CIFAR-10's", repeats=True))
    std: tuple = field(default=Preprocessing.std, metadata=flag(
        "per-channel std the model divides by, of pixels in [0, 1]", channel_values, default_text="CIFAR-10's",
        repeats=True))
    raw_pixels: bool = field(default=False, metadata=flag(
        "the model takes raw pixel values 0..255 (no normalization; overrides --mean/--std)"))
    input_size: int = field(default=Preprocessing.input_size, metadata=flag(
        "side of the square input the model was trained at; CIFAR's 32x32 images are resized (bilinear, as study B "
        "does) to it", positive_int))

    @property
    def preprocessing(self) -> Preprocessing:
        if self.raw_pixels:
            return Preprocessing(RAW_PIXELS.mean, RAW_PIXELS.std, self.input_size)
        return Preprocessing(three(self.mean, "--mean"), three(self.std, "--std"), self.input_size)


def three(values: tuple, flag: str) -> tuple:
    if len(values) == 1:
        return values * 3
    if len(values) != 3:
        raise UserError(f"{flag} takes one value or three (R G B), got {len(values)}")
    return tuple(values)


def run(params: ImportParams) -> None:
    check_name(params.name)
    preprocessing = params.preprocessing
    if not all(s > 0 for s in preprocessing.std):
        raise UserError("--std values must be positive")
    data = load_cifar10(params.data_dir)
    device = resolve_device(params.device)
    model = build_architecture(params.arch, len(data.class_names))
    load_strict(model, read_weights(params.weights), f"--weights {params.weights}",
                f"check that --arch {params.arch} is the network these weights were saved from")
    target = check_and_save(model, params.arch, params.name, preprocessing, data, device, params.weights)
    write_record(f"import_model.{params.name}", {"checkpoint": target}, {"weights": params.weights},
                 arch=params.arch, preprocessing=preprocessing.describe(), data=data_summary(data),
                 device=describe_device(device), precision=REPORTED_PRECISION)


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = ImportParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help=SEED_UNUSED)
    add_flags(parser, defaults)
    args = parser.parse_args(argv)
    params = params_from(args, defaults)
    run_main(lambda: run(params), args.debug)
