"""Label issues among the test images: confident learning (cleanlab) on a trained model's test-set probabilities,
which are out of sample by construction, checked against the CIFAR-10 test labels that reviewers confirmed
as wrong (reference_data/cifar10_test_label_errors.json)."""
import json
from pathlib import Path

import numpy as np
import pandas as pd

CONFIRMED_ERRORS = Path(__file__).parent / "reference_data" / "cifar10_test_label_errors.json"
OFFICIAL_TEST_SIZE = 10_000


def confirmed_label_errors() -> dict[int, int]:
    """Official test index -> the given (wrong) label, for the 54 confirmed errors."""
    given = json.loads(CONFIRMED_ERRORS.read_text())["given_label"]
    return {int(index): label for index, label in given.items()}


def on_published_list(labels: np.ndarray) -> np.ndarray | None:
    """Which test images are confirmed label errors, or None when the test set is not the official one (the
    published indices say nothing about a subset): it must have 10,000 images with the given labels there."""
    errors = confirmed_label_errors()
    index = np.array(list(errors))
    if len(labels) != OFFICIAL_TEST_SIZE or not np.array_equal(labels[index], list(errors.values())):
        return None
    return np.isin(np.arange(len(labels)), index)


def flag_label_issues(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per test image: cleanlab's label-quality score (self-confidence: the probability of the given
    label; low is suspicious), whether find_label_issues flags it (confident learning, Northcutt et al. 2021),
    the model's suggestion, and whether it is a confirmed error (empty off the official test set)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = probs / probs.sum(1, keepdims=True)  # cleanlab checks that rows sum to 1 in float64
    # n_jobs=1: by default cleanlab forks a process pool, and a fork after torch has started its threads can
    # deadlock (it hung a smoke pipeline here); on a test set's probabilities one process takes milliseconds.
    flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    confirmed = on_published_list(labels)
    return pd.DataFrame({
        "test_index": np.arange(len(labels)), "given_label": [class_names[c] for c in labels],
        "suggested_label": [class_names[c] for c in probs.argmax(1)],
        "label_quality": get_label_quality_scores(labels, probs, method="self_confidence"),
        "label_issue": flagged,
        "confirmed_label_error": confirmed if confirmed is not None else [""] * len(labels)})


def ranked_issues(flags: pd.DataFrame) -> pd.DataFrame:
    """The flagged images, most suspicious (lowest label quality) first."""
    issues = flags[flags.label_issue]
    return issues.sort_values(["label_quality", "test_index"], ignore_index=True)


def describe(flags: pd.DataFrame) -> str:
    flagged = int(flags.label_issue.sum())
    text = f"cleanlab flags {flagged} of {len(flags)} test images as likely mislabelled"
    if (flags.confirmed_label_error == "").all():
        return text + " (the published list of 54 confirmed errors applies to the full official test set only)"
    found = int((flags.label_issue & flags.confirmed_label_error.astype(bool)).sum())
    return text + f"; {found} of them are among the 54 confirmed label errors"
