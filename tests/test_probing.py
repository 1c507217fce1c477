from urllib.error import URLError
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.models._api as torchvision_weights
from PIL import Image
from scipy.stats import binomtest

from conftest import assert_user_error, run_stage, run_stage_in_process, write_cifar
from stresstest.nn import backbones
from stresstest.nn.backbones import BACKBONES, extract_features, load_backbone
from stresstest.core.errors import UserError
from stresstest.stages.probing.hard_examples import probe_cams
from stresstest.probe import Probe, ProbeParams, knn_probabilities, load_probe, sklearn_knn_predictions
from stresstest.metrics import wilson_interval

RANDOM = ["--weights", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory):
    """60 training and 24 test images: enough for every probing stage, fast even for ViT-B/16 on a CPU."""
    return write_cifar(tmp_path_factory.mktemp("micro"), per_batch=12, test_count=24, seed=3)


SLOW_VIT = pytest.param("vit_b_16", marks=pytest.mark.slow)  # ViT-B/16 at 224x224 takes seconds per image on a CPU


@pytest.mark.parametrize("name, dim", [("resnet50", 2048), pytest.param("vit_b_16", 768, marks=pytest.mark.slow),
                                       ("efficientnet_lite0", 1280)])
def test_features_have_the_penultimate_shape(name, dim):
    assert BACKBONES[name].feature_dim == dim
    model = load_backbone(name, "none", seed=0)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    features = extract_features(model, name, images, "fp32", batch_size=2)
    assert features.shape == (3, dim) and torch.isfinite(features).all()
    assert backbones.weights_identity(name, "none", 0) == "random-init(seed=0)"


SAMPLE_IMAGES = {"chelsea": range(281, 286), "coffee": [967]}  # ImageNet cats (281-285); espresso


@pytest.mark.parametrize("image_name, classes", SAMPLE_IMAGES.items())
def test_efficientnet_lite0_weights_know_imagenet_images(image_name, classes):
    """Known answer: the packaged ImageNet weights with the preprocessing they expect name the photos right."""
    skimage_data = pytest.importorskip("skimage.data")
    backbone = load_backbone("efficientnet_lite0", "default", seed=0)
    classifier = BACKBONES["efficientnet_lite0"].build()
    classifier.load_state_dict(BACKBONES["efficientnet_lite0"].load_default())
    classifier._fc.eval()
    photo = torch.from_numpy(getattr(skimage_data, image_name)()).permute(2, 0, 1)[None]
    inputs = backbones.feature_normalizer("efficientnet_lite0", torch.device("cpu"))(photo)
    with torch.no_grad():
        features = backbone(inputs)
        probs = classifier._fc(features).softmax(1)[0]
    assert int(probs.argmax()) in classes and float(probs[list(classes)].sum()) > 0.5


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


@pytest.mark.parametrize("name", [SLOW_VIT if name == "vit_b_16" else name for name in BACKBONES])
def test_gradcam_maps_for_every_architecture(name, micro_data):
    dim = BACKBONES[name].feature_dim
    images = np.stack([np.asarray(Image.new("RGB", (32, 32), (40 * i, 90, 200 - 30 * i))) for i in range(3)])
    probe = Probe(name, "none", torch.zeros(1, dim), torch.zeros(3, dim), np.zeros(1, int), np.zeros(3, int),
                  images.transpose(0, 3, 1, 2), images.transpose(0, 3, 1, 2), [str(i) for i in range(10)],
                  micro_data, torch.device("cpu"), 0, {})
    torch.manual_seed(0)
    maps, probs = probe_cams(probe, torch.nn.Linear(dim, 10), np.arange(3), [1, 2, 3])
    assert maps.shape == (3, 224, 224) and np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0  # gradients reach the chosen layer
    assert probs.shape == (3, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


@pytest.mark.slow  # whole stages on generated data: several seconds
def test_feature_cache_is_reused_and_invalidated(micro_data, tmp_path, monkeypatch, capsys):
    def probe(**changes):
        return load_probe(ProbeParams(data_dir=micro_data, model="efficientnet_lite0", weights="none",
                                      out_dir=tmp_path, device="cpu", **changes))

    first = probe()
    assert first.train_features.shape == (60, 1280) and first.test_features.shape == (24, 1280)
    cache = tmp_path / "efficientnet_lite0" / "features.pt"
    stored = torch.load(cache, weights_only=True)
    assert stored["settings"]["weights"] == "random-init(seed=0)" and stored["settings"]["image_size"] == 224
    assert torch.equal(probe().train_features, stored["train"])
    assert "cache: reusing" in capsys.readouterr().err
    with pytest.raises(UserError, match="no cached features .* run probing/extract_features.py --model"):
        probe(seed=1, cached_only=True)
    assert not torch.equal(probe(seed=1).train_features, stored["train"])
    assert "other settings (weights)" in capsys.readouterr().err
    # a change of the feature code (or of torch/torchvision) invalidates the cache too
    monkeypatch.setattr(backbones.torchvision, "__version__", "0.0.0-edited")
    probe(seed=1)
    assert "other settings (torchvision)" in capsys.readouterr().err


def test_feature_code_identity_follows_the_source(monkeypatch, tmp_path):
    before = backbones.feature_code_identity("resnet50")
    package = Path(backbones.__file__).parents[1]
    for name in ["nn/backbones.py", "data/cifar10.py", "nn/inference.py"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes((package / name).read_bytes())
    monkeypatch.setattr(backbones, "__file__", str(tmp_path / "nn" / "backbones.py"))
    assert backbones.feature_code_identity("resnet50") == before
    (tmp_path / "data" / "cifar10.py").write_text((tmp_path / "data" / "cifar10.py").read_text() + "\n# edited\n")
    assert backbones.feature_code_identity("resnet50")["code"] != before["code"]


@pytest.fixture(scope="module")
def all_models_probed(micro_data, tmp_path_factory):
    """Every probing stage for every backbone on 60 + 24 generated images, in this process (that each script runs
    as a user runs it: test_layout.py)."""
    workdir = tmp_path_factory.mktemp("probed")
    for model in BACKBONES:
        for stage in ["baseline_knn", "hard_examples", "embedding_similarity"]:
            result = run_stage_in_process(f"probing/{stage}.py", "--model", model, "--data-dir", micro_data,
                                          *RANDOM, "--max-cases" if stage == "hard_examples" else "--smoke",
                                          *(["3"] if stage == "hard_examples" else []), cwd=workdir)
            assert result.returncode == 0, (model, stage, result.stderr)
    return workdir


@pytest.mark.slow
def test_knn_stage_outputs(all_models_probed):
    for model in BACKBONES:
        out = all_models_probed / "experiments" / "probing" / model
        accuracy = pd.read_csv(out / "probe_accuracy.csv").set_index("head").accuracy
        assert accuracy["knn_dino"] == accuracy["knn_sklearn"]
        assert 0 <= accuracy["linear_logreg"] <= 1
        per_class = pd.read_csv(out / "per_class_accuracy.csv")
        assert len(per_class) == 10 and per_class.images.sum() == 24
        with Image.open(out / "confusion_matrices.png") as image:
            assert image.size[0] > 1000


@pytest.mark.slow
def test_hard_example_tables_match_the_heads(all_models_probed):
    for model in BACKBONES:
        out = all_models_probed / "experiments" / "probing" / model
        table = pd.read_csv(out / "hard_examples.csv")
        stored = torch.load(out / "heads.pt", weights_only=True)
        linear, knn = stored["linear"].numpy(), stored["knn"].numpy()
        assert len(table) == 24 and list(table["rank"]) == list(range(1, 25))
        assert list(table.true_class_probability) == sorted(table.true_class_probability)
        class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        for row in table.itertuples():
            assert row.linear_pred == class_names[linear[row.test_index].argmax()]
            assert row.knn_pred == class_names[knn[row.test_index].argmax()]
            assert row.linear_wrong == (row.linear_pred != row.true_label)
            assert row.true_class_margin <= 0 if row.linear_wrong else row.true_class_margin >= 0
            assert row.margin == pytest.approx(np.diff(np.sort(linear[row.test_index])[-2:])[0], abs=1e-5)
        cases = sorted((all_models_probed / "failure_cases" / "probing" / model).glob("case_*"))
        assert len(cases) == 3
        for case, row in zip(cases, table.head(3).itertuples()):
            assert {p.name for p in case.iterdir()} == {"image.png", "meta.txt", "gradcam.png", "neighbours.png"}
            meta = (case / "meta.txt").read_text()
            assert f"test_index: {row.test_index}\n" in meta and f"gradcam_class: {row.linear_pred}\n" in meta
            assert "gradcam_forward_prediction: " in meta


@pytest.mark.slow
def test_cross_model_table_and_embedding_outputs(all_models_probed):
    root = all_models_probed / "experiments" / "probing"
    across = pd.read_csv(root / "hard_across_models.csv")
    assert len(across) == 24
    wrong = across[[f"{model}_wrong" for model in BACKBONES]]
    assert ((across.category == "hard_for_all") == wrong.all(axis=1)).all()
    assert ((across.category == "hard_for_resnet50_only") == (across.resnet50_wrong & (wrong.sum(axis=1) == 1))).all()
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
    assert_user_error(run_stage_in_process("probing/baseline_knn.py", "--model", "vgg16", "--data-dir", micro_data,
                                           *RANDOM, cwd=tmp_path), "--model")
    wrong = tmp_path / "resnet50_weights.pth"
    torch.save(BACKBONES["resnet50"].build().state_dict(), wrong)
    result = run_stage_in_process("probing/baseline_knn.py", "--model", "vit_b_16", "--weights", wrong, "--data-dir",
                                  micro_data, "--device", "cpu", cwd=tmp_path)
    assert_user_error(result, "not a state dict of vit_b_16")
    assert_user_error(run_stage_in_process("probing/baseline_knn.py", "--weights", tmp_path / "absent.pth",
                                           "--data-dir", micro_data, cwd=tmp_path), "no such file")
    assert not (tmp_path / "experiments" / "probing" / "vit_b_16" / "features.pt").exists()


def test_offline_default_weights_say_how_to_provide_them(monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision_weights, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as error:
        load_backbone("resnet50", "default", seed=0)
    assert "resnet50-0676ba61.pth" in str(error.value) and "--weights none" in str(error.value)


@pytest.mark.slow  # whole stages on generated data: several seconds
def test_knn_stage_in_process_on_generated_data(micro_data, tmp_path):
    result = run_stage_in_process("probing/baseline_knn.py", "--model", "efficientnet_lite0", "--data-dir", micro_data,
                                  *RANDOM, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    accuracy = pd.read_csv(tmp_path / "experiments" / "probing" / "efficientnet_lite0" / "probe_accuracy.csv")
    assert list(accuracy["head"]) == ["knn_dino", "knn_sklearn", "linear_logreg"] and (accuracy.test_images == 24).all()
    assert accuracy.accuracy[0] == accuracy.accuracy[1]
    for row in accuracy.itertuples():
        assert (row.low95, row.high95) == pytest.approx(wilson_interval(round(row.accuracy * 24), 24), abs=1e-6)
    test = pd.read_csv(tmp_path / "experiments" / "probing" / "efficientnet_lite0" / "head_comparison.csv").iloc[0]
    assert (test["first"], test["second"]) == ("knn_dino", "linear_logreg")
    knn, linear = accuracy.set_index("head").accuracy[["knn_dino", "linear_logreg"]] * 24
    assert test.right_only_first - test.right_only_second == pytest.approx(knn - linear, abs=1e-3)
    discordant = test.right_only_first + test.right_only_second
    expected = binomtest(test.right_only_first, discordant).pvalue if discordant else 1.0
    assert test.mcnemar_exact_p == pytest.approx(expected)


@pytest.mark.slow
def test_knn_stage_on_the_real_subset(real_data, tmp_path):
    result = run_stage("probing/baseline_knn.py", "--smoke", "--model", "resnet50", "--data-dir", real_data,
                       "--train-images", "200", "--test-images", "60", *RANDOM, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    accuracy = pd.read_csv(tmp_path / "experiments" / "probing" / "resnet50" / "probe_accuracy.csv")
    assert accuracy.accuracy[0] == accuracy.accuracy[1]
    features = torch.load(tmp_path / "experiments" / "probing" / "resnet50" / "features.pt", weights_only=True)
    assert features["train"].shape == (200, 2048) and features["test"].shape == (60, 2048)
