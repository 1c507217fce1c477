"""Every metric, interval and test the stages report, written once: calibration (ECE, NLL, Brier, temperature),
selective prediction (risk-coverage, AURC), per-image scores (margins), intervals (Wilson, Student t, bootstrap),
paired tests (McNemar), out-of-distribution detection (AUROC, AUPR, FPR@95, stratified bootstrap) and agreement of maps
and sets (Spearman, top-k overlap, Jaccard)."""
import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.stats import binomtest, spearmanr
from scipy.stats import t as student_t

BINS = 15          # equal-width confidence bins of the ECE (Guo et al. 2017)
BOOTSTRAP = 1000   # resamples of the images behind a bootstrap 95% interval


# -- probabilities and per-image scores ---------------------------------------------------------------------

def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(1, keepdims=True)


def top_two_margin(probs: np.ndarray) -> np.ndarray:
    """`margin`: top-1 minus top-2 probability (how decided the prediction is, whatever the label)."""
    top = np.sort(probs, axis=1)
    return top[:, -1] - top[:, -2]


def true_class_margin(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`true_class_margin`: true-class probability minus the best other class (negative: misclassified)."""
    rows = np.arange(len(labels))
    others = probs.copy()
    others[rows, labels] = -np.inf
    return probs[rows, labels] - others.max(1)


def pnorm_score(logits: np.ndarray, p: float) -> np.ndarray:
    """MaxLogit-pNorm (Cattelan & Silva 2023): the largest centred logit over the p-norm of the centred logits."""
    centred = logits - logits.mean(1, keepdims=True)
    return centred.max(1) / np.clip(np.linalg.norm(centred, ord=p, axis=1), 1e-12, None)


# -- calibration --------------------------------------------------------------------------------------------

def bin_index(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Equal-width bins closed on the right, ((i-1)/bins, i/bins]: a confidence of exactly 1.0 falls in the
    last bin, not one of its own (the convention of Guo et al. 2017)."""
    return np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> dict:
    """Per bin: its edges, count, mean confidence and accuracy (nan in empty bins)."""
    index = bin_index(confidence, bins)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / count
        accuracy = np.bincount(index, correct.astype(float), bins) / count
    return {"bin_low": np.arange(bins) / bins, "bin_high": np.arange(1, bins + 1) / bins, "count": count,
            "mean_confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """Sum over bins of (share of images) * |accuracy - mean confidence| = sum |hits - confidences| / n."""
    index = bin_index(confidence, bins)
    gap = np.bincount(index, correct.astype(float), bins) - np.bincount(index, confidence, bins)
    return float(np.abs(gap).sum() / len(confidence))


def equal_mass_bin_index(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Bins holding (nearly) equal numbers of images: the sorted confidences split into `bins` runs
    (np.array_split), each edge halfway between neighbouring runs, a confidence on an edge in the lower bin
    (the binning of Kumar et al. 2019's code, `get_equal_bins`)."""
    runs = np.array_split(np.sort(confidence), min(bins, len(confidence)))
    edges = np.unique([*((low[-1] + high[0]) / 2 for low, high in zip(runs, runs[1:])), 1.0])
    return np.minimum(np.searchsorted(edges, confidence), len(edges) - 1)


def adaptive_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """ECE over equal-mass bins (adaptive ECE): every bin's gap rests on about n / bins images, so sparse
    high-confidence bins weigh no less reliably than the crowded ones."""
    index = equal_mass_bin_index(confidence, bins)
    gap = np.bincount(index, correct.astype(float)) - np.bincount(index, confidence)
    return float(np.abs(gap).sum() / len(confidence))


def debiased_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """The debiased L2 calibration error of Kumar, Liang and Ma 2019 ("Verified uncertainty calibration"), over
    equal-mass bins: sqrt(max(0, sum_b (n_b / n) [(accuracy_b - confidence_b)^2 - accuracy_b (1 - accuracy_b) /
    (n_b - 1)])). Subtracting each bin's sampling variance removes the upward bias of the plug-in estimate, so a
    calibrated model scores near zero at any n (bins of one image count zero, as in the authors' code)."""
    index = equal_mass_bin_index(confidence, bins)
    count = np.bincount(index)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, correct.astype(float)) / count
        gap = accuracy - np.bincount(index, confidence) / count
        squared = gap ** 2 - accuracy * (1 - accuracy) / (count - 1)
    squared = np.where(count >= 2, squared, 0.0)
    return float(np.sqrt(max((count / len(confidence) * squared).sum(), 0.0)))


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier: mean over images of the squared distance to the one-hot label (0 to 2)."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(1).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) (Guo et al. 2017)."""
    result = minimize_scalar(lambda log_t: negative_log_likelihood(softmax(logits / np.exp(log_t)), labels),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


# -- selective prediction -----------------------------------------------------------------------------------

def risk_coverage(score: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage k/n and selective risk (error rate among the k most confident), k = 1..n; ties broken
    by image order (a stable sort)."""
    order = np.argsort(-score, kind="stable")
    errors = np.cumsum(~correct[order])
    count = np.arange(1, len(score) + 1)
    return count / len(score), errors / count


def aurc(score: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: the mean selective risk over all n coverages (Geifman et al. 2019)."""
    return float(risk_coverage(score, correct)[1].mean())


def excess_aurc(score: np.ndarray, correct: np.ndarray) -> float:
    """E-AURC: AURC minus that of the oracle score that ranks every right answer first."""
    return aurc(score, correct) - aurc(correct.astype(float), correct)


def wrong_among_most_confident(probs: np.ndarray, labels: np.ndarray, count: int) -> int:
    """Wrong answers among a model's `count` most confident ones: a confident-failure count that depends only on
    how the model ranks its answers, not on the scale of its confidences (label smoothing's target for the
    true class is 0.91, so a fixed threshold of 0.9 favours it by construction)."""
    most_confident = np.argsort(-probs.max(1), kind="stable")[:count]
    return int((probs.argmax(1)[most_confident] != labels[most_confident]).sum())


# -- intervals and tests ------------------------------------------------------------------------------------

def wilson_interval(successes: int, trials: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (accuracy on n images)."""
    interval = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def mcnemar_exact(first_right: np.ndarray, second_right: np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test of two classifiers on the same images: the images only the first gets right, only
    the second gets right, and the two-sided binomial p-value of that split under p = 1/2."""
    only_first = int((first_right & ~second_right).sum())
    only_second = int((~first_right & second_right).sum())
    discordant = only_first + only_second
    p_value = binomtest(only_first, discordant, 0.5).pvalue if discordant else 1.0
    return only_first, only_second, float(p_value)


def t_interval(values) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and the 95% Student-t interval of the mean (nan below two values)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan"), float("nan")
    std = float(values.std(ddof=1))
    half = float(student_t.ppf(0.975, len(values) - 1)) * std / np.sqrt(len(values))
    return mean, std, mean - half, mean + half


def bootstrap_values(statistic, *arrays, seed: int | np.random.Generator = 0,
                     resamples: int = BOOTSTRAP) -> np.ndarray:
    """statistic(*arrays) over resamples of the images (rows of every array alike); `seed` is a seed or a
    generator to draw from."""
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    return np.array([statistic(*(a[picks] for a in arrays)) for picks in rng.integers(0, n, size=(resamples, n))])


def bootstrap_interval(statistic, *arrays, seed: int | np.random.Generator = 0,
                       resamples: int = BOOTSTRAP) -> tuple[float, float]:
    """Percentile 95% interval of statistic(*arrays) over resamples of the images."""
    low, high = np.percentile(bootstrap_values(statistic, *arrays, seed=seed, resamples=resamples), [2.5, 97.5])
    return float(low), float(high)


def recentred_interval(statistic, *arrays, seed: int | np.random.Generator = 0,
                       resamples: int = BOOTSTRAP) -> tuple[float, float]:
    """A 95% bootstrap interval that holds its estimate: the percentile interval moved down by the bootstrap's
    own drift (median of the resamples minus the estimate), floored at 0. Binned calibration errors drift
    upward on resamples (duplicated images add sampling noise to every bin's gap), so their plain percentile
    interval can lie wholly above the estimate; this one keeps the interval's width and holds the estimate,
    since the median lies between the percentiles."""
    values = bootstrap_values(statistic, *arrays, seed=seed, resamples=resamples)
    low, median, high = np.percentile(values, [2.5, 50, 97.5])
    drift = median - statistic(*arrays)
    return float(max(low - drift, 0.0)), float(max(high - drift, 0.0))


def mean_interval(values: np.ndarray, seed: int | np.random.Generator = 0) -> tuple[float, float, float]:
    """Mean and 95% bootstrap interval of the finite values (nan where there are none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    return (float(values.mean()), *bootstrap_interval(np.mean, values, seed=seed))


# -- out-of-distribution detection ---------------------------------------------------------------------------
# In-distribution (ID) images are the positive class throughout, and a score is higher for what looks more ID.

OOD_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def _trapezoid(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise area under the points (x, y) by the trapezoidal rule."""
    return ((x[:, 1:] - x[:, :-1]) * (y[:, 1:] + y[:, :-1]) / 2).sum(1)


def _pr_area(positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Row-wise area under the precision-recall curve through cumulative counts (accepting the most positive-looking
    first), closed at (recall 0, precision 1) as sklearn's precision_recall_curve followed by auc."""
    precision = positives / (positives + negatives).clamp_min(1)
    recall = positives / positives[:, -1:]
    ones = torch.ones_like(recall[:, :1])
    return _trapezoid(torch.cat([ones * 0, recall], 1), torch.cat([ones, precision], 1))


def _counts_above(scores: torch.Tensor, positive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise cumulative counts of positives and negatives accepted when accepting from the highest score down,
    at each image, a run of equal scores entering as one threshold (every image takes the counts at its run's
    end), so that ties count half in the areas."""
    ranked, order = scores.sort(dim=1, descending=True, stable=True)
    positive = positive.gather(1, order)
    n = scores.shape[1]
    last = torch.ones_like(positive)
    last[:, :-1] = ranked[:, 1:] != ranked[:, :-1]
    position = torch.arange(n, device=scores.device).expand_as(positive)
    run_end = torch.where(last, position, n - 1).flip(1).cummin(1).values.flip(1)
    positives = positive.double().cumsum(1).gather(1, run_end)
    return positives, (run_end + 1).double() - positives


def ood_metrics_batch(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> torch.Tensor:
    """(B, 4) [AUROC, AUPR-In, AUPR-Out, FPR@95] for B rows of ID and OOD scores. AUPR-In takes the ID images as
    positive, AUPR-Out the OOD images (rejecting the least ID-like first); FPR@95 is the share of OOD images
    accepted at the first threshold that accepts at least 95% of the ID images."""
    scores = torch.cat([id_scores, ood_scores], 1).double()
    is_id = torch.cat([torch.ones_like(id_scores, dtype=torch.bool), torch.zeros_like(ood_scores, dtype=torch.bool)], 1)
    id_accepted, ood_accepted = _counts_above(scores, is_id)
    ood_rejected, id_rejected = _counts_above(-scores, ~is_id)
    zero = torch.zeros_like(id_accepted[:, :1])
    tpr = torch.cat([zero, id_accepted / id_accepted[:, -1:]], 1)
    fpr = torch.cat([zero, ood_accepted / ood_accepted[:, -1:]], 1)
    first_at_95 = (tpr >= 0.95 - 1e-12).double().argmax(1, keepdim=True)
    return torch.stack([_trapezoid(fpr, tpr), _pr_area(id_accepted, ood_accepted),
                        _pr_area(ood_rejected, id_rejected), fpr.gather(1, first_at_95)[:, 0]], 1)


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict:
    """AUROC, AUPR-In, AUPR-Out and FPR@95 of one score on one ID and one OOD set (ood_metrics_batch)."""
    row = ood_metrics_batch(torch.as_tensor(id_scores)[None], torch.as_tensor(ood_scores)[None])[0]
    return dict(zip(OOD_METRICS, row.tolist()))


def ood_bootstrap(id_scores: np.ndarray, ood_scores: np.ndarray, seed: int | np.random.Generator = 0,
                  resamples: int = BOOTSTRAP) -> np.ndarray:
    """(resamples, 4) OOD metrics over stratified resamples: the ID and the OOD images each resampled within their
    own set, so every resample keeps both sizes. The same seed for two scores of the same images pairs them."""
    rng = np.random.default_rng(seed)
    id_picks = torch.from_numpy(rng.integers(0, len(id_scores), (resamples, len(id_scores))))
    ood_picks = torch.from_numpy(rng.integers(0, len(ood_scores), (resamples, len(ood_scores))))
    rows = [ood_metrics_batch(torch.as_tensor(id_scores)[id_picks[start:start + 100]],
                              torch.as_tensor(ood_scores)[ood_picks[start:start + 100]])
            for start in range(0, resamples, 100)]  # 100 resamples at a time bound the memory
    return torch.cat(rows).numpy()


def paired_difference(first: np.ndarray, second: np.ndarray) -> tuple[float, float, float]:
    """95% percentile interval of first - second over paired resamples (the same resampled images), and the
    two-sided bootstrap p-value of no difference: twice the smaller share of resampled differences on either
    side of zero (floored at one resample's share)."""
    differences = first - second
    low, high = np.percentile(differences, [2.5, 97.5])
    share = min(float((differences <= 0).mean()), float((differences >= 0).mean()))
    return float(low), float(high), float(min(1.0, max(2 * share, 1 / len(differences))))


# -- agreement ----------------------------------------------------------------------------------------------

def rank_correlation(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its p-value between two maps of any shape; nan for a flat map (no rank order)."""
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return float("nan"), float("nan")
    result = spearmanr(np.ravel(first), np.ravel(second))
    # scipy builds SignificanceResult with _make_tuple_bunch, which its type hints leave without attributes
    return float(result.statistic), float(result.pvalue)  # pyright: ignore[reportAttributeAccessIssue]


def fisher_exact_p(hits: int, count: int, other_hits: int, other_count: int) -> float:
    """Two-sided p of Fisher's exact test: hits of count in one group against other_hits of other_count in the
    other (1.0 when a group is empty)."""
    from scipy.stats import fisher_exact

    if not count or not other_count:
        return 1.0
    table = [[hits, count - hits], [other_hits, other_count - other_hits]]
    # scipy's stub types the result as a plain tuple; it is a SignificanceResult
    return float(fisher_exact(table).pvalue)  # pyright: ignore[reportAttributeAccessIssue]


def spearman_interval(rho: float, n: int) -> tuple[float, float]:
    """95% interval of Spearman's rho over n pairs: Fisher's z with Bonett and Wright's (2000) variance
    (1 + rho^2 / 2) / (n - 3), which keeps near 95% coverage where Fisher's 1 / (n - 3) for Pearson's r is too
    narrow; nan below 4 pairs or for an undefined rho."""
    if n < 4 or not np.isfinite(rho):
        return float("nan"), float("nan")
    half = 1.959964 * np.sqrt((1 + rho ** 2 / 2) / (n - 3))
    z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def rank_correlations(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Spearman's rho of each pair of maps (N, H, W); nan where a map is flat."""
    return np.array([rank_correlation(a, b)[0] for a, b in zip(first, second)])


def top_overlap(first: np.ndarray, second: np.ndarray, share: float) -> np.ndarray:
    """IoU of the top `share` pixels of each pair of maps (N, H, W)."""
    def top(maps):
        flat = maps.reshape(len(maps), -1)
        return flat >= np.quantile(flat, 1 - share, axis=1, keepdims=True)
    a, b = top(first), top(second)
    return (a & b).sum(1) / np.maximum((a | b).sum(1), 1)


def jaccard(first: set, second: set) -> float:
    return len(first & second) / len(first | second) if first | second else 1.0
