"""The data's own faults on real CIFAR-10 images: a planted exact and a planted near duplicate across the splits,
and one within the training images, are found and nothing else among 400 real photographs; an image far from the
others in feature space is the first outlier."""
import numpy as np

from stresstest.data.cifar10 import load_cifar10
from stresstest.data_faults import exact_duplicate_pairs, find_data_faults


def test_planted_duplicates_and_an_outlier_are_found_among_real_images(real_data):
    data = load_cifar10(real_data, quiet=True)
    rng = np.random.default_rng(0)
    train, test = data.train_images[:300].copy(), data.test_images[:100].copy()
    test[3] = train[10]                                                    # exact, across the splits
    brighter = train[20].astype(float) * 1.15 + 10 + rng.normal(0, 3, train[20].shape)
    test[7] = np.clip(brighter, 0, 255).astype(np.uint8)                   # re-exposed and noisy: near
    train[60] = np.clip(train[50] + rng.normal(0, 4, train[50].shape), 0, 255).astype(np.uint8)  # near, in train
    centroids = 3 * rng.normal(size=(4, 64))                               # four tight groups, as classes
    features = centroids[rng.integers(0, 4, 400)] + rng.normal(size=(400, 64))
    features[305] = 3 * rng.normal(size=64)                                # test image 5: a direction of its own
    faults = find_data_faults(train, test, features[:300], features[300:])
    found = {(row.kind, row.split_a, row.index_a, row.split_b, row.index_b) for row in faults.pairs.itertuples()}
    assert found == {("exact", "train", 10, "test", 3), ("near", "train", 20, "test", 7),
                     ("near", "train", 50, "train", 60)}
    assert list(np.flatnonzero(faults.twin_in_training)) == [3, 7]
    first = faults.outliers.iloc[0]
    assert (first.split, first["index"], first.is_outlier) == ("test", 5, True)
    assert faults.settings["images"] == {"train": 300, "test": 100}


def test_exact_duplicates_are_found_by_their_pixels_alone():
    images = np.zeros((5, 3, 4, 4), np.uint8)
    images[1, 0, 0, 0] = 1
    images[3] = images[1]
    assert exact_duplicate_pairs(images) == [(0, 2), (0, 4), (2, 4), (1, 3)]
