"""Failure slices: coherent groups of test images on which a model errs more than on the rest, found on one half of
the test images and measured on the other, so that a slice's error rate is not selected on the images it is
reported on.

Discovery is Domino's (Eyuboglu et al., ICLR 2022): a diagonal Gaussian mixture over the model's features (PCA of
the input of its last linear layer) joined with its error pattern (one-hot label minus predicted probabilities,
weighted), so that components gather images that look alike *and* fail alike. A held-out image is assigned to a
slice from its features alone (the mixture's feature marginal), never from whether the model got it right; its
slice's error rate on the held-out half is then compared with the rest of that half (Wilson 95% intervals, Fisher's
exact test, Bonferroni over the slices). The halves are swapped and both directions reported."""
from dataclasses import dataclass

import numpy as np
from .metrics import fisher_exact_p, wilson_interval


@dataclass(frozen=True)
class SliceSettings:
    # mixture components: on the planted-slice test (tests/test_slices.py) 8-10 keep the planted group whole,
    # 12-16 split it, and 6 let a chance group pass Bonferroni on random errors
    slices: int = 10
    dimensions: int = 32         # principal components of the features kept
    error_weight: float = 4.0    # weight of the error pattern beside the standardised feature components
    min_size: int = 10           # a slice smaller than this on the held-out half is not reported
    seed: int = 0


@dataclass(frozen=True)
class HeldOutSlice:
    found_on: int                # 0 or 1: the half the slice was found on
    slice: int                   # its component, ranked by the error rate where it was found (0: the worst)
    found_size: int
    found_error_rate: float
    members: np.ndarray          # indices (into the arrays given) of its held-out images
    errors: int                  # the model's errors among them
    rest_size: int               # the other held-out images
    rest_errors: int
    p_value: float               # Fisher's exact test, slice against the rest of the held-out half
    p_bonferroni: float

    @property
    def error_rate(self) -> float:
        return self.errors / len(self.members)

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.errors, len(self.members))

    @property
    def rest_error_rate(self) -> float:
        return self.rest_errors / self.rest_size if self.rest_size else float("nan")


def halves(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of `count` images into two halves (sorted indices)."""
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[:count // 2]), np.sort(order[count // 2:])


class SliceModel:
    """The mixture fitted on one half: feature projection and standardisation, and per component its weight and the
    means and variances of its feature dimensions (what a held-out image is assigned by)."""

    def __init__(self, features: np.ndarray, probabilities: np.ndarray, labels: np.ndarray,
                 settings: SliceSettings):
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        dimensions = max(1, min(settings.dimensions, features.shape[1], len(features) - 1))
        self.pca = PCA(dimensions, random_state=settings.seed).fit(features)
        projected = self.pca.transform(features)
        self.scale = projected.std(0) + 1e-8
        residual = np.eye(probabilities.shape[1])[labels] - probabilities
        joined = np.hstack([projected / self.scale, settings.error_weight * residual])
        self.mixture = GaussianMixture(min(settings.slices, len(features)), covariance_type="diag",
                                       random_state=settings.seed, reg_covar=1e-3).fit(joined)
        self.dimensions = dimensions
        self.found = self.mixture.predict(joined)

    def assign(self, features: np.ndarray) -> np.ndarray:
        """Each image's most likely component under the mixture's feature marginal (errors unseen)."""
        x = self.pca.transform(features) / self.scale
        means = np.asarray(self.mixture.means_)[:, :self.dimensions]
        variances = np.asarray(self.mixture.covariances_)[:, :self.dimensions]
        log_likelihood = -0.5 * (((x[:, None, :] - means) ** 2) / variances + np.log(2 * np.pi * variances)).sum(-1)
        return (log_likelihood + np.log(np.asarray(self.mixture.weights_))).argmax(1)


def held_out_slices(features: np.ndarray, probabilities: np.ndarray, labels: np.ndarray,
                    settings: SliceSettings = SliceSettings()) -> list[HeldOutSlice]:
    """Slices found on each half and measured on the other, worst first within each direction."""
    wrong = probabilities.argmax(1) != labels
    parts = halves(len(labels), settings.seed)
    found = []
    for found_on, (fit, held) in enumerate([parts, parts[::-1]]):
        model = SliceModel(features[fit], probabilities[fit], labels[fit], settings)
        components = range(model.mixture.n_components)
        rates = {c: wrong[fit][model.found == c].mean() if (model.found == c).any() else -1.0 for c in components}
        ranked = sorted(components, key=lambda c: -rates[c])
        assigned = model.assign(features[held])
        rows = []
        for rank, component in enumerate(ranked):
            inside = assigned == component
            if inside.sum() < settings.min_size:
                continue
            errors, rest_errors = int(wrong[held][inside].sum()), int(wrong[held][~inside].sum())
            rest_size = int((~inside).sum())
            p_value = fisher_exact_p(errors, int(inside.sum()), rest_errors, rest_size)
            rows.append((rank, component, inside, errors, rest_errors, rest_size, p_value))
        for rank, component, inside, errors, rest_errors, rest_size, p_value in rows:
            found.append(HeldOutSlice(found_on, rank, int((model.found == component).sum()), float(rates[component]),
                                      held[inside], errors, rest_size, rest_errors, p_value,
                                      min(1.0, p_value * len(rows))))
    return found
