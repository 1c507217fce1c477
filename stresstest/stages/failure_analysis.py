"""Stage 2 (failure_analysis.py): predict the whole test set once, tabulate every wrong answer and save the
confident ones as cases; flag label issues among the test images (and, optionally, the training images)."""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .. import plots
from ..core import atomic, paths
from ..core.cases import format_meta, replace_folder
from ..core.checkpoint import load_classifier, model_card, read_checkpoint, require_training_run
from ..core.cli import (SEED_UNUSED, Common, add_common_args, add_flags, flag, make_parser, non_negative_int,
                         params_from, positive_int, run_main, unit_interval)
from ..core.device import describe_device, resolve_device
from ..core.errors import UserError
from ..core.findings import Picture, Section, Tile, frame_table
from ..core.record import write_record
from ..data.cifar10 import data_summary, load_cifar10
from ..label_issues import describe, flag_label_issues, out_of_fold_probabilities, ranked_issues
from ..metrics import top_two_margin
from ..nn.inference import REPORTED_PRECISION, probabilities

REPRESENTATIVE_COUNT = 3
LABEL_ISSUES_SHOWN = 24  # images in label_issues.png / train_label_issues.png
MOST_CASES = 100         # case folders are numbered case_00 to case_99


@dataclass(frozen=True)
class FailureParams(Common):
    checkpoint: Path = field(default=paths.checkpoint_path("baseline"), metadata=flag("model to analyse"))
    cases_dir: Path = field(default=paths.CASES_DIR, metadata=flag(
        "where the tables and case_XX folders go (replaced on every run)"))
    threshold: float = field(default=0.9, metadata=flag(
        f"least confidence of a saved case; later stages read it from {paths.CASES_SUMMARY}", unit_interval))
    max_cases: int = field(default=30, metadata=flag(f"most case folders to save, at most {MOST_CASES}",
                                                     positive_int))
    train_folds: int = field(default=0, metadata=flag(
        "also flag training-set label issues from K-fold cross-validated probabilities: K short runs of the "
        "checkpoint's recipe, each predicting the fold it never trained on (0 skips it: K extra trainings)",
        non_negative_int, metavar="K"))
    fold_epochs: int = field(default=10, metadata=flag("epochs of each cross-validation run", positive_int))
    label_issues_dir: Path = field(default=paths.LABEL_ISSUES_DIR, metadata=flag(
        "where --train-folds puts its fold runs (resumed, reused when finished) and tables"))


# --smoke: smoke models are barely trained (about 28% accurate), so confident failures at 0.9 are rare: at 0.4 four
# smoke runs had 21-114 wrong answers, at 0.5 as few as 5 (docs/decisions.md); every later stage draws,
# explains, occludes and attacks each case, so few cases keep the smoke pipeline short (12 cases took 37 of the
# adversarial stage's 116 s on one thread, 2026-12-07).
SMOKE = FailureParams(threshold=0.4, max_cases=6, fold_epochs=1)


def failure_table(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per wrong prediction, most confident first."""
    order = np.argsort(-probs, axis=1, kind="stable")  # ties resolve to the lower class, as argmax does
    predicted = order[:, 0]
    confidence = probs[np.arange(len(probs)), predicted]
    wrong = np.flatnonzero(predicted != labels)
    table = pd.DataFrame({
        "test_index": wrong,
        "true_label": [class_names[c] for c in labels[wrong]],
        "predicted_label": [class_names[c] for c in predicted[wrong]],
        "confidence": confidence[wrong],
        "margin": top_two_margin(probs[wrong]),
        "true_class_probability": probs[wrong, labels[wrong]],
        "true_class_rank": (order[wrong] == labels[wrong, None]).argmax(1) + 1,
    })
    return table.sort_values(["confidence", "test_index"], ascending=[False, True], ignore_index=True)


def pick_representatives(cases: pd.DataFrame, count: int = REPRESENTATIVE_COUNT) -> list[int]:
    """Row positions of `count` representative cases.

    Rule: walk the cases from the most confident down and take a case when its true class and its
    predicted class are both new among the picks (distinct confusions, no class seen twice); if that
    leaves fewer than `count`, fill with the next cases whose (true, predicted) pair is new, then
    with the most confident remaining cases."""
    picks: list[int] = []
    rules = [
        lambda row, chosen: all(row.true_label not in {c.true_label, c.predicted_label} and
                                row.predicted_label not in {c.true_label, c.predicted_label} for c in chosen),
        lambda row, chosen: all((row.true_label, row.predicted_label) != (c.true_label, c.predicted_label)
                                for c in chosen),
        lambda row, chosen: True,
    ]
    for rule in rules:
        for position, row in enumerate(cases.itertuples()):
            if len(picks) == count:
                return picks
            if position not in picks and rule(row, [cases.iloc[p] for p in picks]):
                picks.append(position)
    return picks


def save_label_issues_figure(path: Path, issues: pd.DataFrame, images: np.ndarray, split: str) -> None:
    """The most suspicious flagged images of `split` (images: all of them, NCHW uint8) in one figure; none
    flagged, no figure (and no stale one)."""
    if not len(issues):
        path.unlink(missing_ok=True)
        return
    shown = images[issues[f"{split}_index"].head(LABEL_ISSUES_SHOWN)].transpose(0, 2, 3, 1)
    plots.save(path, plots.label_issues_figure(shown, issues, len(images), split))


def analyse(params: FailureParams) -> dict:
    """Tables and case folders of the model's confident failures (replacing cases_dir whole); returns what the
    record says of them."""
    checkpoint_path, cases_dir, threshold = params.checkpoint, params.cases_dir, params.threshold
    device = resolve_device(params.device)
    model, checkpoint = load_classifier(checkpoint_path, paths.producer("baseline"), device)
    data = load_cifar10(params.data_dir)
    if data.class_names != checkpoint["class_names"]:
        raise UserError(f"{checkpoint_path} was trained on classes {checkpoint['class_names']}, but {data.root} "
                        f"has {data.class_names}; use the matching --data-dir or retrain")
    probs = probabilities(model, checkpoint, torch.from_numpy(data.test_images).to(device)).cpu().double().numpy()
    failures = failure_table(probs, data.test_labels, data.class_names)
    flags = flag_label_issues(probs, data.test_labels, data.class_names)
    failures["label_issue"] = flags.label_issue.to_numpy()[failures.test_index]
    accuracy = float((probs.argmax(1) == data.test_labels).mean())
    if not (failures.confidence >= threshold).any():
        highest = f", the most confident at {failures.confidence.max():.3f}" if len(failures) else ""
        raise UserError(f"no wrong answer reached confidence {threshold} ({len(failures)} wrong of "
                        f"{len(data.test_labels)}{highest}), so there are no cases to save; lower --threshold "
                        f"or train longer; {cases_dir} was left as it was")
    cases = failures[failures.confidence >= threshold].head(params.max_cases).reset_index(drop=True)
    cases.insert(0, "case", [f"case_{i:02d}" for i in range(len(cases))])
    representative = pick_representatives(cases)
    cases["representative"] = [i in representative for i in range(len(cases))]
    confident = int((failures.confidence >= threshold).sum())
    issues = ranked_issues(flags)

    def build(folder: Path) -> None:
        atomic.write_csv(folder / "all_failures.csv", failures.round(6).to_dict("records"), list(failures.columns))
        atomic.write_csv(folder / "cases.csv", cases.round(6).to_dict("records"), list(cases.columns))
        atomic.write_csv(folder / "label_issues.csv", issues.round(6).to_dict("records"), list(issues.columns))
        # every test image's label quality, flagged or not: stress_profile.py joins it by test index
        atomic.write_csv(folder / "label_quality.csv", flags.round(6).to_dict("records"), list(flags.columns))
        save_label_issues_figure(folder / "label_issues.png", issues, data.test_images, "test")
        summary = {"checkpoint": str(checkpoint_path), "checkpoint_epoch": checkpoint.get("epoch", ""),
                   "test_images": len(data.test_labels), "test_accuracy": round(accuracy, 6),
                   "wrong_predictions": len(failures), "threshold": threshold,
                   "confident_failures": confident, "saved_cases": len(cases),
                   "representative_cases": [cases.case[i] for i in representative],
                   "representative_rule": "most confident first; distinct true and predicted classes, then "
                                          "distinct confusion pairs, then confidence",
                   "label_issues": int(flags.label_issue.sum()),
                   "label_issue_rule": "cleanlab find_label_issues (prune_by_noise_rate) on this model's test-set "
                                       "probabilities; label_issues.csv ranks them by self-confidence",
                   "precision": REPORTED_PRECISION}
        atomic.write_json(folder / paths.CASES_SUMMARY, summary)
        for position, row in cases.iterrows():
            case_dir = folder / row.case
            case_dir.mkdir()
            Image.fromarray(data.test_images[row.test_index].transpose(1, 2, 0)).save(case_dir / "image.png")
            (case_dir / "meta.txt").write_text(format_meta({
                "case": row.case, "test_index": row.test_index, "true_label": row.true_label,
                "predicted_label": row.predicted_label, "confidence": f"{row.confidence:.6f}",
                "margin": f"{row.margin:.6f}", "true_class_probability": f"{row.true_class_probability:.6f}",
                "true_class_rank": row.true_class_rank, "representative": "yes" if row.representative else "no",
                "label_issue": "yes" if row.label_issue else "no",
                "threshold": threshold, "checkpoint": checkpoint_path}))

    replace_folder(cases_dir, build)
    print(f"test accuracy {accuracy:.4f}: {len(failures)} wrong, {confident} at confidence >= {threshold}; "
          f"saved {len(cases)} cases to {cases_dir}")
    print(f"{describe(flags)}; {int(cases.label_issue.sum())} of the saved cases are flagged -> "
          f"{cases_dir / 'label_issues.csv'}")
    if representative:
        print("representative: " + ", ".join(
            f"{cases.case[i]} ({cases.true_label[i]} -> {cases.predicted_label[i]}, {cases.confidence[i]:.3f})"
            for i in representative))
    section = Section(
        f"Confident failures of the {checkpoint.get('arch', 'baseline')} baseline",
        notes=[f"{confident} wrong answers at confidence >= {threshold} of {len(data.test_labels)} test images "
               f"(accuracy {accuracy:.1%}); {len(cases)} saved; representative: "
               f"{', '.join(cases.case[i] for i in representative)} (most confident first; distinct true and "
               f"predicted classes, then distinct confusion pairs). {describe(flags)} (cleanlab, on this model's "
               "test-set probabilities). Open a case for the figures later stages made of it (Grad-CAM of each "
               "model, occlusion)."],
        gallery=[Tile(row.case, cases_dir / row.case,
                      f"{row.case} #{row.test_index}: {row.true_label} -> {row.predicted_label} "
                      f"({row.confidence:.1%})", "label issue?" if row.label_issue else "")
                 for row in cases.itertuples()],
        tables=[frame_table(issues.head(LABEL_ISSUES_SHOWN).round(4),
                            "Most suspicious test labels (cleanlab, lowest label quality first):")],
        pictures=[Picture(cases_dir / "label_issues.png", "most suspicious test labels")],
        links=[cases_dir / "all_failures.csv", cases_dir / "cases.csv", cases_dir / "label_issues.csv"])
    return {"data": data_summary(data), "device": describe_device(device), "test_accuracy": round(accuracy, 6),
            "models": {"baseline": model_card(checkpoint, checkpoint_path)}, "sections": [section],
            "confident_failures": confident, "saved_cases": len(cases), "threshold": threshold}


def training_label_issues(params: FailureParams) -> Section:
    """Training-set label issues from out-of-fold probabilities (cleanlab), ranked, into label_issues_dir."""
    checkpoint_path, folds, fold_epochs = params.checkpoint, params.train_folds, params.fold_epochs
    checkpoint = read_checkpoint(checkpoint_path, paths.producer("baseline"))
    require_training_run(checkpoint, checkpoint_path, "--train-folds", paths.producer("baseline"))
    data = load_cifar10(params.data_dir, quiet=True)
    out_dir = atomic.ensure_writable_dir(params.label_issues_dir)
    probs, fold_of, folders = out_of_fold_probabilities(checkpoint, data, params.data_dir, folds, fold_epochs,
                                                        out_dir, params.device)
    labels = data.train_labels[:len(probs)]
    flags = flag_label_issues(probs, labels, data.class_names, split="train")
    flags.insert(1, "fold", fold_of)
    issues = ranked_issues(flags)
    atomic.write_csv(out_dir / "train_label_issues.csv", issues.round(6).to_dict("records"), list(issues.columns))
    save_label_issues_figure(out_dir / "train_label_issues.png", issues, data.train_images[:len(labels)], "train")
    accuracy = float((probs.argmax(1) == labels).mean())
    atomic.write_json(out_dir / paths.LABEL_ISSUES_SUMMARY, {
        "checkpoint": str(checkpoint_path), "training_images": len(labels), "folds": folds,
        "fold_epochs": fold_epochs, "fold_runs": [str(folder) for folder in folders],
        "out_of_fold_accuracy": round(accuracy, 6), "label_issues": int(flags.label_issue.sum()),
        "rule": "cleanlab find_label_issues (prune_by_noise_rate) on out-of-fold probabilities; "
                "train_label_issues.csv ranks the flagged images by self-confidence"})
    print(f"{describe(flags)} (out-of-fold accuracy {accuracy:.4f}, {folds} folds of {fold_epochs} epochs) -> "
          f"{out_dir / 'train_label_issues.csv'}")
    return Section(
        "Training-set label issues (K-fold cross-validation, cleanlab)",
        lead=Picture(out_dir / "train_label_issues.png", "most suspicious training labels"),
        notes=[f"{int(flags.label_issue.sum())} of {len(labels)} training images flagged from out-of-fold "
               f"probabilities ({folds} folds of {fold_epochs} epochs; out-of-fold accuracy {accuracy:.1%}: the "
               "flags are only as good as these runs)."],
        tables=[frame_table(issues.head(LABEL_ISSUES_SHOWN).round(4), "Most suspicious first:")],
        links=[out_dir / "train_label_issues.csv"])


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = FailureParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help=SEED_UNUSED)
    add_flags(parser, defaults, SMOKE)
    parser.add_argument("--smoke", action="store_true", help="a lower threshold and fewer cases for barely trained "
                                                             "models, 1-epoch folds")
    args = parser.parse_args(argv)
    params = params_from(args, defaults, SMOKE)
    if params.max_cases > MOST_CASES:
        parser.error(f"argument --max-cases: at most {MOST_CASES} (case folders are numbered case_00 to case_99)")
    if params.train_folds == 1:
        parser.error("argument --train-folds: at least 2 folds (or 0 to skip)")

    def run():
        details = analyse(params)
        outputs = {"cases": params.cases_dir}
        if params.train_folds:
            details["sections"].append(training_label_issues(params))
            outputs["label_issues"] = params.label_issues_dir
        write_record("failure_analysis", outputs, {"checkpoint": params.checkpoint}, **details,
                     precision=REPORTED_PRECISION, train_folds=params.train_folds)
    run_main(run, args.debug)
