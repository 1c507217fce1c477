"""Label issues: confident learning (cleanlab) on out-of-sample probabilities. Test images: a trained model's
test-set probabilities (out of sample by construction), checked against the CIFAR-10 test labels that reviewers
confirmed as wrong (reference_data/cifar10_test_label_errors.json). Training images (optional): K-fold
cross-validated probabilities, each fold predicted by a short run of the baseline's recipe that never saw it."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .core import paths
from .core.checkpoint import load_classifier
from .core.device import resolve_device
from .data.cifar10 import cross_validation_fold
from .nn.inference import probabilities
from .training import ensure_finished, saved_config

CONFIRMED_ERRORS = Path(__file__).parent / "data" / "cifar10_test_label_errors.json"
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


def flag_label_issues(probs: np.ndarray, labels: np.ndarray, class_names: list[str],
                      split: str = "test") -> pd.DataFrame:
    """One row per image of `split`: cleanlab's label-quality score (self-confidence: the probability of the
    given label; low is suspicious), whether find_label_issues flags it (confident learning, Northcutt et al.
    2021), the model's suggestion and, for the test split, whether it is a confirmed error (empty off the
    official test set). `probs` must be out of sample."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = probs / probs.sum(1, keepdims=True)  # cleanlab checks that rows sum to 1 in float64
    # n_jobs=1: by default cleanlab forks a process pool, and a fork after torch has started its threads can
    # deadlock (it hung a smoke pipeline here); on a test set's probabilities one process takes milliseconds.
    flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    flags = pd.DataFrame({
        f"{split}_index": np.arange(len(labels)), "given_label": [class_names[c] for c in labels],
        "suggested_label": [class_names[c] for c in probs.argmax(1)],
        "label_quality": get_label_quality_scores(labels, probs, method="self_confidence"),
        "label_issue": flagged})
    if split == "test":
        confirmed = on_published_list(labels)
        flags["confirmed_label_error"] = confirmed if confirmed is not None else [""] * len(labels)
    return flags


def ranked_issues(flags: pd.DataFrame) -> pd.DataFrame:
    """The flagged images, most suspicious (lowest label quality) first."""
    issues = flags[flags.label_issue]
    return issues.sort_values(["label_quality", flags.columns[0]], ignore_index=True)


def describe(flags: pd.DataFrame) -> str:
    split = "test" if "test_index" in flags else "training"
    text = f"cleanlab flags {int(flags.label_issue.sum())} of {len(flags)} {split} images as likely mislabelled"
    if split != "test":
        return text
    if (flags.confirmed_label_error == "").all():
        return text + " (the published list of 54 confirmed errors applies to the full official test set only)"
    found = int((flags.label_issue & flags.confirmed_label_error.astype(bool)).sum())
    return text + f"; {found} of them are among the 54 confirmed label errors"


def out_of_fold_probabilities(checkpoint: dict, data, data_dir: Path, folds: int, fold_epochs: int,
                              out_dir: Path, device_name: str) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Probabilities of every training image (the first max_train_images of the checkpoint's run) from the one
    of `folds` cross-validation runs that never trained on it: the checkpoint's recipe, `fold_epochs` epochs
    each, trained (or resumed; finished folds are reused) into out_dir/fold_<k>. Returns the probabilities,
    each image's fold and the run folders."""
    recipe = saved_config(checkpoint["config"], "the baseline checkpoint")
    labels = data.train_labels[:recipe.max_train_images] if recipe.max_train_images else data.train_labels
    device = resolve_device(device_name)
    probs, fold_of = np.zeros((len(labels), len(data.class_names))), np.full(len(labels), -1)
    folders = []
    for fold in range(folds):
        config = dataclasses.replace(recipe, epochs=fold_epochs, cv_folds=folds, cv_fold=fold)
        folder = ensure_finished(config, data_dir, out_dir / f"fold_{fold}", device_name,
                                 f"fold {fold + 1}/{folds}")
        model, fold_checkpoint = load_classifier(folder / paths.BEST_MODEL, "failure_analysis.py --train-folds",
                                                 device)
        held_out = cross_validation_fold(labels, folds, fold)
        images = torch.from_numpy(data.train_images[held_out]).to(device)
        probs[held_out] = probabilities(model, fold_checkpoint, images).cpu().double().numpy()
        fold_of[held_out] = fold
        folders.append(folder)
    return probs, fold_of, folders
