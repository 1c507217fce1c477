"""Stage 2: predict the whole test set once, tabulate every wrong answer and save the confident ones as cases."""
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from . import atomic, paths, plots
from .cases import format_meta, replace_folder
from .checkpoint import load_classifier, read_checkpoint
from .cli import SEED_UNUSED, add_common_args, make_parser, positive_int, run_main, unit_interval
from .data import load_cifar10
from .device import pick_precision, resolve_device
from .errors import UserError
from .label_issues import describe, flag_label_issues, out_of_fold_probabilities, ranked_issues
from .predict import probabilities
from .scores import top_two_margin

DEFAULT_THRESHOLD = 0.9
SMOKE_THRESHOLD = 0.5  # smoke models are barely trained: confident failures at 0.9 are rare
MAX_CASES = 30
SMOKE_MAX_CASES = 12  # every later stage draws, explains and occludes each case: fewer keep the smoke pipeline short
REPRESENTATIVE_COUNT = 3
FOLD_EPOCHS = 10       # --train-folds: each cross-validation run is a short run of the baseline's recipe
SMOKE_FOLD_EPOCHS = 1
LABEL_ISSUES_SHOWN = 24  # images in label_issues.png / train_label_issues.png


def confidence_threshold(given: float | None, smoke: bool) -> float:
    """The --threshold given, else the smoke or the default one."""
    if given is not None:
        return given
    return SMOKE_THRESHOLD if smoke else DEFAULT_THRESHOLD


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


def analyse(data_dir: Path, checkpoint_path: Path, cases_dir: Path, device_name: str, threshold: float,
            max_cases: int) -> None:
    """Tables and case folders of the model's confident failures (replacing cases_dir whole)."""
    device = resolve_device(device_name)
    model, checkpoint = load_classifier(checkpoint_path, paths.producer("baseline"), device)
    data = load_cifar10(data_dir)
    if data.class_names != checkpoint["class_names"]:
        raise UserError(f"{checkpoint_path} was trained on classes {checkpoint['class_names']}, but {data.root} "
                        f"has {data.class_names}; use the matching --data-dir or retrain")
    precision = pick_precision(device)
    probs = probabilities(model, checkpoint, torch.from_numpy(data.test_images).to(device), precision)
    probs = probs.cpu().double().numpy()
    failures = failure_table(probs, data.test_labels, data.class_names)
    flags = flag_label_issues(probs, data.test_labels, data.class_names)
    failures["label_issue"] = flags.label_issue.to_numpy()[failures.test_index]
    accuracy = float((probs.argmax(1) == data.test_labels).mean())
    if not (failures.confidence >= threshold).any():
        highest = f", the most confident at {failures.confidence.max():.3f}" if len(failures) else ""
        raise UserError(f"no wrong answer reached confidence {threshold} ({len(failures)} wrong of "
                        f"{len(data.test_labels)}{highest}), so there are no cases to save; lower --threshold "
                        f"or train longer; {cases_dir} was left as it was")
    cases = failures[failures.confidence >= threshold].head(max_cases).reset_index(drop=True)
    cases.insert(0, "case", [f"case_{i:02d}" for i in range(len(cases))])
    representative = pick_representatives(cases)
    cases["representative"] = [i in representative for i in range(len(cases))]
    confident = int((failures.confidence >= threshold).sum())

    def build(folder: Path) -> None:
        atomic.write_csv(folder / "all_failures.csv", failures.round(6).to_dict("records"), list(failures.columns))
        atomic.write_csv(folder / "cases.csv", cases.round(6).to_dict("records"), list(cases.columns))
        issues = ranked_issues(flags)
        atomic.write_csv(folder / "label_issues.csv", issues.round(6).to_dict("records"), list(issues.columns))
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
                                       "probabilities; label_issues.csv ranks them by self-confidence"}
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


def training_label_issues(data_dir: Path, checkpoint_path: Path, folds: int, fold_epochs: int, out_dir: Path,
                          device_name: str) -> None:
    """Training-set label issues from out-of-fold probabilities (cleanlab), ranked, into out_dir."""
    checkpoint = read_checkpoint(checkpoint_path, paths.producer("baseline"))
    data = load_cifar10(data_dir, quiet=True)
    out_dir = atomic.ensure_writable_dir(out_dir)
    probs, fold_of, folders = out_of_fold_probabilities(checkpoint, data, data_dir, folds, fold_epochs,
                                                        out_dir, device_name)
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


def main(description: str, argv=None) -> None:
    parser = make_parser(description)
    add_common_args(parser, seed_help=SEED_UNUSED)
    parser.add_argument("--checkpoint", type=Path, default=paths.checkpoint_path("baseline"), help="model to analyse")
    parser.add_argument("--cases-dir", type=Path, default=paths.CASES_DIR,
                        help="where the tables and case_XX folders go (replaced on every run)")
    parser.add_argument("--threshold", type=unit_interval,
                        help=f"least confidence of a saved case; later stages read it from {paths.CASES_SUMMARY} "
                             f"(default {DEFAULT_THRESHOLD}; --smoke: {SMOKE_THRESHOLD})")
    parser.add_argument("--max-cases", type=positive_int,
                        help=f"most case folders to save, at most 100 (default {MAX_CASES}; "
                             f"--smoke: {SMOKE_MAX_CASES})")
    parser.add_argument("--train-folds", type=positive_int, metavar="K",
                        help="also flag training-set label issues from K-fold cross-validated probabilities: K "
                             "short runs of the checkpoint's recipe, each predicting the fold it never trained on "
                             "(off by default: K extra trainings)")
    parser.add_argument("--fold-epochs", type=positive_int,
                        help=f"epochs of each cross-validation run (default {FOLD_EPOCHS}; "
                             f"--smoke: {SMOKE_FOLD_EPOCHS})")
    parser.add_argument("--label-issues-dir", type=Path, default=paths.LABEL_ISSUES_DIR,
                        help="where --train-folds puts its fold runs (resumed, reused when finished) and tables")
    parser.add_argument("--smoke", action="store_true",
                        help=f"threshold {SMOKE_THRESHOLD} for barely trained models, at most {SMOKE_MAX_CASES} cases, "
                             f"{SMOKE_FOLD_EPOCHS}-epoch folds")
    args = parser.parse_args(argv)
    max_cases = args.max_cases or (SMOKE_MAX_CASES if args.smoke else MAX_CASES)
    if max_cases > 100:
        parser.error("argument --max-cases: at most 100 (case folders are numbered case_00 to case_99)")
    threshold = confidence_threshold(args.threshold, args.smoke)
    fold_epochs = args.fold_epochs or (SMOKE_FOLD_EPOCHS if args.smoke else FOLD_EPOCHS)

    def run():
        analyse(args.data_dir, args.checkpoint, args.cases_dir, args.device, threshold, max_cases)
        if args.train_folds:
            training_label_issues(args.data_dir, args.checkpoint, args.train_folds, fold_epochs,
                                  args.label_issues_dir, args.device)
    run_main(run)
