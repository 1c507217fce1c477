"""Classifier checkpoints: plain tensors and values only, read with torch.load(weights_only=True).

Every stage reads a model through load_classifier, whether train.py/improvement.py trained it or import_model.py
brought it from elsewhere: the checkpoint carries the architecture spec (core.architecture), class names, the input
normalization and size, and either the training config or what the import recorded."""
import sys
from pathlib import Path

import torch
import torch.nn as nn

from .architecture import build_architecture, changed_source, file_sha256, load_strict
from .device import to_channels_last
from ..metrics import wilson_interval
from .errors import UserError, first_line

CHECKPOINT_FORMAT = "cnn-stress-testing/classifier"
CHECKPOINT_VERSION = 1
NATIVE_SIZE = 32  # CIFAR-10's images; a model that expects another input size gets them resized to it


def classifier_checkpoint(model: nn.Module, arch: str, class_names: list[str], mean, std,
                          config: dict, **extra) -> dict:
    """Everything needed to rebuild and use the model, as plain values."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "normalization": {"mean": [float(m) for m in mean], "std": [float(s) for s in std]},
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }


def input_size(checkpoint: dict) -> int:
    """The side of the square inputs the model takes (CIFAR's 32 unless it was imported with another)."""
    return int(checkpoint.get("input_size") or NATIVE_SIZE)


def is_imported(checkpoint: dict) -> bool:
    return "imported" in checkpoint


def require_training_run(checkpoint: dict, path: Path, what: str, producer: str) -> None:
    """`what` retrains the model's recipe, which only a run of this project's training stages has."""
    if is_imported(checkpoint) or not checkpoint.get("config"):
        raise UserError(f"{what} needs a model trained by {producer} (it retrains that recipe); {path} was imported "
                        "or has no training config")


def read_checkpoint(path: Path, producer: str, open_set: bool = False) -> dict:
    """Load a classifier checkpoint safely; `producer` names the stage that writes it (for the hint). A run on
    some of the classes (train.py --classes) only where `open_set` says the caller scores one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: run {producer} first")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and weights_only refusals all land here
        raise UserError(f"{path} is not a readable checkpoint ({first_line(error)[:120]}); "
                        f"delete it and run {producer} again") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a cnn-stress-testing classifier checkpoint; run {producer} to make one, "
                        "or import_model.py for a model from elsewhere")
    if (checkpoint.get("config") or {}).get("classes") and not open_set:
        raise UserError(f"{path} was trained on {len(checkpoint['class_names'])} of the classes (train.py --classes, "
                        "an open-set run); ood.py --open-set scores it, other stages need a model of every class")
    return checkpoint


def build_classifier(checkpoint: dict, path: Path, producer: str) -> nn.Module:
    """The checkpoint's model with its weights, on the CPU (user code named by the spec runs here)."""
    notice = changed_source(checkpoint.get("arch_source", {}))
    if notice:
        print(notice, file=sys.stderr)
    try:
        model = build_architecture(checkpoint["arch"], checkpoint["num_classes"])
    except UserError as error:
        raise UserError(f"{path}: {error}; run {producer} (or import_model.py) to make one this toolkit can "
                        "rebuild") from None
    load_strict(model, checkpoint["state_dict"], str(path), f"run {producer} again")
    return model


def load_classifier(path: Path, producer: str, device: torch.device,
                    open_set: bool = False) -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint, in eval mode and channels-last on `device`."""
    checkpoint = read_checkpoint(path, producer, open_set)
    model = build_classifier(checkpoint, path, producer)
    to_channels_last(model, device).eval()
    return model, checkpoint


def model_card(checkpoint: dict, path: Path) -> dict:
    """What a record (and the report) says of a model: where it came from, how it is fed, how it scored."""
    card = {"checkpoint": str(path), "arch": checkpoint["arch"], "checkpoint_sha256": file_sha256(path),
            "normalization": checkpoint["normalization"], "input_size": input_size(checkpoint)}
    if is_imported(checkpoint):
        card.update(origin="imported (import_model.py)", **checkpoint["imported"])
        if checkpoint.get("arch_source", {}).get("file"):
            card["arch_file_sha256"] = checkpoint["arch_source"]["sha256"]
    else:
        config = checkpoint.get("config", {})
        card.update(origin="trained here", label_smoothing=config.get("label_smoothing"), seed=config.get("seed"),
                    epochs=config.get("epochs"), chosen_epoch=checkpoint.get("epoch"))
        accuracy = checkpoint.get("metrics", {}).get("test_acc")
        test_images = checkpoint.get("split_sizes", {}).get("test")
        if accuracy is not None and test_images:
            low, high = wilson_interval(round(accuracy * test_images), test_images)
            card.update(test_images=test_images, test_accuracy=round(accuracy, 6), test_accuracy_low95=round(low, 6),
                        test_accuracy_high95=round(high, 6))
    return card
