"""FGSM and PGD (Madry et al. 2018) on the cross-entropy, written here: every image of a batch steps at once on the
device, and an image leaves the batch as soon as it is misclassified (its adversarial kept), so a model that breaks
early costs a few steps, not all of them. Success is what robust accuracy counts, so stopping early changes no
number (the per-image-call form in bench.py gives the same robust set)."""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .threat import Threat, flat_norm, predict, project, steepest_step


@dataclass(frozen=True)
class PGDSettings:
    steps: int = 10
    step_ratio: float = 2.5   # step size = step_ratio * eps / steps (Madry et al.'s 2.5 eps / steps)
    random_start: bool = True
    restarts: int = 1         # another random start for the images no earlier start broke
    batch_size: int = 256


def _gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d cross-entropy / d images, whether each image is still classified right)."""
    images = images.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(images)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        gradient, = torch.autograd.grad(loss, images)
    return gradient, logits.argmax(1) == labels


def random_start(images: torch.Tensor, threat: Threat, generator: torch.Generator) -> torch.Tensor:
    """A uniform point of the Linf ball, or a point of the L2 ball (uniform direction, radius eps * U^(1/d))."""
    if threat.norm == "Linf":
        noise = torch.rand(images.shape, generator=generator, device=images.device) * 2 - 1
        return project(images, images + threat.eps * noise, threat)
    direction = torch.randn(images.shape, generator=generator, device=images.device)
    direction = direction / flat_norm(direction, "L2").view(-1, 1, 1, 1)
    radius = threat.eps * torch.rand(len(images), generator=generator, device=images.device) ** (1 / images[0].numel())
    return project(images, images + direction * radius.view(-1, 1, 1, 1), threat)


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, threat: Threat,
         batch_size: int = 256) -> torch.Tensor:
    """One step of size eps along the steepest ascent of the loss (FGSM under Linf, the fast gradient method
    under L2), from the image itself."""
    out = []
    for start in range(0, len(images), batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        gradient, _ = _gradient(model, x, y)
        out.append(project(x, x + threat.eps * steepest_step(gradient, threat.norm), threat))
    return torch.cat(out)


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, threat: Threat, settings: PGDSettings,
        seed: int) -> torch.Tensor:
    """Adversarial images under `threat`: each image that some step (or the start) misclassifies keeps that point;
    the others end at their last iterate; an image misclassified already stays as it is."""
    generator = torch.Generator(device=images.device).manual_seed(seed)
    adversarial = images.clone()
    unbroken = predict(model, images, settings.batch_size) == labels  # a wrong answer needs no perturbation
    step = settings.step_ratio * threat.eps / settings.steps
    for _ in range(settings.restarts):
        active = unbroken.nonzero().squeeze(1)
        for start in range(0, len(active), settings.batch_size):
            index = active[start:start + settings.batch_size]
            x, y = images[index], labels[index]
            current = random_start(x, threat, generator) if settings.random_start else x.clone()
            alive = torch.arange(len(x), device=x.device)  # positions in this chunk not yet broken
            for iteration in range(settings.steps + 1):
                gradient, right = _gradient(model, current[alive], y[alive])
                broken = alive[~right]
                adversarial[index[broken]] = current[broken]
                unbroken[index[broken]] = False
                alive = alive[right]
                if iteration == settings.steps or not len(alive):
                    adversarial[index[alive]] = current[alive]
                    break
                moved = current[alive] + step * steepest_step(gradient[right], threat.norm)
                current[alive] = project(x[alive], moved, threat)
    return adversarial
