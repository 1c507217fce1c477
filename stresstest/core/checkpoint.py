"""Classifier checkpoints: plain tensors and values only, read with torch.load(weights_only=True)."""
from pathlib import Path

import torch
import torch.nn as nn

from models import ARCHITECTURES, build_model

from .errors import UserError

CHECKPOINT_FORMAT = "cnn-stress-testing/classifier"
CHECKPOINT_VERSION = 1


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


def read_checkpoint(path: Path, producer: str) -> dict:
    """Load a classifier checkpoint safely; `producer` names the stage that writes it (for the hint)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: run {producer} first")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and weights_only refusals all land here
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} is not a readable checkpoint ({first_line[:120]}); "
                        f"delete it and run {producer} again") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a cnn-stress-testing classifier checkpoint; run {producer} to make one")
    if checkpoint.get("arch") not in ARCHITECTURES:
        raise UserError(f"{path} is for architecture {checkpoint.get('arch')!r}, which this toolkit does not know "
                        f"(known: {', '.join(ARCHITECTURES)}); run {producer} to make a compatible one")
    return checkpoint


def load_classifier(path: Path, producer: str, device: torch.device) -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint, in eval mode and channels-last on `device`."""
    checkpoint = read_checkpoint(path, producer)
    model = build_model(checkpoint["arch"], checkpoint["num_classes"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise UserError(f"{path} does not fit {checkpoint['arch']} with {checkpoint['num_classes']} classes "
                        f"({str(error).splitlines()[0][:120]}); run {producer} again") from None
    model.to(device, memory_format=torch.channels_last).eval()
    return model, checkpoint
