"""Study C: calibration and selective prediction of the study A models (calibration.py).

ECE with 15 equal-width bins, NLL and Brier, before and after temperature scaling fitted on the validation
split the training run held out; risk-coverage curves with AURC and E-AURC (Geifman et al. 2019) for three
confidence scores: the maximum softmax probability, the same after temperature scaling, and the centred
logit p-norm score (MaxLogit-pNorm, Cattelan & Silva 2023, reported by Xia et al. 2024 to undo label
smoothing's harm to selective classification), with p chosen on the validation split."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core import atomic, paths
from ..core.checkpoint import load_classifier
from ..core.cli import BothModels, add_checkpoint_args, add_common_args, make_parser, params_from, run_main
from ..core.device import describe_device, resolve_device
from ..core.errors import UserError
from ..core.record import write_record
from ..data.cifar10 import data_summary, load_cifar10, run_split
from ..metrics import (aurc, bootstrap_interval, brier_score, excess_aurc, expected_calibration_error,
                        fit_temperature, negative_log_likelihood, pnorm_score, reliability, risk_coverage, softmax)
from ..nn.inference import REPORTED_PRECISION, checkpoint_normalizer, predict_logits
from ..plots import reliability_figure, risk_coverage_figure, save

P_NORMS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)  # the p of the p-norm score is chosen among these on validation


@dataclass(frozen=True)
class CalibrationParams(BothModels):
    out_dir: Path = paths.CALIBRATION_DIR


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


def calibrate(params: CalibrationParams) -> None:
    """Both models' metrics and figures into out_dir."""
    checkpoints = params.checkpoints
    device = resolve_device(params.device)
    data = load_cifar10(params.data_dir)
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    metrics, selective, figures = [], [], {}
    for tag in paths.RUNS:
        model, checkpoint = load_classifier(checkpoints[tag], paths.producer(tag), device)
        val_images, val_labels = validation_images(checkpoint, data)
        normalizer = checkpoint_normalizer(checkpoint, device)
        logits = {split: predict_logits(model, torch.from_numpy(images).to(device), normalizer)
                  .double().cpu().numpy() for split, images in [("val", val_images), ("test", data.test_images)]}
        rows, choices, figures[tag] = evaluate_model(tag, logits, {"val": val_labels, "test": data.test_labels},
                                                     params.seed)
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
    write_record("calibration", {"calibration": out_dir}, checkpoints, data=data_summary(data),
                 device=describe_device(device), precision=REPORTED_PRECISION, seed=params.seed)


def main(description: str, argv=None) -> None:
    defaults = CalibrationParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help="seed of the bootstrap resampling behind the 95%% intervals")
    add_checkpoint_args(parser)
    parser.add_argument("--out-dir", type=Path, default=defaults.out_dir, help="where tables and figures go")
    args = parser.parse_args(argv)
    run_main(lambda: calibrate(params_from(args, defaults)), args.debug)
