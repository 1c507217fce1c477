"""The last stage (report.py): experiments/report/index.html, one static page that gathers every stage's tables and
figures (images by relative path, no server, no network). It finds each stage's outputs through the record the
stage left (experiments/records/<stage>.json), wherever its --out-dir put them; a stage without a record says
which command makes it. The page opens with a summary: the headline figures with their intervals, what ran on
which data, device and precision, and a table of contents."""
import html
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core import atomic, paths
from ..core.cli import Common, add_common_args, make_parser, params_from, run_main
from ..core.record import RECORDS_DIR, read_record, read_records

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
table.headline td { white-space: nowrap; } table.headline td:last-child { white-space: normal; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3rem 0; }
.missing { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5rem 1rem; }
.note { color: #555; font-size: 0.9rem; } .flag { color: #b00; font-weight: bold; }
nav ol { columns: 2; font-size: 0.95rem; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 0.5rem; }
.gallery details { border: 1px solid #ddd; padding: 0.3rem; font-size: 0.8rem; }
.gallery details[open] { grid-column: 1 / -1; }
.gallery summary { cursor: pointer; list-style: none; }
.gallery summary img { width: 96px; image-rendering: pixelated; display: block; }
"""
NOT_A_NUMBER = ""


def number(value) -> str:
    """One way to print a number everywhere on the page (also one a CSV column of mixed types kept as text):
    whole numbers as integers, others with four decimals, tiny ones (p-values) with two significant digits."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return NOT_A_NUMBER
    if value.is_integer():
        return str(int(value))
    if abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.4f}"


def with_interval(value, low, high) -> str:
    return f"{number(value)} ({number(low)}-{number(high)})"


class Page:
    """An HTML page built from sections; images and links are made relative to the page's folder."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.parts: list[str] = []
        self.contents: list[tuple[str, str]] = []  # (anchor, title) of every section, for the table of contents

    def add(self, text: str) -> None:
        self.parts.append(text)

    def heading(self, text: str, level: int = 2) -> None:
        if level == 2:
            anchor = f"section-{len(self.contents) + 1}"
            self.contents.append((anchor, text))
            self.add(f"<h2 id='{anchor}'>{html.escape(text)}</h2>")
        else:
            self.add(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, css: str = "") -> None:
        self.add(f"<p class='{css}'>{html.escape(text)}</p>" if css else f"<p>{html.escape(text)}</p>")

    def missing(self, what: str, command: str) -> None:
        self.add(f"<div class='missing'>Not run yet: {html.escape(what)}. Run <code>{html.escape(command)}</code>."
                 "</div>")

    def link(self, path: Path) -> str:
        return html.escape(os.path.relpath(Path(path).resolve(), self.out_dir.resolve()))

    def image(self, path: Path, alt: str, width: str = "") -> bool:
        if not Path(path).is_file():
            return False
        style = f" style='max-width:{width}'" if width else ""
        self.add(f"<img src='{self.link(path)}' alt='{html.escape(alt)}'{style}>")
        return True

    def table(self, frame: pd.DataFrame, css: str = "") -> None:
        cells = frame.astype(object).map(number)
        self.add(cells.to_html(index=False, border=0, escape=True, classes=css or None))

    def render(self, title: str, header: list[str]) -> str:
        contents = "".join(f"<li><a href='#{anchor}'>{html.escape(text)}</a></li>" for anchor, text in self.contents)
        body = "\n".join([*header, f"<nav><h2>Contents</h2><ol>{contents}</ol></nav>", *self.parts])
        return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def read_csv(path: Path | None) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path) if path is not None else None
    except (OSError, ValueError):
        return None


def read_json(path: Path | None) -> dict | None:
    try:
        return json.loads(Path(path).read_text()) if path is not None else None
    except (OSError, ValueError):
        return None


class Records:
    """The records of the stages, read once: where each stage wrote."""

    def __init__(self, records_dir: Path):
        self.folder = Path(records_dir)
        self.by_stage: dict[str, dict | None] = {}

    def get(self, stage: str) -> dict | None:
        if stage not in self.by_stage:
            self.by_stage[stage] = read_record(stage, self.folder)
        return self.by_stage[stage]

    def output(self, stage: str, name: str) -> Path | None:
        """Where `stage` wrote its output `name`, or None when it has not run."""
        record = self.get(stage)
        return None if record is None else record["outputs"].get(name)

    def every(self) -> list[dict]:
        return read_records("", self.folder)


# -- the summary ------------------------------------------------------------------------------------------------

def comparison_rows(records: Records) -> list[dict]:
    comparison = read_csv(_join(records.output("compare_models", "comparison"), "test_set_summary.csv"))
    if comparison is None:
        return []
    values = comparison.set_index("metric")
    test_images = (records.get("compare_models") or {}).get("data", {}).get("test_images", "")

    def both(metric):
        return float(values.loc[metric, "baseline"]), float(values.loc[metric, "improved"])
    low, high = both("accuracy_wilson95_low"), both("accuracy_wilson95_high")
    rows = [{"figure": "test accuracy (Wilson 95%)", "n": test_images,
             **{side: with_interval(value, low[i], high[i])
                for i, (side, value) in enumerate(zip(["baseline", "improved"], both("accuracy")))}},
            {"figure": "McNemar exact test, paired: images right only for each model", "n": test_images,
             "baseline": float(values.loc["right_only_for_baseline", "change"]),
             "improved": float(values.loc["right_only_for_improved", "change"]),
             "note": f"p = {number(float(values.loc['mcnemar_exact_p', 'change']))}"}]
    for metric, label in [("nll", "test NLL"), ("confident_failures", "wrong answers at the confidence threshold"),
                          ("wrong_among_most_confident", "wrong among the N most confident (fair to LS)")]:
        rows.append({"figure": label, "n": test_images, **dict(zip(["baseline", "improved"], both(metric)))})
    rows[-1]["note"] = f"N = {number(float(values.loc['most_confident_answers', 'baseline']))}"
    return rows


def calibration_rows(records: Records) -> list[dict]:
    folder = records.output("calibration", "calibration")
    calibration = read_csv(_join(folder, "calibration_metrics.csv"))
    selective = read_csv(_join(folder, "selective_prediction.csv"))
    if calibration is None or selective is None:
        return []
    rows = []
    for scaling, label in [("none", "ECE, 15 bins (bootstrap 95%)"),
                           ("temperature", "ECE after temperature scaling (bootstrap 95%)")]:
        chosen = calibration[calibration.scaling == scaling].set_index("model")
        rows.append({"figure": label, "n": int(chosen.test_images.iloc[0]),
                     **{model: with_interval(row.ece, row.ece_low, row.ece_high) for model, row in chosen.iterrows()}})
    chosen = selective[selective.score == "msp"].set_index("model")
    rows.append({"figure": "AURC, maximum softmax probability (bootstrap 95%)", "n": int(chosen.test_images.iloc[0]),
                 **{model: with_interval(row.aurc, row.aurc_low, row.aurc_high) for model, row in chosen.iterrows()}})
    return rows


def corruption_rows(records: Records) -> list[dict]:
    corruption = read_csv(_join(records.output("robustness", "robustness"), "robustness_summary.csv"))
    if corruption is None:
        return []
    chosen = corruption.set_index("model")
    return [{"figure": "mean accuracy over the corrupted sets", "note": str(chosen.source.iloc[0]),
             "n": f"{int(chosen.images_per_set.iloc[0])} x {int(chosen.sets.iloc[0])} sets",
             **{model: float(chosen.loc[model, "mean_corruption_accuracy"])
                for model in ["baseline", "improved"] if model in chosen.index}}]


def seeds_rows(records: Records) -> list[dict]:
    seeds = read_csv(_join(records.output("seeds", "seeds"), "summary.csv"))
    if seeds is None:
        return []
    accuracy = seeds[seeds.metric == "accuracy"].set_index("model")
    difference = accuracy.loc["baseline_minus_improved"]
    return [{"figure": "test accuracy, mean over seeds (95% t-interval)", "n": f"{int(difference.seeds)} seeds",
             **{model: with_interval(accuracy.loc[model, "mean"], accuracy.loc[model, "t95_low"],
                                     accuracy.loc[model, "t95_high"]) for model in ["baseline", "improved"]},
             "note": "baseline minus improved " + with_interval(difference["mean"], difference.t95_low,
                                                                difference.t95_high)}]


def adversarial_rows(records: Records) -> list[dict]:
    """The strongest attack at each radius the strong attacks or AutoAttack ran at, both models."""
    folder = records.output("adversarial", "adversarial")
    table = read_csv(_join(folder, "robust_accuracy.csv"))
    if folder is None or table is None:
        return []
    checks = read_json(folder / "checks.json") or {}
    failed = {model: sum(check["status"] == "fail" for check in found) for model, found in checks.items()}
    rows = []
    strong = table[~table.attack.isin(["FGSM", "PGD-CE"])]
    for radius, group in strong.groupby("radius", sort=False):
        # the lowest accuracy per model; on a tie the reference AutoAttack is named
        ranked = group.assign(other=group.attack != "AutoAttack (standard)").sort_values(
            ["robust_accuracy", "other"], kind="stable")
        worst = ranked.groupby("model", sort=False).head(1).set_index("model").reindex(group.model.unique())
        rows.append({"figure": f"robust accuracy at {radius}, strongest attack (Wilson 95%)",
                     "n": int(worst.n.min()), "note": "; ".join(f"{model}: {row.attack}, {failed.get(model, 0)} "
                                                                "masking checks failed"
                                                                for model, row in worst.iterrows()),
                     **{model: with_interval(row.robust_accuracy, row.robust_low95, row.robust_high95)
                        for model, row in worst.iterrows()}})
    return rows


HEADLINE_SOURCES = {"compare_models": comparison_rows, "calibration": calibration_rows,
                    "robustness": corruption_rows, "adversarial": adversarial_rows, "seeds": seeds_rows}


def headline(records: Records) -> tuple[pd.DataFrame | None, list[str]]:
    """The headline figures of both models with their intervals and n, from the stages that computed them; and the
    stages whose tables could not be read (written by another version, or edited)."""
    rows, unreadable = [], []
    for stage, source in HEADLINE_SOURCES.items():
        try:
            rows += source(records)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            unreadable.append(stage)
    if not rows:
        return None, unreadable
    return pd.DataFrame(rows).reindex(columns=["figure", "baseline", "improved", "n", "note"]).fillna(""), unreadable


def _join(folder: Path | None, name: str) -> Path | None:
    return None if folder is None else folder / name


def what_ran(records: Records, data_dir: Path) -> tuple[pd.DataFrame | None, list[str]]:
    """One row per stage record, in the order they finished; and the stages whose data folder is not --data-dir."""
    rows, elsewhere = [], []
    for record in sorted(records.every(), key=lambda record: record.get("finished", "")):
        data = record.get("data") or {}
        rows.append({"stage": record["stage"], "finished": record.get("finished", ""),
                     "data": f"{data.get('data_dir', '')} ({data.get('train_images', '?')} train / "
                             f"{data.get('test_images', '?')} test)" if data else "",
                     "device": record.get("device", ""), "precision": record.get("precision", ""),
                     "outputs": ", ".join(str(path) for path in record["outputs"].values())})
        if data and Path(data["data_dir"]).resolve() != Path(data_dir).resolve():
            elsewhere.append(record["stage"])
    return (pd.DataFrame(rows) if rows else None), elsewhere


def model_cards(records: Records) -> dict:
    """{model: its card} as the stages that read the models recorded them (core.checkpoint.model_card; the newest
    record wins)."""
    cards = {}
    for record in sorted(records.every(), key=lambda record: record.get("finished", "")):
        cards.update(record.get("models") or {})
    return {tag: cards[tag] for tag in paths.RUNS if tag in cards}


def models_table(cards: dict) -> pd.DataFrame | None:
    """One row per model: what it is, where its weights came from, how it is fed, its test accuracy."""
    rows = []
    for tag, card in cards.items():
        origin = card.get("origin", "")
        if card.get("weights"):
            origin += f"; weights {card['weights']} (sha256 {card.get('weights_sha256', '')[:12]})"
        elif card.get("label_smoothing") is not None:
            origin += f"; label smoothing {card['label_smoothing']}, seed {card.get('seed')}, epoch " \
                      f"{card.get('chosen_epoch')} of {card.get('epochs')}"
        accuracy = with_interval(card["test_accuracy"], card["test_accuracy_low95"], card["test_accuracy_high95"]) \
            if "test_accuracy" in card else ""
        rows.append({"model": tag, "architecture": card.get("arch", ""), "origin": origin,
                     "checkpoint": f"{card.get('checkpoint', '')} (sha256 {card.get('checkpoint_sha256', '')[:12]})",
                     "preprocessing": card.get("preprocessing") or
                     f"mean {card['normalization']['mean']}, std {card['normalization']['std']}",
                     "input size": card.get("input_size", ""), "test accuracy (Wilson 95%)": accuracy,
                     "n": card.get("test_images", "")})
    return pd.DataFrame(rows) if rows else None


# -- the sections -----------------------------------------------------------------------------------------------

def runs_section(page: Page, records: Records) -> None:
    page.heading("Training runs (study A)")
    rows, folders, cards = [], [], model_cards(records)
    for stage, tag in [("train", "baseline"), ("improvement", "improved")]:
        folder = records.output(stage, "run")
        config, info = read_json(_join(folder, paths.CONFIG)), read_json(_join(folder, "run_info.json"))
        metrics = read_csv(_join(folder, "metrics.csv"))
        if config is None or metrics is None:
            if "imported" in cards.get(tag, {}).get("origin", ""):
                page.paragraph(f"The {tag} model was imported, not trained here (see Models above).", "note")
            else:
                page.missing(f"the {tag} run", f"python {paths.producer(tag)}")
            continue
        folders.append((tag, folder))
        best = metrics[metrics.best.astype(bool)].iloc[-1]
        rows.append({"run": tag, "label smoothing": config["label_smoothing"], "seed": config["seed"],
                     "epochs": config["epochs"], "chosen epoch": int(best.epoch), "val acc": best.val_acc,
                     "test acc (chosen)": best.test_acc, "device": (info or {}).get("device_name", ""),
                     "training precision": (info or {}).get("precision", ""),
                     "split train/val/test": "/".join(str((info or {}).get("split_sizes", {}).get(split, "?"))
                                                      for split in ["train", "val", "test"])})
    if rows:
        page.table(pd.DataFrame(rows))
    for tag, folder in folders:
        for name in ["accuracy_curve.png", "loss_curve.png"]:
            page.image(folder / name, f"{tag} {name}", "48%")


def results_section(page: Page, records: Records) -> None:
    page.heading("Results on the test set: baseline against improved")
    folder = records.output("compare_models", "comparison")
    summary = read_csv(_join(folder, "test_set_summary.csv"))
    if folder is None or summary is None:
        page.missing("the comparison", "python compare_models.py")
        return
    page.paragraph("One seed per model (the seeds section has the spread over seeds). Accuracy with its Wilson 95% "
                   "interval; McNemar's exact test on the paired predictions; confident failures both at the failure "
                   "analysis's threshold and, fair to label smoothing (its target is 0.91), among each model's most "
                   "confident answers, as many as the baseline gives at the threshold.", "note")
    page.table(summary)
    page.image(folder / "confusion_matrices.png", "confusion matrices")


def case_tile(page: Page, row, folder: Path, improved: dict | None) -> None:
    """One case of the gallery: its image and outcome; opened, its Grad-CAM and occlusion figures."""
    flag = " <span class='flag'>label issue?</span>" if getattr(row, "label_issue", False) else ""
    caption = (f"{row.case} #{row.test_index}: {row.true_label} &rarr; {html.escape(str(row.predicted_label))} "
               f"({number(float(row.confidence))})")
    if improved:
        caption += (f"; improved: {html.escape(str(improved['improved_pred']))} "
                    f"({number(float(improved['improved_confidence']))})")
    page.add("<details><summary>")
    page.image(folder / "image.png", f"{row.case} image")
    page.add(f"{caption}{flag}</summary>")
    if not page.image(folder / "gradcam_side_by_side.png", f"{row.case} Grad-CAM side by side"):
        for tag, explainer in paths.EXPLAINERS.items():
            if not page.image(folder / f"gradcam_{tag}.png", f"{row.case} Grad-CAM {tag}", "48%"):
                page.missing(f"the {tag} model's Grad-CAM", f"python {explainer}")
    for tag in paths.RUNS:
        page.image(folder / f"occlusion_{tag}.png", f"{row.case} occlusion {tag}", "48%")
    page.add("</details>")


def cases_section(page: Page, records: Records) -> None:
    page.heading("Confident failures of the baseline, explained by both models")
    folder = records.output("failure_analysis", "cases")
    cases = read_csv(_join(folder, "cases.csv"))
    summary = read_json(_join(folder, paths.CASES_SUMMARY))
    if folder is None or cases is None or summary is None:
        page.missing("the failure analysis", f"python {paths.CASES_PRODUCER}")
        return
    page.paragraph(f"{summary['confident_failures']} wrong answers at confidence >= {summary['threshold']} of "
                   f"{summary['test_images']} test images (accuracy {number(summary['test_accuracy'])}); "
                   f"{len(cases)} saved; representative: {', '.join(summary['representative_cases'])} "
                   f"({summary['representative_rule']}). Label issues: {summary.get('label_issues', 'n/a')} test "
                   f"images flagged by cleanlab ({summary.get('label_issue_rule', '')}). Open a case for its Grad-CAM "
                   "(both models, true and failure class) and occlusion maps.", "note")
    comparison = read_csv(_join(records.output("compare_models", "comparison"), "comparison_results.csv"))
    improved = {} if comparison is None else comparison.set_index("case").to_dict("index")
    page.add("<div class='gallery'>")
    for row in cases.itertuples():
        case_tile(page, row, folder / str(row.case), improved.get(row.case))
    page.add("</div>")
    issues = read_csv(folder / "label_issues.csv")
    if issues is not None and len(issues):
        page.heading("Most suspicious test labels (cleanlab, lowest label quality first)", 3)
        page.image(folder / "label_issues.png", "most suspicious test labels")
        page.table(issues.head(15))


def training_label_issues_section(page: Page, records: Records) -> None:
    page.heading("Training-set label issues (optional: K-fold cross-validation, cleanlab)")
    folder = records.output("failure_analysis", "label_issues")
    summary = read_json(_join(folder, paths.LABEL_ISSUES_SUMMARY))
    issues = read_csv(_join(folder, "train_label_issues.csv"))
    if folder is None or summary is None or issues is None:
        page.missing("the training-set label issues", f"python {paths.CASES_PRODUCER} --train-folds 4")
        return
    page.paragraph(f"{summary['label_issues']} of {summary['training_images']} training images flagged from "
                   f"out-of-fold probabilities ({summary['folds']} folds of {summary['fold_epochs']} epochs; "
                   f"out-of-fold accuracy {number(summary['out_of_fold_accuracy'])}: the flags are only as good as "
                   "these runs). Most suspicious first:", "note")
    page.image(folder / "train_label_issues.png", "most suspicious training labels")
    page.table(issues.head(15))


@dataclass(frozen=True)
class StageSection:
    """A study C stage's section: its main table (whose absence means the stage has not run), the extra tables
    and the figures it leaves, each with the note that says how to read it."""
    title: str
    stage: str           # whose record says where the files are
    output: str          # the record's name for the folder
    main_table: str
    what: str
    command: str
    intro: str = ""
    tables: tuple = ()   # (csv name, note) shown when present
    figures: tuple = ()  # (png name, caption)

    def __call__(self, page: Page, records: Records) -> pd.DataFrame | None:
        page.heading(self.title)
        folder = records.output(self.stage, self.output)
        main = read_csv(_join(folder, self.main_table))
        if folder is None or main is None:
            page.missing(self.what, self.command)
            return None
        for note, table in [(self.intro, main), *((note, read_csv(folder / name)) for name, note in self.tables)]:
            if table is not None:
                if note:
                    page.paragraph(note, "note")
                page.table(table)
        for name, caption in self.figures:
            page.image(folder / name, caption)
        return main


calibration_section = StageSection(
    "Calibration and selective prediction", "calibration", "calibration", "calibration_metrics.csv", "calibration",
    "python calibration.py", tables=(("selective_prediction.csv", ""),),
    figures=(("reliability_diagrams.png", "reliability diagrams"), ("risk_coverage.png", "risk-coverage curves")))

seeds_section = StageSection(
    "Several seeds: intervals and tests", "seeds", "seeds", "summary.csv", "the seeds study", "python seeds.py",
    tables=(("mcnemar.csv", ""),), figures=(("seeds.png", "seeds"),))

explanation_checks_section = StageSection(
    "Explanation checks", "explanation_checks", "explanations", "road.csv", "the explanation checks",
    "python explanation_checks.py",
    intro="ROAD combined score (higher: removing what the map marks relevant hurts more than removing what it marks "
          "irrelevant), Grad-CAM against random maps, with 95% bootstrap intervals:",
    tables=(("randomisation.csv", "Model-randomisation check: rank correlation with the original map as layers are "
                                  "re-initialised from the head down (faithful: it falls)."),
            ("agreement.csv", "The two models' maps of the same image and class, against pairs of different images "
                              "(the centre bias every CIFAR map shares).")),
    figures=(("randomisation.png", "randomisation cascade"),))

corruptions_section = StageSection(
    "Corruptions and occlusion", "robustness", "robustness", "robustness_summary.csv", "the robustness stage",
    "python robustness.py",
    figures=(("accuracy_vs_severity.png", "accuracy against severity"),
             ("corruption_examples.png", "corruption examples")))


def robustness_section(page: Page, records: Records) -> None:
    if corruptions_section(page, records) is None:
        return
    occlusion = read_csv(_join(records.output("robustness", "robustness"), "occlusion_gradcam.csv"))
    if occlusion is not None and len(occlusion):
        agreement = occlusion.groupby("model").spearman.agg(["count", "median", "mean"]).reset_index()
        page.paragraph("Occlusion sensitivity against Grad-CAM, Spearman rank correlation over the saved cases:",
                       "note")
        page.table(agreement)


adversarial_tables = StageSection(
    "Adversarial attacks", "adversarial", "adversarial", "robust_accuracy.csv", "the adversarial stage",
    "python adversarial.py",
    intro="Robust accuracy under each attack and radius ([0, 1] pixels; Linf radii in 1/255), Wilson 95% intervals:",
    tables=(("model_comparison.csv", "The two models on the same images under the same attack: McNemar's exact test."),
            ("pgd_gap.csv", "PGD-CE against each stronger attack on the same images: the images only PGD-CE "
                            "leaves right are robustness that is only apparent (McNemar's exact test)."),
            ("transfer.csv", "Transfer: each model on the other's PGD images."),
            ("distance_summary.csv", "Least perturbation that changes the answer (FAB-T, an upper bound), against "
                                     "confidence and margin (Spearman), and for the images a corruption flips "
                                     "(Mann-Whitney U)."),
            ("case_distances.csv", "The confident failures: how far each is from being answered with its true "
                                   "class.")),
    figures=(("robust_accuracy.png", "robust accuracy against the radius"),
             ("minimal_distance.png", "least perturbations"),
             ("adversarial_examples.png", "adversarial examples")))


def adversarial_section(page: Page, records: Records) -> None:
    if adversarial_tables(page, records) is None:
        return
    checks = read_json(_join(records.output("adversarial", "adversarial"), "checks.json"))
    if checks:
        page.paragraph("Gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019): a fail means a number "
                       "above may overstate robustness.", "note")
        page.table(pd.DataFrame([{"model": model, **check} for model, found in checks.items() for check in found]))


def probing_section(page: Page, records: Records) -> None:
    page.heading("Study B: frozen pretrained backbones")
    probes = [record for record in read_records("baseline_knn.", records.folder)
              if (record["outputs"]["probe"] / "probe_accuracy.csv").is_file()]
    if not probes:
        page.missing("study B", "python probing/baseline_knn.py --model efficientnet_lite0")
        return
    rows, tests = [], []
    for record in probes:
        folder, model = record["outputs"]["probe"], record["model"]
        for row in pd.read_csv(folder / "probe_accuracy.csv").to_dict("records"):
            rows.append({"model": model, "head": row["head"], "accuracy": row["accuracy"],
                         "wilson95_low": row.get("low95"), "wilson95_high": row.get("high95"), "n": row["test_images"],
                         "feature precision": row.get("feature_precision", "")})
        comparison = read_csv(folder / "head_comparison.csv")
        if comparison is not None:
            tests += [{"model": model, **row} for row in comparison.to_dict("records")]
    page.table(pd.DataFrame(rows))
    if tests:
        page.paragraph("kNN against the linear head on the same test images: McNemar's exact test.", "note")
        page.table(pd.DataFrame(tests))
    for record in probes:
        for name in ["confusion_matrices.png", "centroid_similarity.png", "tsne.png"]:
            page.image(record["outputs"]["probe"] / name, f"{record['model']} {name}", "48%")


SECTIONS = [runs_section, results_section, cases_section, training_label_issues_section, calibration_section,
            robustness_section, adversarial_section, seeds_section, explanation_checks_section, probing_section]


# -- the stage --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportParams(Common):
    out_dir: Path = paths.REPORT_DIR
    records_dir: Path = RECORDS_DIR


def summary_header(page: Page, records: Records, data_dir: Path) -> list[str]:
    """The top of the page: title, headline figures, what ran (its own small page, rendered before the contents)."""
    top = Page(page.out_dir)
    top.heading("cnn-stress-testing report", 1)
    top.paragraph(f"Written {time.strftime('%Y-%m-%d %H:%M')} from the stage records in {records.folder}. Every "
                  "number comes with its n; a difference between two single-seed models is a single-seed difference.",
                  "note")
    top.heading("Summary", 3)
    figures, unreadable = headline(records)
    if figures is None:
        top.paragraph("No headline figures yet: run the pipeline (python run_pipeline.py).", "note")
    else:
        top.table(figures, "headline")
    if unreadable:
        top.add(f"<p class='flag'>Tables of {html.escape(', '.join(unreadable))} could not be read for the summary "
                "(another version's, or edited): rerun those stages.</p>")
    models = models_table(model_cards(records))
    if models is not None:
        top.heading("Models", 3)
        top.table(models)
    ran, elsewhere = what_ran(records, data_dir)
    top.heading("What ran", 3)
    if ran is None:
        top.paragraph("No stage has left a record here yet.", "note")
    else:
        top.table(ran)
    if elsewhere:
        top.add(f"<p class='flag'>{html.escape(', '.join(elsewhere))} ran on other data than --data-dir "
                f"{html.escape(str(data_dir))}: their figures do not describe it.</p>")
    return top.parts


def write_report(params: ReportParams) -> Path:
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    records = Records(params.records_dir)
    page = Page(out_dir)
    for section in SECTIONS:
        section(page, records)
    target = out_dir / "index.html"
    atomic.write_text(target, page.render("cnn-stress-testing report", summary_header(page, records,
                                                                                        params.data_dir)))
    return target


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = ReportParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help="accepted so that every script takes the same flags; the report draws "
                                      "nothing random and runs no model (nor does --device)")
    parser.add_argument("--out-dir", type=Path, default=defaults.out_dir, help="where index.html goes")
    parser.add_argument("--records-dir", type=Path, default=defaults.records_dir,
                        help="the stage records that say where each stage wrote")
    args = parser.parse_args(argv)
    params = params_from(args, defaults)
    run_main(lambda: print(f"report -> {write_report(params)}"), args.debug)
