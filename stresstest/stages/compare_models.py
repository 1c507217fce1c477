"""Stage 5 (compare_models.py): the baseline and the label-smoothed model on the same failure cases and on the whole
test set."""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core import atomic, paths
from ..core.cases import read_case_summary, read_cases
from ..core.checkpoint import is_imported, load_classifier, model_card
from ..core.cli import (SEED_UNUSED, BothModels, add_checkpoint_args, add_common_args, add_flags, flag, make_parser,
                        params_from, run_main)
from ..core.device import describe_device, resolve_device
from ..core.errors import UserError
from ..core.findings import NUMBER, PERCENT, Estimate, Headline, Picture, Section, Table, wilson
from ..core.record import write_record
from ..data.cifar10 import data_summary, load_cifar10
from ..metrics import (expected_calibration_error, mcnemar_exact, negative_log_likelihood,
                        wrong_among_most_confident)
from ..nn.inference import REPORTED_PRECISION, probabilities
from ..plots import confusion_figure, save
from ..training import RUN_ONLY_SETTINGS, model_settings

CASE_COLUMNS = ["case", "test_index", "true_label", "baseline_pred", "baseline_confidence", "improved_pred",
                "improved_confidence", "baseline_true_prob", "improved_true_prob", "fixed", "representative"]


def check_compatible(baseline: dict, improved: dict, files: tuple[Path, Path]) -> None:
    """Two models are compared on the same test images, so they need the same classes (architecture, preprocessing
    and origin may differ: each model is fed as it expects)."""
    if baseline["class_names"] != improved["class_names"]:
        raise UserError(f"{files[0]} and {files[1]} differ in their classes ({baseline['class_names']} vs "
                        f"{improved['class_names']}); the comparison needs the same classes in the same order")


def describe_model(checkpoint: dict, other: dict) -> str:
    """An imported model as its import recorded it: architecture, weights file, and its preprocessing where the
    other model is fed differently."""
    imported = checkpoint["imported"]
    same_input = (checkpoint["normalization"], checkpoint.get("input_size")) == \
        (other["normalization"], other.get("input_size"))
    return f"{checkpoint['arch']} ({imported['weights']}{'' if same_input else ', ' + imported['preprocessing']})"


def describe_change(baseline: dict, improved: dict) -> str:
    """What tells the two models apart: for two runs of the training stages, the settings that differ in their
    training configs (a setting one of them predates counts as what that run did; a checkpoint without a config
    leaves every setting unknown: None); where a model was imported, the two models as their records name them."""
    if is_imported(baseline) or is_imported(improved):
        def named(checkpoint, other):
            return describe_model(checkpoint, other) if is_imported(checkpoint) else \
                f"{checkpoint['arch']} trained here (label_smoothing {checkpoint['config'].get('label_smoothing')})"
        return f"{named(baseline, improved)} -> {named(improved, baseline)}"
    baseline_config, improved_config = baseline.get("config", {}), improved.get("config", {})
    if baseline_config and improved_config:
        baseline_config, improved_config = model_settings(baseline_config), model_settings(improved_config)
    keys = sorted((set(baseline_config) | set(improved_config)) - RUN_ONLY_SETTINGS)
    changes = [f"{key} {baseline_config.get(key)} -> {improved_config.get(key)}" for key in keys
               if baseline_config.get(key) != improved_config.get(key)]
    return ", ".join(changes) or "no change in the training config"


def confident_failure_changes(labels, base_probs, impr_probs, threshold: float) -> pd.DataFrame:
    """Every test image that is a confident failure (wrong at confidence >= threshold) for either model."""
    def confident_wrong(probs):
        return (probs.argmax(1) != labels) & (probs.max(1) >= threshold)

    base, impr = confident_wrong(base_probs), confident_wrong(impr_probs)
    index = np.flatnonzero(base | impr)
    impr_right = impr_probs.argmax(1)[index] == labels[index]
    status = np.where(base[index] & impr[index], "kept",
                      np.where(base[index], np.where(impr_right, "fixed", "less_confident_wrong"), "new"))
    return pd.DataFrame({"test_index": index, "status": status})


@dataclass(frozen=True)
class CompareParams(BothModels):
    cases_dir: Path = field(default=paths.CASES_DIR, metadata=flag(
        f"case_XX folders and {paths.CASES_SUMMARY} (its confidence threshold is used) written by "
        f"{paths.CASES_PRODUCER}"))
    out_dir: Path = field(default=paths.COMPARISON_DIR, metadata=flag("where tables go"))


def compare(params: CompareParams) -> None:
    baseline_path, improved_path = params.baseline, params.improved
    if len(params.checkpoints) < 2:
        raise UserError("compare_models.py compares two models: give --improved a checkpoint")
    device = resolve_device(params.device)
    cases = read_cases(params.cases_dir)
    threshold = float(read_case_summary(params.cases_dir)["threshold"])  # decided by the failure analysis
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    baseline, base_ckpt = load_classifier(baseline_path, paths.producer("baseline"), device)
    improved, impr_ckpt = load_classifier(improved_path, paths.producer("improved"), device)
    check_compatible(base_ckpt, impr_ckpt, (baseline_path, improved_path))
    change = describe_change(base_ckpt, impr_ckpt)
    data = load_cifar10(params.data_dir)
    class_names, labels = base_ckpt["class_names"], data.test_labels
    images = torch.from_numpy(data.test_images).to(device)
    base_probs = probabilities(baseline, base_ckpt, images).cpu().double().numpy()
    impr_probs = probabilities(improved, impr_ckpt, images).cpu().double().numpy()

    rows = []
    for case in cases:
        i = int(case["test_index"])
        if i >= len(labels) or class_names[labels[i]] != case["true_label"] or \
                class_names[base_probs[i].argmax()] != case.get("predicted_label"):
            raise UserError(f"{case['path']} does not match {baseline_path} on this data (made from another "
                            f"checkpoint or data set); run {paths.CASES_PRODUCER} again")
        b, m = base_probs[i].argmax(), impr_probs[i].argmax()
        rows.append({"case": case["case"], "test_index": i, "true_label": case["true_label"],
                     "baseline_pred": class_names[b], "baseline_confidence": round(base_probs[i, b], 6),
                     "improved_pred": class_names[m], "improved_confidence": round(impr_probs[i, m], 6),
                     "baseline_true_prob": round(base_probs[i, labels[i]], 6),
                     "improved_true_prob": round(impr_probs[i, labels[i]], 6), "fixed": int(m == labels[i]),
                     "representative": case.get("representative", "no")})
    table_of_cases = pd.DataFrame(rows, columns=CASE_COLUMNS)
    atomic.write_csv(out_dir / "comparison_results.csv", table_of_cases.to_dict("records"), CASE_COLUMNS)

    changes = confident_failure_changes(labels, base_probs, impr_probs, threshold)
    changes["true_label"] = [class_names[labels[i]] for i in changes.test_index]
    for name, probs in [("baseline", base_probs), ("improved", impr_probs)]:
        changes[f"{name}_pred"] = [class_names[probs[i].argmax()] for i in changes.test_index]
        changes[f"{name}_confidence"] = [round(probs[i].max(), 6) for i in changes.test_index]
    atomic.write_csv(out_dir / "confident_failures.csv", changes.to_dict("records"), list(changes.columns))

    # the fair count: each model's most confident answers, as many as the baseline gives at the threshold
    most_confident = int((base_probs.max(1) >= threshold).sum())

    def metrics(probs):
        predicted = probs.argmax(1)
        return {"accuracy": (predicted == labels).mean(), "nll": negative_log_likelihood(probs, labels),
                "ece": expected_calibration_error(probs.max(1), predicted == labels),
                "mean_confidence": probs.max(1).mean(),
                "confident_failures": int(((predicted != labels) & (probs.max(1) >= threshold)).sum()),
                "wrong_among_most_confident": wrong_among_most_confident(probs, labels, most_confident)}

    base_m, impr_m = metrics(base_probs), metrics(impr_probs)
    counts = changes.status.value_counts()
    summary = [{"metric": k, "baseline": round(float(base_m[k]), 6), "improved": round(float(impr_m[k]), 6),
                "change": round(float(impr_m[k] - base_m[k]), 6)} for k in base_m]
    summary += [{"metric": f"confident_failures_{status}", "baseline": "", "improved": "",
                 "change": int(counts.get(status, 0))} for status in ["fixed", "kept", "less_confident_wrong", "new"]]
    base_right, impr_right = base_probs.argmax(1) == labels, impr_probs.argmax(1) == labels
    accuracy = {"baseline": wilson(int(base_right.sum()), len(labels)),
                "improved": wilson(int(impr_right.sum()), len(labels))}
    summary += [{"metric": f"accuracy_wilson95_{side}", "baseline": round(getattr(accuracy["baseline"], side), 6),
                 "improved": round(getattr(accuracy["improved"], side), 6), "change": ""}
                for side in ["low", "high"]]
    only_base, only_impr, p_value = mcnemar_exact(base_right, impr_right)
    summary += [{"metric": "right_only_for_baseline", "baseline": "", "improved": "", "change": only_base},
                {"metric": "right_only_for_improved", "baseline": "", "improved": "", "change": only_impr},
                {"metric": "mcnemar_exact_p", "baseline": "", "improved": "", "change": round(p_value, 6)}]
    summary.append({"metric": "change", "baseline": "", "improved": "", "change": change})
    summary.append({"metric": "threshold", "baseline": "", "improved": "", "change": threshold})
    summary.append({"metric": "most_confident_answers", "baseline": most_confident, "improved": most_confident,
                    "change": ""})
    atomic.write_csv(out_dir / "test_set_summary.csv", summary, ["metric", "baseline", "improved", "change"])
    save(out_dir / "confusion_matrices.png", confusion_figure(
        labels, {"baseline": base_probs.argmax(1), f"improved ({change})": impr_probs.argmax(1)}, class_names))

    print(f"change: {change}")
    print(f"cases: {int(table_of_cases.fixed.sum())} of {len(table_of_cases)} baseline failures are right after the "
          f"change -> {out_dir / 'comparison_results.csv'}")
    print(f"test set ({len(labels)} images): accuracy {base_m['accuracy']:.4f} "
          f"[{accuracy['baseline'].low:.4f}, {accuracy['baseline'].high:.4f}] -> {impr_m['accuracy']:.4f} "
          f"[{accuracy['improved'].low:.4f}, {accuracy['improved'].high:.4f}] (Wilson 95%; McNemar exact p "
          f"{p_value:.3g}: {only_base} right only before, {only_impr} only after), "
          f"NLL {base_m['nll']:.4f} -> {impr_m['nll']:.4f}; confident failures (>= {threshold}) "
          f"{base_m['confident_failures']} -> {impr_m['confident_failures']}: {counts.get('fixed', 0)} fixed, "
          f"{counts.get('kept', 0)} kept, {counts.get('less_confident_wrong', 0)} still wrong but less confident, "
          f"{counts.get('new', 0)} new")
    print(f"fair to label smoothing: wrong among each model's {most_confident} most confident answers "
          f"{base_m['wrong_among_most_confident']} -> {impr_m['wrong_among_most_confident']}, "
          f"ECE {base_m['ece']:.4f} -> {impr_m['ece']:.4f}")
    n = str(len(labels))
    fair = f"N = {most_confident}: as many as the baseline gives at the threshold (label smoothing's target is 0.91)"
    headline = [
        Headline("McNemar's exact test: images right only for each model",
                 {"baseline": Estimate(only_base, unit=NUMBER), "improved": Estimate(only_impr, unit=NUMBER)}, n,
                 f"p = {p_value:.2g}"),
        *(Headline(figure, {"baseline": Estimate(base_m[key], unit=NUMBER),
                            "improved": Estimate(impr_m[key], unit=NUMBER)}, n, note)
          for key, figure, note in [("nll", "test NLL", ""),
                                    ("confident_failures", f"wrong answers at confidence >= {threshold}", ""),
                                    ("wrong_among_most_confident", "wrong among the N most confident answers",
                                     fair)])]
    table = Table(["metric", "baseline", "improved", "change"],
                  [["accuracy (Wilson 95%)", accuracy["baseline"], accuracy["improved"],
                    Estimate(impr_m["accuracy"] - base_m["accuracy"])],
                   *([name, Estimate(base_m[key], unit=unit), Estimate(impr_m[key], unit=unit),
                      Estimate(impr_m[key] - base_m[key], unit=unit)]
                     for key, name, unit in [("nll", "NLL", NUMBER), ("ece", "ECE, 15 bins", PERCENT),
                                             ("mean_confidence", "mean confidence", PERCENT),
                                             ("confident_failures", f"wrong at confidence >= {threshold}", NUMBER),
                                             ("wrong_among_most_confident", "wrong among the N most confident",
                                              NUMBER)]),
                   ["right only for this model (McNemar)", only_base, only_impr, f"p = {p_value:.2g}"]],
                  note=f"The change: {change}. One seed per model (seeds.py has the spread over seeds); {fair}.")
    statuses = Table(["fixed", "kept", "still wrong, less confident", "new"],
                     [[int(counts.get(status, 0)) for status in ["fixed", "kept", "less_confident_wrong", "new"]]],
                     note=f"Confident failures (>= {threshold}) of either model, by what the change did to them:")
    section = Section("Results on the test set: baseline against improved",
                      lead=Picture(out_dir / "confusion_matrices.png", "confusion matrices"), tables=[table, statuses],
                      links=[out_dir / name for name in ["test_set_summary.csv", "comparison_results.csv",
                                                         "confident_failures.csv"]])
    write_record("compare_models", {"comparison": out_dir},
                 {"baseline": baseline_path, "improved": improved_path, "cases": params.cases_dir},
                 headline=headline, sections=[section],
                 tile_notes={row.case: f"improved: {row.improved_pred} ({row.improved_confidence:.1%})"
                             for row in table_of_cases.itertuples()},
                 data=data_summary(data), device=describe_device(device), precision=REPORTED_PRECISION, change=change,
                 threshold=threshold, models={"baseline": model_card(base_ckpt, baseline_path),
                                              "improved": model_card(impr_ckpt, improved_path)})


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = CompareParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help=SEED_UNUSED)
    add_checkpoint_args(parser, improved_optional=False)
    add_flags(parser, defaults)
    args = parser.parse_args(argv)
    run_main(lambda: compare(params_from(args, defaults)), args.debug)
