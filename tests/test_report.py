"""The report page: every section says how to make it when its stage has not run, every image it shows exists
(relative paths from experiments/report/), and it finds each stage's files where the stage's record says they are."""
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import run_stage_in_process, write_checkpoint
from stresstest.core.record import write_record
from stresstest.stages import report


def image_sources(page: Path) -> list[str]:
    return re.findall(r"<img src='([^']+)'", page.read_text())


def test_report_of_nothing_names_every_missing_stage(tmp_path):
    result = run_stage_in_process("report.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "experiments" / "report" / "index.html").read_text()
    for command in ["python train.py", "python improvement.py", "python compare_models.py",
                    "python failure_analysis.py", "python calibration.py", "python robustness.py", "python seeds.py",
                    "python adversarial.py",
                    "python explanation_checks.py", "python failure_analysis.py --train-folds 4",
                    "python probing/baseline_knn.py"]:
        assert f"<code>{command}" in text, command
    assert image_sources(tmp_path / "experiments" / "report" / "index.html") == []


def test_report_shows_training_label_issues_when_the_folds_ran(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "experiments" / "label_issues"
    folder.mkdir(parents=True)
    write_record("failure_analysis", {"cases": tmp_path / "failure_cases" / "baseline", "label_issues": folder})
    (folder / "summary.json").write_text(json.dumps({"label_issues": 2, "training_images": 160, "folds": 2,
                                                     "fold_epochs": 1, "out_of_fold_accuracy": 0.55}))
    (folder / "train_label_issues.csv").write_text("train_index,fold,given_label,suggested_label,label_quality,"
                                                   "label_issue\n17,0,cat,dog,0.01,True\n42,1,ship,plane,0.02,True\n")
    Image.new("RGB", (4, 4)).save(folder / "train_label_issues.png")
    assert run_stage_in_process("report.py", cwd=tmp_path).returncode == 0
    page = tmp_path / "experiments" / "report" / "index.html"
    assert image_sources(page) == ["../label_issues/train_label_issues.png"]
    text = page.read_text()
    assert "2 of 160 training images flagged" in text and "out-of-fold accuracy 0.5500" in text
    assert "<td>0.0100</td>" in text  # the label quality, printed as every number on the page
    assert "<td>17</td>" in text and "<td>42</td>" in text
    assert "--train-folds 4" not in text


def test_the_adversarial_headline_names_autoattack_on_a_tie(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "experiments" / "adversarial"
    folder.mkdir(parents=True)
    write_record("adversarial", {"adversarial": folder})
    rows = [("baseline", "PGD-CE, twice the steps", 0.5), ("baseline", "AutoAttack (standard)", 0.5),
            ("baseline", "Square (black-box)", 0.66), ("improved", "APGD-T", 0.36),
            ("improved", "AutoAttack (standard)", 0.38)]
    pd.DataFrame([{"model": model, "radius": "Linf 1/255", "attack": attack, "n": 50, "robust_accuracy": accuracy,
                   "robust_low95": accuracy - 0.1, "robust_high95": accuracy + 0.1} for model, attack, accuracy in rows]
                 ).to_csv(folder / "robust_accuracy.csv", index=False)
    row, = report.adversarial_rows(report.Records(tmp_path / "experiments" / "records"))
    assert row["note"].startswith("baseline: AutoAttack (standard)") and "improved: APGD-T" in row["note"]
    assert row["baseline"].startswith("0.5000") and row["improved"].startswith("0.3600")


@pytest.mark.slow  # whole stages on generated data: several seconds
def test_report_shows_the_cases_and_their_images(tiny_data, tmp_path):
    write_checkpoint(tmp_path / "experiments" / "baseline" / "best_model.pth", seed=0)
    write_checkpoint(tmp_path / "experiments" / "improved" / "best_model.pth", seed=1)
    elsewhere = tmp_path / "my comparison"  # a stage run with another --out-dir is found through its record
    for stage, args in [("failure_analysis.py", ["--threshold", "0", "--max-cases", "3"]), ("explainability.py", []),
                        ("explainability_improved.py", []), ("compare_models.py", ["--out-dir", elsewhere])]:
        result = run_stage_in_process(stage, "--data-dir", tiny_data, *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    result = run_stage_in_process("report.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = tmp_path / "experiments" / "report" / "index.html"
    sources = image_sources(page)
    assert all((page.parent / source).is_file() for source in sources)
    for case in ["case_00", "case_01", "case_02"]:
        assert f"../../failure_cases/baseline/{case}/image.png" in sources
        assert f"../../failure_cases/baseline/{case}/gradcam_side_by_side.png" in sources
    assert "../../my%20comparison/confusion_matrices.png" in sources or \
        "../../my comparison/confusion_matrices.png" in sources
    assert "Not run yet: the comparison" not in page.read_text()
    if len(pd.read_csv(tmp_path / "failure_cases" / "baseline" / "label_issues.csv")):
        assert "../../failure_cases/baseline/label_issues.png" in sources
    text = page.read_text()
    assert "McNemar" in text and "<code>python calibration.py" in text


def test_study_b_shows_each_heads_interval_and_their_mcnemar_test(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "experiments" / "probing" / "efficientnet_lite0"
    folder.mkdir(parents=True)
    write_record("baseline_knn.efficientnet_lite0", {"probe": folder}, model="efficientnet_lite0")
    (folder / "probe_accuracy.csv").write_text("head,accuracy,test_images,low95,high95\n"
                                               "knn_dino,0.864,500,0.8312,0.8907\n")
    (folder / "head_comparison.csv").write_text("first,second,right_only_first,right_only_second,mcnemar_exact_p,"
                                                "test_images\nknn_dino,linear_logreg,23,26,0.7754,500\n")
    text = report.write_report(report.ReportParams(out_dir=tmp_path / "experiments" / "report")).read_text()
    assert all(f"<td>{value}</td>" in text for value in ["0.8640", "0.8312", "0.8907", "23", "26", "0.7754"])
    assert "McNemar" in text


@pytest.mark.parametrize("section", [report.calibration_section, report.seeds_section,
                                     report.explanation_checks_section, report.corruptions_section],
                         ids=lambda section: section.what)
def test_a_stage_section_shows_every_table_and_figure_its_stage_left(section, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "somewhere else"
    folder.mkdir()
    tables = [section.main_table, *(name for name, _ in section.tables)]
    for number, name in enumerate(tables):
        (folder / name).write_text(f"column\nvalue_{number}\n")
    for name, _ in section.figures:
        Image.new("RGB", (4, 4)).save(folder / name)
    page = report.write_report(report.ReportParams(out_dir=tmp_path / "experiments" / "report"))
    assert f"<code>{section.command}</code>" in page.read_text()  # no record: not run, whatever lies around
    write_record(section.stage, {section.output: folder})
    page = report.write_report(report.ReportParams(out_dir=tmp_path / "experiments" / "report"))
    text = page.read_text()
    assert all(f"<td>value_{number}</td>" in text for number in range(len(tables)))
    assert {f"../../somewhere else/{name}" for name, _ in section.figures} <= set(image_sources(page))
    assert f"<code>{section.command}</code>" not in text


def test_numbers_are_printed_one_way():
    values = [0.78213456, 35.0, np.int64(12), 3.1e-05, 0.0, float("nan"), 1.5, "cat", True, "-0.100029", "24.0"]
    assert [report.number(x) for x in values] == \
        ["0.7821", "35", "12", "3.1e-05", "0", "", "1.5000", "cat", "True", "-0.1000", "24"]


def test_the_summary_gives_the_headline_figures_with_their_intervals_and_what_ran(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    comparison = tmp_path / "experiments" / "comparison"
    comparison.mkdir(parents=True)
    rows = [("accuracy", 0.782, 0.752, ""), ("accuracy_wilson95_low", 0.744, 0.712, ""),
            ("accuracy_wilson95_high", 0.816, 0.788, ""), ("right_only_for_baseline", "", "", 36),
            ("right_only_for_improved", "", "", 21), ("mcnemar_exact_p", "", "", 0.063), ("nll", 0.861, 0.782, ""),
            ("confident_failures", 35, 9, ""), ("wrong_among_most_confident", 35, 41, ""),
            ("most_confident_answers", 348, 348, "")]
    pd.DataFrame(rows, columns=["metric", "baseline", "improved", "change"]).to_csv(comparison / "test_set_summary.csv",
                                                                                   index=False)
    data = {"data_dir": "elsewhere/cifar", "train_images": 5085, "test_images": 500, "full_cifar10": False}
    write_record("compare_models", {"comparison": comparison}, data=data, device="cpu", precision="fp32")
    text = report.write_report(report.ReportParams(out_dir=tmp_path / "experiments" / "report")).read_text()
    summary = text[:text.index("Contents")]
    assert "0.7820 (0.7440-0.8160)" in summary and "0.7520 (0.7120-0.7880)" in summary
    assert "p = 0.0630" in summary and "N = 348" in summary
    assert "compare_models" in summary and "elsewhere/cifar (5085 train / 500 test)" in summary
    assert "ran on other data than --data-dir" in summary  # the default data/ is not elsewhere/cifar
    assert "href='#section-1'" in text and "id='section-1'" in text
