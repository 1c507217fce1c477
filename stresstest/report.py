"""The last stage (report.py): experiments/report/index.html, one static page that gathers every stage's
tables and figures (images by relative path, no server, no network). A section whose stage has not run says
which command makes it."""
import html
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import atomic, paths
from .cli import SEED_UNUSED, add_common_args, make_parser, run_main

REPORT_DIR = paths.EXPERIMENTS / "report"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3rem 0; }
.missing { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5rem 1rem; }
.cases { display: grid; grid-template-columns: 1fr; gap: 1rem; }
.case { border: 1px solid #ddd; padding: 0.6rem; } .flag { color: #b00; font-weight: bold; }
.note { color: #555; font-size: 0.9rem; }
"""


class Page:
    """An HTML page built from sections; images and links are made relative to the page's folder."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def heading(self, text: str, level: int = 2) -> None:
        self.add(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, css: str = "") -> None:
        self.add(f"<p class='{css}'>{html.escape(text)}</p>" if css else f"<p>{html.escape(text)}</p>")

    def missing(self, what: str, command: str) -> None:
        self.add(f"<div class='missing'>Not run yet: {html.escape(what)}. Run <code>{html.escape(command)}</code>."
                 "</div>")

    def image(self, path: Path, alt: str, width: str = "") -> bool:
        if not Path(path).is_file():
            return False
        source = html.escape(os.path.relpath(Path(path).resolve(), self.out_dir.resolve()))
        style = f" style='max-width:{width}'" if width else ""
        self.add(f"<img src='{source}' alt='{html.escape(alt)}'{style}>")
        return True

    def table(self, frame: pd.DataFrame) -> None:
        self.add(frame.to_html(index=False, border=0, float_format=lambda x: f"{x:.4g}", na_rep=""))

    def render(self, title: str) -> str:
        body = "\n".join(self.parts)
        return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError):
        return None


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def runs_section(page: Page) -> None:
    page.heading("Training runs (study A)")
    rows = []
    for tag in paths.RUNS:
        folder = paths.run_dir(tag)
        config, info = read_json(folder / paths.CONFIG), read_json(folder / "run_info.json")
        metrics = read_csv(folder / "metrics.csv")
        if config is None or metrics is None:
            page.missing(f"the {tag} run", f"python {paths.producer(tag)}")
            continue
        best = metrics[metrics.best.astype(bool)].iloc[-1]
        rows.append({"run": tag, "label smoothing": config["label_smoothing"], "seed": config["seed"],
                     "epochs": config["epochs"], "chosen epoch": int(best.epoch), "val acc": best.val_acc,
                     "test acc (chosen)": best.test_acc, "device": (info or {}).get("device_name", ""),
                     "precision": (info or {}).get("precision", ""),
                     "split train/val/test": "/".join(str((info or {}).get("split_sizes", {}).get(split, "?"))
                                                      for split in ["train", "val", "test"])})
    if rows:
        page.table(pd.DataFrame(rows))
    for tag in paths.RUNS:
        for name in ["accuracy_curve.png", "loss_curve.png"]:
            page.image(paths.run_dir(tag) / name, f"{tag} {name}", "48%")


def results_section(page: Page) -> None:
    page.heading("Results on the test set: baseline against label smoothing")
    summary = read_csv(paths.COMPARISON_DIR / "test_set_summary.csv")
    if summary is None:
        page.missing("the comparison", "python compare_models.py")
        return
    page.paragraph("One seed per model (the seeds section below has the spread over seeds). Accuracy with its "
                   "Wilson 95% interval; McNemar's exact test on the paired predictions; confident failures both at "
                   "the failure analysis's threshold and, fair to label smoothing (its target is 0.91), among each "
                   "model's most confident answers, as many as the baseline gives at the threshold.", "note")
    page.table(summary)
    page.image(paths.COMPARISON_DIR / "confusion_matrices.png", "confusion matrices")


def cases_section(page: Page) -> None:
    page.heading("Confident failures of the baseline, explained by both models")
    cases = read_csv(paths.CASES_DIR / "cases.csv")
    summary = read_json(paths.CASES_DIR / paths.CASES_SUMMARY)
    if cases is None or summary is None:
        page.missing("the failure analysis", f"python {paths.CASES_PRODUCER}")
        return
    page.paragraph(f"{summary['confident_failures']} wrong answers at confidence >= {summary['threshold']} of "
                   f"{summary['test_images']} test images (accuracy {summary['test_accuracy']:.4f}); "
                   f"{len(cases)} saved; representative: {', '.join(summary['representative_cases'])} "
                   f"({summary['representative_rule']}). Label issues: {summary.get('label_issues', 'n/a')} test "
                   f"images flagged by cleanlab ({summary.get('label_issue_rule', '')}).", "note")
    comparison = read_csv(paths.COMPARISON_DIR / "comparison_results.csv")
    improved = {} if comparison is None else comparison.set_index("case").to_dict("index")
    page.add("<div class='cases'>")
    for row in cases.itertuples():
        folder = paths.CASES_DIR / row.case
        after = improved.get(row.case)
        flag = " <span class='flag'>possible label error (cleanlab)</span>" if getattr(row, "label_issue", False) \
            else ""
        text = (f"{row.case} (test #{row.test_index}): true {row.true_label}, baseline {row.predicted_label} "
                f"({row.confidence:.3f})")
        if after:
            text += f"; improved {after['improved_pred']} ({after['improved_confidence']:.3f})"
        page.add(f"<div class='case'><b>{html.escape(text)}</b>{flag}<br>")
        page.image(folder / "image.png", f"{row.case} image", "96px")
        if not page.image(folder / "gradcam_side_by_side.png", f"{row.case} Grad-CAM side by side"):
            for tag, explainer in paths.EXPLAINERS.items():
                if not page.image(folder / f"gradcam_{tag}.png", f"{row.case} Grad-CAM {tag}", "48%"):
                    page.missing(f"the {tag} model's Grad-CAM", f"python {explainer}")
        for tag in paths.RUNS:
            page.image(folder / f"occlusion_{tag}.png", f"{row.case} occlusion {tag}", "48%")
        page.add("</div>")
    page.add("</div>")
    issues = read_csv(paths.CASES_DIR / "label_issues.csv")
    if issues is not None and len(issues):
        page.heading("Most suspicious test labels (cleanlab, lowest label quality first)", 3)
        page.image(paths.CASES_DIR / "label_issues.png", "most suspicious test labels")
        page.table(issues.head(15))


def training_label_issues_section(page: Page) -> None:
    page.heading("Training-set label issues (optional: K-fold cross-validation, cleanlab)")
    summary = read_json(paths.LABEL_ISSUES_DIR / paths.LABEL_ISSUES_SUMMARY)
    issues = read_csv(paths.LABEL_ISSUES_DIR / "train_label_issues.csv")
    if summary is None or issues is None:
        page.missing("the training-set label issues", f"python {paths.CASES_PRODUCER} --train-folds 4")
        return
    page.paragraph(f"{summary['label_issues']} of {summary['training_images']} training images flagged from "
                   f"out-of-fold probabilities ({summary['folds']} folds of {summary['fold_epochs']} epochs; "
                   f"out-of-fold accuracy {summary['out_of_fold_accuracy']:.4f}: the flags are only as good as "
                   "these runs). Most suspicious first:", "note")
    page.image(paths.LABEL_ISSUES_DIR / "train_label_issues.png", "most suspicious training labels")
    page.table(issues.head(15))


@dataclass(frozen=True)
class StageSection:
    """A study C stage's section: its main table (whose absence means the stage has not run), the extra tables
    and the figures it leaves, each with the note that says how to read it."""
    title: str
    folder: Path
    main_table: str
    what: str
    command: str
    intro: str = ""
    tables: tuple = ()   # (csv name, note) shown when present
    figures: tuple = ()  # (png name, caption)

    def __call__(self, page: Page) -> pd.DataFrame | None:
        page.heading(self.title)
        main = read_csv(self.folder / self.main_table)
        if main is None:
            page.missing(self.what, self.command)
            return None
        for note, table in [(self.intro, main), *((note, read_csv(self.folder / name)) for name, note in self.tables)]:
            if table is not None:
                if note:
                    page.paragraph(note, "note")
                page.table(table)
        for name, caption in self.figures:
            page.image(self.folder / name, caption)
        return main


calibration_section = StageSection(
    "Calibration and selective prediction", paths.CALIBRATION_DIR, "calibration_metrics.csv", "calibration",
    "python calibration.py", tables=(("selective_prediction.csv", ""),),
    figures=(("reliability_diagrams.png", "reliability diagrams"), ("risk_coverage.png", "risk-coverage curves")))

seeds_section = StageSection(
    "Several seeds: intervals and tests", paths.SEEDS_DIR, "summary.csv", "the seeds study", "python seeds.py",
    tables=(("mcnemar.csv", ""),), figures=(("seeds.png", "seeds"),))

explanation_checks_section = StageSection(
    "Explanation checks", paths.EXPLANATIONS_DIR, "road.csv", "the explanation checks", "python explanation_checks.py",
    intro="ROAD combined score (higher: removing what the map marks relevant hurts more than removing what it marks "
          "irrelevant), Grad-CAM against random maps, with 95% bootstrap intervals:",
    tables=(("randomisation.csv", "Model-randomisation check: rank correlation with the original map as layers are "
                                  "re-initialised from the head down (faithful: it falls)."),
            ("agreement.csv", "The two models' maps of the same image and class, against pairs of different images "
                              "(the centre bias every CIFAR map shares).")),
    figures=(("randomisation.png", "randomisation cascade"),))

corruptions_section = StageSection(
    "Corruptions and occlusion", paths.ROBUSTNESS_DIR, "robustness_summary.csv", "the robustness stage",
    "python robustness.py",
    figures=(("accuracy_vs_severity.png", "accuracy against severity"),
             ("corruption_examples.png", "corruption examples")))


def robustness_section(page: Page) -> None:
    if corruptions_section(page) is None:
        return
    occlusion = read_csv(paths.ROBUSTNESS_DIR / "occlusion_gradcam.csv")
    if occlusion is not None and len(occlusion):
        agreement = occlusion.groupby("model").spearman.agg(["count", "median", "mean"]).reset_index()
        page.paragraph("Occlusion sensitivity against Grad-CAM, Spearman rank correlation over the saved cases:",
                       "note")
        page.table(agreement)


def probing_section(page: Page) -> None:
    page.heading("Study B: frozen pretrained backbones")
    folders = sorted(p for p in paths.PROBING_DIR.glob("*") if (p / "probe_accuracy.csv").is_file()) \
        if paths.PROBING_DIR.is_dir() else []
    if not folders:
        page.missing("study B", "python probing/baseline_knn.py --model efficientnet_lite0")
        return
    rows, tests = [], []
    for folder in folders:
        for row in read_csv(folder / "probe_accuracy.csv").to_dict("records"):
            rows.append({"model": folder.name, "head": row["head"], "accuracy": row["accuracy"],
                         "wilson95_low": row.get("low95"), "wilson95_high": row.get("high95"), "n": row["test_images"]})
        comparison = read_csv(folder / "head_comparison.csv")
        if comparison is not None:
            tests += [{"model": folder.name, **row} for row in comparison.to_dict("records")]
    page.table(pd.DataFrame(rows))
    if tests:
        page.paragraph("kNN against the linear head on the same test images: McNemar's exact test.", "note")
        page.table(pd.DataFrame(tests))
    for folder in folders:
        for name in ["confusion_matrices.png", "centroid_similarity.png", "tsne.png"]:
            page.image(folder / name, f"{folder.name} {name}", "48%")


SECTIONS = [runs_section, results_section, cases_section, training_label_issues_section, calibration_section,
            robustness_section, seeds_section, explanation_checks_section, probing_section]


def write_report(out_dir: Path) -> Path:
    out_dir = atomic.ensure_writable_dir(out_dir)
    page = Page(out_dir)
    page.heading("cnn-stress-testing report", 1)
    page.paragraph(f"Written {time.strftime('%Y-%m-%d %H:%M')} from the files under {Path.cwd()}. Every number "
                   "comes with its n; single-seed differences are called so.", "note")
    for section in SECTIONS:
        section(page)
    target = out_dir / "index.html"
    atomic.write_text(target, page.render("cnn-stress-testing report"))
    return target


def main(description: str, argv=None) -> None:
    parser = make_parser(description)
    add_common_args(parser, seed_help=SEED_UNUSED)
    parser.add_argument("--out-dir", type=Path, default=REPORT_DIR, help="where index.html goes")
    args = parser.parse_args(argv)
    run_main(lambda: print(f"report -> {write_report(args.out_dir)}"))
