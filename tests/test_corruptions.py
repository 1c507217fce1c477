"""The torch corruptions against independent numpy/scipy/PIL/OpenCV versions of make_cifar_c.py's formulas,
on real CIFAR-10 test images; the random ones against their published statistics."""

import base64
import hashlib

import numpy as np
import pytest
import torch

from conftest import run_stage_in_process
from stresstest.data import corruptions
from stresstest.data.cifar10c import read_cifar10c
from stresstest.data.corruptions import NAMES, PARAMETERS, SEVERITIES, corrupt, severity_generator
from stresstest.data.cifar10 import load_cifar10
from stresstest.core.errors import UserError
from stresstest.data.reference_corruptions import corrupt_one_by_one, motion_blur_one


@pytest.fixture(scope="module")
def real_images(real_data) -> np.ndarray:
    """64 real test images, (N, 32, 32, 3) uint8 as the original code sees them."""
    return load_cifar10(real_data, quiet=True).test_images[:64].transpose(0, 2, 3, 1).copy()


def ours(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out = corrupt(batch, name, severity, severity_generator(seed, name, severity, "cpu"))
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    return out.permute(0, 2, 3, 1).numpy()


DETERMINISTIC = ["contrast", "brightness", "pixelate", "jpeg_compression", "defocus_blur", "zoom_blur"]


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_equal_the_published_formula(name, severity, real_images):
    expected = corrupt_one_by_one(real_images, name, PARAMETERS[name][severity - 1])
    difference = np.abs(ours(real_images, name, severity).astype(int) - expected.astype(int))
    # at most one grey level apart, where float32 here and float64 there truncate a boundary value differently
    assert difference.mean() < 0.15 and difference.max() <= 1, (difference.mean(), difference.max())


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name == "glass_blur" else name
                                  for name in NAMES if name not in DETERMINISTIC])  # its reference: seconds
def test_random_corruptions_are_as_strong_as_the_published_formula(name, severity, real_images):
    """Different random draws, the same formula: the mean change of the images agrees with the per-image
    numpy reference (tolerance from the spread of 256 images' changes: a few standard errors)."""
    images = np.concatenate([real_images] * 4)
    change = np.abs(ours(images, name, severity).astype(float) - images).mean((1, 2, 3))
    reference = np.abs(corrupt_one_by_one(images, name, PARAMETERS[name][severity - 1]).astype(float)
                       - images).mean((1, 2, 3))
    standard_error = np.sqrt((change.var() + reference.var()) / len(images))
    assert abs(change.mean() - reference.mean()) < 4 * standard_error + 0.05, (change.mean(), reference.mean())


def test_batched_motion_blur_equals_the_per_image_kernel(real_images):
    angles = torch.linspace(-135, 45, len(real_images), dtype=torch.float64)
    x = torch.from_numpy(real_images).permute(0, 3, 1, 2).double()
    batched = np.floor(corruptions.motion_blur_batch(x, 9, 2.5, angles).permute(0, 2, 3, 1).numpy() + 0.5)
    for image, angle, out in zip(real_images, angles.tolist(), batched):
        np.testing.assert_allclose(out, motion_blur_one(image.astype(np.float64), 9, 2.5, angle), atol=1e-9)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_noise_has_the_published_spread(severity, real_images):
    c = PARAMETERS["gaussian_noise"][severity - 1]
    clean = real_images / 255.
    noise = ours(real_images, "gaussian_noise", severity) / 255. - clean
    inside = (clean > 0.35) & (clean < 0.65)  # far from the clipping bounds at every severity
    assert abs(noise[inside].std() - c) < 0.05 * c
    assert abs(noise[inside].mean() + 0.5 / 255) < 0.1 * c  # truncation lowers by half a grey level on average


@pytest.mark.parametrize("severity", SEVERITIES)
def test_shot_noise_is_poisson(severity, real_images):
    c = PARAMETERS["shot_noise"][severity - 1]
    clean = real_images / 255.
    noise = ours(real_images, "shot_noise", severity) / 255. - clean
    inside = (clean > 0.3) & (clean < 0.6)
    variance = (noise[inside] + 0.5 / 255).var()
    assert variance == pytest.approx(clean[inside].mean() / c + (1 / 255) ** 2 / 12, rel=0.08)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_impulse_noise_flips_the_published_share(severity, real_images):
    c = PARAMETERS["impulse_noise"][severity - 1]
    out = ours(real_images, "impulse_noise", severity)
    inside = (real_images > 5) & (real_images < 250)
    flipped = inside & ((out == 0) | (out == 255))
    assert flipped.sum() / inside.sum() == pytest.approx(c, rel=0.15)
    assert (out[flipped] == 255).mean() == pytest.approx(0.5, abs=0.08)
    assert (out[inside & ~flipped] == real_images[inside & ~flipped]).all()


# Left out, as their published parameters do not grow in one direction: glass blur (more smoothing, the
# same shuffle), frost (less image and more frost at different rates), elastic (its affine part shrinks as
# its elastic part grows), motion blur (severities 3 and 4 differ only in kernel taps of weight < 0.3%).
NOT_MONOTONE = {"glass_blur", "frost", "elastic_transform", "motion_blur"}


@pytest.mark.parametrize("name", [n for n in NAMES if n not in NOT_MONOTONE])
def test_each_corruption_gets_stronger_with_severity(name, real_images):
    distance = [np.abs(ours(real_images, name, s).astype(float) - real_images).mean() for s in SEVERITIES]
    assert all(a < b for a, b in zip(distance, distance[1:])), distance


@pytest.mark.parametrize("name", NAMES)
def test_every_corruption_is_seeded_and_changes_the_images(name, real_images):
    first = ours(real_images[:8], name, 3, seed=1)
    assert np.array_equal(first, ours(real_images[:8], name, 3, seed=1))
    assert not np.array_equal(first, real_images[:8])


def test_motion_blur_kernel_is_one_sided_and_normalized():
    weights = corruptions.motion_blur_kernel(6, 2.0)
    assert len(weights) == 13 and weights.sum() == pytest.approx(1) and (np.diff(weights) < 0).all()
    # a single bright pixel is smeared to one side only (angle 0: along increasing columns)
    image = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    image[0, 0, 16, 16] = 1
    blurred = corruptions.motion_blur_batch(image, 6, 2.0, torch.zeros(1))
    row = blurred[0, 0, 16].numpy()
    assert row[16] == pytest.approx(weights[0]) and row[4:16] == pytest.approx(weights[1:][::-1])
    assert blurred[0, 0].sum() == pytest.approx(1) and row[17:].sum() == 0


def test_unknown_corruption_or_severity_is_a_user_error():
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(UserError, match="unknown corruption 'rain'"):
        corrupt(images, "rain", 1, torch.Generator())
    with pytest.raises(UserError, match="severity 6"):
        corrupt(images, "fog", 6, torch.Generator())


# sha256 of the frost pictures as the RECORD file of the imagecorruptions 1.1.2 wheel lists them (urlsafe base64)
PUBLISHED_FROST = {"frost1.png": "_5-QeGC9eoNdRZ4y-dWIBit_Ye4mc0PMciK1Z1OhR1U",
                   "frost2.png": "_iEaibM2mZwgeoUs4FgY1FRdC1fFvq3YJLTMnZqbYTc",
                   "frost3.png": "LQ1QtKm7IT84sCTvd2hzG7g8wI0vJrV2a7wWfN-g5QQ",
                   "frost4.jpg": "P4uRyhqfpxZ7Cedz2lP1rmDQof2I8Cp4P24yinKIf24",
                   "frost5.jpg": "X8ahnfSkKbpoq9zI-KQnjUyfgcnMr9LJKrDIz4mS69I"}


def test_the_shipped_frost_pictures_are_the_published_ones():
    for name, digest in PUBLISHED_FROST.items():
        expected = base64.urlsafe_b64decode(digest + "=").hex()
        assert hashlib.sha256(corruptions.frost_picture(name).read_bytes()).hexdigest() == expected, name
    assert list(corruptions.FROST_PICTURES) == list(PUBLISHED_FROST)  # the five the original draws from, in order


def test_a_missing_or_altered_frost_picture_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(corruptions, "FROST_FOLDER", tmp_path)
    with pytest.raises(UserError, match="frost1.png is missing or altered"):
        corruptions.frost_picture("frost1.png")
    (tmp_path / "frost1.png").write_bytes(b"not the picture")
    with pytest.raises(UserError, match="missing or altered; reinstall"):
        corruptions.frost_picture("frost1.png")


def test_exported_folder_has_the_published_layout_and_reads_back(tiny_data, tmp_path):
    out = tmp_path / "c"
    result = run_stage_in_process("make_cifar10c.py", "--data-dir", tiny_data, "--out-dir", out, "--corruption",
                                  "contrast", "fog", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = load_cifar10(tiny_data, quiet=True)
    n = len(data.test_labels)
    labels = np.load(out / "labels.npy")
    assert labels.dtype == np.uint8 and np.array_equal(labels, np.tile(data.test_labels, 5))
    for name in ["contrast", "fog"]:
        stored = np.load(out / f"{name}.npy")
        assert stored.dtype == np.uint8 and stored.shape == (5 * n, 32, 32, 3)
        for severity in SEVERITIES:  # severity-major blocks, each the corruption of the whole test set
            images, block_labels = read_cifar10c(out, name, severity)
            assert np.array_equal(images, stored[(severity - 1) * n:severity * n].transpose(0, 3, 1, 2))
            assert np.array_equal(block_labels, data.test_labels)
        expected = corrupt(torch.from_numpy(data.test_images), name, 2, severity_generator(0, name, 2, "cpu"))
        assert np.array_equal(read_cifar10c(out, name, 2)[0], expected.numpy())  # the same draws as one call


def test_reader_takes_a_folder_without_manifest_as_the_published_one(tmp_path):
    n = 4
    np.save(tmp_path / "labels.npy", np.tile(np.arange(n, dtype=np.uint8), 5))
    images = np.arange(5 * n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8)
    np.save(tmp_path / "snow.npy", images)
    read, labels = read_cifar10c(tmp_path, "snow", 4)
    assert read.shape == (n, 3, 32, 32) and (read[:, 0, 0, 0] == np.arange(12, 16)).all()
    assert labels.tolist() == [0, 1, 2, 3]
    with pytest.raises(UserError, match="fog.npy not found"):
        read_cifar10c(tmp_path, "fog", 1)
    np.save(tmp_path / "snow.npy", images[:-1])
    with pytest.raises(UserError, match="not in CIFAR-10-C's layout"):
        read_cifar10c(tmp_path, "snow", 1)


def test_export_of_some_severities_says_which(tiny_data, tmp_path):
    out = tmp_path / "c"
    result = run_stage_in_process("make_cifar10c.py", "--data-dir", tiny_data, "--out-dir", out, "--corruption",
                                  "brightness", "--severity", "1", "3", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert np.load(out / "brightness.npy").shape == (3 * 120, 32, 32, 3)
    assert read_cifar10c(out, "brightness", 5)[0].shape == (120, 3, 32, 32)
    with pytest.raises(UserError, match="holds severities \\[1, 3, 5\\] only"):
        read_cifar10c(out, "brightness", 2)
