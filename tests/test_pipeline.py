import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import (assert_user_error, file_digests, reference_calibration, run_stage, run_stage_in_process,
                      top_label, write_checkpoint)
from models import build_model
from stresstest import metrics as m
from stresstest.core import paths
from stresstest.core.cases import parse_meta
from stresstest.stages.compare_models import describe_change
from stresstest.data.cifar10 import load_cifar10
from stresstest.core.errors import UserError
from stresstest.explain import ROLES, SIDE_BY_SIDE
from stresstest.nn.cam_layers import cam_target
from stresstest.stages.failure_analysis import SMOKE, pick_representatives
from stresstest.nn.gradcam import compute_cams

SPEC_META_KEYS = {"test_index", "true_label", "predicted_label", "confidence"}
SPEC_COMPARISON = ["case", "test_index", "true_label", "baseline_pred", "baseline_confidence", "improved_pred",
                   "improved_confidence"]


@pytest.mark.slow
def test_every_contract_file_is_there(smoke_pipeline):
    workdir, data = smoke_pipeline.workdir, smoke_pipeline.data
    records = {p.stem for p in (workdir / "experiments" / "records").glob("*.json")}
    assert {Path(stage.script).stem for stage in paths.PIPELINE if stage.folder != paths.REPORT_DIR} <= records
    for run in ["baseline", "improved"]:
        for name in ["best_model.pth", "metrics.csv", "accuracy_curve.png", "loss_curve.png"]:
            assert (workdir / "experiments" / run / name).is_file(), (run, name)
    assert (workdir / "experiments" / "comparison" / "comparison_results.csv").is_file()
    assert (workdir / "experiments" / "calibration" / "calibration_metrics.csv").is_file()
    adversarial = workdir / "experiments" / "adversarial"
    for name in ["robust_accuracy.csv", "per_image.csv", "checks.json", "robust_accuracy.png", "transfer.csv",
                 "case_distances.csv"]:
        assert (adversarial / name).is_file(), name
    ood = workdir / "experiments" / "ood"
    for name in ["metrics.csv", "comparisons.csv", "scores.csv", "selective.csv", "auroc.png", "accepted.png",
                 "sets/digits.npy"]:
        assert (ood / name).is_file(), name
    for name in ["per_image.csv", "correlations.csv", "correlations.png", "slices.csv", "slices.png",
                 "duplicates.csv", "outliers.csv", "twin_accuracy.csv", "duplicates.png"]:
        assert (workdir / "experiments" / "profile" / name).is_file(), name
    seeds = pd.read_csv(workdir / "experiments" / "seeds" / "per_seed.csv")
    assert sorted(seeds.seed.unique()) == [0, 1]
    assert set(seeds[seeds.seed == 0].run) == {"experiments/baseline", "experiments/improved"}  # seed 0 reused
    cases = sorted((workdir / "failure_cases" / "baseline").glob("case_*"))
    assert len(cases) >= 3
    for case in cases:
        assert {p.name for p in case.iterdir()} >= {"image.png", "meta.txt", "gradcam_baseline.png",
                                                     "gradcam_improved.png", SIDE_BY_SIDE}
    raw = torch.load(workdir / "experiments" / "improved" / "best_model.pth", weights_only=True)
    assert raw["config"]["label_smoothing"] == 0.1 and raw["split_sizes"]["test"] == len(data.test_labels)


@pytest.mark.slow
def test_failures_are_the_models_own_wrong_answers(smoke_pipeline):
    workdir, data = smoke_pipeline.workdir, smoke_pipeline.data
    probs = smoke_pipeline.test_probabilities("baseline")
    predicted = probs.argmax(1)
    folder = workdir / "failure_cases" / "baseline"
    failures = pd.read_csv(folder / "all_failures.csv")
    assert sorted(failures.test_index) == list(np.flatnonzero(predicted != data.test_labels))
    assert list(failures.confidence) == sorted(failures.confidence, reverse=True)
    for row in failures.itertuples():
        assert data.class_names[predicted[row.test_index]] == row.predicted_label != row.true_label
        assert row.confidence == pytest.approx(probs[row.test_index].max(), abs=1e-5)
        assert row.true_class_probability == pytest.approx(probs[row.test_index, data.test_labels[row.test_index]],
                                                           abs=1e-5)
        assert 0 <= row.margin <= row.confidence
    cases = pd.read_csv(folder / "cases.csv")
    expected = failures[failures.confidence >= SMOKE.threshold].head(SMOKE.max_cases)
    assert list(cases.test_index) == list(expected.test_index)
    for case in cases.itertuples():
        meta = parse_meta((folder / case.case / "meta.txt").read_text())
        assert SPEC_META_KEYS <= set(meta)
        assert int(meta["test_index"]) == case.test_index and meta["true_label"] == case.true_label
        assert float(meta["confidence"]) >= SMOKE.threshold
        with Image.open(folder / case.case / "image.png") as image:
            pixels = np.asarray(image)
        assert pixels.shape == (32, 32, 3)
        assert np.array_equal(pixels, data.test_images[case.test_index].transpose(1, 2, 0))  # lossless


@pytest.mark.slow
def test_three_representatives_are_recorded(smoke_pipeline):
    workdir = smoke_pipeline.workdir
    folder = workdir / "failure_cases" / "baseline"
    cases = pd.read_csv(folder / "cases.csv")
    chosen = cases[cases.representative]
    assert len(chosen) == 3
    picked = [cases.case[i] for i in pick_representatives(cases)]  # in the rule's order, not the table's
    assert json.loads((folder / "summary.json").read_text())["representative_cases"] == picked
    assert sorted(chosen.case) == sorted(picked)
    for case in chosen.itertuples():
        assert parse_meta((folder / case.case / "meta.txt").read_text())["representative"] == "yes"


def test_representative_rule():
    cases = pd.DataFrame({"true_label": ["cat", "cat", "dog", "truck", "ship", "bird"],
                          "predicted_label": ["dog", "dog", "cat", "automobile", "airplane", "frog"]})
    # cat->dog first; dog->cat shares both classes; truck->automobile and ship->airplane are new
    assert pick_representatives(cases) == [0, 3, 4]
    same_pair = pd.DataFrame({"true_label": ["cat", "cat", "cat", "dog"],
                              "predicted_label": ["dog", "dog", "frog", "cat"]})
    # no third case with fresh classes: fill by new confusion pair, most confident first
    assert pick_representatives(same_pair) == [0, 2, 3]
    assert pick_representatives(same_pair.head(2)) == [0, 1]


@pytest.mark.slow
def test_gradcam_outputs_are_finite_maps_and_readable_figures(smoke_pipeline):
    workdir = smoke_pipeline.workdir
    for case in sorted((workdir / "failure_cases" / "baseline").glob("case_*")):
        meta = parse_meta((case / "meta.txt").read_text())
        for tag in ["baseline", "improved"]:
            with np.load(case / f"gradcam_{tag}.npz") as stored:
                maps, classes = stored["maps"], list(stored["classes"])
            assert maps.shape == (3, 32, 32) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
            # like for like: both models' maps are for the true class and for the case's failure class
            assert classes[ROLES.index("true")] == meta["true_label"]
            assert classes[ROLES.index("failure")] == meta["predicted_label"]
            with Image.open(case / f"gradcam_{tag}.png") as figure:
                assert figure.format == "PNG" and figure.size[0] >= 700 and figure.size[1] >= 250
        with Image.open(case / SIDE_BY_SIDE) as figure:
            assert figure.size[0] >= 700 and figure.size[1] >= 500


@pytest.mark.slow
def test_comparison_matches_both_models(smoke_pipeline):
    workdir, data = smoke_pipeline.workdir, smoke_pipeline.data
    base = smoke_pipeline.test_probabilities("baseline")
    impr = smoke_pipeline.test_probabilities("improved")
    out = workdir / "experiments" / "comparison"
    table = pd.read_csv(out / "comparison_results.csv")
    assert list(table.columns[:7]) == SPEC_COMPARISON
    assert len(table) == len(list((workdir / "failure_cases" / "baseline").glob("case_*")))
    names = data.class_names
    for row in table.itertuples():
        i = row.test_index
        assert row.baseline_pred == names[base[i].argmax()] and row.improved_pred == names[impr[i].argmax()]
        assert row.baseline_confidence == pytest.approx(base[i].max(), abs=1e-5)
        assert row.improved_confidence == pytest.approx(impr[i].max(), abs=1e-5)
        assert row.fixed == int(row.improved_pred == row.true_label)
    summary = {r["metric"]: r for r in csv.DictReader(open(out / "test_set_summary.csv"))}
    assert summary["change"]["change"] == "label_smoothing 0.0 -> 0.1"
    assert float(summary["threshold"]["change"]) == SMOKE.threshold  # the smoke threshold stage 2 decided
    assert float(summary["accuracy"]["baseline"]) == pytest.approx((base.argmax(1) == data.test_labels).mean())
    assert float(summary["accuracy"]["improved"]) == pytest.approx((impr.argmax(1) == data.test_labels).mean())
    changes = pd.read_csv(out / "confident_failures.csv")
    confident_wrong = (base.argmax(1) != data.test_labels) & (base.max(1) >= SMOKE.threshold)
    assert set(changes.test_index[changes.status.isin(["fixed", "kept", "less_confident_wrong"])]) == \
        set(np.flatnonzero(confident_wrong))
    with Image.open(out / "confusion_matrices.png") as image:
        assert image.size[0] > 1000


@pytest.mark.slow
def test_rerun_replaces_cases_cleanly(smoke_pipeline, real_data, tmp_path):
    workdir = smoke_pipeline.workdir
    shutil.copytree(workdir / "experiments" / "baseline", tmp_path / "experiments" / "baseline")
    shutil.copytree(workdir / "failure_cases", tmp_path / "failure_cases")
    before = len(list((tmp_path / "failure_cases" / "baseline").glob("case_*")))
    failures = pd.read_csv(tmp_path / "failure_cases" / "baseline" / "all_failures.csv")
    threshold = float(np.floor(failures.confidence.iloc[2] * 100) / 100)  # at least three failures reach it
    result = run_stage_in_process("failure_analysis.py", "--data-dir", real_data, "--threshold", threshold,
                                  "--max-cases", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "failure_cases" / "baseline"
    after = sorted(p.name for p in folder.glob("case_*"))
    assert before > 2 and after == ["case_00", "case_01"]
    assert not list(folder.rglob("gradcam_*")) and not list((tmp_path / "failure_cases").glob(".*"))
    assert json.loads((folder / "summary.json").read_text())["threshold"] == threshold


# -- stage order and bad input, on generated data with random-init checkpoints (no training needed) --------

@pytest.fixture
def random_init_cases(tiny_data, tmp_path):
    """experiments/baseline and failure_cases/baseline from an untrained model (threshold 0: every failure)."""
    write_checkpoint(tmp_path / "experiments" / "baseline" / "best_model.pth", seed=0)
    result = run_stage_in_process("failure_analysis.py", "--data-dir", tiny_data, "--threshold", "0",
                                  "--max-cases", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_stages_refuse_to_run_before_their_inputs_exist(tiny_data, random_init_cases, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    assert_user_error(run_stage_in_process("failure_analysis.py", "--data-dir", tiny_data, cwd=empty),
                      "run train.py first")
    assert_user_error(run_stage_in_process("explainability.py", "--data-dir", tiny_data, cwd=empty),
                      "run failure_analysis.py first")
    workdir = random_init_cases
    before = file_digests(workdir)
    assert_user_error(run_stage_in_process("compare_models.py", "--data-dir", tiny_data, cwd=workdir),
                      "run improvement.py first")
    assert_user_error(run_stage_in_process("explainability_improved.py", "--data-dir", tiny_data, cwd=workdir),
                      "run improvement.py first")
    assert file_digests(workdir) == before


@pytest.mark.slow  # a new interpreter that imports torch
def test_a_run_of_the_real_script_fails_in_one_line(tmp_path):
    """The subprocess form, once: what a user sees from the shell, without a traceback."""
    assert_user_error(run_stage("failure_analysis.py", "--data-dir", tmp_path, cwd=tmp_path), "run train.py first")


DAMAGES = {
    "not a readable checkpoint": lambda p: p.write_bytes(b"\x00" * 100),
    "not a cnn-stress-testing": lambda p: torch.save(build_model("resnet18", 10).state_dict(), p),
    "architecture resnet50: not a built-in architecture": lambda p: write_checkpoint(p, arch="resnet50"),
    "class": lambda p: write_checkpoint(p, num_classes=100),
}


def test_corrupt_or_foreign_checkpoints_are_refused(tiny_data, random_init_cases):
    workdir = random_init_cases
    checkpoint = workdir / "experiments" / "baseline" / "best_model.pth"
    for fragment, damage in DAMAGES.items():
        damage(checkpoint)
        before = file_digests(workdir)
        stages = ["failure_analysis.py"] + (["explainability.py"] if "readable" in fragment else [])
        for stage in stages:
            assert_user_error(run_stage_in_process(stage, "--data-dir", tiny_data, cwd=workdir), fragment)
        assert file_digests(workdir) == before


def test_compare_refuses_models_with_different_classes(tiny_data, random_init_cases):
    workdir = random_init_cases
    write_checkpoint(workdir / "experiments" / "improved" / "best_model.pth", num_classes=100)
    assert_user_error(run_stage_in_process("compare_models.py", "--data-dir", tiny_data, cwd=workdir), "differ in")


@pytest.mark.slow  # whole stages on generated data: several seconds
def test_stages_on_generated_data_with_untrained_models(tiny_data, random_init_cases):
    workdir = random_init_cases
    write_checkpoint(workdir / "experiments" / "improved" / "best_model.pth", seed=1, config={"label_smoothing": 0.1})
    for stage, args in [("explainability.py", ["--target", "true"]), ("compare_models.py", []),
                        ("explainability_improved.py", [])]:
        result = run_stage_in_process(stage, "--data-dir", tiny_data, *args, cwd=workdir)
        assert result.returncode == 0, result.stderr
    table = pd.read_csv(workdir / "experiments" / "comparison" / "comparison_results.csv")
    assert len(table) == 5 and (table.baseline_pred != table.true_label).all()
    summary = pd.read_csv(workdir / "experiments" / "comparison" / "test_set_summary.csv").set_index("metric")
    assert summary.change["change"] == "label_smoothing None -> 0.1"  # read from the checkpoints' configs
    low, high = float(summary.baseline["accuracy_wilson95_low"]), float(summary.baseline["accuracy_wilson95_high"])
    assert low <= float(summary.baseline["accuracy"]) <= high
    assert 0 <= float(summary.change["mcnemar_exact_p"]) <= 1
    assert float(summary.change["threshold"]) == 0.0  # the threshold stage 2 used, not a default
    wrong = len(pd.read_csv(workdir / "failure_cases" / "baseline" / "all_failures.csv"))
    assert float(summary.baseline["confident_failures"]) == wrong
    for case in sorted((workdir / "failure_cases" / "baseline").glob("case_*")):
        meta = parse_meta((case / "meta.txt").read_text())
        with np.load(case / "gradcam_baseline.npz") as base, np.load(case / "gradcam_improved.npz") as impr:
            assert list(base["classes"])[1:] == list(impr["classes"])[1:] == [meta["true_label"],
                                                                               meta["predicted_label"]]
            assert base["classes"][0] == meta["predicted_label"]  # the baseline's own prediction is the failure
            assert not np.array_equal(base["maps"], impr["maps"])
        assert (case / SIDE_BY_SIDE).is_file()


@pytest.mark.slow  # whole stages on generated data: several seconds
def test_comparison_counts_at_the_threshold_the_failure_analysis_used(tiny_data, random_init_cases):
    workdir = random_init_cases
    write_checkpoint(workdir / "experiments" / "improved" / "best_model.pth", seed=1)
    failures = pd.read_csv(workdir / "failure_cases" / "baseline" / "all_failures.csv")
    threshold = round(float(failures.confidence.median()), 4)
    result = run_stage_in_process("failure_analysis.py", "--data-dir", tiny_data, "--threshold", threshold,
                                  cwd=workdir)
    assert result.returncode == 0, result.stderr
    result = run_stage_in_process("compare_models.py", "--data-dir", tiny_data, cwd=workdir)
    assert result.returncode == 0, result.stderr
    summary = pd.read_csv(workdir / "experiments" / "comparison" / "test_set_summary.csv").set_index("metric")
    assert float(summary.change["threshold"]) == threshold
    assert float(summary.baseline["confident_failures"]) == (failures.confidence >= threshold).sum()


def test_no_confident_failure_is_said_by_the_failure_analysis(tiny_data, random_init_cases):
    workdir = random_init_cases
    before = file_digests(workdir)
    result = run_stage_in_process("failure_analysis.py", "--data-dir", tiny_data, "--threshold", "0.999",
                                  cwd=workdir)
    assert_user_error(result, "no wrong answer reached confidence 0.999", "wrong of 120", "lower --threshold")
    assert file_digests(workdir) == before


def test_describe_change_names_every_differing_setting():
    def trained(**config):
        return {"arch": "resnet18", "config": config}
    assert describe_change(trained(label_smoothing=0.0, seed=0, compile=False),
                           trained(label_smoothing=0.1, seed=0, compile=True)) == "label_smoothing 0.0 -> 0.1"
    assert describe_change(trained(lr=0.1), trained(lr=0.1)) == "no change in the training config"
    older = trained(label_smoothing=0.0)  # saved before cv_folds existed: its default, which is what the run did
    assert describe_change(older, trained(label_smoothing=0.1, cv_folds=0)) == "label_smoothing 0.0 -> 0.1"
    older["normalization"] = {"mean": [0.5] * 3, "std": [0.25] * 3}
    imported = {"arch": "net.py:Net", "config": {}, "normalization": {"mean": [0] * 3, "std": [1 / 255] * 3},
                "imported": {"weights": "net.pth", "preprocessing": "raw pixels 0..255"}}
    assert describe_change(older, imported) == \
        "resnet18 trained here (label_smoothing 0.0) -> net.py:Net (net.pth, raw pixels 0..255)"
    same_input = {**imported, "normalization": older["normalization"]}
    assert describe_change(same_input, older) == "net.py:Net (net.pth) -> resnet18 trained here (label_smoothing 0.0)"


def test_unknown_layer_lists_the_candidates():
    model = build_model("resnet18", 10)
    with pytest.raises(UserError, match="--layer layer9 is not a module of this model; candidates: .*layer4"):
        cam_target(model, {"arch": "resnet18"}, "layer9")


@pytest.mark.slow  # the pipeline runs each stage as a new interpreter
def test_pipeline_names_the_failing_stage(tiny_data, tmp_path):
    result = run_stage_in_process("run_pipeline.py", "--data-dir", tiny_data, "--from-stage", "failure_analysis.py",
                                  cwd=tmp_path)
    assert result.returncode != 0
    assert "stage 2/14 failure_analysis.py failed" in result.stderr and "Traceback" not in result.stderr


def test_batched_gradcam_equals_one_image_at_a_time(tiny_data):
    torch.manual_seed(0)
    model = build_model("resnet18", 10).eval()
    data = load_cifar10(tiny_data, quiet=True)
    images = (torch.from_numpy(data.test_images[:6]).float() / 255 - 0.5) / 0.25
    classes = [int(c) for c in data.test_labels[:6]]
    batched, probs = compute_cams(model, images, classes, model.layer3, batch_size=6)
    single = np.concatenate([compute_cams(model, images[i:i + 1], classes[i:i + 1], model.layer3, batch_size=1)[0]
                             for i in range(6)])
    assert batched.shape == (6, 32, 32) and np.isfinite(batched).all()
    np.testing.assert_allclose(batched, single, atol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(probs, model(images).softmax(1).numpy(), atol=1e-5)


@pytest.mark.slow
@pytest.mark.browser
def test_the_report_renders_in_a_real_browser(smoke_pipeline, tmp_path):
    """experiments/report/index.html opened by headless Chromium (Debian's package, when installed): the page
    loads its images from their relative paths and renders to a non-blank screenshot."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    page = smoke_pipeline.workdir / "experiments" / "report" / "index.html"
    screenshot = tmp_path / "report.png"
    result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,4000",
                             f"--screenshot={screenshot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert screenshot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=float)
    assert pixels.std() > 10  # text, tables and figures, not an empty page


@pytest.mark.slow
def test_calibration_errors_on_real_predictions_equal_the_references(smoke_pipeline):
    """The smoke pipeline's baseline on the real test images: each calibration error equals its reference,
    and the stage's table holds the same numbers with intervals that hold them."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    reference = reference_calibration()
    probs, labels = smoke_pipeline.test_probabilities("baseline"), smoke_pipeline.data.test_labels
    confidence, correct = top_label(probs, labels)
    ece = m.expected_calibration_error(confidence, correct)
    assert ece == pytest.approx(multiclass_calibration_error(
        torch.from_numpy(probs), torch.from_numpy(labels).long(), num_classes=10, n_bins=15, norm="l1").item(),
        abs=1e-6)
    assert m.adaptive_calibration_error(confidence, correct) == pytest.approx(
        reference.get_ece_em(probs, labels.astype(int), num_bins=15), abs=1e-9)
    debiased = m.debiased_calibration_error(confidence, correct)
    assert debiased == pytest.approx(
        reference.lower_bound_scaling_top_ce(probs, labels.astype(int), p=2, debias=True, num_bins=15), abs=1e-9)
    table = pd.read_csv(smoke_pipeline.workdir / "experiments" / "calibration" / "calibration_metrics.csv")
    row = table[(table.model == "baseline") & (table.scaling == "none")].iloc[0]
    assert row.ece == pytest.approx(ece, abs=1e-5) and row.debiased_l2_ce == pytest.approx(debiased, abs=1e-5)
    for name in ["ece", "ece_equal_mass", "debiased_l2_ce"]:
        assert (table[f"{name}_low"] <= table[name]).all() and (table[name] <= table[f"{name}_high"]).all()


@pytest.mark.slow
def test_ood_metrics_on_real_scores_equal_pytorch_ood(smoke_pipeline):
    """The OOD stage's metrics table against pytorch-ood's functional metrics, recomputed from the per-image scores
    it saved (the smoke baseline on real test images against scikit-learn's digits): every metric equal, and the
    images saved are the ones scored."""
    from pytorch_ood.metrics import functional as reference

    out = smoke_pipeline.workdir / "experiments" / "ood"
    scores = pd.read_csv(out / "scores.csv")
    metrics = pd.read_csv(out / "metrics.csv").set_index(["model", "protocol", "set", "score"])
    baseline = scores[scores.model == "baseline"]
    test, digits = baseline[baseline.set == "cifar10_test"], baseline[baseline.set == "digits"]
    assert len(digits) == len(np.load(out / "sets" / "digits.npy"))
    for score in ["msp", "energy", "knn", "vim", "ash"]:
        values = torch.from_numpy(np.concatenate([test[score], digits[score]]))
        labels = torch.cat([torch.full((len(test),), -1), torch.zeros(len(digits), dtype=torch.long)])  # ID positive
        row = metrics.loc["baseline", "standard", "digits", score]
        assert row.auroc == pytest.approx(reference.auroc(values, labels).item(), abs=2e-6)
        assert row.aupr_in == pytest.approx(reference.aupr(values, labels, positive="ood").item(), abs=2e-6)
        assert row.aupr_out == pytest.approx(reference.aupr(values, labels, positive="id").item(), abs=2e-6)
        assert row.fpr95 == pytest.approx(reference.fpr_at_tpr(values, labels, 0.95).item(), abs=2e-6)


@pytest.mark.slow
def test_the_stress_profile_joins_every_stage_of_the_smoke_run(smoke_pipeline):
    """One row per test image and model; the answers are the models' own; each stage's columns where it ran."""
    workdir, labels = smoke_pipeline.workdir, smoke_pipeline.data.test_labels
    table = pd.read_csv(workdir / "experiments" / "profile" / "per_image.csv")
    assert len(table) == 2 * len(labels)
    for tag, rows in table.groupby("model"):
        probs = smoke_pipeline.test_probabilities(str(tag))
        assert np.array_equal(rows.test_index, np.arange(len(labels)))
        assert np.allclose(rows.confidence, probs.max(1), atol=1e-5)
        assert rows.confidence_temperature.notna().all() and rows.label_quality.notna().all()
        assert rows.corruptions_flipping_severity_3.notna().sum() == 50  # robustness --smoke: the first 50
        assert rows.min_l2.notna().any() and rows.ood_percentile_knn.notna().any()
        assert (rows.seeds_confidently_wrong <= rows.seeds_wrong).all() and rows.seeds_wrong.between(0, 2).all()
    record = json.loads((workdir / "experiments" / "records" / "stress_profile.json").read_text())
    assert all(value.startswith("joined") for value in record["sources"].values()), record["sources"]
    slices = pd.read_csv(workdir / "experiments" / "profile" / "slices.csv")
    assert set(slices.model) == {"baseline", "improved"} and (slices.held_out_size >= 10).all()
    assert 0 <= record["overlap"]["jaccard"] <= 1
    assert record["data_faults"]["images"] == {"train": 1000, "test": len(labels)}  # --smoke: 1,000 training images
    # each model's wrong answers before each judge: the counts are those of the per-image flags
    judges = pd.read_csv(workdir / "experiments" / "profile" / "label_judges.csv")
    assert len(judges) == 4 and set(judges.independent) == {True, False}
    for row in judges.itertuples():
        rows = table[table.model == row.model]
        assert row.flagged == (rows[f"label_issue_by_{row.judge}"] & ~rows.correct).sum()
        if row.independent:
            both = rows[f"label_issue_by_{row.judge}"] & rows[f"label_issue_by_{row.model}"] & ~rows.correct
            assert row.flagged_by_both == both.sum()
