"""The threat model: a norm ball of radius eps around each image, in [0, 1] pixel space, clipped to [0, 1]."""
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import torch
import torch.nn as nn

from ..core.errors import UserError
from ..data.cifar10 import Normalizer

Norm = Literal["Linf", "L2"]  # pyautoattack's names
NORMS: tuple[Norm, ...] = ("Linf", "L2")
MAX_RADIUS = {"Linf": 1.0, "L2": 55.5}  # the whole [0, 1] cube: its L2 diameter is sqrt(3072)


@dataclass(frozen=True)
class Threat:
    norm: Norm
    eps: float  # in [0, 1] pixel units

    @property
    def label(self) -> str:
        """'Linf 8/255' or 'L2 0.5': the way papers write the radius."""
        if self.norm == "Linf":
            steps = Fraction(self.eps * 255).limit_denominator(100)
            return f"Linf {steps}/255" if steps.denominator == 1 else f"Linf {float(steps):g}/255"
        return f"L2 {self.eps:g}"


def parse_radius(norm: Norm, text: str) -> Threat:
    """One radius as the command line gives it: Linf in 1/255 units ('8' or '0.5'), L2 in pixel units."""
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise UserError(f"{norm} radius {text!r} is not a number") from None
    eps = value / 255 if norm == "Linf" else value
    if not 0 < eps <= MAX_RADIUS[norm]:
        unit = "in 1/255 units, at most 255" if norm == "Linf" else f"at most {MAX_RADIUS['L2']}"
        raise UserError(f"{norm} radius {text} is out of range: give a positive radius ({unit})")
    return Threat(norm, eps)


def parse_threat(text: str) -> Threat:
    """A norm and radius as the command line gives them: NORM:RADIUS ('Linf:8' for 8/255, 'L2:0.5')."""
    norm, sep, radius = text.partition(":")
    for name in NORMS:
        if sep and name.lower() == norm.lower():
            return parse_radius(name, radius)
    raise UserError(f"radius {text!r}: write NORM:RADIUS with NORM one of {', '.join(NORMS)} "
                    "(for example Linf:8 for 8/255, L2:0.5)")


def flat_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """The size of each perturbation of a batch under `norm`."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "Linf" else flat.norm(dim=1)


def project(images: torch.Tensor, adversarial: torch.Tensor, threat: Threat) -> torch.Tensor:
    """The nearest point of the threat's ball around `images` (Linf: clip; L2: rescale), then clipped to [0, 1]
    (clipping only shrinks a perturbation, so the result stays in the ball)."""
    delta = adversarial - images
    if threat.norm == "Linf":
        delta = delta.clamp(-threat.eps, threat.eps)
    else:
        size = flat_norm(delta, "L2").clamp_min(1e-12)
        delta = delta * (threat.eps / size).clamp(max=1.0).view(-1, 1, 1, 1)
    return (images + delta).clamp(0.0, 1.0)


def steepest_step(gradient: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit step that increases a linear loss most under `norm`: the gradient's sign (Linf), its direction (L2)."""
    if norm == "Linf":
        return gradient.sign()
    return gradient / flat_norm(gradient, "L2").clamp_min(1e-12).view(-1, 1, 1, 1)


class PixelModel(nn.Module):
    """A classifier taking float images in [0, 1] (N, 3, H, W): its normalization (and any resize) inside, so an
    attack's budget is in pixels and its gradient flows through the preprocessing. fp32 throughout: bf16
    gradients would blur the small steps the attacks take."""

    def __init__(self, model: nn.Module, normalizer: Normalizer):
        super().__init__()
        self.model = model.eval()
        self.normalizer = normalizer

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalizer(images * 255.0)).float()


@torch.no_grad()
def logits_of(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's logits for a [0, 1] float batch, in chunks."""
    return torch.cat([model(images[start:start + batch_size]) for start in range(0, len(images), batch_size)])


def predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Predicted classes of a [0, 1] float batch, in chunks."""
    return logits_of(model, images, batch_size).argmax(1)
