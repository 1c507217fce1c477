"""Calibration and selective-prediction metrics against direct loops and torchmetrics; the stage end to end
on generated data with untrained checkpoints."""
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import assert_user_error, run_stage_in_process, write_checkpoint
from stresstest import metrics as cal
from stresstest import plots
from stresstest.stages.calibration import cross_fitted, evaluate_model, fit_on, fitted_on_validation


def synthetic(n=4000, classes=10, sharpen=3.0, seed=0):
    """Labels drawn from softmax(z): z is calibrated by construction, sharpen * z over-confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, size=(n, classes))
    probs = cal.softmax(logits)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return logits, labels, sharpen * logits


def ece_by_loop(confidence, correct, bins=15):
    total = 0.0
    for i in range(bins):
        low, high = i / bins, (i + 1) / bins
        members = (confidence > low) & (confidence <= high)
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return total


def aurc_by_loop(score, correct):
    order = sorted(range(len(score)), key=lambda i: -score[i])
    risks = [sum(not correct[j] for j in order[:k]) / k for k in range(1, len(score) + 1)]
    return sum(risks) / len(risks)


def test_ece_equals_a_direct_loop_and_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    calibrated, labels, overconfident = synthetic()
    for logits in [calibrated, overconfident]:
        probs = cal.softmax(logits)
        confidence, correct = probs.max(1), probs.argmax(1) == labels
        ours = cal.expected_calibration_error(confidence, correct)
        assert ours == pytest.approx(ece_by_loop(confidence, correct), abs=1e-12)
        theirs = multiclass_calibration_error(torch.from_numpy(probs), torch.from_numpy(labels), num_classes=10,
                                              n_bins=15, norm="l1").item()
        assert ours == pytest.approx(theirs, abs=1e-6)
    assert cal.expected_calibration_error(cal.softmax(calibrated).max(1),
                                          cal.softmax(calibrated).argmax(1) == labels) < 0.03
    assert cal.expected_calibration_error(cal.softmax(overconfident).max(1),
                                          cal.softmax(overconfident).argmax(1) == labels) > 0.1


def test_a_confidence_of_one_goes_to_the_last_bin():
    confidence = np.array([1.0, 1.0, 1.0, 0.95])
    correct = np.array([True, True, False, True])
    table = cal.reliability(confidence, correct)
    assert table["count"].tolist()[-1] == 4 and table["count"].sum() == 4
    assert cal.expected_calibration_error(confidence, correct) == pytest.approx(abs(0.75 - 0.9875))


def test_temperature_scaling_recovers_the_sharpening():
    calibrated, labels, overconfident = synthetic(n=6000)
    assert cal.fit_temperature(overconfident, labels) == pytest.approx(3.0, rel=0.1)
    assert cal.fit_temperature(calibrated, labels) == pytest.approx(1.0, rel=0.1)


def test_nll_and_brier_on_known_answers():
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    labels = np.array([0, 1])
    assert cal.negative_log_likelihood(probs, labels) == pytest.approx(-(np.log(0.5) + np.log(0.1)) / 2)
    assert cal.brier_score(probs, labels) == pytest.approx(((0.25 + 0.25) + (0.81 + 0.81)) / 2)


def test_aurc_equals_a_direct_loop_and_the_oracle_has_no_excess():
    rng = np.random.default_rng(1)
    score, correct = rng.random(300), rng.random(300) < 0.7
    assert cal.aurc(score, correct) == pytest.approx(aurc_by_loop(score, correct))
    assert cal.excess_aurc(correct.astype(float), correct) == 0
    assert cal.excess_aurc(score, correct) > 0
    # Geifman et al.: the oracle's AURC tends to r + (1 - r) ln(1 - r) for error rate r
    big = rng.random(100_000) < 0.8
    r = 1 - big.mean()
    assert cal.aurc(big.astype(float), big) == pytest.approx(r + (1 - r) * np.log(1 - r), abs=1e-3)


def test_figures_show_the_intervals_the_tables_report():
    logits, labels, sharp = synthetic(n=300)
    fitted = fitted_on_validation(sharp[:100], labels[:100], 200)
    metrics, selective, figures = evaluate_model("m", sharp[100:], labels[100:], fitted, seed=0)
    titles = [axis.get_title() for axis in plots.reliability_figure({"m": figures["reliability"]}, 200).axes]
    for row, title in zip(metrics, titles):
        assert f"ECE {row['ece']:.3f} (95% {row['ece_low']:.3f}-{row['ece_high']:.3f}, n=200)" in title
        assert row["ece_low"] < row["ece"] < row["ece_high"]
    legend = plots.risk_coverage_figure({"m": figures["curves"]}, 200).axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == [
        f"{row['score']}: AURC {row['aurc']:.4f} (95% {row['aurc_low']:.4f}-{row['aurc_high']:.4f})"
        for row in selective]


def test_cross_fitting_scores_each_half_with_the_other_halfs_values():
    logits, labels, sharp = synthetic(n=600)
    fitted = cross_fitted(sharp, labels, seed=0)
    temperatures = np.unique(fitted.temperature)
    assert len(temperatures) == 2 and "two-fold cross-fit on the test images" in fitted.fitted_on
    first = fitted.temperature == temperatures[0]
    assert 250 <= first.sum() <= 350  # stratified halves
    # each half carries the temperature fitted on the *other* half, never its own
    assert fitted.temperature[first][0] == pytest.approx(fit_on(sharp[~first], labels[~first])[0])
    assert fitted.temperature[first][0] != pytest.approx(fit_on(sharp[first], labels[first])[0])
    assert fitted.temperature.mean() == pytest.approx(3.0, rel=0.15)  # the sharpening undone
    metrics, selective, _ = evaluate_model("m", sharp, labels, fitted, seed=0)
    scaled = metrics[1]
    assert scaled["fitted_on"] == fitted.fitted_on and scaled["ece"] < metrics[0]["ece"]
    assert [row["score"].split("_p")[0] for row in selective] == ["msp", "msp_temperature", "pnorm"]


def test_pnorm_score_is_the_normalised_centred_max_logit():
    logits = np.array([[3.0, 1.0, -1.0], [0.5, 0.5, 0.5]])
    centred = logits - logits.mean(1, keepdims=True)
    expected = centred.max(1) / np.clip(np.abs(centred).sum(1), 1e-12, None)
    assert cal.pnorm_score(logits, 1) == pytest.approx(expected)


@pytest.fixture
def two_runs(tiny_data, tmp_path):
    config = {"val_fraction": 0.1, "max_train_images": 0, "label_smoothing": 0.0}
    write_checkpoint(tmp_path / "experiments" / "baseline" / "best_model.pth", seed=0, config=config,
                     split_sizes={"train": 360, "val": 40, "test": 120})
    write_checkpoint(tmp_path / "experiments" / "improved" / "best_model.pth", seed=1,
                     config={**config, "label_smoothing": 0.1}, split_sizes={"train": 360, "val": 40, "test": 120})
    return tmp_path


@pytest.mark.slow
def test_calibration_stage_on_generated_data(tiny_data, two_runs):
    result = run_stage_in_process("calibration.py", "--data-dir", tiny_data, "--device", "cpu", cwd=two_runs)
    assert result.returncode == 0, result.stderr
    out = two_runs / "experiments" / "calibration"
    metrics = pd.read_csv(out / "calibration_metrics.csv")
    assert len(metrics) == 4 and set(metrics.scaling) == {"none", "temperature"} and (metrics.test_images == 120).all()
    assert ((metrics.ece_low <= metrics.ece) & (metrics.ece <= metrics.ece_high)).all()
    scaled = metrics[metrics.scaling == "temperature"].set_index("model")
    plain = metrics[metrics.scaling == "none"].set_index("model")
    assert (scaled.accuracy == plain.accuracy).all()  # a temperature never changes the prediction
    selective = pd.read_csv(out / "selective_prediction.csv")
    assert len(selective) == 6 and (selective.e_aurc >= 0).all()
    assert {p.name for p in out.iterdir()} >= {"reliability_diagrams.png", "risk_coverage.png"}


def test_calibration_refuses_a_data_dir_with_another_split(tiny_data, two_runs):
    write_checkpoint(two_runs / "experiments" / "baseline" / "best_model.pth", config={"val_fraction": 0.1},
                     split_sizes={"val": 509})
    result = run_stage_in_process("calibration.py", "--data-dir", tiny_data, "--device", "cpu", cwd=two_runs)
    assert_user_error(result, "validation split of 40 images", "trained with 509")
