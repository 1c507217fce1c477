"""Explanation checks: ROAD tells a faithful map from an unfaithful one, the randomisation cascade re-initialises
exactly the layers named, the agreement measures on known answers, and the stage on generated data."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from conftest import run_stage_in_process, write_checkpoint
from models import build_model
from stresstest.metrics import rank_correlations, top_overlap
from stresstest.stages.explanation_checks import TOP_SHARE, cascade, randomised, right_for_every_model, road_scores


class CornerModel(nn.Module):
    """Class 0's logit grows with the red of the top-left 8x8 corner: only that corner matters."""

    def forward(self, x):
        corner = x[:, 0, :8, :8].mean((1, 2))
        return torch.stack([4 * corner] + [torch.zeros_like(corner)] * 9, 1)


def test_road_prefers_the_map_that_points_at_what_matters():
    torch.manual_seed(0)
    inputs = torch.randn(6, 3, 32, 32) * 0.3
    inputs[:, 0, :8, :8] = 2.0  # a bright corner: class 0 is confident
    faithful = np.zeros((6, 32, 32), np.float32)
    faithful[:, :8, :8] = 1.0
    faithful += np.random.default_rng(0).random(faithful.shape).astype(np.float32) * 0.01  # break ties
    wrong = faithful[:, ::-1, ::-1].copy()  # the opposite corner
    classes = np.zeros(6, int)
    good = road_scores(CornerModel(), inputs, faithful, classes, [20, 50, 80], seed=0)
    bad = road_scores(CornerModel(), inputs, wrong, classes, [20, 50, 80], seed=0)
    assert good.shape == (6,) and (good > bad).all() and good.mean() > 0.05


def test_randomised_resets_only_the_named_layers():
    torch.manual_seed(0)
    model = build_model("resnet18", 10).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    broken = randomised(model, ["fc", "layer4"], seed=1)
    after = broken.state_dict()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    changed = {k.split(".")[0] for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])}
    assert changed == {"fc", "layer4"}


def test_the_cascade_goes_head_first_and_deeper_for_a_model_of_few_parts():
    assert cascade(build_model("resnet18", 10)) == ["fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]
    small = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)), nn.Flatten(),
                          nn.Linear(4 * 28 * 28, 10))
    assert cascade(small) == ["2", "0.2", "0.0"]  # two parts with parameters: one level deeper, ReLU has none


def test_agreement_measures_on_known_answers():
    maps = np.random.default_rng(0).random((3, 32, 32))
    np.testing.assert_allclose(rank_correlations(maps, maps), 1)
    np.testing.assert_allclose(rank_correlations(maps, -maps), -1)
    np.testing.assert_allclose(top_overlap(maps, maps, TOP_SHARE), 1)
    flipped = maps.reshape(3, -1)
    assert (top_overlap(maps, (flipped.max(1, keepdims=True) - flipped).reshape(maps.shape), TOP_SHARE) == 0).all()
    assert np.isnan(rank_correlations(np.zeros((1, 4, 4)), maps[:1, :4, :4])[0])


@pytest.mark.slow
def test_explanation_checks_stage_on_generated_data(tiny_data, tmp_path):
    write_checkpoint(tmp_path / "experiments" / "baseline" / "best_model.pth", seed=0)
    write_checkpoint(tmp_path / "experiments" / "improved" / "best_model.pth", seed=1)
    for stage, args in [("failure_analysis.py", ["--threshold", "0", "--max-cases", "3"]),
                        ("explainability.py", ["--layer", "layer4"]),
                        ("explainability_improved.py", ["--layer", "layer4"])]:
        result = run_stage_in_process(stage, "--data-dir", tiny_data, *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    result = run_stage_in_process("explanation_checks.py", "--data-dir", tiny_data, "--device", "cpu", "--smoke",
                                  "--correct-images", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "experiments" / "records" / "explanation_checks.json").read_text())
    assert record["layers"] == {"baseline": "layer4", "improved": "layer4"}  # the explanation stages' layer
    out = tmp_path / "experiments" / "explanations"
    road = pd.read_csv(out / "road.csv")
    assert set(road["map"]) == {"gradcam", "random"} and set(road.model) == {"baseline", "improved"}
    cascade = pd.read_csv(out / "randomisation.csv")
    assert list(cascade[(cascade.model == "baseline") & (cascade.images == "failure_cases")].randomised) == [
        "up to fc", "up to layer4", "up to layer3", "up to layer2", "up to layer1", "up to bn1", "up to conv1"]
    agreement = pd.read_csv(out / "agreement.csv")
    assert set(agreement.pairing) == {"same image", "different images"}
    assert (out / "randomisation.png").is_file()


class PixelReader(nn.Module):
    """Answers the class written in an image's first pixel (plus `shift`): which images it gets right is known."""

    def __init__(self, shift: int):
        super().__init__()
        self.shift = shift

    def forward(self, x):
        return nn.functional.one_hot((x[:, 0, 0, 0].round().long() + self.shift) % 10, 10).float()


def test_the_correct_images_are_a_sample_of_those_every_model_gets_right():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 300)
    written = np.where(rng.random(300) < 0.3, labels, (labels + 1) % 10)  # 30% right for the first model
    images = np.zeros((300, 3, 32, 32), np.uint8)
    images[:, 0, 0, 0] = written
    checkpoint = {"normalization": {"mean": [0.0] * 3, "std": [1 / 255] * 3}}  # the model reads raw pixel values
    models = {"a": (PixelReader(0).eval(), checkpoint), "b": (PixelReader(10).eval(), checkpoint)}
    right = np.flatnonzero(written == labels)
    chosen = right_for_every_model(models, torch.from_numpy(images), labels, 20, np.random.default_rng(1), batch=32)
    assert len(chosen) == 20 and set(chosen) <= set(right) and list(chosen) == sorted(chosen)
    other = right_for_every_model(models, torch.from_numpy(images), labels, 20, np.random.default_rng(2), batch=32)
    assert set(other) != set(chosen)  # seeded: another seed, another sample
    every = right_for_every_model(models, torch.from_numpy(images), labels, 1000, np.random.default_rng(1))
    assert set(every) == set(right)  # fewer than asked: all of them
    models["b"] = (PixelReader(1).eval(), checkpoint)  # right on no image
    assert len(right_for_every_model(models, torch.from_numpy(images), labels, 20, np.random.default_rng(1))) == 0
