"""Checks that the attacks worked rather than the model hiding its gradient (Athalye et al. 2018; Carlini et al.
2019, section 5), each computed per model and reported pass, fail, or not run (its attacks were not run).

`robust` maps (attack, Threat) to the per-image boolean 'still right' of one model on the same images; the slack of
each comparison is a stated share of the images, at least one image (two between two different stochastic attacks),
since n is small on a CPU."""
from dataclasses import dataclass

import torch

from .threat import Threat

WHITE_BOX = ("fgsm", "pgd", "apgd_ce", "apgd_dlr", "apgd_t", "autoattack")
NEAR_ZERO = 0.02       # accuracy at Linf >= 32/255 of a model without masking
LARGE_LINF = 32 / 255


@dataclass(frozen=True)
class Check:
    name: str
    status: str   # pass, fail, not run
    detail: str

    def as_dict(self) -> dict:
        return {"check": self.name, "status": self.status, "detail": self.detail}


def _slack(share: float, n: int, images: int = 1) -> float:
    return max(share, images / n)


def _accuracy(mask: torch.Tensor) -> float:
    return float(mask.float().mean())


def _threats(robust: dict, attack: str) -> list[Threat]:
    return sorted({threat for key, threat in robust if key == attack}, key=lambda t: (t.norm, t.eps))


def _result(name: str, failures: list[str], compared: int, passed: str) -> Check:
    if not compared:
        return Check(name, "not run", "the attacks it compares were not run")
    return Check(name, "fail" if failures else "pass", "; ".join(failures) if failures else passed)


def iterative_at_least_single_step(robust: dict, n: int) -> Check:
    slack, failures, compared = _slack(0.005, n), [], 0
    for threat in _threats(robust, "pgd"):
        if ("fgsm", threat) in robust:
            compared += 1
            pgd, fgsm = _accuracy(robust["pgd", threat]), _accuracy(robust["fgsm", threat])
            if pgd > fgsm + slack:
                failures.append(f"{threat.label}: PGD {pgd:.3f} above FGSM {fgsm:.3f}")
    return _result("PGD at least as strong as FGSM at every radius", failures, compared,
                   f"at {compared} radii, slack {slack:.3f}")


def falls_with_radius(robust: dict, n: int) -> Check:
    slack, failures, compared = _slack(0.005, n), [], 0
    for norm in ("Linf", "L2"):
        threats = [t for t in _threats(robust, "pgd") if t.norm == norm]
        for smaller, larger in zip(threats, threats[1:]):
            compared += 1
            low, high = _accuracy(robust["pgd", smaller]), _accuracy(robust["pgd", larger])
            if high > low + slack:
                failures.append(f"PGD {high:.3f} at {larger.label} above {low:.3f} at {smaller.label}")
    return _result("accuracy never rises with the radius", failures, compared, f"PGD, slack {slack:.3f}")


def breaks_at_large_radius(robust: dict, n: int) -> Check:
    large = [t for t in _threats(robust, "pgd") if t.norm == "Linf" and t.eps >= LARGE_LINF - 1e-9]
    failures = []
    for threat in large:
        accuracy = min(_accuracy(mask) for (attack, t), mask in robust.items() if t == threat and attack in WHITE_BOX)
        if accuracy > NEAR_ZERO:
            failures.append(f"{accuracy:.3f} at {threat.label}, where a model without masking is near 0")
    return _result("near 0 at Linf 32/255", failures, len(large), f"at most {NEAR_ZERO} at Linf >= 32/255")


def black_box_adds_little(robust: dict, n: int) -> Check:
    slack, failures, compared = _slack(0.005, n), [], 0
    for threat in _threats(robust, "square"):
        square = robust["square", threat]
        white = [mask for (attack, t), mask in robust.items()
                 if t == threat and attack in WHITE_BOX and len(mask) == len(square)]
        if not white:
            continue
        compared += 1
        still_right = torch.stack(white).all(0)  # right under every white-box attack
        extra = _accuracy(still_right & ~square)
        if extra > slack:
            failures.append(f"{threat.label}: Square breaks {extra:.3f} of the images every white-box attack missed")
    return _result("the black-box attack adds no more than a few tenths of a point", failures, compared,
                   f"at {compared} radii, slack {slack:.3f}")


def budget_changes_little(robust: dict, n: int) -> Check:
    slack, failures, compared = _slack(0.01, n, images=2), [], 0
    for variant, what in [("pgd_double_steps", "twice the steps"), ("pgd_restart", "a second random start")]:
        for threat in _threats(robust, variant):
            if ("pgd", threat) in robust:
                compared += 1
                change = _accuracy(robust["pgd", threat]) - _accuracy(robust[variant, threat])
                if abs(change) > slack:
                    failures.append(f"{threat.label}: {what} moves PGD by {change:+.3f}")
    return _result("doubling the steps or adding a restart changes accuracy by about a point at most", failures,
                   compared, f"slack {slack:.3f}")


def losses_agree(robust: dict, n: int) -> Check:
    slack, failures, compared = _slack(0.02, n, images=2), [], 0
    for threat in _threats(robust, "apgd_ce"):
        others = [_accuracy(robust[key, threat]) for key in ("apgd_dlr", "apgd_t") if (key, threat) in robust]
        if others:
            compared += 1
            ce, margin = _accuracy(robust["apgd_ce", threat]), min(others)
            if abs(ce - margin) > slack:
                failures.append(f"{threat.label}: APGD-CE {ce:.3f} against DLR/targeted {margin:.3f}")
    return _result("cross-entropy and DLR/targeted attacks agree", failures, compared, f"slack {slack:.3f}")


def within_budget(largest_excess: dict) -> Check:
    """`largest_excess`: {(attack, Threat): (largest norm beyond eps, lowest pixel, highest pixel)}."""
    failures = [f"{attack} at {threat.label}: {excess:.2e} beyond the radius, pixels in [{low:.3g}, {high:.3g}]"
                for (attack, threat), (excess, low, high) in largest_excess.items()
                if excess > (1e-5 if threat.norm == "Linf" else 1e-4) or low < 0 or high > 1]
    return _result("every perturbation within its radius, every image in [0, 1]", failures, len(largest_excess),
                   f"{len(largest_excess)} attack runs")


def deterministic(first: torch.Tensor, second: torch.Tensor) -> Check:
    difference = float((first - second).abs().max())
    status = "pass" if difference <= 1e-5 else "fail"
    return Check("the model is deterministic in eval mode", status, f"largest logit difference of two passes "
                 f"{difference:.2e}")


def masking_checks(robust: dict, n: int, largest_excess: dict, logits_twice: tuple) -> list[Check]:
    return [iterative_at_least_single_step(robust, n), falls_with_radius(robust, n), breaks_at_large_radius(robust, n),
            black_box_adds_little(robust, n), budget_changes_little(robust, n), losses_agree(robust, n),
            within_budget(largest_excess), deterministic(*logits_twice)]
