"""Per-image scores of a (N, classes) probability table, defined once for both studies."""
import numpy as np


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
