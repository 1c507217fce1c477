"""Every metric, interval and test of stresstest/metrics.py against its reference: the published formula written
out as a loop, the library that defines it (torchmetrics, scipy, scikit-learn, pandas), or the authors' own code
(uncertainty-calibration, Kumar et al. 2019); on synthetic predictions whose calibration is known by
construction; the same references on a trained model's predictions on real CIFAR-10 images are checked in
test_pipeline.py, beside the smoke pipeline that made the model."""
import numpy as np
import pandas as pd
import pytest
import scipy.special
import scipy.stats
import torch
import torch.nn.functional as F

from conftest import reference_calibration, synthetic_predictions, top_label
from stresstest import metrics as m


def ece_by_loop(confidence, correct, bins=15):
    total = 0.0
    for i in range(bins):
        low, high = i / bins, (i + 1) / bins
        members = (confidence > low) & (confidence <= high)
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return total


def aurc_by_loop(score, correct):
    order = sorted(range(len(score)), key=lambda i: -score[i])
    risks = [sum(not correct[j] for j in order[:k]) / k for k in range(1, len(score) + 1)]
    return sum(risks) / len(risks)


# -- probabilities and per-image scores ---------------------------------------------------------------------

def test_softmax_and_margins_against_scipy_and_sorting():
    logits, labels, _ = synthetic_predictions(n=200)
    probs = m.softmax(logits)
    np.testing.assert_allclose(probs, scipy.special.softmax(logits, axis=1), rtol=1e-12)
    ordered = np.sort(probs, axis=1)
    np.testing.assert_allclose(m.top_two_margin(probs), ordered[:, -1] - ordered[:, -2])
    best_other = [max(p for c, p in enumerate(row) if c != label) for row, label in zip(probs, labels)]
    np.testing.assert_allclose(m.true_class_margin(probs, labels), probs[np.arange(200), labels] - best_other)
    assert ((m.true_class_margin(probs, labels) > 0) == (probs.argmax(1) == labels)).all()


@pytest.mark.parametrize("p", [1, 2, 5])
def test_pnorm_score_is_the_normalised_centred_max_logit(p):
    logits = np.array([[3.0, 1.0, -1.0], [0.5, 0.5, 0.5], [10.0, -2.0, 4.0]])
    centred = logits - logits.mean(1, keepdims=True)
    expected = centred.max(1) / np.clip((np.abs(centred) ** p).sum(1) ** (1 / p), 1e-12, None)
    np.testing.assert_allclose(m.pnorm_score(logits, p), expected)


# -- calibration --------------------------------------------------------------------------------------------

def test_ece_equals_a_direct_loop_torchmetrics_and_the_authors_code():
    from torchmetrics.functional.classification import multiclass_calibration_error

    reference = reference_calibration()
    calibrated, labels, overconfident = synthetic_predictions()
    for logits in [calibrated, overconfident]:
        probs = m.softmax(logits)
        confidence, correct = top_label(probs, labels)
        ours = m.expected_calibration_error(confidence, correct)
        assert ours == pytest.approx(ece_by_loop(confidence, correct), abs=1e-12)
        theirs = multiclass_calibration_error(torch.from_numpy(probs), torch.from_numpy(labels), num_classes=10,
                                              n_bins=15, norm="l1").item()
        assert ours == pytest.approx(theirs, abs=1e-6)
        assert ours == pytest.approx(reference.get_ece(probs, labels, num_bins=15), abs=1e-12)
    assert m.expected_calibration_error(*top_label(m.softmax(calibrated), labels)) < 0.03
    assert m.expected_calibration_error(*top_label(m.softmax(overconfident), labels)) > 0.1


def test_a_confidence_of_one_goes_to_the_last_bin():
    confidence = np.array([1.0, 1.0, 1.0, 0.95])
    correct = np.array([True, True, False, True])
    table = m.reliability(confidence, correct)
    assert table["count"].tolist()[-1] == 4 and table["count"].sum() == 4
    assert m.expected_calibration_error(confidence, correct) == pytest.approx(abs(0.75 - 0.9875))


@pytest.mark.parametrize("n", [7, 50, 500, 4000])
def test_equal_mass_and_debiased_errors_equal_the_authors_code(n):
    reference = reference_calibration()
    calibrated, labels, overconfident = synthetic_predictions(n=n, seed=n)
    for logits in [calibrated, overconfident, 1.3 * calibrated]:
        probs = m.softmax(logits)
        confidence, correct = top_label(probs, labels)
        assert m.adaptive_calibration_error(confidence, correct) == pytest.approx(
            reference.get_ece_em(probs, labels, num_bins=15), abs=1e-12)
        assert m.debiased_calibration_error(confidence, correct) == pytest.approx(
            reference.lower_bound_scaling_top_ce(probs, labels, p=2, debias=True, num_bins=15), abs=1e-12)


def test_equal_mass_bins_hold_equal_shares_and_ties_stay_together():
    confidence = np.random.default_rng(0).random(1500)
    assert np.bincount(m.equal_mass_bin_index(confidence)).tolist() == [100] * 15
    tied = np.array([0.2] * 10 + [0.9] * 5)
    index = m.equal_mass_bin_index(tied, bins=3)
    assert len(set(index[:10])) == 1 and len(set(index[10:])) == 1


def test_only_the_debiased_error_and_its_interval_come_down_to_zero_for_a_calibrated_model():
    """Labels drawn from the model's own probabilities: calibrated by construction. The binned ECEs stay above
    zero (their noise does not cancel), the debiased estimate does not, and its interval covers zero; every
    interval holds its estimate, where the plain percentile interval of the binned ECE lies above it."""
    calibrated, labels, _ = synthetic_predictions(n=500, seed=3)
    confidence, correct = top_label(m.softmax(calibrated), labels)
    ece = m.expected_calibration_error(confidence, correct)
    plain_low, _ = m.bootstrap_interval(m.expected_calibration_error, confidence, correct, seed=0)
    assert plain_low > ece  # the defect the re-centred interval mends
    for error in [m.expected_calibration_error, m.adaptive_calibration_error, m.debiased_calibration_error]:
        estimate = error(confidence, correct)
        low, high = m.recentred_interval(error, confidence, correct, seed=0)
        assert low <= estimate <= high
    assert m.adaptive_calibration_error(confidence, correct) > 0.02 and ece > 0.02
    debiased = m.debiased_calibration_error(confidence, correct)
    assert debiased < 0.02 and m.recentred_interval(m.debiased_calibration_error, confidence, correct)[0] == 0


def test_nll_and_brier_against_torch_and_their_definition():
    logits, labels, _ = synthetic_predictions(n=300)
    probs = m.softmax(logits)
    expected = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    assert m.negative_log_likelihood(probs, labels) == pytest.approx(expected, rel=1e-9)
    pairs = [[0.5, 0.5], [0.9, 0.1]]
    assert m.brier_score(np.array(pairs), np.array([0, 1])) == pytest.approx(((0.25 + 0.25) + (0.81 + 0.81)) / 2)


def test_temperature_scaling_recovers_the_sharpening():
    calibrated, labels, overconfident = synthetic_predictions(n=6000)
    assert m.fit_temperature(overconfident, labels) == pytest.approx(3.0, rel=0.1)
    assert m.fit_temperature(calibrated, labels) == pytest.approx(1.0, rel=0.1)


# -- selective prediction -----------------------------------------------------------------------------------

def test_aurc_equals_a_direct_loop_and_the_oracle_has_no_excess():
    rng = np.random.default_rng(1)
    score, correct = rng.random(300), rng.random(300) < 0.7
    assert m.aurc(score, correct) == pytest.approx(aurc_by_loop(score, correct))
    assert m.excess_aurc(correct.astype(float), correct) == 0
    assert m.excess_aurc(score, correct) > 0
    # Geifman et al.: the oracle's AURC tends to r + (1 - r) ln(1 - r) for error rate r
    big = rng.random(100_000) < 0.8
    r = 1 - big.mean()
    assert m.aurc(big.astype(float), big) == pytest.approx(r + (1 - r) * np.log(1 - r), abs=1e-3)


def test_most_confident_count_ignores_the_scale_of_the_confidences():
    """Confidences raised by a monotone map (the same ranking, another scale) change the count at a fixed
    threshold, not the count among each model's most confident answers."""
    rng = np.random.default_rng(0)
    predicted, top = rng.integers(0, 10, 200), rng.uniform(0.3, 0.95, 200)
    labels = np.where(rng.random(200) < 0.7, predicted, rng.integers(0, 10, 200))

    def probabilities(confidence):
        probs = np.repeat(((1 - confidence) / 9)[:, None], 10, axis=1)
        probs[np.arange(200), predicted] = confidence
        return probs

    soft, sharp = probabilities(top), probabilities(top ** 0.25)
    wrong = predicted != labels
    assert ((sharp.max(1) >= 0.9) & wrong).sum() > ((soft.max(1) >= 0.9) & wrong).sum()
    for count in [10, 50, 200]:
        assert m.wrong_among_most_confident(soft, labels, count) == m.wrong_among_most_confident(sharp, labels, count)
    assert m.wrong_among_most_confident(soft, labels, 50) == wrong[np.argsort(-top)[:50]].sum()


# -- intervals and tests ------------------------------------------------------------------------------------

def test_wilson_and_mcnemar_on_known_answers():
    low, high = m.wilson_interval(0, 10)
    assert low == pytest.approx(0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-4)
    z = 1.959963984540054  # the Wilson formula itself, for 37 of 50
    p, n = 37 / 50, 50
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert m.wilson_interval(37, 50) == pytest.approx((centre - half, centre + half), abs=1e-9)
    first = np.array([True] * 5 + [False] * 10 + [True] * 20)
    second = np.array([True] * 5 + [True] * 10 + [True] * 20)
    assert m.mcnemar_exact(first, second) == (0, 10, pytest.approx(2 * 0.5 ** 10))
    assert m.mcnemar_exact(first, first) == (0, 0, 1.0)
    uneven = np.array([True] * 7 + [False] * 2)
    assert m.mcnemar_exact(uneven, ~uneven)[2] == pytest.approx(scipy.stats.binomtest(7, 9).pvalue)


def test_t_interval_against_scipy():
    values = np.array([0.71, 0.74, 0.69, 0.77, 0.72])
    mean, std, low, high = m.t_interval(values)
    expected = scipy.stats.t.interval(0.95, 4, loc=values.mean(), scale=scipy.stats.sem(values))
    assert (mean, std) == pytest.approx((values.mean(), values.std(ddof=1)))
    assert (low, high) == pytest.approx(expected)
    assert np.isnan(m.t_interval([0.5])[2])


def test_bootstrap_intervals_against_scipy():
    values = np.random.default_rng(2).exponential(size=400)
    ours = m.bootstrap_interval(np.mean, values, seed=0, resamples=4000)
    theirs = scipy.stats.bootstrap((values,), np.mean, n_resamples=4000, method="percentile",
                                   random_state=np.random.default_rng(1)).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high), rel=0.03)
    mean, low, high = m.mean_interval(np.append(values, [np.nan, np.inf]))
    assert mean == pytest.approx(values.mean()) and low < mean < high
    # an unbiased statistic barely drifts: re-centring leaves its interval where the percentile one is
    assert m.recentred_interval(np.mean, values, seed=0, resamples=4000) == pytest.approx(ours, rel=0.03)


# -- agreement ----------------------------------------------------------------------------------------------

def test_rank_agreement_against_pandas_and_sets():
    rng = np.random.default_rng(4)
    first, second = rng.random((3, 8, 8)), rng.random((3, 8, 8))
    second[0] = first[0] ** 3  # the same order
    expected = [pd.Series(a.ravel()).corr(pd.Series(b.ravel()), method="spearman") for a, b in zip(first, second)]
    np.testing.assert_allclose(m.rank_correlations(first, second), expected)
    assert m.rank_correlations(first[:1], second[:1])[0] == pytest.approx(1.0)
    assert np.isnan(m.rank_correlation(np.ones((4, 4)), first[0])[0])
    share = 0.25
    top_first = {i for i in np.argsort(-first[1].ravel())[:16]}
    top_second = {i for i in np.argsort(-second[1].ravel())[:16]}
    assert m.top_overlap(first[1:2], second[1:2], share)[0] == pytest.approx(m.jaccard(top_first, top_second))
    assert m.jaccard(set(), set()) == 1.0 and m.jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)


# -- out-of-distribution detection ------------------------------------------------------------------------------

@pytest.mark.parametrize("decimals", [None, 1, 0])  # continuous scores, some ties, many ties
def test_ood_metrics_equal_pytorch_ood(decimals):
    from pytorch_ood.metrics import functional as reference

    rng = np.random.default_rng(1)
    id_scores, ood_scores = rng.normal(1, 1, 300), rng.normal(0, 1.5, 450)
    if decimals is not None:
        id_scores, ood_scores = id_scores.round(decimals), ood_scores.round(decimals)
    ours = m.ood_metrics(id_scores, ood_scores)
    values = torch.from_numpy(np.concatenate([id_scores, ood_scores]))
    labels = torch.cat([torch.full((300,), -1), torch.zeros(450, dtype=torch.long)])  # pytorch-ood: "OOD" = ours ID
    assert ours["auroc"] == pytest.approx(reference.auroc(values, labels).item(), abs=1e-12)
    assert ours["aupr_in"] == pytest.approx(reference.aupr(values, labels, positive="ood").item(), abs=1e-12)
    assert ours["aupr_out"] == pytest.approx(reference.aupr(values, labels, positive="id").item(), abs=1e-12)
    assert ours["fpr95"] == pytest.approx(reference.fpr_at_tpr(values, labels, 0.95).item(), abs=1e-12)
    # AUROC as the Mann-Whitney statistic: ties count half
    assert ours["auroc"] == pytest.approx(scipy.stats.mannwhitneyu(id_scores, ood_scores).statistic / (300 * 450))


def test_ood_bootstrap_is_stratified_and_paired_by_its_seed():
    rng = np.random.default_rng(2)
    id_scores, ood_scores = rng.normal(1, 1, 200), rng.normal(0, 1, 50)
    draws = m.ood_bootstrap(id_scores, ood_scores, seed=7, resamples=300)
    assert draws.shape == (300, 4)
    assert np.array_equal(draws, m.ood_bootstrap(id_scores, ood_scores, seed=7, resamples=300))
    # stratified: a score that separates the sets perfectly does so in every resample, which an unstratified
    # resample (some with no OOD image at all) could not even measure
    perfect = m.ood_bootstrap(np.full(200, 2.0), np.full(50, -2.0), seed=7, resamples=50)
    assert (perfect[:, 0] == 1).all() and (perfect[:, 3] == 0).all()
    auroc = m.ood_metrics(id_scores, ood_scores)["auroc"]
    low, high = np.percentile(draws[:, 0], [2.5, 97.5])
    assert low < auroc < high and high - low < 0.2
    # paired: the same resamples of a monotone transform give the same AUROCs, so the difference is exactly 0
    again = m.ood_bootstrap(np.exp(id_scores), np.exp(ood_scores), seed=7, resamples=300)
    low, high, p = m.paired_difference(again[:, 0], draws[:, 0])
    assert low == high == 0 and p == 1
    shifted = m.ood_bootstrap(id_scores + 1, ood_scores, seed=7, resamples=300)
    low, high, p = m.paired_difference(shifted[:, 0], draws[:, 0])
    assert 0 < low < high and p == pytest.approx(1 / 300)


def test_ood_metrics_equal_scikit_learns_curves():
    from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve

    rng = np.random.default_rng(3)
    id_scores, ood_scores = rng.normal(0.8, 1, 400), rng.normal(0, 1, 250)
    scores, is_id = np.concatenate([id_scores, ood_scores]), np.r_[np.ones(400), np.zeros(250)]
    ours = m.ood_metrics(id_scores, ood_scores)
    assert ours["auroc"] == pytest.approx(roc_auc_score(is_id, scores), abs=1e-12)
    precision, recall, _ = precision_recall_curve(is_id, scores)
    assert ours["aupr_in"] == pytest.approx(auc(recall, precision), abs=1e-12)
    precision, recall, _ = precision_recall_curve(1 - is_id, -scores)
    assert ours["aupr_out"] == pytest.approx(auc(recall, precision), abs=1e-12)
    fpr, tpr, _ = roc_curve(is_id, scores)
    assert ours["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)  # OpenOOD's reading of the curve


def test_ood_auroc_of_gaussians_follows_its_closed_form_and_a_set_of_the_same_images_covers_one_half():
    """ID and OOD Gaussians of unit covariance, means Delta apart: a score along the mean difference has AUROC
    Phi(Delta / sqrt(2)); OOD images drawn from the ID distribution itself give an interval that holds 0.5."""
    rng = np.random.default_rng(4)
    delta = 1.5
    id_points, ood_points = rng.normal(0, 1, (20000, 8)), rng.normal(0, 1, (20000, 8))
    ood_points[:, 0] += delta
    auroc = m.ood_metrics(-id_points[:, 0], -ood_points[:, 0])["auroc"]
    assert auroc == pytest.approx(scipy.stats.norm.cdf(delta / np.sqrt(2)), abs=0.006)
    same = rng.normal(0, 1, 600)
    draws = m.ood_bootstrap(same[:300], same[300:], seed=0, resamples=400)
    low, high = np.percentile(draws[:, 0], [2.5, 97.5])
    assert low < 0.5 < high
