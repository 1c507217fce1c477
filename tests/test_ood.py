"""Out-of-distribution detection: each score against its formula written out independently here, the features read
from any network's last linear layer, the built-in and folder OOD sets, and the stage end to end on generated data
(the metrics against pytorch-ood: test_metrics.py; on the smoke pipeline's real scores: test_pipeline.py)."""
import json
import shutil
import tarfile

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from PIL import Image
from scipy.special import logsumexp, softmax

from conftest import CLASS_NAMES, MACHINERY_ARCH, assert_user_error, run_stage_in_process, write_checkpoint
from test_ood_downloads import official_archive
from models import build_model
from stresstest.core.errors import UserError
from stresstest.data.cifar10 import (CIFAR10_MEAN, CIFAR10_STD, OPEN_SET_KNOWN, Normalizer, known_class_indices,
                                     load_cifar10, restricted)
from stresstest.data.ood_sets import BUILT_IN, FAR, SANITY, built_in, from_folder
from stresstest.metrics import ood_metrics
from stresstest.nn.inference import logits_and_features
from stresstest.ood_scores import DeviceKNN, Detectors, OodSettings, odin_scores


@pytest.fixture(scope="module")
def clusters():
    """Ten classes of non-negative (post-ReLU) features in 64 dimensions with a linear head that separates them:
    training features, test features of the same classes, and weak features of none (OOD images activate a
    network less, the observation ReAct and ASH build on)."""
    rng = np.random.default_rng(0)
    centres = np.abs(rng.normal(0, 3, (10, 64)))
    train_labels = np.repeat(np.arange(10), 60)
    train = np.abs(centres[train_labels] + rng.normal(0, 1, (600, 64)))
    test = np.abs(centres[np.repeat(np.arange(10), 20)] + rng.normal(0, 1, (200, 64)))
    far = np.abs(rng.normal(0, 0.7, (150, 64)))
    head = nn.Linear(64, 10)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(centres).float() / 3)
        head.bias.zero_()
    as_tensor = lambda a: torch.from_numpy(a).float()  # noqa: E731
    return as_tensor(train), torch.from_numpy(train_labels), as_tensor(test), as_tensor(far), head


def test_every_score_equals_its_formula_and_ranks_in_distribution_higher(clusters):
    train, labels, test, far, head = clusters
    settings = OodSettings(knn_k=10, vim_dim=16)
    detectors = Detectors(head, train, labels, temperature=2.0, settings=settings)
    features = torch.cat([test, far])
    logits = head(features).detach()
    scores = detectors.logit_scores(logits) | detectors.feature_scores(features)
    z, logit = features.double().numpy(), logits.double().numpy()
    np.testing.assert_allclose(scores["msp"], softmax(logit, 1).max(1), rtol=1e-5)
    np.testing.assert_allclose(scores["msp_temperature"], softmax(logit / 2.0, 1).max(1), rtol=1e-5)
    np.testing.assert_allclose(scores["max_logit"], logit.max(1), rtol=1e-5)
    np.testing.assert_allclose(scores["energy"], logsumexp(logit, 1), rtol=1e-5)
    p = np.clip(softmax(logit.astype(np.float32), 1), np.float32(1e-7), np.float32(1 - 1e-7))  # as fp32 logits clamp
    np.testing.assert_allclose(scores["gen"], -(p ** 0.1 * (1 - p) ** 0.1).mean(1), rtol=1e-4)
    # Mahalanobis: the least class distance under the tied covariance of the training features (as a sum)
    t, y = train.double().numpy(), labels.numpy()
    means = np.stack([t[y == c].mean(0) for c in range(10)])
    covariance = sum((t[y == c] - means[c]).T @ (t[y == c] - means[c]) for c in range(10)) + 1e-6 * np.eye(64)
    precision = np.linalg.inv(covariance)
    distances = np.stack([np.einsum("nd,de,ne->n", z - m, precision, z - m) for m in means], 1)
    np.testing.assert_allclose(scores["mahalanobis"], -0.5 * distances.min(1), rtol=1e-3, atol=1e-6)
    # KNN: minus the distance to the k-th nearest L2-normalised training feature
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    knn = np.sort(np.linalg.norm(unit(z)[:, None] - unit(t)[None], axis=2), axis=1)[:, 9]
    np.testing.assert_allclose(scores["knn"], -knn, rtol=1e-5, atol=1e-6)
    # ReAct: energy of the head on features clipped at the training activations' 90th percentile
    clipped = np.minimum(z, np.percentile(t, 90))
    react_logits = clipped @ head.weight.detach().double().numpy().T + head.bias.detach().double().numpy()
    np.testing.assert_allclose(scores["react"], logsumexp(react_logits, 1), rtol=1e-4)
    for name, values in scores.items():  # the far cluster scores lower than the test features
        assert ood_metrics(values[:len(test)], values[len(test):])["auroc"] > 0.9, name


@pytest.mark.slow  # 400 real images through a ResNet-18
def test_mahalanobis_auroc_follows_the_chi_squared_closed_form():
    """In-distribution features N(0, I_d), OOD N(mu, I_d) with |mu| = Delta: the squared Mahalanobis distance to the
    fitted class is chi-squared (d) for the first and noncentral chi-squared (d, Delta^2) for the second, so the
    score's AUROC is P(D_id < D_ood) = integral of F_chi2(x) f_ncx2(x) dx."""
    from scipy import integrate, stats

    rng = np.random.default_rng(7)
    dims, delta, n = 8, 2.5, 20000
    train = torch.from_numpy(rng.normal(0, 1, (n, dims))).float()
    id_points = torch.from_numpy(rng.normal(0, 1, (n, dims))).float()
    ood_points = torch.from_numpy(rng.normal(0, 1, (n, dims)) + delta / np.sqrt(dims)).float()
    detectors = Detectors(nn.Linear(dims, 2), train, torch.zeros(n, dtype=torch.long), 1.0, OodSettings())
    auroc = ood_metrics(detectors.feature_scores(id_points)["mahalanobis"],
                        detectors.feature_scores(ood_points)["mahalanobis"])["auroc"]
    expected = integrate.quad(lambda x: stats.chi2.cdf(x, dims) * stats.ncx2.pdf(x, dims, delta ** 2), 0, np.inf)[0]
    assert 0.7 < expected < 0.95 and auroc == pytest.approx(expected, abs=0.01)


def test_knn_on_the_device_equals_pytorch_oods_on_real_features(real_data):
    from pytorch_ood.detector import KNN

    data = load_cifar10(real_data, quiet=True)
    torch.manual_seed(0)
    model = build_model("resnet18", 10).eval()
    normalizer = Normalizer(CIFAR10_MEAN, CIFAR10_STD, torch.device("cpu"))
    _, train = logits_and_features(model, torch.from_numpy(data.train_images[:300]), normalizer)
    _, test = logits_and_features(model, torch.from_numpy(data.test_images[:100]), normalizer)
    assert train is not None and test is not None
    reference = KNN(None, k=50).fit_features(train.clone(), torch.zeros(300, dtype=torch.long))
    ours = DeviceKNN(train.clone(), k=50, batch_size=32).predict_features(test.clone())
    np.testing.assert_allclose(ours.numpy(), reference.predict_features(test.clone()).numpy(), rtol=1e-4, atol=1e-5)


def test_odin_perturbs_against_the_gradient_in_pixels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).eval()
    images = torch.rand(6, 3, 8, 8)
    settings = OodSettings(odin_temperature=1000.0, odin_noise=0.01)
    scores = odin_scores(model, images, settings, batch_size=4)
    x = images.clone().requires_grad_(True)
    logits = model(x) / 1000.0
    nn.functional.cross_entropy(logits, logits.argmax(1)).backward()
    assert x.grad is not None
    expected = (model(images - 0.01 * x.grad.sign()) / 1000.0).softmax(1).max(1).values
    np.testing.assert_allclose(scores, expected.detach().double().numpy(), rtol=1e-6)


def test_features_are_the_input_of_the_last_linear_layer():
    torch.manual_seed(0)
    model = build_model("resnet18", 10).eval()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    normalizer = Normalizer(CIFAR10_MEAN, CIFAR10_STD, torch.device("cpu"))
    logits, features = logits_and_features(model, images, normalizer)
    assert features is not None and features.shape == (5, 512)
    with torch.no_grad():
        torch.testing.assert_close(model.fc(features), logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits, model(normalizer(images)), rtol=1e-4, atol=1e-4)
    scaled = nn.Sequential(nn.Flatten(), nn.Linear(3072, 10), nn.Tanh()).eval()  # something follows the head
    assert logits_and_features(scaled, images, normalizer)[1] is None
    no_linear = nn.Sequential(nn.Conv2d(3, 10, 32), nn.Flatten()).eval()
    logits, features = logits_and_features(no_linear, images, normalizer)
    assert features is None and logits.shape == (5, 10)


def test_built_in_sets_are_cifar_shaped_real_images_and_seeded_noise():
    expected = {"digits": 1797, "faces": 200, "textures": 192}
    for name in BUILT_IN:
        ood = built_in(name, noise_images=20, seed=3)
        assert ood.images.dtype == np.uint8 and ood.images.shape[1:] == (3, 32, 32), name
        assert ood.kind == (SANITY if name.endswith("noise") else FAR) and ood.source
        assert len(ood.images) == expected.get(name, len(ood.images)) and len(ood.images) >= 20
        assert ood.images.std() > 5, name  # not blank
    assert np.array_equal(built_in("uniform_noise", 20, 3).images, built_in("uniform_noise", 20, 3).images)
    assert not np.array_equal(built_in("uniform_noise", 20, 3).images, built_in("uniform_noise", 20, 4).images)


def test_a_folder_of_any_images_and_an_image_list_load(tmp_path):
    folder = tmp_path / "mine"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    Image.new("RGBA", (50, 40), (255, 0, 0, 128)).save(folder / "a" / "red.png")
    Image.fromarray(np.arange(80 * 100, dtype=np.uint8).reshape(80, 100)).save(folder / "b" / "grey.jpg")
    Image.new("P", (10, 10)).save(folder / "b" / "palette.gif")
    (folder / "notes.txt").write_text("not an image")
    ood = from_folder("mine", folder)
    assert ood.images.shape == (3, 3, 32, 32) and ood.kind != FAR
    assert [name.rsplit("/", 1)[1] for name in ood.files] == ["red.png", "grey.jpg", "palette.gif"]
    assert tuple(ood.images[0][:, 16, 16]) == (255, 0, 0)
    listed = tmp_path / "list.txt"
    listed.write_text("mine/a/red.png 0\nmine/b/grey.jpg 1\n")
    assert from_folder("listed", listed).images.shape == (2, 3, 32, 32)
    # OpenOOD's layout: data/benchmark_imglist/cifar10/<list>.txt names files under data/images_classic/
    openood = tmp_path / "data"
    (openood / "benchmark_imglist" / "cifar10").mkdir(parents=True)
    (openood / "images_classic" / "tin" / "test").mkdir(parents=True)
    Image.new("RGB", (64, 64), (0, 0, 255)).save(openood / "images_classic" / "tin" / "test" / "blue.png")
    openood_list = openood / "benchmark_imglist" / "cifar10" / "test_tin.txt"
    openood_list.write_text("tin/test/blue.png -1\n")
    assert tuple(from_folder("tin", openood_list).images[0][:, 5, 5]) == (0, 0, 255)
    openood_list.write_text("tin/test/blue.png -1\ntin/test/gone.png -1\n")
    with pytest.raises(UserError, match="1 listed images are missing, .*gone.png first"):
        from_folder("tin", openood_list)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files there"):
        from_folder("empty", tmp_path / "empty")
    (folder / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read .*broken.png"):
        from_folder("mine", folder)


@pytest.fixture(scope="module")
def calibrated_once(tiny_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("calibrated")
    config = {"val_fraction": 0.1, "max_train_images": 0, "label_smoothing": 0.0}
    sizes = {"train": 360, "val": 40, "test": 120}
    write_checkpoint(workdir / "experiments" / "baseline" / "best_model.pth", seed=0, config=config,
                     split_sizes=sizes)
    write_checkpoint(workdir / "experiments" / "improved" / "best_model.pth", seed=1,
                     config={**config, "label_smoothing": 0.1}, split_sizes=sizes)
    result = run_stage_in_process("calibration.py", "--data-dir", tiny_data, "--device", "cpu", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.fixture
def calibrated_runs(calibrated_once, tmp_path):
    """A working folder of its own with both models and their fitted temperatures (calibration.py run once)."""
    shutil.copytree(calibrated_once, tmp_path / "work")
    return tmp_path / "work"


SMALL = ["--device", "cpu", "--smoke", "--train-images", "100", "--test-images", "60", "--max-images", "30",
         "--noise-images", "30", "--set", "digits", "faces", "uniform_noise"]


@pytest.mark.slow
def test_ood_stage_on_generated_data(tiny_data, calibrated_runs, tmp_path):
    workdir = calibrated_runs
    folder = tmp_path / "given"
    folder.mkdir()
    for k in range(5):
        Image.new("RGB", (40 + k, 30), (40 * k, 200, 10)).save(folder / f"{k}.png")
    # two of OpenOOD's sets as a finished download leaves them (their downloads: test_ood_downloads.py)
    data_dir, online = tmp_path / "data", tmp_path / "data" / "ood"
    online.mkdir(parents=True)
    (data_dir / "cifar-10-batches-py").symlink_to(tiny_data / "cifar-10-batches-py")
    official_archive("svhn", online)
    with tarfile.open(online / official_archive("cifar100", online)[0]) as tar:
        tar.extractall(online, filter="data")
    result = run_stage_in_process("ood.py", "--data-dir", data_dir, *SMALL, "--ood", f"given={folder}",
                                  "--online-set", "cifar100", "svhn",
                                  "--score", "msp", "energy", "knn", "vim", "odin", cwd=workdir)
    assert result.returncode == 0, result.stderr
    out = workdir / "experiments" / "ood"
    metrics = pd.read_csv(out / "metrics.csv")
    sets = {"digits", "faces", "uniform_noise", "given", "cifar100", "svhn", "far_mean", "near_mean"}
    assert set(metrics.set) == sets and set(metrics.protocol) == {"standard", "full-spectrum"}
    assert len(metrics) == 2 * 2 * len(sets) * 5  # models x protocols x sets x scores
    full = metrics[metrics.protocol == "full-spectrum"]
    assert (full.n_id == 120).all() and (metrics[metrics.protocol == "standard"].n_id == 60).all()
    for name in ["auroc", "aupr_in", "aupr_out", "fpr95"]:
        assert metrics[name].between(0, 1).all() and (metrics[f"{name}_low"] <= metrics[f"{name}_high"]).all()
    assert metrics[metrics.score == "knn"].settings.str.contains("k 50").all()
    saved = np.load(out / "sets" / "given.npy")
    assert saved.shape == (5, 32, 32, 3) and saved.dtype == np.uint8
    assert (out / "sets" / "given.txt").read_text().count(".png") == 5
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 2 * (60 + 60 + 30 + 30 + 30 + 6 + 6 + 5)
    near = metrics[metrics.set == "near_mean"]
    assert (near.kind == "near").all() and (near.n_ood == 6).all()
    cifar100 = metrics[metrics.set == "cifar100"].set_index(["model", "protocol", "score"]).auroc
    assert np.allclose(near.set_index(["model", "protocol", "score"]).auroc, cifar100[near.set_index(
        ["model", "protocol", "score"]).index])  # one near set: its mean is itself
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert {"baseline knn", "improved knn"} <= set(comparisons["first"]) | set(comparisons["second"])
    assert comparisons.p_bootstrap.between(0, 1).all()
    record = json.loads((workdir / "experiments" / "records" / "ood.json").read_text())
    axes = [row["axis"] for row in record["headline"] if row["axis"]]
    assert axes == ["OOD AUROC (MSP)", "OOD AUROC (KNN)"]
    assert record["temperatures"]["baseline"]["fitted_on"].startswith("validation split")
    for name in ["auroc.png", "histograms.png", "roc.png", "risk_coverage.png", "accepted.png", "selective.csv"]:
        assert (out / name).is_file(), name


@pytest.mark.slow
def test_ood_needs_the_temperature_of_the_same_checkpoint(tiny_data, calibrated_runs):
    workdir = calibrated_runs
    write_checkpoint(workdir / "experiments" / "improved" / "best_model.pth", seed=5)  # retrained since
    assert_user_error(run_stage_in_process("ood.py", "--data-dir", tiny_data, *SMALL, cwd=workdir),
                      "fitted its temperature on another improved checkpoint", "rerun calibration.py")
    result = run_stage_in_process("ood.py", "--data-dir", tiny_data, *SMALL, "--improved", "none",
                                  "--score", "msp", "mahalanobis", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert set(pd.read_csv(workdir / "experiments" / "ood" / "metrics.csv").model) == {"baseline"}
    for reserved in ["digits", "held_out_classes", "svhn"]:
        assert_user_error(run_stage_in_process("ood.py", "--data-dir", tiny_data, *SMALL, "--ood",
                                               f"{reserved}=somewhere", cwd=workdir),
                          f"{reserved} names one of this stage's own sets")
    assert_user_error(run_stage_in_process("ood.py", "--data-dir", tiny_data, *SMALL, "--ood", "nothing",
                                           cwd=workdir), "give NAME=PATH")
    assert_user_error(run_stage_in_process("ood.py", "--data-dir", tiny_data, *SMALL, "--ood", "a=x", "a=y",
                                           cwd=workdir), "the name a is given twice")
    assert_user_error(run_stage_in_process("ood.py", "--data-dir", tiny_data, *SMALL, "--ood", "gone=/no/such/dir",
                                           cwd=workdir), "no such folder")
    (workdir / "experiments" / "records" / "calibration.json").unlink()
    assert_user_error(run_stage_in_process("ood.py", "--data-dir", tiny_data, *SMALL, cwd=workdir),
                      "run calibration.py")


def test_class_lists_are_checked_and_the_data_relabelled(tiny_data):
    data = load_cifar10(tiny_data, quiet=True)
    assert known_class_indices(OPEN_SET_KNOWN, CLASS_NAMES) == [0, 1, 2, 4, 5, 9]
    assert known_class_indices(("9", "cat", "0"), CLASS_NAMES) == [0, 3, 9]
    assert known_class_indices((), CLASS_NAMES) == list(range(10))
    for given, said in [(("",), "an empty class name"), (("cat", "3"), "cat is given twice"),
                        (("cat", "lion"), "lion is not a class"), (("12", "cat"), "12 is not a class"),
                        (tuple(CLASS_NAMES), "leaves no class out"), (("cat",), "at least two classes")]:
        with pytest.raises(UserError, match=said):
            known_class_indices(given, CLASS_NAMES)
    known = restricted(data, [3, 5])
    assert known.class_names == ["cat", "dog"] and set(known.test_labels) <= {0, 1}
    kept = np.isin(data.test_labels, [3, 5])
    assert np.array_equal(known.test_images, data.test_images[kept])
    assert np.array_equal(known.test_labels, (data.test_labels[kept] == 5).astype(int))


@pytest.mark.slow
def test_the_open_set_split_trains_and_scores(tiny_data, calibrated_runs):
    workdir = calibrated_runs
    for given, said in [(["--classes", ""], "an empty class name"), (["--classes", "cat", "cat"], "given twice"),
                        (["--classes", *CLASS_NAMES], "leaves no class out")]:
        assert_user_error(run_stage_in_process("train.py", "--data-dir", tiny_data, "--device", "cpu", "--smoke",
                                               *given, cwd=workdir), said)
    result = run_stage_in_process("train.py", "--data-dir", tiny_data, "--device", "cpu", "--smoke", "--classes",
                                  "--arch", MACHINERY_ARCH, "--epochs", "1", "--max-train-images", "200", cwd=workdir)
    assert result.returncode == 0, result.stderr
    checkpoint = workdir / "experiments" / "open_set" / "best_model.pth"
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["class_names"] == list(OPEN_SET_KNOWN) and saved["num_classes"] == 6
    assert saved["split_sizes"]["test"] == int(np.isin(load_cifar10(tiny_data, quiet=True).test_labels,
                                                       [0, 1, 2, 4, 5, 9]).sum())
    assert (workdir / "experiments" / "records" / "train_open_set.json").is_file()
    assert not (workdir / "experiments" / "records" / "train.json").exists()  # the study's record untouched
    assert_user_error(run_stage_in_process("calibration.py", "--data-dir", tiny_data, "--device", "cpu",
                                           "--baseline", checkpoint, "--improved", "none", cwd=workdir),
                      "ood.py --open-set scores it")
    result = run_stage_in_process("ood.py", "--data-dir", tiny_data, *SMALL, "--improved", "none", "--open-set",
                                  checkpoint, "--score", "msp", "msp_temperature", "knn", cwd=workdir)
    assert result.returncode == 0, result.stderr
    metrics = pd.read_csv(workdir / "experiments" / "ood" / "metrics.csv")
    opened = metrics[metrics.model == "open_set"]
    held_out = opened[opened.set == "held_out_classes"]
    assert set(held_out.kind) == {"near"} and set(held_out.score) == {"msp", "knn"}  # no temperature: no MSP-T
    test_labels = load_cifar10(tiny_data, quiet=True).test_labels
    assert (held_out.n_ood == min(30, int(np.isin(test_labels, [3, 6, 7, 8]).sum()))).all()
    assert (held_out[held_out.protocol == "standard"].n_id == 60).all()
    assert {"near_mean", "far_mean", "digits"} <= set(opened.set)
    assert set(metrics[metrics.model == "baseline"].set) == {"digits", "faces", "uniform_noise", "far_mean"}
    record = json.loads((workdir / "experiments" / "records" / "ood.json").read_text())
    assert "calibration.py fits" in record["skipped"]["open_set"]["msp_temperature"]
    assert_user_error(run_stage_in_process("ood.py", "--data-dir", tiny_data, *SMALL, "--improved", "none",
                                           "--open-set", workdir / "experiments" / "baseline" / "best_model.pth",
                                           cwd=workdir), "trained on every class")
