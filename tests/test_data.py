import shutil

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import CLASS_NAMES, assert_user_error, run_stage_in_process

from stresstest.data import cifar10 as cifar
from stresstest.core.errors import UserError


def test_loads_official_layout_with_count_notice(tiny_data, capsys):
    loaded = cifar.load_cifar10(tiny_data)
    assert loaded.train_images.shape == (400, 3, 32, 32) and loaded.train_images.dtype == np.uint8
    assert loaded.test_images.shape == (120, 3, 32, 32)
    assert loaded.train_labels.dtype == np.int64 and set(np.unique(loaded.train_labels)) <= set(range(10))
    assert loaded.class_names == CLASS_NAMES
    assert "read 400 training and 120 test images" in capsys.readouterr().err


def test_loads_real_pixels_as_stored(real_data, capsys):
    loaded = cifar.load_cifar10(real_data)
    with open(real_data / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = __import__("pickle").load(f, encoding="bytes")
    full = (len(loaded.train_labels), len(loaded.test_labels)) == (50_000, 10_000)
    assert ("subset" in capsys.readouterr().err) != full
    assert len(loaded.test_labels) == len(raw[b"labels"])
    # channel-major rows: the first 1024 bytes of a row are the red plane
    assert np.array_equal(loaded.test_images[7, 0].ravel(), raw[b"data"][7, :1024])
    assert loaded.test_labels[7] == raw[b"labels"][7]
    assert np.bincount(loaded.train_labels, minlength=10).min() > 0.08 * len(loaded.train_labels)  # real balance


def test_download_extracts_verified_archive(tiny_archive_url, tmp_path, monkeypatch):
    url, md5 = tiny_archive_url
    monkeypatch.setattr(cifar, "CIFAR10_URL", url)
    monkeypatch.setattr(cifar, "CIFAR10_MD5", md5)
    loaded = cifar.load_cifar10(tmp_path / "fresh")
    assert len(loaded.train_labels) == 400
    assert (tmp_path / "fresh" / "cifar-10-python.tar.gz").is_file()


def test_download_with_wrong_md5_is_refused(tiny_archive_url, tmp_path, monkeypatch):
    url, _ = tiny_archive_url
    monkeypatch.setattr(cifar, "CIFAR10_URL", url)
    monkeypatch.setattr(cifar, "CIFAR10_MD5", "0" * 32)
    with pytest.raises(UserError, match="could not be downloaded"):
        cifar.load_cifar10(tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "cifar-10-batches-py").exists()


def test_offline_without_data_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(UserError) as error:
        cifar.load_cifar10(tmp_path / "empty")
    assert "extract it into" in str(error.value) and "--data-dir" in str(error.value)


@pytest.fixture
def tiny_copy(tiny_data, tmp_path):
    shutil.copytree(tiny_data, tmp_path / "copy")
    return tmp_path / "copy"


def test_truncated_batch_is_named(tiny_copy):
    batch = tiny_copy / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:5000])
    with pytest.raises(UserError, match="data_batch_3 is truncated or corrupt"):
        cifar.load_cifar10(tiny_copy)


def test_missing_batch_is_named(tiny_copy):
    (tiny_copy / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(UserError, match="lacks test_batch"):
        cifar.load_cifar10(tiny_copy)


def test_batches_folder_passed_directly_points_to_parent(tiny_data):
    with pytest.raises(UserError, match="pass its parent folder"):
        cifar.load_cifar10(tiny_data / "cifar-10-batches-py")


def test_foreign_pickle_is_refused(tiny_copy):
    import pickle
    with open(tiny_copy / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}, f)
    with pytest.raises(UserError, match="does not hold CIFAR-10 images"):
        cifar.load_cifar10(tiny_copy)


@pytest.mark.parametrize("problem", ["missing", "truncated", "layout"])
def test_data_errors_reach_the_command_line_as_one_line(problem, tiny_copy, tmp_path):
    batches = tiny_copy / "cifar-10-batches-py"
    data_dir = tiny_copy
    if problem == "missing":
        data_dir = tmp_path / "nothing-here"
        (data_dir / "cifar-10-batches-py").mkdir(parents=True)
    elif problem == "truncated":
        (batches / "data_batch_2").write_bytes((batches / "data_batch_2").read_bytes()[:100])
    else:
        data_dir = batches
    result = run_stage_in_process("train.py", "--smoke", "--data-dir", data_dir, "--out-dir", tmp_path / "out",
                                  cwd=tmp_path)
    assert_user_error(result, str(data_dir))


def test_validation_split_is_stratified_disjoint_and_fixed():
    labels = np.repeat(np.arange(10), [100, 90, 80, 70, 60, 50, 40, 30, 20, 10])
    train, val = cifar.split_validation(labels, 0.1)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    assert np.array_equal(np.bincount(labels[val], minlength=10), [10, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    again_train, again_val = cifar.split_validation(labels, 0.1)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)


def test_smaller_hold_outs_nest_inside_larger_ones_and_keep_every_class():
    labels = np.repeat(np.arange(10), [100, 90, 80, 70, 60, 50, 40, 30, 20, 10])
    _, small = cifar.split_validation(labels, 0.02)
    _, large = cifar.split_validation(labels, 0.1)
    # runs with different hold-outs are compared on `small`, which none of them trained on
    assert set(small) < set(large)
    assert np.array_equal(np.bincount(labels[small], minlength=10), [2, 2, 2, 1, 1, 1, 1, 1, 1, 1])


def test_cross_validation_folds_partition_the_run_images_and_are_never_trained_on():
    labels = np.repeat(np.arange(10), [30, 29, 28, 27, 26, 25, 24, 23, 22, 21])
    folds = [cifar.run_split(labels, 0.1, 200, 4, k) for k in range(4)]
    held = [fold for _, _, fold in folds]
    assert np.array_equal(np.sort(np.concatenate(held)), np.arange(200))  # each of the first 200 in one fold
    for train, val, fold in folds:
        assert not set(fold) & (set(train) | set(val)) and len(train) + len(val) + len(fold) == 200
    per_class = np.array([np.bincount(labels[fold], minlength=10) for fold in held])
    assert (per_class.max(0) - per_class.min(0) <= 1).all()  # stratified
    assert all(np.array_equal(f, cifar.run_split(labels, 0.1, 200, 4, k)[2]) for k, f in enumerate(held))
    with pytest.raises(cifar.UserError, match="too few for 40 folds"):
        cifar.cross_validation_fold(labels, 40, 0)


def _all_crops_and_flips(image: torch.Tensor) -> torch.Tensor:
    padded = cifar.pad_for_crop(image[None])[0]
    crops = [padded[:, top:top + 32, left:left + 32] for top in range(9) for left in range(9)]
    return torch.stack(crops + [crop.flip(-1) for crop in crops])


def test_crop_flip_gives_valid_and_independent_augmentations(real_data):
    loaded = cifar.load_cifar10(real_data, quiet=True)
    images = torch.from_numpy(loaded.train_images[:4])
    padded = cifar.pad_for_crop(images)
    indices = torch.tensor([0, 1, 2, 3] * 32)
    out = cifar.random_crop_flip(padded, indices, torch.Generator().manual_seed(0))
    assert out.shape == (128, 3, 32, 32) and out.dtype == torch.uint8
    candidates = [_all_crops_and_flips(image) for image in images]
    for augmented, source in zip(out, indices.tolist()):
        # each output is one of the 162 crops/flips of its own source image (labels stay aligned)
        assert (candidates[source] == augmented).flatten(1).all(1).any()
    distinct = {out[i].numpy().tobytes() for i in range(0, 128, 4)}
    assert len(distinct) > 20  # 32 draws of the same image: independent per-image randomness
    flipped = sum(bool((_all_crops_and_flips(images[0])[81:] == out[i]).flatten(1).all(1).any())
                  for i in range(0, 128, 4))
    assert 5 < flipped < 27


def test_resizing_normalizer_matches_torchvision(real_data):
    loaded = cifar.load_cifar10(real_data, quiet=True)
    images = torch.from_numpy(loaded.test_images[:4])
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ours = cifar.Normalizer(mean, std, torch.device("cpu"), size=224)(images)
    resized = TF.resize(images.float(), [224, 224], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    theirs = TF.normalize(resized / 255, mean, std)
    assert ours.shape == (4, 3, 224, 224)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_normalizer_matches_torchvision(real_data):
    loaded = cifar.load_cifar10(real_data, quiet=True)
    images = torch.from_numpy(loaded.test_images[:8])
    ours = cifar.Normalizer(cifar.CIFAR10_MEAN, cifar.CIFAR10_STD, torch.device("cpu"))(images)
    theirs = TF.normalize(images.float() / 255, cifar.CIFAR10_MEAN, cifar.CIFAR10_STD)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
