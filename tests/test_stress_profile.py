"""stress_profile.py: the per-image table joins each stage's own outputs by test index (stages that sampled
different images included), leaves out a stage that ran on another model, and says in one line when no stage has
run; the slice overlap against random sets; the Spearman interval's coverage."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, file_digests, run_stage_in_process, write_checkpoint
from scipy.stats import spearmanr

from stresstest.core.architecture import file_sha256
from stresstest.metrics import spearman_interval
from stresstest.stages.stress_profile import slice_overlap


def stage_output(workdir: Path, stage: str, output: str, files: dict, models: dict | None = None,
                 inputs: dict | None = None) -> None:
    """A finished stage as profile.py finds it: its record and its per-image files."""
    folder = workdir / "out" / stage
    folder.mkdir(parents=True)
    for name, frame in files.items():
        frame.to_csv(folder / name, index=False)
    records = workdir / "experiments" / "records"
    records.mkdir(parents=True, exist_ok=True)
    (records / f"{stage}.json").write_text(json.dumps({
        "stage": stage, "outputs": {output: str(folder)}, "inputs": {k: str(v) for k, v in (inputs or {}).items()},
        **({"models": models} if models is not None else {})}))


@pytest.fixture
def model_dir(tmp_path):
    checkpoint = tmp_path / "experiments" / "baseline" / "best_model.pth"
    write_checkpoint(checkpoint, seed=0)
    return tmp_path, checkpoint


def test_the_profile_joins_each_stage_by_test_index(tiny_data, model_dir):
    workdir, checkpoint = model_dir
    card = {"baseline": {"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint)}}
    count = 120
    stage_output(workdir, "calibration", "calibration", {"per_image.csv": pd.DataFrame({
        "model": "baseline", "test_index": np.arange(count)[::-1], "confidence": 0.5,
        "confidence_temperature": np.arange(count)[::-1] / 1000})}, card)
    stage_output(workdir, "failure_analysis", "cases", {"label_quality.csv": pd.DataFrame({
        "test_index": np.arange(count), "given_label": "cat", "suggested_label": "dog",
        "label_quality": np.arange(count) / 100, "label_issue": np.arange(count) % 7 == 0})}, card)
    # the adversarial stage attacked a sample in its own order; robustness the first 10 images
    stage_output(workdir, "adversarial", "adversarial", {"per_image.csv": pd.DataFrame({
        "model": "baseline", "test_index": [17, 3, 90], "min_linf": [0.1, 0.3, np.nan], "min_l2": [1.0, 3.0, 9.0],
        "flipped_by": ["", "", ""]})}, card)
    stage_output(workdir, "robustness", "robustness", {"per_image.csv": pd.DataFrame({
        "model": "baseline", "test_index": np.arange(10), "corrupted_sets_right": 5, "corrupted_sets": 9,
        "corruptions_flipping_severity_3": np.arange(10) % 4})}, card)
    stage_output(workdir, "ood", "ood", {"scores.csv": pd.DataFrame({
        "model": "baseline", "set": ["cifar10_test"] * 4 + ["digits"] * 2, "index": [2, 0, 1, 3, 0, 1],
        "prediction": 0, "confidence": 0.5, "energy": [4.0, 1.0, 3.0, 2.0, -9.0, -9.0]})}, card)
    # seeds ran on another checkpoint of the same name: not joined, and said so
    stage_output(workdir, "seeds", "seeds", {"per_image.csv": pd.DataFrame({
        "model": "baseline", "test_index": np.arange(count), "seeds_wrong": 1, "seeds_confidently_wrong": 0})},
        inputs={"baseline": workdir / "elsewhere.pth"})
    result = run_stage_in_process("stress_profile.py", "--data-dir", tiny_data, "--baseline", checkpoint, "--improved",
                                  "none", "--slices", "4", cwd=workdir)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(workdir / "experiments" / "profile" / "per_image.csv").set_index("test_index")
    assert len(table) == count and (table.model == "baseline").all()
    assert np.allclose(table.confidence_temperature, table.index / 1000)
    assert np.allclose(table.label_quality, table.index / 100) and "label_issue" not in table.columns
    assert table.min_linf[17] == 0.1 and table.min_l2[3] == 3.0 and np.isnan(table.min_linf[90])
    assert table.min_l2.notna().sum() == 3
    assert list(table.corruptions_flipping_severity_3[:10]) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert table.corruptions_flipping_severity_3[10:].isna().all()
    # percentile among the test images under the score (higher: more in-distribution); the OOD sets' rows ignored
    assert list(table.ood_percentile_energy[:4]) == [0.25, 0.75, 1.0, 0.5]
    assert table.ood_percentile_energy[4:].isna().all()
    assert "seeds_confidently_wrong" not in table.columns
    assert (table.predicted_label == table.true_label).eq(table.correct).all()
    assert not table.training_twin.any() and table.outlier_score.notna().all()  # generated images: no copies
    judges = pd.read_csv(workdir / "experiments" / "profile" / "label_judges.csv")
    assert list(judges.judge) == ["baseline"] and not judges.independent.any()  # one model: no independent judge
    assert judges.flagged[0] == (table.label_issue_by_baseline & ~table.correct).sum()
    record = json.loads((workdir / "experiments" / "records" / "stress_profile.json").read_text())
    assert record["sources"]["seeds.py: per_image.csv"].startswith("not joined: it ran on another baseline")
    assert record["sources"]["adversarial.py: per_image.csv"].startswith("joined from")
    slices = pd.read_csv(workdir / "experiments" / "profile" / "slices.csv")
    assert set(slices.found_on_half) <= {0, 1} and (slices.held_out_size >= 10).all()
    assert slices.description.str.contains("held-out images").all()
    for share in ["mean_label_issue_by_baseline", "mean_training_twin", "rest_mean_label_issue_by_baseline"]:
        assert slices[share].between(0, 1).all(), share
    # the rest a slice's signals are compared with is the rest of its held-out half, as its error rate's
    assert (slices.rest_size == 60 - slices.held_out_size).all()
    pairs = pd.read_csv(workdir / "experiments" / "profile" / "correlations.csv")
    row = pairs[(pairs.signal == "confidence_temperature") & (pairs.other == "label_quality")].iloc[0]
    assert row.n == count and row.spearman == 1.0


def test_the_profile_without_stage_outputs_says_so_in_one_line(tiny_data, model_dir):
    workdir, checkpoint = model_dir
    before = file_digests(workdir)
    assert_user_error(run_stage_in_process("stress_profile.py", "--data-dir", tiny_data, "--baseline", checkpoint,
                                           "--improved", "none", cwd=workdir),
                      "no stage has left per-image outputs", "calibration.py")
    assert file_digests(workdir) == before


def test_worst_slices_overlap_is_measured_against_random_sets_of_the_same_sizes():
    same = slice_overlap(np.arange(50), np.arange(50), 500, seed=0)
    assert same["jaccard"] == 1.0 and same["p_value"] < 0.001 and 0.02 < same["shuffled_mean"] < 0.08
    apart = slice_overlap(np.arange(50), np.arange(50, 100), 500, seed=0)
    assert apart["jaccard"] == 0.0 and apart["p_value"] == 1.0


def test_the_spearman_interval_covers_the_population_value_95_times_in_100():
    """Bivariate normal pairs of correlation r: Spearman's population value is (6 / pi) asin(r / 2)."""
    rng = np.random.default_rng(0)
    r, n, trials = 0.6, 40, 600
    truth = 6 / np.pi * np.arcsin(r / 2)
    covered = 0
    for _ in range(trials):
        x, y = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], n).T
        low, high = spearman_interval(float(spearmanr(x, y).statistic), n)  # pyright: ignore[reportAttributeAccessIssue]
        covered += low <= truth <= high
    assert 0.925 <= covered / trials <= 0.975  # binomial sd at 600 trials: 0.009
    assert np.isnan(spearman_interval(0.5, 3)[0])
