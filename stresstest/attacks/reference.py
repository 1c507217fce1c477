"""The attacks of the reference implementation (pyautoattack: fra31/auto-attack repackaged with the same code and
settings). 'AutoAttack' names only the standard version run unchanged (APGD-CE, APGD-T, FAB-T, Square with their
published budgets); the single attacks run with the budgets the stage gives and are named with them."""
import logging
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version

import torch
import torch.nn as nn

from .threat import Norm, Threat, flat_norm

logging.getLogger("auto-attack").setLevel(logging.WARNING)  # its per-attack progress goes to debug logging


def library_version() -> str:
    return f"pyautoattack {version('pyautoattack')}"


@dataclass(frozen=True)
class ReferenceSettings:
    apgd_iterations: int = 100   # AutoAttack's own
    apgd_targets: int = 9        # target classes of APGD-T (AutoAttack: 9, every other class)
    square_queries: int = 5000   # AutoAttack's own
    fab_iterations: int = 100    # per target class, for the minimal distances
    distance_targets: int = 2    # FAB-T toward the 2nd..(k+1)th most likely classes; the least distance is kept


def apgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, threat: Threat, loss: str,
         settings: ReferenceSettings, seed: int) -> torch.Tensor:
    """APGD on the cross-entropy ('ce'), the DLR loss ('dlr'), or targeted DLR over the top classes ('t')."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    build = partial(APGDAttack_targeted, n_target_classes=settings.apgd_targets) if loss == "t" else \
        partial(APGDAttack, loss=loss)
    attack = build(model, n_iter=settings.apgd_iterations, norm=threat.norm, eps=threat.eps, seed=seed,
                   device=images.device)
    return attack.perturb(images, labels)


def square(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, threat: Threat,
           settings: ReferenceSettings, seed: int) -> torch.Tensor:
    """The Square attack (black-box: scores only), AutoAttack's parameters but for the query budget."""
    from pyautoattack.square import SquareAttack

    attack = SquareAttack(model, norm=threat.norm, eps=threat.eps, n_queries=settings.square_queries, p_init=0.8,
                          n_restarts=1, seed=seed, verbose=False, device=images.device, resc_schedule=False)
    with torch.no_grad():
        return attack.perturb(images, labels)


def autoattack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, threat: Threat, seed: int,
               batch_size: int) -> torch.Tensor:
    """The standard AutoAttack (Croce & Hein 2020), unchanged."""
    from pyautoattack import AutoAttack

    attack = AutoAttack(model, norm=threat.norm, eps=threat.eps, version="standard", seed=seed, device=images.device)
    adversarial, _ = attack.run_standard_evaluation(images, labels, batch_size=batch_size)
    return adversarial


def minimal_distance(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: Norm,
                     settings: ReferenceSettings, seed: int, toward: torch.Tensor | None = None) -> torch.Tensor:
    """Per image, the smallest perturbation under `norm` that FAB-T (Croce & Hein 2020) finds to change the class
    `labels` names: toward each of the next `distance_targets` most likely classes, keeping the least; or, with
    `toward`, to make the model answer that class (a failure's distance to its true class). An upper bound on the
    true minimal distance; inf where no target was reached."""
    from pyautoattack.fab_pt import FABAttack_PT

    attack = FABAttack_PT(model, norm=norm, n_restarts=1, n_iter=settings.fab_iterations, eps=float("inf"),
                          seed=seed, targeted=True, device=images.device)
    with torch.no_grad():
        ranks = model(images).argsort(1, descending=True)  # classes by logit, most likely first
    best = torch.full((len(images),), float("inf"), device=images.device)
    if toward is None:
        everyone = torch.ones_like(labels, dtype=torch.bool)
        targets = [(rank, everyone) for rank in range(2, settings.distance_targets + 2)]
    else:
        rank_of_goal = (ranks == toward.view(-1, 1)).float().argmax(1) + 1  # 1: already the answer
        targets = [(int(rank), rank_of_goal == rank) for rank in rank_of_goal.unique() if rank > 1]
    for rank, chosen in targets:
        index = chosen.nonzero().squeeze(1)
        if not len(index):
            continue
        attack.target_class = rank  # FAB-T aims at the class of this logit rank (fab_base.attack_single_run)
        adversarial = attack.attack_single_run(images[index], labels[index], use_rand_start=False, is_targeted=True)
        with torch.no_grad():
            answer = model(adversarial).argmax(1)
        reached = answer != labels[index] if toward is None else answer == toward[index]
        distance = torch.where(reached, flat_norm(adversarial - images[index], norm), float("inf"))
        best[index] = torch.minimum(best[index], distance)
    return best
