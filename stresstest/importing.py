"""Bring a classifier from elsewhere into the project's checkpoint contract, checked on real test images: what
import_model.py calls, and the Python entry point for a model already in memory (stresstest.import_classifier)."""
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .core import atomic, paths
from .core.architecture import (build_architecture, canonical_spec, file_sha256, load_strict, source_identity,
                                strip_prefixes)
from .core.checkpoint import NATIVE_SIZE, classifier_checkpoint, model_card
from .core.device import describe_device, resolve_device
from .core.errors import UserError, first_line
from .core.record import RECORDS_DIR, portable
from .data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, Cifar10, Normalizer, data_summary, load_cifar10
from .metrics import wilson_interval
from .nn.inference import inference_model, run_batched

RESERVED_NAMES = {folder.name for folder in [RECORDS_DIR, paths.COMPARISON_DIR, paths.CALIBRATION_DIR,
                                             paths.ROBUSTNESS_DIR, paths.SEEDS_DIR, paths.EXPLANATIONS_DIR,
                                             paths.LABEL_ISSUES_DIR, paths.PROBING_DIR, paths.REPORT_DIR]}
FAST_PATH_TOLERANCE = 1e-3  # largest |probability difference| between the fast inference path and a plain forward
CHECK_BATCH = 128


@dataclass(frozen=True)
class Preprocessing:
    """How the model wants its inputs: (pixel / 255 - mean) / std per channel, at input_size x input_size."""
    mean: tuple = CIFAR10_MEAN
    std: tuple = CIFAR10_STD
    input_size: int = NATIVE_SIZE

    def normalizer(self, device: torch.device) -> Normalizer:
        return Normalizer(self.mean, self.std, device, self.input_size)  # resizes only images of another size

    def describe(self) -> str:
        values = "raw pixels 0..255" if self == RAW_PIXELS else \
            f"mean {list(self.mean)}, std {list(self.std)} (of pixels in [0, 1])"
        size = "" if self.input_size == NATIVE_SIZE else f", resized (bilinear) to {self.input_size}x{self.input_size}"
        return values + size


RAW_PIXELS = Preprocessing(mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)


@dataclass(frozen=True)
class ImportCheck:
    """What the import measured on the test images."""
    test_images: int
    correct: int
    fast_path_max_abs_diff: float
    seconds: float
    warnings: tuple

    @property
    def accuracy(self) -> float:
        return self.correct / self.test_images

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.test_images)


def check_outputs(model: nn.Module, images: torch.Tensor, normalize: Normalizer,
                  num_classes: int) -> tuple[torch.Tensor, list[str]]:
    """The model's plain fp32 eval-mode outputs on uint8 test images; one-line errors for outputs of the wrong
    shape or non-finite ones, warnings for outputs that look like probabilities."""
    side = normalize.size
    chunks = []
    with torch.no_grad():
        for start in range(0, len(images), CHECK_BATCH):
            try:
                out = model(normalize(images[start:start + CHECK_BATCH]))
            except Exception as error:
                raise UserError(f"the model fails on a ({min(CHECK_BATCH, len(images))}, 3, {side}, {side}) input "
                                f"({type(error).__name__}: {first_line(error)}); pass the --input-size it was "
                                "trained at") from None
            if not isinstance(out, torch.Tensor):
                raise UserError(f"the model returns a {type(out).__name__}, not a tensor of logits; wrap it so that "
                                "forward returns the (N, classes) logits")
            chunks.append(out.float())
    logits = torch.cat(chunks)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise UserError(f"the model outputs shape {tuple(logits.shape)}, but the data has {num_classes} classes: "
                        f"expected ({len(images)}, {num_classes}); build it with {num_classes} outputs")
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(1).sum())
        raise UserError(f"the model gives non-finite outputs (NaN or inf) for {bad} of {len(images)} test images; "
                        "check the weights and the preprocessing (--mean/--std, --raw-pixels)")
    warnings = []
    if (logits >= 0).all() and torch.allclose(logits.sum(1), torch.ones(len(logits), device=logits.device), atol=1e-3):
        warnings.append("the outputs look like probabilities (non-negative, rows summing to 1); the stages take a "
                        "softmax of them, so return the logits (drop the final softmax) for faithful figures")
    return logits, warnings


def import_classifier(model: nn.Module, arch: str, class_names: list[str], preprocessing: Preprocessing,
                      test_images: np.ndarray, test_labels: np.ndarray, device: torch.device,
                      weights: Path | None = None) -> tuple[dict, ImportCheck]:
    """The checkpoint of `model` (whose architecture `arch` rebuilds: checked) and what the check measured: its
    outputs on the test images are finite (N, classes) logits, the fast inference path agrees with them."""
    started = time.perf_counter()
    arch = canonical_spec(arch)
    rebuilt = build_architecture(arch, len(class_names))
    load_strict(rebuilt, strip_prefixes(model.state_dict()), "the model's state dict",
                f"--arch {arch} must rebuild this model")
    rebuilt.to(device).eval()
    images = torch.from_numpy(test_images).to(device)
    normalize = preprocessing.normalizer(device)
    logits, warnings = check_outputs(rebuilt, images, normalize, len(class_names))
    checked = min(len(images), 256)
    fast = run_batched(inference_model(rebuilt), images[:checked], normalize, "fp32")
    difference = float((fast.softmax(1) - logits[:checked].softmax(1)).abs().max())
    if difference > FAST_PATH_TOLERANCE:
        warnings.append(f"the fast inference path (BatchNorm folded, fp32 heads) differs from the plain forward by "
                        f"up to {difference:.2g} in probability; report it with the architecture")
    correct = int((logits.argmax(1).cpu().numpy() == test_labels).sum())
    check = ImportCheck(len(test_labels), correct, difference, time.perf_counter() - started, tuple(warnings))
    low, high = check.interval
    imported = {"weights": portable(weights) if weights else "(a model in memory)",
                "weights_sha256": file_sha256(weights) if weights else "",
                "preprocessing": preprocessing.describe(), "test_images": check.test_images,
                "test_accuracy": round(check.accuracy, 6), "test_accuracy_low95": round(low, 6),
                "test_accuracy_high95": round(high, 6), "fast_path_max_abs_diff": difference,
                "imported_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    checkpoint = classifier_checkpoint(rebuilt, arch, class_names, preprocessing.mean, preprocessing.std, {},
                                       input_size=preprocessing.input_size, imported=imported,
                                       arch_source=source_identity(arch))
    return checkpoint, check


def check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or name in RESERVED_NAMES:
        raise UserError(f"--name {name!r}: give a plain folder name (the model goes to experiments/<name>/)")


def save_imported(checkpoint: dict, name: str) -> Path:
    """experiments/<name>/best_model.pth and import.json beside it (written atomically)."""
    out_dir = atomic.ensure_writable_dir(paths.EXPERIMENTS / name)
    target = out_dir / paths.BEST_MODEL
    atomic.save_torch(target, checkpoint)
    atomic.write_json(out_dir / paths.IMPORT_CARD, model_card(checkpoint, target))
    return target


def import_model(model: nn.Module, arch: str, name: str, preprocessing: Preprocessing = Preprocessing(),
                 data_dir: Path = Path("data"), device: str = "auto", weights: Path | None = None,
                 quiet: bool = False) -> Path:
    """Import a model held in memory: checked on the test images of `data_dir`, saved as
    experiments/<name>/best_model.pth, which every analysis stage then reads (--baseline / --improved / --checkpoint).
    `arch` is the spec that rebuilds it (built-in name, torchvision:<builder>, timm:<name>, file.py:callable or
    module:callable). Returns the checkpoint's path."""
    check_name(name)
    return check_and_save(model, arch, name, preprocessing, load_cifar10(data_dir, quiet=quiet),
                          resolve_device(device), weights, quiet)


def check_and_save(model: nn.Module, arch: str, name: str, preprocessing: Preprocessing, data: Cifar10,
                   device: torch.device, weights: Path | None, quiet: bool = False) -> Path:
    """import_model on data already loaded (import_model.py loads it once, to build the model too)."""
    checkpoint, check = import_classifier(model, arch, data.class_names, preprocessing, data.test_images,
                                          data.test_labels, device, weights)
    checkpoint["imported"].update(data=data_summary(data), device=describe_device(device))
    for warning in check.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    target = save_imported(checkpoint, name)
    if not quiet:
        low, high = check.interval
        print(f"{arch}: test accuracy {check.accuracy:.4f} [{low:.4f}, {high:.4f}] (Wilson 95%, "
              f"n={check.test_images}); checked in {check.seconds:.1f} s -> {target}")
    return target
