"""Label issues: the published list of confirmed CIFAR-10 test label errors, cleanlab's flags on probabilities
with planted label errors, and the columns the failure analysis writes."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from conftest import CLASS_NAMES, MACHINERY_ARCH, file_digests, run_stage_in_process, write_checkpoint
from stresstest.stages import failure_analysis as failures
from stresstest.data.cifar10 import load_cifar10
from stresstest.label_issues import confirmed_label_errors, describe, flag_label_issues, on_published_list
from stresstest.training import TrainConfig

SUBSET_FIRST_TEST_INDEX = 517  # ../shared/data/cifar10-subset holds official test images 517-1016 (its README)
SUBSET_SIZES = (5085, 500)


def test_the_published_list_has_its_54_errors_and_matches_real_labels(real_data):
    errors = confirmed_label_errors()
    assert len(errors) == 54 and all(0 <= i < 10_000 and 0 <= c < 10 for i, c in errors.items())
    data = load_cifar10(real_data, quiet=True)
    labels = data.test_labels
    if len(labels) == 10_000:  # the official test set: every listed image has its listed (wrong) given label
        assert on_published_list(labels).sum() == 54
        return
    if (len(data.train_labels), len(labels)) != SUBSET_SIZES:
        pytest.skip(f"{real_data} is neither the full test set nor the shared subset: its official indices are unknown")
    inside = {i: c for i, c in errors.items() if SUBSET_FIRST_TEST_INDEX <= i < SUBSET_FIRST_TEST_INDEX + len(labels)}
    assert inside == {792: 3, 882: 3}  # two cats in the subset's range, given label as in the official files
    assert all(labels[i - SUBSET_FIRST_TEST_INDEX] == c for i, c in inside.items())
    assert on_published_list(labels) is None  # a subset: the official indices do not apply


def planted_errors(count: int = 1000, flipped: int = 40, seed: int = 0):
    """Probabilities of a model right about 90% of the time about the true classes, and labels of which
    `flipped` were changed to another class."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 10, count)
    logits = rng.normal(size=(count, 10))
    logits[np.arange(count), true] += 4
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = true.copy()
    changed = rng.choice(count, flipped, replace=False)
    labels[changed] = (true[changed] + rng.integers(1, 10, flipped)) % 10
    return probs, labels, changed


def test_cleanlab_finds_planted_label_errors():
    probs, labels, changed = planted_errors()
    flags = flag_label_issues(probs, labels, CLASS_NAMES)
    flagged = set(flags.test_index[flags.label_issue])
    recall = len(flagged & set(changed)) / len(changed)
    precision = len(flagged & set(changed)) / len(flagged)
    assert recall > 0.8 and precision > 0.5, (recall, precision)
    assert flags.label_quality[changed].mean() < flags.label_quality.drop(changed).mean()
    assert "(the published list" in describe(flags)


def test_cleanlab_runs_in_this_process(monkeypatch):
    """A process pool forked after torch started its threads can hang the failure analysis: none is started."""
    import multiprocessing

    def no_pool(*args, **kwargs):
        raise AssertionError("cleanlab started a process pool")

    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    probs, labels, _ = planted_errors()
    assert flag_label_issues(probs, labels, CLASS_NAMES).label_issue.any()


def test_official_sized_test_set_is_checked_against_the_list():
    errors = confirmed_label_errors()
    labels = np.zeros(10_000, dtype=int)
    labels[list(errors)] = list(errors.values())
    marked = on_published_list(labels)
    assert marked.sum() == 54 and marked[list(errors)].all()
    labels[165] = (labels[165] + 1) % 10  # not the official labels: no claim about the list
    assert on_published_list(labels) is None


def test_failure_analysis_marks_label_issues(tiny_data, tmp_path):
    write_checkpoint(tmp_path / "experiments" / "baseline" / "best_model.pth", seed=0)
    result = run_stage_in_process("failure_analysis.py", "--data-dir", tiny_data, "--threshold", "0",
                                  "--max-cases", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cleanlab flags" in result.stdout
    folder = tmp_path / "failure_cases" / "baseline"
    failures, cases = pd.read_csv(folder / "all_failures.csv"), pd.read_csv(folder / "cases.csv")
    issues = pd.read_csv(folder / "label_issues.csv")
    assert len(issues) > 0 and issues.label_quality.is_monotonic_increasing and issues.label_issue.all()
    assert set(failures.test_index[failures.label_issue]) == set(issues.test_index) & set(failures.test_index)
    for row in cases.itertuples():
        meta = (folder / row.case / "meta.txt").read_text()
        assert f"label_issue: {'yes' if row.label_issue else 'no'}" in meta
    assert (folder / "label_issues.png").is_file()


def test_label_issues_figure_shows_the_flagged_images_most_suspicious_first(tmp_path, monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)
    issues = pd.DataFrame({"train_index": [7, 3, 30], "given_label": ["cat", "dog", "ship"],
                           "suggested_label": ["dog", "cat", "truck"], "label_quality": [0.01, 0.02, 0.5],
                           "label_issue": True})
    figures = []
    monkeypatch.setattr(failures.plots, "save", lambda path, figure: figures.append(figure))
    failures.save_label_issues_figure(tmp_path / "issues.png", issues, images, "train")
    panels = [axis for axis in figures[0].axes if axis.images]
    assert [axis.get_title().split("\n")[0] for axis in panels] == ["#7", "#3", "#30"]
    for axis, index in zip(panels, [7, 3, 30]):
        np.testing.assert_array_equal(axis.images[0].get_array(), images[index].transpose(1, 2, 0))
    assert "given cat\nmodel dog" in panels[0].get_title() and "n = 40 train images" in figures[0].get_suptitle()
    stale = tmp_path / "stale.png"
    stale.write_bytes(b"old")
    failures.save_label_issues_figure(stale, issues.iloc[:0], images, "train")  # nothing flagged: no figure
    assert not stale.exists() and len(figures) == 1


@pytest.mark.slow
def test_training_label_issues_come_from_runs_that_never_saw_their_fold(tiny_data, tmp_path):
    recipe = TrainConfig(arch=MACHINERY_ARCH, epochs=1, batch_size=32, lr=0.05, max_train_images=160,
                         val_fraction=0.1)
    write_checkpoint(tmp_path / "experiments" / "baseline" / "best_model.pth", config=dataclasses.asdict(recipe))
    args = ["--data-dir", tiny_data, "--device", "cpu", "--threshold", "0.1", "--train-folds", "2",
            "--fold-epochs", "1"]
    result = run_stage_in_process("failure_analysis.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "experiments" / "label_issues"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["training_images"] == 160 and summary["folds"] == 2 and 0 <= summary["out_of_fold_accuracy"] <= 1
    issues = pd.read_csv(out / "train_label_issues.csv")
    assert len(issues) == summary["label_issues"] and issues.label_issue.all()
    assert issues.label_quality.is_monotonic_increasing and set(issues.fold) <= {0, 1}
    assert issues.train_index.between(0, 159).all()
    assert (out / "train_label_issues.png").is_file() == (len(issues) > 0)
    for fold in range(2):
        run = out / f"fold_{fold}"
        config = json.loads((run / "config.json").read_text())
        assert (config["cv_folds"], config["cv_fold"], config["epochs"]) == (2, fold, 1)
        sizes = json.loads((run / "run_info.json").read_text())["split_sizes"]
        assert sizes["cv_fold"] == 80 and sizes["train"] + sizes["val"] == 80
    folds = {k: v for k, v in file_digests(out).items() if k.startswith("fold_")}
    again = run_stage_in_process("failure_analysis.py", *args, cwd=tmp_path)
    assert again.returncode == 0  # the folds are reused: their files as they were
    assert {k: v for k, v in file_digests(out).items() if k.startswith("fold_")} == folds

