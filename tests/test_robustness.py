"""The robustness stage: corrupted-set evaluation, flips, occlusion maps against a direct loop, and the
stage end to end on generated data with untrained checkpoints."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from conftest import assert_user_error, run_stage_in_process, write_checkpoint, write_cifar
from stresstest.stages.bench import occlusion_by_position
from stresstest.data.cifar10c import corrupted_images
from stresstest.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, Normalizer
from stresstest.probe import ProbeParams, heads, load_probe
from stresstest.plots import severity_figure
from stresstest.nn.occlusion import occlusion_maps
from stresstest.stages.robustness import set_metrics
from stresstest.metrics import wilson_interval

CHECKPOINT = {"normalization": {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}}


class CornerModel(nn.Module):
    """Class 0's logit is the mean red of the top-left 8x8 corner: only that corner matters."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, x):
        corner = x[:, 0, :8, :8].mean((1, 2))
        return torch.stack([self.scale * corner] + [torch.zeros_like(corner)] * 9, 1)


@pytest.mark.parametrize("patch, stride", [(8, 2), (6, 4)])
def test_batched_occlusion_equals_one_forward_per_position(patch, stride, tiny_data):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    images[:, 0, :8, :8] = 250  # a bright red corner: class 0 is likely, occluding the corner lowers it
    model = CornerModel().eval()
    maps = occlusion_maps(model, CHECKPOINT, images, np.zeros(3, int), patch, stride)
    normalizer = Normalizer(CIFAR10_MEAN, CIFAR10_STD, torch.device("cpu"))
    fill = torch.tensor([round(255 * m) for m in CIFAR10_MEAN], dtype=torch.uint8).view(3, 1, 1)
    for image, batched in zip(images, maps):
        plain = occlusion_by_position(model, normalizer, fill, image, 0, patch, stride)
        np.testing.assert_allclose(batched, plain, atol=1e-6)
    assert (maps[:, 20:, 20:] == 0).all() and (maps[:, :4, :4] > 0).all()  # only the corner matters


def test_set_metrics_count_flips():
    labels = np.array([0, 1, 2, 3])
    clean_pred = np.array([0, 1, 0, 0])          # right, right, wrong (a case), wrong
    probs = np.eye(4)[[0, 2, 1, 0]] * 0.9 + 0.025
    metrics = set_metrics(probs, labels, clean_pred, cases=np.array([2, 3]))
    assert metrics["accuracy"] == 0.25 and metrics["correct_flipped"] == 1 and metrics["cases_flipped"] == 1
    assert (metrics["accuracy_low95"], metrics["accuracy_high95"]) == pytest.approx(wilson_interval(1, 4), abs=1e-6)


def test_severity_figure_draws_each_models_wilson_band():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 40)
    rows = []
    for model in ["baseline", "improved"]:
        for name, severity in [("clean", 0), ("fog", 1), ("fog", 2), ("fog", 3)]:
            probs = rng.dirichlet(np.ones(10), 40)
            rows.append({"model": model, "corruption": name, "severity": severity,
                         **set_metrics(probs, labels, labels, np.array([], dtype=int))})
    table = pd.DataFrame(rows)
    axis = severity_figure(table, ["fog"], "t").axes[0]
    assert len(axis.collections) == 2  # one band per model
    for band, model in zip(axis.collections, ["baseline", "improved"]):
        sets = table[(table.model == model) & (table.severity > 0)]
        edges = band.get_paths()[0].vertices
        for severity, low, high in zip(sets.severity, sets.accuracy_low95, sets.accuracy_high95):
            at = edges[np.isclose(edges[:, 0], severity), 1]
            assert at.min() == pytest.approx(low) and at.max() == pytest.approx(high)
            assert low < sets.accuracy[sets.severity == severity].iloc[0] < high


def test_corrupted_sets_are_seeded_per_set(tiny_data):
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    first = corrupted_images(images, "gaussian_noise", 3, seed=0)
    assert torch.equal(first, corrupted_images(images, "gaussian_noise", 3, seed=0))
    assert not torch.equal(first, corrupted_images(images, "gaussian_noise", 3, seed=1))


def explain_cases(data: Path, folder: Path) -> Path:
    """Both untrained models, their failure cases and both models' Grad-CAM maps in `folder`."""
    write_checkpoint(folder / "experiments" / "baseline" / "best_model.pth", seed=0)
    write_checkpoint(folder / "experiments" / "improved" / "best_model.pth", seed=1)
    for stage, args in [("failure_analysis.py", ["--threshold", "0", "--max-cases", "4"]),
                        ("explainability.py", []), ("explainability_improved.py", [])]:
        result = run_stage_in_process(stage, "--data-dir", data, *args, cwd=folder)
        assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def explained_cases(tiny_data, tmp_path):
    return explain_cases(tiny_data, tmp_path)


@pytest.mark.slow
def test_robustness_stage_on_generated_data(tiny_data, explained_cases):
    args = ["--data-dir", tiny_data, "--corruption", "contrast", "fog", "--severity", "1", "3", "--max-images", "60",
            "--stride", "8"]
    result = run_stage_in_process("robustness.py", *args, cwd=explained_cases)
    assert result.returncode == 0, result.stderr
    out = explained_cases / "experiments" / "robustness"
    table = pd.read_csv(out / "corruption_accuracy.csv")
    assert len(table) == 2 * (1 + 2 * 2) and (table.images == 60).all()
    clean = table[table.severity == 0]
    assert list(clean.corruption) == ["clean", "clean"] and (clean.correct_flipped == 0).all()
    summary = pd.read_csv(out / "robustness_summary.csv").set_index("model")
    for model, group in table.groupby("model"):
        assert summary.mean_corruption_accuracy[model] == pytest.approx(group[group.severity > 0].accuracy.mean(),
                                                                        abs=1e-6)
        assert summary.sets[model] == 4 and "CIFAR-10-C-style" in summary.source[model]
    occlusion = pd.read_csv(out / "occlusion_gradcam.csv")
    assert len(occlusion) == 8 and occlusion.spearman.dropna().between(-1, 1).all()
    for case in sorted((explained_cases / "failure_cases" / "baseline").glob("case_*")):
        assert (case / "occlusion_baseline.png").is_file() and (case / "occlusion_improved.png").is_file()
    assert {p.name for p in out.iterdir()} >= {"accuracy_vs_severity.png", "corruption_examples.png"}


@pytest.mark.slow
def test_robustness_reads_the_published_layout_and_checks_its_labels(tiny_data, explained_cases, tmp_path):
    exported = tmp_path / "c10c"
    result = run_stage_in_process("make_cifar10c.py", "--data-dir", tiny_data, "--out-dir", exported,
                                  "--corruption", "contrast", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    args = ["--data-dir", tiny_data, "--corruption", "contrast", "--severity", "2", "--stride", "8"]
    result = run_stage_in_process("robustness.py", *args, "--cifar10c-dir", exported, cwd=explained_cases)
    assert result.returncode == 0, result.stderr
    from_files = pd.read_csv(explained_cases / "experiments" / "robustness" / "corruption_accuracy.csv")
    result = run_stage_in_process("robustness.py", *args, cwd=explained_cases)  # computed here, same seed
    computed = pd.read_csv(explained_cases / "experiments" / "robustness" / "corruption_accuracy.csv")
    pd.testing.assert_frame_equal(from_files, computed)
    labels = np.load(exported / "labels.npy")
    np.save(exported / "labels.npy", (labels + 1) % 10)
    result = run_stage_in_process("robustness.py", *args, "--cifar10c-dir", exported, cwd=explained_cases)
    assert_user_error(result, "do not follow the test set of --data-dir")


@pytest.mark.slow  # whole stages on generated data: several seconds
def test_robustness_needs_the_grad_cam_maps(tiny_data, tmp_path):
    write_checkpoint(tmp_path / "experiments" / "baseline" / "best_model.pth", seed=0)
    write_checkpoint(tmp_path / "experiments" / "improved" / "best_model.pth", seed=1)
    result = run_stage_in_process("failure_analysis.py", "--data-dir", tiny_data, "--threshold", "0",
                                  "--max-cases", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_stage_in_process("robustness.py", "--data-dir", tiny_data, "--corruption", "contrast",
                                  "--severity", "1", "--max-images", "20", cwd=tmp_path)
    assert_user_error(result, "gradcam_baseline.npz not found: run explainability.py first")


@pytest.mark.slow
def test_backbones_join_the_table_with_cached_features(tmp_path):
    """EfficientNet-Lite0 (real ImageNet weights, offline) with study B's linear head on the same sets: its clean
    row is study B's linear-head accuracy, and a second run reuses every set's cached features."""
    data = write_cifar(tmp_path / "micro", per_batch=12, test_count=24, seed=3)
    folder = explain_cases(data, tmp_path / "work")
    args = ["--data-dir", data, "--corruption", "contrast", "gaussian_noise", "--severity", "1",
            "--backbone", "efficientnet_lite0", "--backbone-severity", "3", "--stride", "8", "--device", "cpu"]
    result = run_stage_in_process("robustness.py", *args, cwd=folder)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(folder / "experiments" / "robustness" / "corruption_accuracy.csv")
    backbone = table[table.model == "efficientnet_lite0"].set_index(["corruption", "severity"])
    assert sorted(backbone.index) == [("clean", 0), ("contrast", 3), ("gaussian_noise", 3)]
    assert sorted(table[table.model == "baseline"].severity) == [0, 1, 1]
    probe = load_probe(ProbeParams(data_dir=data, model="efficientnet_lite0", weights="default",
                                   out_dir=folder / "experiments" / "probing", device="cpu"))
    linear = heads(probe)["linear"]
    assert backbone.accuracy["clean", 0] == pytest.approx((linear.argmax(1) == probe.test_labels).mean(), abs=1e-6)
    corrupted_cache = folder / "experiments" / "probing" / "efficientnet_lite0" / "corrupted"
    cached_sets = sorted(p.name for p in corrupted_cache.iterdir())
    assert cached_sets == ["contrast_3.pt", "gaussian_noise_3.pt"]
    result = run_stage_in_process("robustness.py", *args, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("cache: reusing") == 2 + 2  # features and heads, then both sets
    again = pd.read_csv(folder / "experiments" / "robustness" / "corruption_accuracy.csv")
    pd.testing.assert_frame_equal(table, again)
