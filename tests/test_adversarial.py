"""Adversarial stress: the attacks against closed forms on a linear classifier, their bounds and seeds, the
gradient-masking checks on a masked and a plain model, and the stage end to end."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from conftest import assert_user_error, run_stage_in_process, write_checkpoint
from stresstest.attacks import reference
from stresstest.attacks.gradient import PGDSettings, fgsm, pgd
from stresstest.attacks.masking import masking_checks
from stresstest.attacks.reference import ReferenceSettings
from stresstest.attacks.threat import Threat, flat_norm, parse_radius, parse_threat
from stresstest.core.errors import UserError
from stresstest.stages.adversarial import AdversarialParams, Runner, differentiable_or_error, pgd_gap_rows


def linear_model(classes: int, seed: int = 0, logit_scale: float = 1.0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, classes)).eval()
    with torch.no_grad():
        model[1].weight.mul_(logit_scale)
        model[1].bias.mul_(logit_scale)
    return model


def images_near_the_boundary(model: nn.Module, count: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in the middle of the pixel range (so the [0, 1] box never binds) and the model's own answers."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.35 + 0.3 * torch.rand(count, 3, 32, 32, generator=generator)
    with torch.no_grad():
        return images, model(images).argmax(1)


def closed_form_distance(model: nn.Module, images: torch.Tensor, norm: str) -> torch.Tensor:
    """Two classes: the least perturbation onto w.x + b = 0 is |w.x + b| / ||w||_dual (L2: ||w||_2; Linf: ||w||_1)."""
    linear = model[1]
    w = (linear.weight[1] - linear.weight[0]).detach()
    b = (linear.bias[1] - linear.bias[0]).detach()
    margin = (images.flatten(1) @ w + b).abs()
    return margin / (w.norm() if norm == "L2" else w.abs().sum())


@pytest.mark.parametrize("norm", ["L2", "Linf"])
def test_least_distance_matches_the_closed_form_of_a_linear_classifier(norm):
    model = linear_model(2)
    images, labels = images_near_the_boundary(model, 24)
    settings = ReferenceSettings(fab_iterations=100, distance_targets=1)
    found = reference.minimal_distance(model, images, labels, norm, settings, seed=0)
    exact = closed_form_distance(model, images, norm)
    ratio = found / exact
    assert (ratio >= 1 - 1e-4).all() and (ratio <= 1.03).all(), ratio  # an upper bound, within 3%


@pytest.mark.parametrize("norm", ["L2", "Linf"])
def test_pgd_beyond_the_closed_form_distance_always_flips(norm):
    model = linear_model(2)
    images, labels = images_near_the_boundary(model, 24)
    threat = Threat(norm, 1.2 * float(closed_form_distance(model, images, norm).max()))
    adversarial = pgd(model, images, labels, threat, PGDSettings(steps=20), seed=0)
    with torch.no_grad():
        assert (model(adversarial).argmax(1) != labels).all()
    # and below the least distance nothing can flip
    threat = Threat(norm, 0.9 * float(closed_form_distance(model, images, norm).min()))
    adversarial = pgd(model, images, labels, threat, PGDSettings(steps=20), seed=0)
    with torch.no_grad():
        assert (model(adversarial).argmax(1) == labels).all()


ATTACKS = {
    "fgsm": lambda m, x, y, t: fgsm(m, x, y, t),
    "pgd": lambda m, x, y, t: pgd(m, x, y, t, PGDSettings(steps=5), seed=3),
    "apgd_ce": lambda m, x, y, t: reference.apgd(m, x, y, t, "ce", ReferenceSettings(apgd_iterations=5), seed=3),
    "apgd_t": lambda m, x, y, t: reference.apgd(m, x, y, t, "t", ReferenceSettings(apgd_iterations=5, apgd_targets=2),
                                                seed=3),
    "square": lambda m, x, y, t: reference.square(m, x, y, t, ReferenceSettings(square_queries=20), seed=3),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("threat", [Threat("Linf", 8 / 255), Threat("L2", 0.5)])
def test_attacks_stay_within_the_ball_and_the_pixel_range_and_repeat_with_the_seed(attack, threat):
    model = linear_model(10)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 32, 32, generator=generator)  # pixels at 0 and 1 too: the box binds
    images[:4] = images[:4].round()
    with torch.no_grad():
        labels = model(images).argmax(1)
    first = ATTACKS[attack](model, images, labels, threat).detach()
    assert (flat_norm(first - images, threat.norm) <= threat.eps + 1e-5).all()
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, ATTACKS[attack](model, images, labels, threat).detach())
    with torch.no_grad():
        assert (model(first).argmax(1) != labels).any()  # the attack does something


class Quantized(nn.Module):
    """A deliberately masked model: inputs rounded to a coarse grid, so its gradient is zero almost everywhere."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(torch.round(images * 4) / 4)


def attacked(model: nn.Module) -> tuple[Runner, torch.Tensor]:
    """The masking checks' attacks on 100 random images: PGD and FGSM at three radii, the strong ones at 4/255."""
    params = AdversarialParams(pgd_steps=10, apgd_iterations=10, apgd_targets=2, square_queries=300, batch_size=64)
    generator = torch.Generator().manual_seed(4)
    images = torch.rand(100, 3, 32, 32, generator=generator)
    with torch.no_grad():
        labels = model(images).argmax(1)
    runner = Runner(model, images, labels, params)
    for radius in ["1", "4", "32"]:
        for attack in ["fgsm", "pgd"]:
            runner.run(attack, parse_radius("Linf", radius))
    for attack in ["pgd_double_steps", "pgd_restart", "apgd_ce", "apgd_dlr", "apgd_t", "square"]:
        runner.run(attack, parse_radius("Linf", "4"))
    return runner, images


def check_statuses(model: nn.Module) -> dict:
    runner, images = attacked(model)
    with torch.no_grad():
        twice = (model(images), model(images))
    return {check.name: check.status for check in masking_checks(runner.robust, len(images), runner.excess, twice)}


def test_masking_checks_pass_on_a_plain_model_and_fire_on_a_masked_one():
    plain = linear_model(10, seed=5, logit_scale=10)  # logits as confident as a cross-entropy-trained network's
    statuses = check_statuses(plain)
    assert set(statuses.values()) == {"pass"}, statuses
    masked = check_statuses(Quantized(plain))
    assert masked["near 0 at Linf 32/255"] == "fail"
    assert masked["the black-box attack adds no more than a few tenths of a point"] == "fail"
    assert masked["every perturbation within its radius, every image in [0, 1]"] == "pass"


def test_soft_logits_weaken_the_cross_entropy_attack_and_the_check_says_so():
    """The same linear model with logits ten times smaller (what label smoothing does to a network's logits): PGD and
    APGD on the cross-entropy miss images the margin-based DLR attacks break, and the loss check fails."""
    statuses = check_statuses(linear_model(10, seed=5, logit_scale=1))
    assert statuses["cross-entropy and DLR/targeted attacks agree"] == "fail"


def test_the_pgd_gap_counts_the_images_only_pgd_leaves_right():
    """On the soft-logit model the DLR attack breaks images PGD-CE leaves right; on the confident one it does not."""
    threat = parse_radius("Linf", "4")
    soft, _ = attacked(linear_model(10, seed=5, logit_scale=1))
    confident, _ = attacked(linear_model(10, seed=5, logit_scale=10))
    gaps = {tag: {row["attack"]: row for row in pgd_gap_rows({tag: runner}) if row["radius"] == threat.label}
            for tag, runner in [("soft", soft), ("confident", confident)]}
    assert set(gaps["soft"]) == {"APGD-CE", "APGD-DLR", "APGD-T", "Square (black-box)"}
    dlr = gaps["soft"]["APGD-DLR"]
    pgd_right, dlr_right = soft.robust["pgd", threat], soft.robust["apgd_dlr", threat]
    assert dlr["robust_only_under_pgd_ce"] == int((pgd_right & ~dlr_right).sum()) > 0
    assert dlr["pgd_ce_robust"] - dlr["attack_robust"] == pytest.approx(
        (dlr["robust_only_under_pgd_ce"] - dlr["robust_only_under_attack"]) / dlr["n"])
    assert gaps["confident"]["APGD-DLR"]["robust_only_under_pgd_ce"] < dlr["robust_only_under_pgd_ce"]


def test_a_model_without_gradients_is_one_clear_error():
    class Detached(nn.Module):
        def forward(self, images):
            with torch.no_grad():
                return linear_model(10)(images)
    with pytest.raises(UserError, match="not differentiable"):
        differentiable_or_error(Detached(), torch.rand(2, 3, 32, 32), torch.tensor([0, 1]), "baseline")


@pytest.mark.parametrize("text, expected", [("Linf:8", Threat("Linf", 8 / 255)), ("l2:0.5", Threat("L2", 0.5)),
                                            ("Linf:1/2", Threat("Linf", 0.5 / 255))])
def test_radii_read_as_written(text, expected):
    assert parse_threat(text) == expected
    assert Threat("Linf", 8 / 255).label == "Linf 8/255" and Threat("Linf", 0.5 / 255).label == "Linf 0.5/255"


@pytest.mark.parametrize("flags, fragment", [
    (["--strong", "L1:1"], "NORM one of Linf, L2"),
    (["--linf", "300"], "out of range"),
    (["--l2", "x"], "is not a number"),
    (["--autoattack", "Linf"], "write NORM:RADIUS")])
def test_bad_radii_are_one_line(flags, fragment, tiny_data, tmp_path):
    result = run_stage_in_process("adversarial.py", "--data-dir", tiny_data, *flags, cwd=tmp_path)
    assert_user_error(result, fragment)


@pytest.mark.slow
def test_adversarial_stage_on_two_models(tiny_data, tmp_path):
    write_checkpoint(tmp_path / "experiments" / "baseline" / "best_model.pth", seed=0)
    write_checkpoint(tmp_path / "experiments" / "improved" / "best_model.pth", seed=1)
    result = run_stage_in_process("adversarial.py", "--data-dir", tiny_data, "--device", "cpu", "--smoke",
                                  "--images", "16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "experiments" / "adversarial"
    table = pd.read_csv(out / "robust_accuracy.csv")
    assert set(table.model) == {"baseline", "improved"} and (table.robust_accuracy <= table.clean_accuracy).all()
    assert (table.robust_low95 <= table.robust_accuracy).all() and (table.robust_accuracy <= table.robust_high95).all()
    assert (table.seconds >= 0).all()
    assert set(table.attack) >= {"FGSM", "PGD-CE", "APGD-CE", "APGD-T", "Square (black-box)", "AutoAttack (standard)"}
    assert (table[table.attack == "AutoAttack (standard)"].n == 4).all()
    assert (table[table.attack == "FGSM"].n == 16).all()
    per_image = pd.read_csv(out / "per_image.csv")
    assert len(per_image) == 32 and {"min_l2", "min_linf", "flipped_by", "margin"} <= set(per_image.columns)
    checks = json.loads((out / "checks.json").read_text())
    assert set(checks) == {"baseline", "improved"}
    assert all(check["status"] in ("pass", "fail", "not run") for found in checks.values() for check in found)
    assert len(pd.read_csv(out / "model_comparison.csv")) == len(table) // 2
    gap = pd.read_csv(out / "pgd_gap.csv")
    assert set(gap.model) == {"baseline", "improved"} and "AutoAttack (standard)" in set(gap.attack)
    autoattack = per_image[per_image.model == "baseline"].robust_autoattack_linf_32
    assert autoattack.notna().sum() == 4 and autoattack.isna().sum() == 12  # run on the first 4 of the 16
    first = table[(table.model == "baseline") & (table.attack == "PGD-CE") & (table.radius == "Linf 1/255")]
    assert per_image[per_image.model == "baseline"].robust_pgd_linf_1.mean() == pytest.approx(
        float(first.robust_accuracy.iloc[0]))
    assert set(pd.read_csv(out / "transfer.csv").source) == {"baseline", "improved"}
    figures = {"robust_accuracy.png", "minimal_distance.png", "adversarial_examples.png"}
    assert figures <= {p.name for p in out.iterdir()}
    record = json.loads((tmp_path / "experiments" / "records" / "adversarial.json").read_text())
    headline = {row["figure"]: row for row in record["headline"]}
    strong = headline["robust accuracy at Linf 1/255, strongest attack (Wilson 95%)"]
    assert strong["axis"] == "robust accuracy, Linf 1/255" and set(strong["values"]) == {"baseline", "improved"}
    for tag, value in strong["values"].items():  # the lowest of the attacks beyond the PGD-CE sweep
        beyond = table[(table.model == tag) & (table.radius == "Linf 1/255") & ~table.attack.isin(["FGSM", "PGD-CE"])]
        assert value["value"] == pytest.approx(beyond.robust_accuracy.min())
    section, = record["sections"]
    checks_table = next(t for t in section["tables"] if t["columns"] == ["check", "baseline", "improved"])
    assert [row[0] for row in checks_table["rows"]] == [check["check"] for check in checks["baseline"]]
    assert all(cell.split(" ")[0] in ("pass", "fail", "not") for row in checks_table["rows"] for cell in row[1:])
    assert {Path(link).name for link in section["links"]} >= {"robust_accuracy.csv", "pgd_gap.csv", "checks.json"}
    report = run_stage_in_process("report.py", "--data-dir", tiny_data, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "../adversarial/robust_accuracy.png" in (tmp_path / "experiments" / "report" / "index.html").read_text()
    again = run_stage_in_process("adversarial.py", "--data-dir", tiny_data, "--device", "cpu", "--smoke", "--images",
                                 "16", "--improved", "none", "--out-dir", "alone", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    alone = pd.read_csv(tmp_path / "alone" / "robust_accuracy.csv")
    same = table[table.model == "baseline"].reset_index(drop=True)
    assert np.array_equal(alone.robust_accuracy, same.robust_accuracy)  # seeded: the same numbers again


def test_the_robust_accuracy_figure_keeps_one_legend_entry_per_attack_in_each_panel():
    from stresstest.plots import robust_accuracy_figure
    from stresstest.stages.adversarial import ATTACKS

    rows = [{"model": model, "norm": norm, "eps": eps, "attack": attack.display, "robust_accuracy": 0.3,
             "robust_low95": 0.2, "robust_high95": 0.4, "clean_accuracy": 0.8}
            for model in ["baseline", "improved"] for norm, eps in [("Linf", 1 / 255), ("Linf", 8 / 255), ("L2", 0.5)]
            for attack in ATTACKS.values()]
    figure = robust_accuracy_figure(pd.DataFrame(rows), "title")
    legends = [axis.get_legend() for axis in figure.axes]
    assert len(figure.axes) == 4 and all(len(legend.get_texts()) <= len(ATTACKS) <= 9 for legend in legends)
    assert {axis.get_title().split(",")[0] for axis in figure.axes} == {"baseline", "improved"}
