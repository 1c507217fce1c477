from urllib.error import URLError

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.models._api as torchvision_weights
from PIL import Image

from conftest import assert_user_error, run_stage, write_cifar
from stresstest.backbones import BACKBONES, extract_features, load_backbone
from stresstest.cli import UserError
from stresstest.probe import knn_probabilities, sklearn_knn_predictions
from stresstest.probe_stages import probe_cams

RANDOM = ["--weights", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory):
    """60 training and 24 test images: enough for every probing stage, fast even for ViT-B/16 on a CPU."""
    return write_cifar(tmp_path_factory.mktemp("micro"), per_batch=12, test_count=24, seed=3)


@pytest.mark.parametrize("name, dim", [("resnet50", 2048), ("vit_b_16", 768)])
def test_features_have_the_penultimate_shape(name, dim):
    model, identity = load_backbone(name, "none", seed=0)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    features = extract_features(model, images, "fp32", batch_size=2)
    assert features.shape == (3, dim) and torch.isfinite(features).all()
    assert identity == "random-init(seed=0)"


def test_knn_follows_the_dino_weighting():
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = np.array([0, 1, 1])
    query = torch.tensor([[1.0, 0.1]])
    probs = knn_probabilities(train, labels, query, num_classes=2, k=2, temperature=0.07)
    sims = torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(train, dim=1).T
    weights = (sims[0, :2] / 0.07).exp()  # neighbours 0 (class 0) and 1 (class 1)
    expected_0 = float(weights[0] / weights.sum())
    assert probs[0, 0] == pytest.approx(expected_0) and probs.sum() == pytest.approx(1.0)


def test_knn_accuracy_equals_scikit_learn_on_the_same_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 64))
    train_labels, test_labels = rng.integers(0, 10, 600), rng.integers(0, 10, 200)
    train = torch.from_numpy(centres[train_labels] + 3.0 * rng.normal(size=(600, 64))).float()
    test = torch.from_numpy(centres[test_labels] + 3.0 * rng.normal(size=(200, 64))).float()
    ours = knn_probabilities(train, train_labels, test, num_classes=10).argmax(1)
    theirs = sklearn_knn_predictions(train, train_labels, test)
    assert 0.3 < (ours == test_labels).mean() < 1.0  # informative features, not a trivial task
    assert (ours == test_labels).mean() == (theirs == test_labels).mean()
    assert (ours == theirs).mean() >= 0.99


@pytest.mark.parametrize("name", list(BACKBONES))
def test_gradcam_maps_for_both_architectures(name, micro_data):
    from stresstest.probe import Probe
    model, _ = load_backbone(name, "none", seed=0)
    dim = BACKBONES[name].feature_dim
    images = np.stack([np.asarray(Image.new("RGB", (32, 32), (40 * i, 90, 200 - 30 * i))) for i in range(3)])
    probe = Probe(name, "none", torch.zeros(1, dim), torch.zeros(3, dim), np.zeros(1, int), np.zeros(3, int),
                  images.transpose(0, 3, 1, 2), images.transpose(0, 3, 1, 2), [str(i) for i in range(10)],
                  micro_data, torch.device("cpu"), 0, {})
    torch.manual_seed(0)
    maps = probe_cams(probe, torch.nn.Linear(dim, 10), np.arange(3), [1, 2, 3])
    assert maps.shape == (3, 224, 224) and np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0  # gradients reach the chosen layer


def test_feature_cache_is_reused_and_invalidated(micro_data, tmp_path):
    args = ["--model", "resnet50", "--data-dir", micro_data, *RANDOM]
    first = run_stage("probing/extract_features.py", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "(60, 2048)" in first.stdout and "(24, 2048)" in first.stdout
    cache = tmp_path / "experiments" / "probing" / "resnet50" / "features.pt"
    stored = torch.load(cache, weights_only=True)
    assert stored["settings"]["weights"] == "random-init(seed=0)" and stored["train"].shape == (60, 2048)
    again = run_stage("probing/extract_features.py", *args, cwd=tmp_path)
    assert "cache: reusing" in again.stderr and torch.equal(torch.load(cache, weights_only=True)["train"],
                                                           stored["train"])
    refused = run_stage("probing/extract_features.py", *args, "--seed", "1", "--cached-only", cwd=tmp_path)
    assert_user_error(refused, "no cached features", "extract_features.py")
    changed = run_stage("probing/extract_features.py", *args, "--seed", "1", cwd=tmp_path)
    assert "other settings (weights)" in changed.stderr
    assert not torch.equal(torch.load(cache, weights_only=True)["train"], stored["train"])


@pytest.fixture(scope="module")
def both_models_probed(micro_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("probed")
    for model in BACKBONES:
        for stage in ["baseline_knn", "hard_examples", "embedding_similarity"]:
            result = run_stage(f"probing/{stage}.py", "--model", model, "--data-dir", micro_data, *RANDOM,
                               "--max-cases" if stage == "hard_examples" else "--smoke",
                               *(["3"] if stage == "hard_examples" else []), cwd=workdir)
            assert result.returncode == 0, (model, stage, result.stderr)
    return workdir


def test_knn_stage_outputs(both_models_probed):
    for model in BACKBONES:
        out = both_models_probed / "experiments" / "probing" / model
        accuracy = pd.read_csv(out / "probe_accuracy.csv").set_index("head").accuracy
        assert accuracy["knn_dino"] == accuracy["knn_sklearn"]
        assert 0 <= accuracy["linear_logreg"] <= 1
        per_class = pd.read_csv(out / "per_class_accuracy.csv")
        assert len(per_class) == 10 and per_class.images.sum() == 24
        with Image.open(out / "confusion_matrices.png") as image:
            assert image.size[0] > 1000


def test_hard_example_tables_match_the_heads(both_models_probed):
    for model in BACKBONES:
        out = both_models_probed / "experiments" / "probing" / model
        table = pd.read_csv(out / "hard_examples.csv")
        stored = torch.load(out / "heads.pt", weights_only=True)
        linear, knn = stored["linear"].numpy(), stored["knn"].numpy()
        assert len(table) == 24 and list(table["rank"]) == list(range(1, 25))
        assert list(table.true_class_prob) == sorted(table.true_class_prob)
        class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        for row in table.itertuples():
            assert row.linear_pred == class_names[linear[row.test_index].argmax()]
            assert row.knn_pred == class_names[knn[row.test_index].argmax()]
            assert row.linear_wrong == (row.linear_pred != row.true_label)
            assert row.margin <= 0 if row.linear_wrong else row.margin >= 0
        cases = sorted((both_models_probed / "failure_cases" / "probing" / model).glob("case_*"))
        assert len(cases) == 3
        for case, row in zip(cases, table.head(3).itertuples()):
            assert {p.name for p in case.iterdir()} == {"image.png", "meta.txt", "gradcam.png", "neighbors.png"}
            assert f"test_index: {row.test_index}\n" in (case / "meta.txt").read_text()


def test_cross_model_table_and_embedding_outputs(both_models_probed):
    root = both_models_probed / "experiments" / "probing"
    across = pd.read_csv(root / "hard_across_models.csv")
    assert len(across) == 24
    both_wrong = across.resnet50_wrong & across.vit_b_16_wrong
    assert (across.category == "hard_for_all").sum() == both_wrong.sum()
    assert ((across.category == "hard_for_resnet50_only") == (across.resnet50_wrong & ~across.vit_b_16_wrong)).all()
    for model in BACKBONES:
        similarity = pd.read_csv(root / model / "centroid_similarity.csv").set_index("class")
        matrix = similarity.to_numpy()
        present = np.abs(np.diag(matrix)) > 0
        assert np.allclose(np.diag(matrix)[present], 1, atol=1e-5) and np.allclose(matrix, matrix.T, atol=1e-5)
        hard = pd.read_csv(root / model / "hard_example_similarity.csv")
        assert len(hard) == 10
        assert (hard.closer_to_predicted == (hard.sim_predicted_centroid > hard.sim_own_centroid)).all()
        assert all(len(n.split()) == 5 for n in hard.neighbour_labels)
        with Image.open(root / model / "tsne.png") as image:
            assert image.size[0] > 500


def test_probing_bad_input(micro_data, tmp_path):
    assert_user_error(run_stage("probing/baseline_knn.py", "--model", "vgg16", "--data-dir", micro_data, *RANDOM,
                                cwd=tmp_path), "--model")
    wrong = tmp_path / "resnet50_weights.pth"
    torch.save(BACKBONES["resnet50"].build(weights=None).state_dict(), wrong)
    result = run_stage("probing/baseline_knn.py", "--model", "vit_b_16", "--weights", wrong, "--data-dir",
                       micro_data, "--device", "cpu", cwd=tmp_path)
    assert_user_error(result, "not a state dict of torchvision's vit_b_16")
    assert_user_error(run_stage("probing/baseline_knn.py", "--weights", tmp_path / "absent.pth", "--data-dir",
                                micro_data, cwd=tmp_path), "no such file")
    assert not (tmp_path / "experiments" / "probing" / "vit_b_16" / "features.pt").exists()


def test_offline_default_weights_say_how_to_provide_them(monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision_weights, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as error:
        load_backbone("resnet50", "default", seed=0)
    assert "resnet50-0676ba61.pth" in str(error.value) and "--weights none" in str(error.value)


def test_knn_stage_on_the_real_subset(subset_data, tmp_path):
    result = run_stage("probing/baseline_knn.py", "--smoke", "--model", "resnet50", "--data-dir", subset_data,
                       *RANDOM, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    accuracy = pd.read_csv(tmp_path / "experiments" / "probing" / "resnet50" / "probe_accuracy.csv")
    assert accuracy.accuracy[0] == accuracy.accuracy[1]
    features = torch.load(tmp_path / "experiments" / "probing" / "resnet50" / "features.pt", weights_only=True)
    assert features["train"].shape == (400, 2048) and features["test"].shape == (150, 2048)
