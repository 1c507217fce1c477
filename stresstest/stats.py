"""Intervals and tests for the comparisons the stages report (scipy's exact binomial machinery)."""
import numpy as np
from scipy.stats import binomtest


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
