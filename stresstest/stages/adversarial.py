"""Study C, stage 9 (adversarial.py): the worst case near each test image. Robust accuracy against the radius
under Linf and L2 (FGSM and PGD at every radius; APGD-CE, APGD-DLR, APGD-T and Square at the strong radii; the
standard AutoAttack at the headline radii), with Wilson intervals, McNemar between the models and between PGD-CE
and each stronger attack on the same images (robustness that is only apparent); the least perturbation that changes
each answer (FAB-T) against confidence, margin and the corruptions that flip it; transfer between the models; and
the gradient-masking checks, pass or fail."""
import time
from dataclasses import dataclass, field, fields
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from scipy.stats import mannwhitneyu

from ..attacks import reference
from ..attacks.gradient import PGDSettings, fgsm, pgd
from ..attacks.masking import masking_checks
from ..attacks.reference import ReferenceSettings
from ..attacks.threat import NORMS, PixelModel, Threat, flat_norm, logits_of, parse_radius, parse_threat, predict
from ..core import atomic, paths
from ..core.cases import read_cases
from ..core.checkpoint import load_classifier, model_card
from ..core.cli import (BothModels, add_checkpoint_args, add_common_args, add_flags, flag, make_parser,
                         non_negative_int, params_from, positive_int, run_main)
from ..core.device import describe_device, resolve_device, synchronize
from ..core.errors import UserError, first_line
from ..core.findings import HIGHER, Estimate, Headline, Picture, Section, Table
from ..core.record import write_record
from ..data.cifar10 import data_summary, load_cifar10
from ..data.cifar10c import corrupted_images
from ..data.corruptions import NAMES as CORRUPTIONS, SEVERITIES
from ..metrics import mcnemar_exact, rank_correlation, top_two_margin, wilson_interval
from ..nn.inference import REPORTED_PRECISION, checkpoint_normalizer, inference_model
from ..plots import (adversarial_examples_figure, distance_figure, robust_accuracy_figure, save)

@dataclass(frozen=True)
class AdversarialParams(BothModels):
    cases_dir: Path = field(default=paths.CASES_DIR, metadata=flag(
        f"case_XX folders of {paths.CASES_PRODUCER}: each case's distance to its true class (skipped when there "
        "are none)"))
    out_dir: Path = field(default=paths.ADVERSARIAL_DIR, metadata=flag("where tables and figures go"))
    images: int = field(default=200, metadata=flag("seeded sample of test images attacked (0: all)",
                                                   non_negative_int))
    linf: tuple = field(default=("0.5", "1", "2", "4", "8", "32"), metadata=flag(
        "Linf radii in 1/255 for FGSM and PGD", metavar="R"))
    l2: tuple = field(default=("0.05", "0.1", "0.25", "0.5"), metadata=flag(
        "L2 radii (pixels in [0, 1]) for FGSM and PGD", metavar="R"))
    strong: tuple = field(default=("Linf:1", "L2:0.1"), metadata=flag(
        "radii of APGD-CE/DLR/T, Square and PGD's budget checks", metavar="NORM:R"))
    autoattack: tuple = field(default=("Linf:8", "L2:0.5"), metadata=flag(
        "radii of the standard AutoAttack ('none': skip it)", metavar="NORM:R"))
    autoattack_images: int = field(default=100, metadata=flag(
        "AutoAttack on the first N images of the sample (0: all): its cost is fixed, not early-stopped",
        non_negative_int))
    pgd_steps: int = field(default=10, metadata=flag("PGD steps", positive_int))
    apgd_iterations: int = field(default=25, metadata=flag("iterations of APGD-CE/DLR/T (AutoAttack's own: 100)",
                                                           positive_int))
    apgd_targets: int = field(default=3, metadata=flag("target classes of APGD-T (AutoAttack's own: 9)",
                                                       positive_int))
    square_queries: int = field(default=1000, metadata=flag("queries of Square (AutoAttack's own: 5000)",
                                                            positive_int))
    distance_images: int = field(default=100, metadata=flag(
        "least-distance search on the first N correctly classified images of the sample (0: all)", non_negative_int))
    fab_iterations: int = field(default=25, metadata=flag("FAB-T iterations per target class", positive_int))
    distance_targets: int = field(default=2, metadata=flag(
        "FAB-T toward the next N most likely classes, keeping the least distance", positive_int))
    corruption_severity: int = field(default=3, metadata=flag(
        "severity of the corruptions checked for flipping each image", int, choices=SEVERITIES))
    batch_size: int = field(default=256, metadata=flag("images per attack step", positive_int))


# --smoke: under a minute on a 2-core CPU. AutoAttack at 32/255, where APGD-CE breaks every image of a smoke
# model: an image that survives it costs the full APGD-T, FAB-T and Square budgets (one image of 8 at 8/255:
# 139 of the stage's 190 s). 16 images: the sweep and the strong attacks took 60 of the stage's 116 s on one
# thread with 32 (2026-12-07). AutoAttack and FAB's minimal distances on 4 images: with 8 they took 17 and 26 of
# the stage's 77 s (one thread, the smoke models, 2026-12-07).
SMOKE = AdversarialParams(images=16, linf=("1", "8", "32"), l2=("0.25",), strong=("Linf:1",), autoattack=("Linf:32",),
                          autoattack_images=4, pgd_steps=4, apgd_iterations=5, apgd_targets=1, square_queries=50,
                          distance_images=4, fab_iterations=10, distance_targets=1)


@dataclass(frozen=True)
class Plan:
    sweep: list        # FGSM and PGD
    strong: list
    autoattack: list


def make_plan(params: AdversarialParams) -> Plan:
    sweep = [parse_radius("Linf", r) for r in params.linf] + [parse_radius("L2", r) for r in params.l2]
    autoattack = [] if params.autoattack in ((), ("none",)) else [parse_threat(t) for t in params.autoattack]
    return Plan(sorted(set(sweep), key=lambda t: (t.norm, t.eps)), [parse_threat(t) for t in params.strong],
                autoattack)


def differentiable_or_error(model: PixelModel, images: torch.Tensor, labels: torch.Tensor, tag: str) -> None:
    probe = images[:2].clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            gradient, = torch.autograd.grad(torch.nn.functional.cross_entropy(model(probe), labels[:2]), probe)
    except RuntimeError as error:
        raise UserError(f"the {tag} model is not differentiable with respect to its input ({first_line(error)}); "
                        "white-box attacks need gradients: export a model without no_grad/detach in its forward"
                        ) from None
    if not torch.isfinite(gradient).all():
        raise UserError(f"the {tag} model's input gradient is not finite; check the model's forward")


AttackFunction = Callable[[torch.Tensor, torch.Tensor, Threat], torch.Tensor]  # images, labels, threat -> adversarial


class Runner:
    """The attacks of one model on the sample, keeping each run's per-image 'still right' and its bounds."""

    def __init__(self, model: PixelModel, images: torch.Tensor, labels: torch.Tensor, params: AdversarialParams):
        self.model, self.images, self.labels, self.params = model, images, labels, params
        self.robust: dict = {}       # (attack, Threat) -> bool per image of the run's images
        self.excess: dict = {}       # (attack, Threat) -> (largest norm beyond eps, lowest pixel, highest pixel)
        self.adversarial: dict = {}  # Threat -> PGD's adversarial images (transfer, examples)
        self.seconds: dict = {}      # (attack, Threat) -> wall-clock seconds of the run
        self.reference = ReferenceSettings(params.apgd_iterations, params.apgd_targets, params.square_queries,
                                           params.fab_iterations, params.distance_targets)
        self.attacks = {name: attack.build(self) for name, attack in ATTACKS.items()}

    def record(self, attack: str, threat: Threat, adversarial: torch.Tensor, count: int) -> None:
        images, labels, adversarial = self.images[:count], self.labels[:count], adversarial.detach()
        size = flat_norm(adversarial - images, threat.norm)
        self.excess[attack, threat] = (float((size - threat.eps).max()), float(adversarial.min()),
                                       float(adversarial.max()))
        self.robust[attack, threat] = (predict(self.model, adversarial, self.params.batch_size) == labels).cpu()

    def pgd_with(self, steps: int, restarts: int, seed_offset: int) -> AttackFunction:
        settings = PGDSettings(steps=steps, restarts=restarts, batch_size=self.params.batch_size)
        return lambda images, labels, threat: pgd(self.model, images, labels, threat, settings,
                                                  self.params.seed + seed_offset)

    def apgd_with(self, loss: str) -> AttackFunction:
        return lambda images, labels, threat: reference.apgd(self.model, images, labels, threat, loss, self.reference,
                                                             self.params.seed)

    def run(self, attack: str, threat: Threat, count: int = 0) -> None:
        started = time.perf_counter()
        count = count or len(self.images)
        adversarial = self.attacks[attack](self.images[:count], self.labels[:count], threat)
        if attack == "pgd":
            self.adversarial[threat] = adversarial
        self.record(attack, threat, adversarial, count)
        synchronize(self.images.device)
        self.seconds[attack, threat] = time.perf_counter() - started


SWEEP, STRONG, HEADLINE = "sweep", "strong", "headline"  # every radius; the strong radii; the AutoAttack radii


@dataclass(frozen=True)
class Attack:
    """One row of the attack table: its display name, where it runs (SWEEP: every radius of --linf/--l2; STRONG:
    the --strong radii; HEADLINE: the --autoattack radii, on the first --autoattack-images), what it runs with,
    how a Runner builds it, and whether it is stronger than PGD-CE (compared with it on the same images: the
    images only PGD-CE leaves right are robustness that is only apparent). Adding an attack is adding a row."""
    display: str
    runs_at: str
    settings: Callable[[AdversarialParams], str]
    build: Callable[[Runner], AttackFunction]
    stronger_than_pgd: bool = False


ATTACKS = {
    "fgsm": Attack("FGSM", SWEEP, lambda p: "one step of eps",
                   lambda r: lambda images, labels, threat: fgsm(r.model, images, labels, threat, r.params.batch_size)),
    "pgd": Attack("PGD-CE", SWEEP, lambda p: f"{p.pgd_steps} steps of 2.5 eps/{p.pgd_steps}, random start",
                  lambda r: r.pgd_with(r.params.pgd_steps, 1, 0)),
    "pgd_double_steps": Attack("PGD-CE, twice the steps", STRONG, lambda p: f"{2 * p.pgd_steps} steps, random start",
                               lambda r: r.pgd_with(2 * r.params.pgd_steps, 1, 1)),
    "pgd_restart": Attack("PGD-CE, 2 random starts", STRONG, lambda p: f"{p.pgd_steps} steps, 2 random starts",
                          lambda r: r.pgd_with(r.params.pgd_steps, 2, 1)),
    "apgd_ce": Attack("APGD-CE", STRONG, lambda p: f"{p.apgd_iterations} iterations", lambda r: r.apgd_with("ce"),
                      True),
    "apgd_dlr": Attack("APGD-DLR", STRONG, lambda p: f"{p.apgd_iterations} iterations", lambda r: r.apgd_with("dlr"),
                       True),
    "apgd_t": Attack("APGD-T", STRONG, lambda p: f"{p.apgd_iterations} iterations x {p.apgd_targets} target classes",
                     lambda r: r.apgd_with("t"), True),
    "square": Attack("Square (black-box)", STRONG, lambda p: f"{p.square_queries} queries, p_init 0.8",
                     lambda r: lambda images, labels, threat: reference.square(r.model, images, labels, threat,
                                                                               r.reference, r.params.seed), True),
    "autoattack": Attack("AutoAttack (standard)", HEADLINE, lambda p: "version standard, unchanged",
                         lambda r: lambda images, labels, threat: reference.autoattack(
                             r.model, images, labels, threat, r.params.seed, r.params.batch_size), True),
}


def jobs(plan: Plan, params: AdversarialParams) -> list[tuple[str, Threat, int]]:
    """(attack, threat, images: 0 for the whole sample) in the order they run: radius by radius."""
    radii = {SWEEP: plan.sweep, STRONG: plan.strong, HEADLINE: plan.autoattack}
    return [(name, threat, params.autoattack_images if runs_at == HEADLINE else 0)
            for runs_at in (SWEEP, STRONG, HEADLINE) for threat in radii[runs_at]
            for name, attack in ATTACKS.items() if attack.runs_at == runs_at]


def accuracy_rows(tag: str, runner: Runner, clean_right: torch.Tensor, params: AdversarialParams) -> list[dict]:
    libraries = f"torch {version('torch')}; {reference.library_version()}"
    rows = []
    for (attack, threat), robust in runner.robust.items():
        n = len(robust)
        low, high = wilson_interval(int(robust.sum()), n)
        rows.append({"model": tag, "norm": threat.norm, "eps": round(threat.eps, 8), "radius": threat.label,
                     "attack": ATTACKS[attack].display, "n": n,
                     "clean_accuracy": round(float(clean_right[:n].float().mean()), 6),
                     "robust_accuracy": round(float(robust.float().mean()), 6), "robust_low95": round(low, 6),
                     "robust_high95": round(high, 6), "settings": ATTACKS[attack].settings(params),
                     "seconds": round(runner.seconds[attack, threat], 2), "seed": params.seed,
                     "libraries": libraries})
    return rows


def comparison_rows(runners: dict) -> list[dict]:
    """McNemar's exact test of the two models per attack and radius, on the same images."""
    if len(runners) != 2:
        return []
    (first, one), (second, other) = runners.items()
    rows = []
    for key, robust in one.robust.items():
        if key in other.robust:
            only_first, only_second, p_value = mcnemar_exact(robust.numpy(), other.robust[key].numpy())
            rows.append({"attack": ATTACKS[key[0]].display, "radius": key[1].label, "n": len(robust),
                         f"{first}_robust": round(float(robust.float().mean()), 6),
                         f"{second}_robust": round(float(other.robust[key].float().mean()), 6),
                         f"robust_only_{first}": only_first, f"robust_only_{second}": only_second,
                         "mcnemar_exact_p": p_value})
    return rows


def pgd_gap_rows(runners: dict) -> list[dict]:
    """Per model and radius, PGD-CE against each stronger attack on the same images: the images PGD-CE alone would
    call robust that the attack breaks (robustness that is only apparent), with McNemar's exact test."""
    rows = []
    for tag, runner in runners.items():
        for (attack, threat), robust in runner.robust.items():
            if not ATTACKS[attack].stronger_than_pgd or ("pgd", threat) not in runner.robust:
                continue
            pgd_robust = runner.robust["pgd", threat][:len(robust)]
            only_pgd, only_attack, p_value = mcnemar_exact(pgd_robust.numpy(), robust.numpy())
            rows.append({"model": tag, "radius": threat.label, "attack": ATTACKS[attack].display, "n": len(robust),
                         "pgd_ce_robust": round(float(pgd_robust.float().mean()), 6),
                         "attack_robust": round(float(robust.float().mean()), 6),
                         "robust_only_under_pgd_ce": only_pgd, "robust_only_under_attack": only_attack,
                         "mcnemar_exact_p": p_value})
    return rows


def transfer_rows(runners: dict, labels: torch.Tensor, batch_size: int) -> list[dict]:
    """Each model's accuracy on the other's PGD images, beside its accuracy under its own attack."""
    rows = []
    for source, made in runners.items():
        for target, runner in runners.items():
            if source == target:
                continue
            for threat, adversarial in made.adversarial.items():
                right = predict(runner.model, adversarial, batch_size) == labels
                low, high = wilson_interval(int(right.sum()), len(right))
                rows.append({"source": source, "target": target, "radius": threat.label, "n": len(right),
                             "target_accuracy": round(float(right.float().mean()), 6), "low95": round(low, 6),
                             "high95": round(high, 6), "target_under_own_pgd":
                             round(float(runner.robust["pgd", threat].float().mean()), 6)})
    return rows


def flipping_corruptions(model: PixelModel, images_uint8: torch.Tensor, clean_prediction: torch.Tensor,
                         severity: int, seed: int, batch_size: int) -> list[str]:
    """Per image, the corruptions (at `severity`, generated as robustness.py does) that change its prediction."""
    changed = np.stack([(predict(model, corrupted_images(images_uint8, name, severity, seed).float() / 255,
                                 batch_size) != clean_prediction).cpu().numpy() for name in CORRUPTIONS], axis=1)
    return [";".join(np.array(CORRUPTIONS)[row]) for row in changed]


def per_image_table(tag: str, runner: Runner, sample: np.ndarray, probs: np.ndarray, flipped: list[str],
                    params: AdversarialParams, plan: Plan) -> pd.DataFrame:
    labels = runner.labels.cpu().numpy()
    prediction = probs.argmax(1)
    table = pd.DataFrame({"model": tag, "test_index": sample, "label": labels, "prediction": prediction,
                          "confidence": probs.max(1).round(6), "margin": top_two_margin(probs).round(6)})
    right = np.flatnonzero(prediction == labels)
    index = torch.from_numpy(right[:params.distance_images or len(right)]).to(runner.images.device)
    for norm in NORMS:
        distances = np.full(len(sample), np.nan)
        found = reference.minimal_distance(runner.model, runner.images[index], runner.labels[index], norm,
                                           runner.reference, params.seed)
        distances[index.cpu().numpy()] = found.cpu().numpy()
        table[f"min_{norm.lower()}"] = distances
        # the smallest PGD radius that broke the image: a coarse upper bound beside FAB's
        broken_at = np.full(len(sample), np.nan)
        for threat in sorted((t for t in plan.sweep if t.norm == norm), key=lambda t: -t.eps):
            broken = ~runner.robust["pgd", threat].numpy()
            broken_at[broken & (prediction == labels)] = threat.eps
        table[f"pgd_broken_{norm.lower()}"] = broken_at
    table["flipped_by"] = flipped
    for (attack, threat), robust in runner.robust.items():  # blank where the attack ran on fewer images
        radius = threat.label.lower().replace("/255", "").replace(" ", "_")
        table[f"robust_{attack}_{radius}"] = pd.Series(robust.numpy(), dtype="Int8").reindex(range(len(sample)))
    return table


def case_distances(tag: str, runner: Runner, cases: list[dict], images: torch.Tensor, labels: torch.Tensor,
                   params: AdversarialParams) -> pd.DataFrame:
    """Each saved confident failure: how far it is from being answered with its true class."""
    predictions = predict(runner.model, images, params.batch_size)
    table = pd.DataFrame({"model": tag, "case": [case["case"] for case in cases],
                          "test_index": [int(case["test_index"]) for case in cases],
                          "label": labels.cpu().numpy(), "prediction": predictions.cpu().numpy()})
    for norm in NORMS:
        found = reference.minimal_distance(runner.model, images, predictions, norm, runner.reference, params.seed,
                                           toward=labels)
        table[f"to_true_{norm.lower()}"] = torch.where(predictions == labels, 0.0, found).cpu().numpy()
    return table


def distance_summary(table: pd.DataFrame) -> list[dict]:
    """Per model and norm: the least distances' quantiles, their rank correlation with confidence and margin, and
    whether the images corruptions flip are nearer the boundary (Mann-Whitney U, two-sided)."""
    rows = []
    for (tag, norm), found in [((tag, norm), group) for tag, group in table.groupby("model", sort=False)
                               for norm in NORMS]:
        column = f"min_{norm.lower()}"
        known = found[found[column].abs() < np.inf]  # inf: FAB-T found no boundary
        if len(known) < 3:
            continue
        flipped = known.flipped_by.fillna("").astype(str) != ""
        row = {"model": tag, "norm": norm, "n": len(known), "not_found": int(found[column].notna().sum() - len(known)),
               "median": round(float(known[column].median()), 6), "q25": round(float(known[column].quantile(0.25)), 6),
               "q75": round(float(known[column].quantile(0.75)), 6)}
        for score in ["confidence", "margin"]:
            rho, p_value = rank_correlation(known[column].to_numpy(), known[score].to_numpy())
            row[f"spearman_{score}"], row[f"p_{score}"] = round(float(rho), 4), float(p_value)
        if flipped.any() and (~flipped).any():
            row["median_flipped_by_corruption"] = round(float(known[column][flipped].median()), 6)
            row["median_not_flipped"] = round(float(known[column][~flipped].median()), 6)
            row["flipped_images"] = int(flipped.sum())
            row["mannwhitney_p"] = float(mannwhitneyu(known[column][flipped], known[column][~flipped]).pvalue)
        rows.append(row)
    return rows


def strongest(table: pd.DataFrame, radius: str) -> dict[str, pd.Series]:
    """Per model, the row of the attack with the lowest robust accuracy at `radius` among those run beyond the
    FGSM/PGD-CE sweep; on a tie, the reference AutoAttack."""
    beyond = {ATTACKS[name].display for name, attack in ATTACKS.items() if attack.runs_at != SWEEP}
    rows = table[(table.radius == radius) & table.attack.isin(beyond)]
    ranked = rows.assign(other=rows.attack != ATTACKS["autoattack"].display).sort_values(
        ["robust_accuracy", "other"], kind="stable")
    return {str(model): group.iloc[0] for model, group in ranked.groupby("model", sort=False)}


def findings(table: pd.DataFrame, checks: dict, cases_table: pd.DataFrame, params: AdversarialParams, plan: Plan,
             out_dir: Path) -> tuple[list[Headline], Section]:
    """Headline: each model's robust accuracy under the strongest attack at every radius the strong attacks or
    AutoAttack ran at (the smallest Linf one an axis of the profile). Section: the figure, attack by radius with the
    models side by side, what each attack ran with (once), the masking checks, the cases' distances."""
    failed = {tag: sum(check["status"] == "fail" for check in found) for tag, found in checks.items()}
    radii = sorted({*plan.strong, *plan.autoattack}, key=lambda t: (t.norm != "Linf", t.eps))
    headline = []
    for threat in radii:
        worst = strongest(table, threat.label)
        if not worst:
            continue
        headline.append(Headline(
            f"robust accuracy at {threat.label}, strongest attack (Wilson 95%)",
            {tag: Estimate(row.robust_accuracy, row.robust_low95, row.robust_high95) for tag, row in worst.items()},
            str(min(int(row.n) for row in worst.values())),
            "; ".join(f"{tag}: {row.attack}, {failed.get(tag, 0)} masking checks failed" for tag, row in worst.items()),
            axis=f"robust accuracy, {threat.label}" if threat == radii[0] else "", better=HIGHER))
    models = list(dict.fromkeys(table.model))
    by_attack = []
    for (attack, radius), group in table.groupby(["attack", "radius"], sort=False):
        found = {row["model"]: row for row in group.to_dict("records")}
        by_attack.append([attack, radius, *(Estimate(found[tag]["robust_accuracy"], found[tag]["robust_low95"],
                                                     found[tag]["robust_high95"]) if tag in found else ""
                                            for tag in models), int(group.n.max())])
    settings = "; ".join(f"{attack.display}: {attack.settings(params)}" for attack in ATTACKS.values())
    tables = [Table(["attack", "radius", *models, "n"], by_attack,
                    note="Robust accuracy under each attack ([0, 1] pixels; Linf radii in 1/255), Wilson 95% "
                         f"intervals. Settings: {settings}. Seed {params.seed}; torch {version('torch')}, "
                         f"{reference.library_version()}."),
              Table(["check", *checks],
                    [[found[0]["check"], *(f"{check['status']} ({check['detail']})" for check in found)]
                     for found in zip(*checks.values())],
                    note="Gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019): a fail means a number "
                         "above may overstate robustness.")]
    if len(cases_table):
        def distance(value: float, scale: float) -> str:
            return f"{value * scale:.3g}" if np.isfinite(value) else \
                f"not found within {params.fab_iterations} FAB-T iterations"
        tables.append(Table(["model", "case", "least Linf to the true class (1/255)", "least L2 to the true class"],
                            [[row["model"], row["case"], distance(row["to_true_linf"], 255),
                              distance(row["to_true_l2"], 1)] for row in cases_table.to_dict("records")],
                            note="The saved confident failures: how far each is from being answered with its true "
                                 "class (FAB-T, an upper bound)."))
    names = ["robust_accuracy.csv", "model_comparison.csv", "pgd_gap.csv", "transfer.csv", "distance_summary.csv",
             "case_distances.csv", "per_image.csv", "checks.json"]
    section = Section("Adversarial attacks", lead=Picture(out_dir / "robust_accuracy.png",
                                                         "robust accuracy against the radius"),
                      tables=tables, pictures=[Picture(out_dir / "minimal_distance.png", "least perturbations"),
                                               Picture(out_dir / "adversarial_examples.png", "adversarial examples")],
                      links=[out_dir / name for name in names if (out_dir / name).is_file()])
    return headline, section


def adversarial(params: AdversarialParams) -> None:
    plan = make_plan(params)
    device = resolve_device(params.device)
    data = load_cifar10(params.data_dir)
    total = len(data.test_labels)
    count = min(params.images or total, total)
    sample = np.sort(np.random.default_rng(params.seed).choice(total, count, replace=False))
    images_uint8 = torch.from_numpy(data.test_images[sample]).to(device)
    images = images_uint8.float() / 255
    labels = torch.from_numpy(data.test_labels[sample]).long().to(device)
    try:
        cases = read_cases(params.cases_dir)
    except UserError as missing:
        print(f"no failure cases ({missing}): the cases' distances are skipped")
        cases = []
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    checkpoints = params.checkpoints
    loaded = {tag: load_classifier(path, paths.producer(tag), device) for tag, path in checkpoints.items()}
    runners, rows, tables, cases_tables, checks, probabilities = {}, [], [], [], {}, {}
    for tag, (network, checkpoint) in loaded.items():
        model = PixelModel(inference_model(network), checkpoint_normalizer(checkpoint, device))
        differentiable_or_error(model, images, labels, tag)
        runner = runners[tag] = Runner(model, images, labels, params)
        with torch.no_grad():
            logits, again = logits_of(model, images, params.batch_size), model(images[:params.batch_size])
        clean_right = (logits.argmax(1) == labels).cpu()
        for attack, threat, images_used in jobs(plan, params):
            runner.run(attack, threat, images_used)
            robust = runner.robust[attack, threat]
            print(f"{tag}: {ATTACKS[attack].display} at {threat.label}: robust accuracy {robust.float().mean():.3f} "
                  f"(n={len(robust)}, {runner.seconds[attack, threat]:.0f} s)", flush=True)
        rows += accuracy_rows(tag, runner, clean_right, params)
        checks[tag] = [check.as_dict() for check in masking_checks(runner.robust, count, runner.excess,
                                                                    (logits[:len(again)], again))]
        probabilities[tag] = logits.softmax(1).double().cpu().numpy()
        flipped = flipping_corruptions(model, images_uint8, logits.argmax(1), params.corruption_severity, params.seed,
                                       params.batch_size)
        tables.append(per_image_table(tag, runner, sample, probabilities[tag], flipped, params, plan))
        if cases:
            index = np.array([int(case["test_index"]) for case in cases])
            cases_tables.append(case_distances(tag, runner, cases, torch.from_numpy(
                data.test_images[index]).to(device).float() / 255, torch.from_numpy(
                data.test_labels[index]).long().to(device), params))
        for check in checks[tag]:
            print(f"{tag}: masking check {check['status'].upper()}: {check['check']} ({check['detail']})")
    table = pd.DataFrame(rows)
    per_image = pd.concat(tables, ignore_index=True)
    cases_table = pd.concat(cases_tables) if cases_tables else pd.DataFrame()
    atomic.write_csv(out_dir / "robust_accuracy.csv", table.to_dict("records"), list(table.columns))
    atomic.write_csv(out_dir / "per_image.csv", per_image.to_dict("records"), list(per_image.columns))
    for name, frame in [("model_comparison.csv", pd.DataFrame(comparison_rows(runners))),
                        ("transfer.csv", pd.DataFrame(transfer_rows(runners, labels, params.batch_size))),
                        ("pgd_gap.csv", pd.DataFrame(pgd_gap_rows(runners))),
                        ("distance_summary.csv", pd.DataFrame(distance_summary(per_image))),
                        ("case_distances.csv", cases_table)]:
        if len(frame):
            atomic.write_csv(out_dir / name, frame.to_dict("records"), list(frame.columns))
        else:
            (out_dir / name).unlink(missing_ok=True)  # not made this run: no stale file from an earlier one
    atomic.write_json(out_dir / "checks.json", checks)
    title = f"{count} test images (seed {params.seed}); bands: Wilson 95%"
    save(out_dir / "robust_accuracy.png", robust_accuracy_figure(table, title))
    save(out_dir / "minimal_distance.png", distance_figure(per_image, f"FAB-T least perturbation, {title}"))
    first = next(iter(runners))
    threat = min(plan.sweep, key=lambda t: (t.norm != "Linf", abs(t.eps - 8 / 255)))  # Linf 8/255 where run
    right = np.flatnonzero(probabilities[first].argmax(1) == labels.cpu().numpy())
    shown = torch.from_numpy(right[:6] if len(right) else np.arange(min(6, count))).to(device)
    save(out_dir / "adversarial_examples.png", adversarial_examples_figure(
        images[shown], runners[first].adversarial[threat][shown], labels[shown], runners[first].model, data.class_names,
        f"{first} model, PGD at {threat.label}; perturbation amplified to the full range"))
    failed = {tag: [c["check"] for c in found if c["status"] == "fail"] for tag, found in checks.items()}
    for tag, names in failed.items():
        print(f"{tag}: {'no masking check failed' if not names else 'MASKING CHECKS FAILED: ' + '; '.join(names)}")
    print(f"-> {out_dir}")
    headline, section = findings(table, checks, cases_table, params, plan, out_dir)
    write_record("adversarial", {"adversarial": out_dir, "cases": params.cases_dir}, checkpoints,
                 headline=headline, sections=[section], data=data_summary(data), device=describe_device(device),
                 precision=REPORTED_PRECISION, images=count, seed=params.seed,
                 libraries=reference.library_version(),
                 settings={item.name: getattr(params, item.name) for item in fields(params)
                           if item.name not in ("baseline", "improved", "data_dir", "device", "out_dir", "cases_dir")},
                 models={tag: model_card(checkpoint, checkpoints[tag]) for tag, (_, checkpoint) in loaded.items()})


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = AdversarialParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help="seed of the image sample, the attacks' random starts and the corruptions")
    add_checkpoint_args(parser)
    add_flags(parser, defaults, SMOKE)
    parser.add_argument("--smoke", action="store_true", help="few images, radii and steps: a quick end-to-end check")
    args = parser.parse_args(argv)
    params = params_from(args, defaults, SMOKE)
    run_main(lambda: adversarial(params), args.debug)
