"""Study C: calibration and selective prediction of the study A models, or of imported ones (calibration.py).

ECE with 15 equal-width bins, NLL and Brier, before and after temperature scaling fitted on the validation
split the training run held out (a model without one, imported: two-fold cross-fitting on the test images, each
half scored with the value fitted on the other half, never fitted and scored on the same images); risk-coverage
curves with AURC and E-AURC (Geifman et al. 2019) for three
confidence scores: the maximum softmax probability, the same after temperature scaling, and the centred
logit p-norm score (MaxLogit-pNorm, Cattelan & Silva 2023, reported by Xia et al. 2024 to undo label
smoothing's harm to selective classification), with p chosen where the temperature is fitted."""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core import atomic, paths
from ..core.checkpoint import is_imported, load_classifier, model_card
from ..core.cli import (BothModels, add_checkpoint_args, add_common_args, add_flags, flag, make_parser, params_from,
                        run_main)
from ..core.device import describe_device, resolve_device
from ..core.errors import UserError
from ..core.findings import HIGHER, LOWER, NUMBER, PERCENT, Estimate, Headline, Picture, Section, Table, wilson
from ..core.record import write_record
from ..data.cifar10 import data_summary, load_cifar10, run_split, split_validation
from ..metrics import (adaptive_calibration_error, aurc, bootstrap_interval, brier_score,
                        debiased_calibration_error, excess_aurc, expected_calibration_error, fit_temperature,
                        negative_log_likelihood, pnorm_score, recentred_interval, reliability, risk_coverage,
                        softmax)
from ..nn.inference import REPORTED_PRECISION, checkpoint_normalizer, predict_logits
from ..plots import reliability_figure, risk_coverage_figure, save

P_NORMS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)  # the p of the p-norm score is chosen among these on validation


@dataclass(frozen=True)
class CalibrationParams(BothModels):
    out_dir: Path = field(default=paths.CALIBRATION_DIR, metadata=flag("where tables and figures go"))


# -- the stage ----------------------------------------------------------------------------------------------

def has_validation_split(checkpoint: dict) -> bool:
    """A run of the training stages records the validation split it held out; an imported model has none."""
    return not is_imported(checkpoint) and "val_fraction" in checkpoint.get("config", {})


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


@dataclass(frozen=True)
class Fitted:
    """The temperature and the p-norm's p each test image is scored with, and where they were fitted."""
    temperature: np.ndarray  # (N,)
    p: np.ndarray            # (N,)
    fitted_on: str


def fit_on(logits: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """Temperature (NLL) and the p of the p-norm score (least AURC) fitted on these images."""
    correct = logits.argmax(1) == labels
    return fit_temperature(logits, labels), min(P_NORMS, key=lambda p: aurc(pnorm_score(logits, p), correct))


def fitted_on_validation(val_logits: np.ndarray, val_labels: np.ndarray, test_images: int) -> Fitted:
    temperature, p = fit_on(val_logits, val_labels)
    return Fitted(np.full(test_images, temperature), np.full(test_images, p),
                  f"validation split ({len(val_labels)} images)")


def cross_fitted(test_logits: np.ndarray, test_labels: np.ndarray, seed: int) -> Fitted:
    """Two-fold cross-fitting on the test images: stratified halves, each scored with the temperature and p fitted
    on the other half."""
    halves = split_validation(test_labels, 0.5, seed)
    temperature, p, values = np.zeros(len(test_labels)), np.zeros(len(test_labels), int), []
    for fit, score in [halves, halves[::-1]]:
        values.append(fit_on(test_logits[fit], test_labels[fit]))
        temperature[score], p[score] = values[-1]
    shown = " / ".join(f"T {t:.3f}, p {q}" for t, q in values)
    return Fitted(temperature, p, f"two-fold cross-fit on the test images ({shown})")


# Three estimates of the calibration error, each with a bootstrap interval re-centred on it: the ECE over 15
# equal-width bins (Guo et al. 2017, the published convention), over 15 equal-mass bins, and the debiased L2
# error of Kumar et al. 2019 (near zero for a calibrated model, where the binned ECEs stay above zero).
CALIBRATION_ERRORS = {"ece": expected_calibration_error, "ece_equal_mass": adaptive_calibration_error,
                      "debiased_l2_ce": debiased_calibration_error}


def evaluate_model(tag: str, test_logits: np.ndarray, test_labels: np.ndarray, fitted: Fitted,
                   seed: int) -> tuple[list[dict], list[dict], dict]:
    """Metric rows (before/after temperature scaling), selective-prediction rows, and curves for figures."""
    correct = test_logits.argmax(1) == test_labels
    metrics, figures = [], {"reliability": {}, "curves": {}}
    for scaling, scale in [("none", np.ones(len(correct))), ("temperature", fitted.temperature)]:
        probs = softmax(test_logits / scale[:, None])
        confidence = probs.max(1)
        row = {"model": tag, "scaling": scaling, "temperature": round(float(scale.mean()), 4),
               "fitted_on": fitted.fitted_on if scaling == "temperature" else "",
               "test_images": len(correct), "accuracy": round(float(correct.mean()), 6)}
        for name, error in CALIBRATION_ERRORS.items():
            low, high = recentred_interval(error, confidence, correct, seed=seed)
            row |= {name: round(error(confidence, correct), 6), f"{name}_low": round(low, 6),
                    f"{name}_high": round(high, 6)}
        metrics.append(row | {"nll": round(negative_log_likelihood(probs, test_labels), 6),
                              "brier": round(brier_score(probs, test_labels), 6)})
        figures["reliability"][scaling] = (reliability(confidence, correct), row["ece"],
                                           (row["ece_low"], row["ece_high"]))
    pnorm = np.zeros(len(correct))
    for p in np.unique(fitted.p):  # one p, or one per cross-fitted half
        pnorm[fitted.p == p] = pnorm_score(test_logits[fitted.p == p], p)
    scores = {"msp": softmax(test_logits).max(1),
              "msp_temperature": softmax(test_logits / fitted.temperature[:, None]).max(1),
              "pnorm_p" + "/".join(map(str, np.unique(fitted.p))): pnorm}
    selective = []
    for name, score in scores.items():
        low, high = bootstrap_interval(aurc, score, correct, seed=seed)
        selective.append({"model": tag, "score": name, "fitted_on": fitted.fitted_on if name != "msp" else "",
                          "test_images": len(correct), "aurc": round(aurc(score, correct), 6),
                          "aurc_low": round(low, 6), "aurc_high": round(high, 6),
                          "e_aurc": round(excess_aurc(score, correct), 6)})
        figures["curves"][name] = (*risk_coverage(score, correct), selective[-1]["aurc"], (low, high))
    return metrics, selective, figures


def calibrate(params: CalibrationParams) -> None:
    """Both models' metrics and figures into out_dir."""
    checkpoints = params.checkpoints
    device = resolve_device(params.device)
    data = load_cifar10(params.data_dir)
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    metrics, selective, figures, per_image = [], [], {}, []
    cards, temperatures = {}, {}
    for tag, path in checkpoints.items():
        model, checkpoint = load_classifier(path, paths.producer(tag), device)
        cards[tag] = model_card(checkpoint, path)
        normalizer = checkpoint_normalizer(checkpoint, device)

        def logits_of(images):
            return predict_logits(model, torch.from_numpy(images).to(device), normalizer).double().cpu().numpy()
        test_logits = logits_of(data.test_images)
        if has_validation_split(checkpoint):
            val_images, val_labels = validation_images(checkpoint, data)
            fitted = fitted_on_validation(logits_of(val_images), val_labels, len(data.test_labels))
            label = tag
        else:
            fitted = cross_fitted(test_logits, data.test_labels, params.seed)
            label = f"{tag} (temperature cross-fitted on test halves)"
        rows, choices, figures[label] = evaluate_model(tag, test_logits, data.test_labels, fitted, params.seed)
        per_image.append(pd.DataFrame({
            "model": tag, "test_index": np.arange(len(test_logits)),
            "confidence": softmax(test_logits).max(1).round(6),
            "confidence_temperature": softmax(test_logits / fitted.temperature[:, None]).max(1).round(6)}))
        temperatures[tag] = {"temperature": float(fitted.temperature.mean()), "fitted_on": fitted.fitted_on}
        metrics += rows
        selective += choices
    atomic.write_csv(out_dir / "calibration_metrics.csv", metrics, list(metrics[0]))
    atomic.write_csv(out_dir / "selective_prediction.csv", selective, list(selective[0]))
    per_image_table = pd.concat(per_image, ignore_index=True)
    atomic.write_csv(out_dir / "per_image.csv", per_image_table.to_dict("records"), list(per_image_table.columns))
    save(out_dir / "reliability_diagrams.png",
         reliability_figure({tag: f["reliability"] for tag, f in figures.items()}, len(data.test_labels)))
    save(out_dir / "risk_coverage.png",
         risk_coverage_figure({tag: f["curves"] for tag, f in figures.items()}, len(data.test_labels)))
    for row in metrics:
        print(f"{row['model']:9s} {row['scaling']:12s} T={row['temperature']:<7} ECE {row['ece']:.4f} "
              f"[{row['ece_low']:.4f}, {row['ece_high']:.4f}]  equal-mass {row['ece_equal_mass']:.4f}  debiased L2 "
              f"{row['debiased_l2_ce']:.4f}  NLL {row['nll']:.4f}  Brier {row['brier']:.4f}  "
              f"(n={row['test_images']}){'; fitted on ' + row['fitted_on'] if row['fitted_on'] else ''}")
    for row in selective:
        print(f"{row['model']:9s} {row['score']:16s} AURC {row['aurc']:.4f} [{row['aurc_low']:.4f}, "
              f"{row['aurc_high']:.4f}]  E-AURC {row['e_aurc']:.4f}")
    print(f"-> {out_dir}")
    headline, section = findings(metrics, selective, out_dir)
    write_record("calibration", {"calibration": out_dir}, checkpoints, headline=headline, sections=[section],
                 data=data_summary(data), device=describe_device(device), precision=REPORTED_PRECISION,
                 seed=params.seed, models=cards, temperatures=temperatures)


def findings(metrics: list[dict], selective: list[dict], out_dir: Path) -> tuple[list[Headline], Section]:
    """The stage's headline rows (accuracy, ECE before and after temperature scaling, the debiased error, AURC of
    the maximum softmax probability) and its section."""
    def estimate(row: dict, name: str, unit: str = PERCENT) -> Estimate:
        return Estimate(row[name], row[f"{name}_low"], row[f"{name}_high"], unit)

    n = str(metrics[0]["test_images"])
    plain = {row["model"]: row for row in metrics if row["scaling"] == "none"}
    scaled = {row["model"]: row for row in metrics if row["scaling"] == "temperature"}
    msp = {row["model"]: row for row in selective if row["score"] == "msp"}
    headline = [
        Headline("test accuracy (Wilson 95%)",
                 {tag: wilson(round(row["accuracy"] * row["test_images"]), row["test_images"])
                  for tag, row in plain.items()}, n, axis="clean accuracy", better=HIGHER),
        Headline("ECE, 15 equal-width bins (bootstrap 95%)", {tag: estimate(row, "ece") for tag, row in plain.items()},
                 n, axis="ECE", better=LOWER),
        Headline("ECE after temperature scaling", {tag: estimate(row, "ece") for tag, row in scaled.items()}, n,
                 "; ".join(f"{tag}: T {row['temperature']}, fitted on {row['fitted_on']}"
                           for tag, row in scaled.items())),
        Headline("debiased L2 calibration error (Kumar et al. 2019)",
                 {tag: estimate(row, "debiased_l2_ce") for tag, row in plain.items()}, n),
        Headline("AURC, maximum softmax probability (bootstrap 95%)",
                 {tag: estimate(row, "aurc", NUMBER) for tag, row in msp.items()}, n, axis="AURC", better=LOWER)]
    table = Table(["model", "scaling", "T", "ECE, 15 bins", "ECE, equal mass", "debiased L2 error", "NLL", "Brier"],
                  [[row["model"], row["scaling"], row["temperature"], estimate(row, "ece"),
                    estimate(row, "ece_equal_mass"), estimate(row, "debiased_l2_ce"), row["nll"], row["brier"]]
                   for row in metrics],
                  note=f"n = {n} test images; bootstrap 95% intervals re-centred on each estimate. The binned ECEs "
                       "are biased upward (sampling noise in every bin); the debiased L2 error subtracts it and "
                       "comes down to zero for a calibrated model.")
    risks = Table(["model", "score", "AURC", "E-AURC"],
                  [[row["model"], row["score"], estimate(row, "aurc", NUMBER), row["e_aurc"]] for row in selective],
                  note="Selective prediction: area under the risk-coverage curve (lower is better), and its excess "
                       "over the oracle that ranks every right answer first.")
    section = Section("Calibration and selective prediction",
                      lead=Picture(out_dir / "reliability_diagrams.png", "reliability diagrams"),
                      tables=[table, risks], pictures=[Picture(out_dir / "risk_coverage.png", "risk-coverage curves")],
                      links=[out_dir / "calibration_metrics.csv", out_dir / "selective_prediction.csv",
                             out_dir / "per_image.csv"])
    return headline, section


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = CalibrationParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help="seed of the bootstrap resampling behind the 95%% intervals and of "
                                      "the test halves a model without a validation split is cross-fitted on")
    add_checkpoint_args(parser)
    add_flags(parser, defaults)
    args = parser.parse_args(argv)
    run_main(lambda: calibrate(params_from(args, defaults)), args.debug)
