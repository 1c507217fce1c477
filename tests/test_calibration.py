"""The calibration stage: its figures, cross-fitting, and the stage end to end on generated data with untrained
checkpoints (the metrics themselves: test_metrics.py)."""
import numpy as np
import pandas as pd
import pytest

from conftest import assert_user_error, run_stage_in_process, synthetic_predictions, write_checkpoint
from stresstest import plots
from stresstest.stages.calibration import cross_fitted, evaluate_model, fit_on, fitted_on_validation


def test_figures_show_the_intervals_the_tables_report():
    logits, labels, sharp = synthetic_predictions(n=300)
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
    logits, labels, sharp = synthetic_predictions(n=600)
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
