"""Failure slices: a planted subgroup that a trained toy model gets wrong is found as one slice whose held-out error
rate stands apart; errors that no feature explains give no such slice."""
import numpy as np
import pytest
from conftest import make_images
from sklearn.linear_model import LogisticRegression

from stresstest.slices import halves, held_out_slices


def pixels(images: np.ndarray) -> np.ndarray:
    """(N, 3072) uint8 rows -> (N, 48) floats: 4x4 means per channel, what the toy model reads."""
    return images.reshape(-1, 3, 4, 8, 4, 8).mean((3, 5)).reshape(len(images), -1) / 255.0


def cast(images: np.ndarray) -> np.ndarray:
    """A strong red cast: every pixel moved 70% of the way to one red, so the images look alike whatever their
    class (the stripes that tell the classes apart stay, fainter)."""
    red = np.array([230, 40, 40], dtype=float)[None, :, None]
    tinted = 0.3 * images.reshape(-1, 3, 1024) + 0.7 * red
    return tinted.round().astype(np.uint8).reshape(len(images), -1)


@pytest.fixture(scope="module")
def planted():
    """Generated images, 15% of them under a colour cast; a logistic regression trained where every cast image is
    labelled airplane, so on test images it calls the cast ones airplanes, wrong nine times in ten."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 3600)
    images = make_images(labels, rng)  # one call: the classes' colours are the same in both splits
    subgroup = rng.random(len(labels)) < 0.15
    images[subgroup] = cast(images[subgroup])
    features = pixels(images)
    train, test = slice(0, 2000), slice(2000, None)
    taught = np.where(subgroup[train], 0, labels[train])
    model = LogisticRegression(max_iter=500).fit(features[train], taught)
    return features[test], model.predict_proba(features[test]), labels[test], subgroup[test]


def test_a_planted_subgroup_is_found_and_its_held_out_error_rate_stands_apart(planted):
    features, probabilities, labels, subgroup = planted
    wrong = probabilities.argmax(1) != labels
    assert wrong[subgroup].mean() > 0.75 and wrong[~subgroup].mean() < 0.3  # the plant took
    found = held_out_slices(features, probabilities, labels)
    for direction in (0, 1):
        held_out = halves(len(labels), 0)[1 - direction]
        # the slice holding most of the cast images (the toy model has failure groups of its own too)
        best = max((s for s in found if s.found_on == direction), key=lambda s: subgroup[s.members].sum())
        purity, recall = subgroup[best.members].mean(), subgroup[best.members].sum() / subgroup[held_out].sum()
        assert purity > 0.8 and recall > 0.5, (direction, purity, recall)
        assert best.interval[0] > 0.6 and best.rest_error_rate < 0.3 and best.p_bonferroni < 1e-6


def test_errors_that_no_feature_explains_give_no_slice_that_stands_apart(planted):
    """Right or wrong at random, whatever the image: a slice assigned from its features alone (never from the
    held-out images' errors) shows no error rate apart from the rest, after Bonferroni over the slices."""
    features, _, labels, _ = planted
    probabilities = np.random.default_rng(1).dirichlet(np.ones(10), len(labels))
    found = held_out_slices(features, probabilities, labels)
    assert len(found) >= 16 and all(s.p_bonferroni > 0.05 for s in found)
