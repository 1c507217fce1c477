"""Batched inference over uint8 images held on the device: the one inference loop of both studies.

What a stage reports (accuracy, probabilities, confidences, calibration, AURC) is computed in fp32 on every
machine (REPORTED_PRECISION): under bf16 autocast the same checkpoint gave ECE 10.95% against 11.42% in fp32
(issue 20), so a reported figure would depend on the CPU. bf16 stays where only speed is at stake: the training
steps, the throughput benchmark, and study B's 224x224 feature extraction, whose precision is part of its cache
key and written beside its results."""
import copy
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.experimental.optimization import fuse as fuse_conv_batchnorm
from tqdm import tqdm

from ..core.checkpoint import input_size
from ..core.device import autocast
from ..data.cifar10 import Normalizer

REPORTED_PRECISION = "fp32"


def default_eval_batch_size(device: torch.device) -> int:
    # Measured on a 2-core CPU: 256 keeps activations in cache (~20% faster than 1024); GPUs like big batches.
    return 256 if device.type == "cpu" else 1024


class Fp32Linear(nn.Module):
    """A linear layer that stays fp32 under autocast: bf16 logits carry ~3 significant digits, enough to
    tie the top two classes and to blur the confidences the analysis stages rank by."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.linear(x.float())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy with BatchNorm folded into the convolutions (exact, ~10-15% faster on CPU): through
    torch.fx, so only for a model fx can trace that has BatchNorm; any other gets a plain eval-mode copy."""
    has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    was_training = model.training
    try:
        if has_batchnorm:
            try:
                return fuse_conv_batchnorm(model.eval())
            except Exception:  # fx cannot trace it (data-dependent control flow, untraceable calls): plain forward
                pass
        return copy.deepcopy(model).eval()
    finally:
        model.train(was_training)


def inference_model(model: nn.Module) -> nn.Module:
    """An eval-mode copy for fast inference: BatchNorm folded where fx can (fold_batchnorm) and fp32 linear heads.
    Equal to the model's plain fp32 eval forward within the tolerance tests/test_inference.py states."""
    fused = fold_batchnorm(getattr(model, "_orig_mod", model))  # unwrap torch.compile
    for name, module in list(fused.named_modules()):
        if type(module) is nn.Linear:  # exactly: attention modules read their Linear subclasses' weights directly
            parent_name, _, child = name.rpartition(".")
            setattr(fused.get_submodule(parent_name) if parent_name else fused, child, Fp32Linear(module))
    return fused


@torch.inference_mode()
def run_batched(model: nn.Module, images: torch.Tensor, normalizer: Normalizer, precision: str,
                batch_size: int = 0, label: str | None = None) -> torch.Tensor:
    """fp32 outputs of `model` for uint8 (N, 3, H, W) images on its device, in large batches
    (a progress bar named `label` on a terminal)."""
    batch_size = batch_size or default_eval_batch_size(images.device)
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc=label, leave=False,
                      disable=label is None or not sys.stderr.isatty()):
        with autocast(images.device, precision):
            chunks.append(model(normalizer(images[start:start + batch_size])).float())
    return torch.cat(chunks)


def predict_logits(model: nn.Module, images: torch.Tensor, normalizer: Normalizer,
                   precision: str = REPORTED_PRECISION, batch_size: int = 0) -> torch.Tensor:
    """fp32 logits of a classifier (BatchNorm folded, fp32 head) for uint8 images on its device."""
    return run_batched(inference_model(model), images, normalizer, precision, batch_size)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Plain (unsmoothed) cross-entropy and accuracy, comparable across label-smoothing settings."""
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy


def checkpoint_normalizer(checkpoint: dict, device: torch.device) -> Normalizer:
    """The input normalization a classifier checkpoint was trained with."""
    return Normalizer(checkpoint["normalization"]["mean"], checkpoint["normalization"]["std"], device,
                      input_size(checkpoint))  # resizes only images of another size


def probabilities(model: nn.Module, checkpoint: dict, images: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities of a checkpoint's model for uint8 images on its device, computed in fp32."""
    return predict_logits(model, images, checkpoint_normalizer(checkpoint, images.device)).softmax(1)


def last_linear(model: nn.Module) -> nn.Linear | None:
    """The model's last nn.Linear in registration order: its classifier head in every architecture the toolkit
    builds (whether the logits really come from it is checked where its input is used)."""
    linears = [module for module in model.modules() if type(module) is nn.Linear]
    return linears[-1] if linears else None


@torch.inference_mode()
def logits_and_features(model: nn.Module, images: torch.Tensor, normalizer: Normalizer,
                        batch_size: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fp32 logits and the input of the model's last nn.Linear (the penultimate features) for uint8 images on its
    device, captured with a forward hook so that any architecture works; features None when the model has no
    nn.Linear or its logits are not that layer's output (something follows the head)."""
    fast = inference_model(model)
    heads = [module for module in fast.modules() if isinstance(module, Fp32Linear)]
    if not heads:
        return run_batched(fast, images, normalizer, REPORTED_PRECISION, batch_size), None
    captured: list[torch.Tensor] = []
    hook = heads[-1].register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].float()))
    try:
        logits = run_batched(fast, images, normalizer, REPORTED_PRECISION, batch_size)
    finally:
        hook.remove()
    features = torch.cat(captured).flatten(1)
    head = heads[-1].linear
    if features.shape[1] != head.in_features or not torch.allclose(head(features), logits, rtol=1e-4, atol=1e-4):
        return logits, None
    return logits, features
