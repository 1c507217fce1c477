"""Study C: calibration and selective prediction of the study A models (calibration.py).

ECE with 15 equal-width bins, NLL and Brier, before and after temperature scaling fitted on the validation
split the training run held out; risk-coverage curves with AURC and E-AURC (Geifman et al. 2019) for three
confidence scores: the maximum softmax probability, the same after temperature scaling, and the centred
logit p-norm score (MaxLogit-pNorm, Cattelan & Silva 2023, reported by Xia et al. 2024 to undo label
smoothing's harm to selective classification), with p chosen on the validation split."""
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize_scalar

from . import atomic, paths
from .checkpoint import load_classifier
from .cli import add_checkpoint_args, add_common_args, checkpoints_from, make_parser, run_main
from .data import load_cifar10, run_split
from .device import pick_precision, resolve_device
from .errors import UserError
from .plots import reliability_figure, risk_coverage_figure, save
from .predict import checkpoint_normalizer, predict_logits

BINS = 15
P_NORMS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
BOOTSTRAP = 1000  # resamples of the test images for the 95% intervals


# -- metrics ------------------------------------------------------------------------------------------------

def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(1, keepdims=True)


def bin_index(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Equal-width bins closed on the right, ((i-1)/bins, i/bins]: a confidence of exactly 1.0 falls in the
    last bin, not one of its own (the convention of Guo et al. 2017)."""
    return np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Per bin: count, mean confidence, accuracy."""
    index = bin_index(confidence, bins)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / count
        accuracy = np.bincount(index, correct.astype(float), bins) / count
    return pd.DataFrame({"bin_low": np.arange(bins) / bins, "bin_high": np.arange(1, bins + 1) / bins,
                         "count": count, "mean_confidence": mean_confidence, "accuracy": accuracy})


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """Sum over bins of (share of images) * |accuracy - mean confidence| = sum |hits - confidences| / n."""
    index = bin_index(confidence, bins)
    gap = np.bincount(index, correct.astype(float), bins) - np.bincount(index, confidence, bins)
    return float(np.abs(gap).sum() / len(confidence))


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


def pnorm_score(logits: np.ndarray, p: float) -> np.ndarray:
    """MaxLogit-pNorm: the largest centred logit divided by the p-norm of the centred logits."""
    centred = logits - logits.mean(1, keepdims=True)
    return centred.max(1) / np.clip(np.linalg.norm(centred, ord=p, axis=1), 1e-12, None)


def risk_coverage(score: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage k/n and selective risk (error rate among the k most confident), k = 1..n; ties broken
    by image order (a stable sort)."""
    order = np.argsort(-score, kind="stable")
    errors = np.cumsum(~correct[order])
    count = np.arange(1, len(score) + 1)
    return count / len(score), errors / count


def aurc(score: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: the mean selective risk over all n coverages."""
    return float(risk_coverage(score, correct)[1].mean())


def excess_aurc(score: np.ndarray, correct: np.ndarray) -> float:
    """E-AURC: AURC minus that of the oracle score that ranks every right answer first."""
    return aurc(score, correct) - aurc(correct.astype(float), correct)


def bootstrap_interval(statistic, *arrays, seed: int = 0, resamples: int = BOOTSTRAP) -> tuple[float, float]:
    """Percentile 95% interval of statistic(*arrays) over resamples of the images."""
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    values = [statistic(*(a[picks] for a in arrays)) for picks in rng.integers(0, n, size=(resamples, n))]
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


# -- the stage ----------------------------------------------------------------------------------------------

def validation_images(checkpoint: dict, data) -> tuple[np.ndarray, np.ndarray]:
    """The validation split the training run held out, rebuilt from its saved config."""
    config = checkpoint.get("config", {})
    if "val_fraction" not in config:
        raise UserError("the checkpoint's config has no val_fraction, so its validation split is unknown; "
                        "retrain it with train.py / improvement.py")
    _, val_idx, _ = run_split(data.train_labels, config["val_fraction"], config.get("max_train_images", 0),
                              config.get("cv_folds", 0), config.get("cv_fold", 0))
    expected = checkpoint.get("split_sizes", {}).get("val")
    if expected is not None and expected != len(val_idx):
        raise UserError(f"the data in --data-dir gives a validation split of {len(val_idx)} images, but the model "
                        f"was trained with {expected}; pass the --data-dir it was trained on")
    return data.train_images[val_idx], data.train_labels[val_idx]


def evaluate_model(tag: str, logits: dict, labels: dict, seed: int) -> tuple[list[dict], list[dict], dict]:
    """Metric rows (before/after temperature scaling), selective-prediction rows, and curves for figures."""
    temperature = fit_temperature(logits["val"], labels["val"])
    test_logits, test_labels = logits["test"], labels["test"]
    val_correct = logits["val"].argmax(1) == labels["val"]
    best_p = min(P_NORMS, key=lambda p: aurc(pnorm_score(logits["val"], p), val_correct))
    correct = test_logits.argmax(1) == test_labels
    metrics, figures = [], {"reliability": {}, "curves": {}}
    for scaling, scale in [("none", 1.0), ("temperature", temperature)]:
        probs = softmax(test_logits / scale)
        confidence = probs.max(1)
        low, high = bootstrap_interval(expected_calibration_error, confidence, correct, seed=seed)
        metrics.append({"model": tag, "scaling": scaling, "temperature": round(scale, 4), "test_images": len(correct),
                        "accuracy": round(float(correct.mean()), 6),
                        "ece": round(expected_calibration_error(confidence, correct), 6),
                        "ece_low": round(low, 6), "ece_high": round(high, 6),
                        "nll": round(negative_log_likelihood(probs, test_labels), 6),
                        "brier": round(brier_score(probs, test_labels), 6)})
        figures["reliability"][scaling] = (reliability(confidence, correct), metrics[-1]["ece"], (low, high))
    scores = {"msp": softmax(test_logits).max(1), "msp_temperature": softmax(test_logits / temperature).max(1),
              f"pnorm_p{best_p}": pnorm_score(test_logits, best_p)}
    selective = []
    for name, score in scores.items():
        low, high = bootstrap_interval(aurc, score, correct, seed=seed)
        selective.append({"model": tag, "score": name, "test_images": len(correct),
                          "aurc": round(aurc(score, correct), 6), "aurc_low": round(low, 6),
                          "aurc_high": round(high, 6), "e_aurc": round(excess_aurc(score, correct), 6)})
        figures["curves"][name] = (*risk_coverage(score, correct), selective[-1]["aurc"], (low, high))
    return metrics, selective, figures


def calibrate(data_dir: Path, checkpoints: dict, out_dir: Path, device_name: str, seed: int) -> None:
    """Both models' metrics and figures into out_dir; checkpoints maps tag -> best_model.pth."""
    device = resolve_device(device_name)
    data = load_cifar10(data_dir)
    out_dir = atomic.ensure_writable_dir(out_dir)
    precision = pick_precision(device)
    metrics, selective, figures = [], [], {}
    for tag in paths.RUNS:
        model, checkpoint = load_classifier(checkpoints[tag], paths.producer(tag), device)
        val_images, val_labels = validation_images(checkpoint, data)
        normalizer = checkpoint_normalizer(checkpoint, device)
        logits = {split: predict_logits(model, torch.from_numpy(images).to(device), normalizer, precision)
                  .double().cpu().numpy() for split, images in [("val", val_images), ("test", data.test_images)]}
        rows, choices, figures[tag] = evaluate_model(tag, logits, {"val": val_labels, "test": data.test_labels},
                                                     seed)
        metrics += rows
        selective += choices
    atomic.write_csv(out_dir / "calibration_metrics.csv", metrics, list(metrics[0]))
    atomic.write_csv(out_dir / "selective_prediction.csv", selective, list(selective[0]))
    save(out_dir / "reliability_diagrams.png",
         reliability_figure({tag: f["reliability"] for tag, f in figures.items()}, len(data.test_labels)))
    save(out_dir / "risk_coverage.png",
         risk_coverage_figure({tag: f["curves"] for tag, f in figures.items()}, len(data.test_labels)))
    for row in metrics:
        print(f"{row['model']:9s} {row['scaling']:12s} T={row['temperature']:<7} ECE {row['ece']:.4f} "
              f"[{row['ece_low']:.4f}, {row['ece_high']:.4f}]  NLL {row['nll']:.4f}  Brier {row['brier']:.4f}  "
              f"(n={row['test_images']})")
    for row in selective:
        print(f"{row['model']:9s} {row['score']:16s} AURC {row['aurc']:.4f} [{row['aurc_low']:.4f}, "
              f"{row['aurc_high']:.4f}]  E-AURC {row['e_aurc']:.4f}")
    print(f"-> {out_dir}")


def main(description: str, argv=None) -> None:
    parser = make_parser(description)
    add_common_args(parser, seed_help="seed of the bootstrap resampling behind the 95%% intervals")
    add_checkpoint_args(parser)
    parser.add_argument("--out-dir", type=Path, default=paths.CALIBRATION_DIR, help="where tables and figures go")
    args = parser.parse_args(argv)
    checkpoints = checkpoints_from(args)
    run_main(lambda: calibrate(args.data_dir, checkpoints, args.out_dir, args.device, args.seed))
