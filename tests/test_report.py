"""The report page: every section says how to make it when its stage has not run, and every image it shows
exists (relative paths from experiments/report/)."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import run_stage_in_process, write_checkpoint
from stresstest import report


def image_sources(page: Path) -> list[str]:
    return re.findall(r"<img src='([^']+)'", page.read_text())


def test_report_of_nothing_names_every_missing_stage(tmp_path):
    result = run_stage_in_process("report.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "experiments" / "report" / "index.html").read_text()
    for command in ["python train.py", "python improvement.py", "python compare_models.py",
                    "python failure_analysis.py", "python calibration.py", "python robustness.py", "python seeds.py",
                    "python explanation_checks.py", "python failure_analysis.py --train-folds 4",
                    "python probing/baseline_knn.py"]:
        assert f"<code>{command}" in text, command
    assert image_sources(tmp_path / "experiments" / "report" / "index.html") == []


def test_report_shows_training_label_issues_when_the_folds_ran(tmp_path):
    folder = tmp_path / "experiments" / "label_issues"
    folder.mkdir(parents=True)
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
    assert "<td>17</td>" in text and "<td>42</td>" in text
    assert "--train-folds 4" not in text


@pytest.mark.slow  # whole stages on generated data: several seconds
def test_report_shows_the_cases_and_their_images(tiny_data, tmp_path):
    write_checkpoint(tmp_path / "experiments" / "baseline" / "best_model.pth", seed=0)
    write_checkpoint(tmp_path / "experiments" / "improved" / "best_model.pth", seed=1)
    for stage, args in [("failure_analysis.py", ["--threshold", "0", "--max-cases", "3"]), ("explainability.py", []),
                        ("explainability_improved.py", []), ("compare_models.py", [])]:
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
    assert "../comparison/confusion_matrices.png" in sources
    if len(pd.read_csv(tmp_path / "failure_cases" / "baseline" / "label_issues.csv")):
        assert "../../failure_cases/baseline/label_issues.png" in sources
    text = page.read_text()
    assert "McNemar" in text and "<code>python calibration.py" in text


def test_study_b_shows_each_heads_interval_and_their_mcnemar_test(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "experiments" / "probing" / "efficientnet_lite0"
    folder.mkdir(parents=True)
    (folder / "probe_accuracy.csv").write_text("head,accuracy,test_images,low95,high95\n"
                                               "knn_dino,0.864,500,0.8312,0.8907\n")
    (folder / "head_comparison.csv").write_text("first,second,right_only_first,right_only_second,mcnemar_exact_p,"
                                                "test_images\nknn_dino,linear_logreg,23,26,0.7754,500\n")
    text = report.write_report(tmp_path / "experiments" / "report").read_text()
    assert all(f"<td>{value}</td>" in text for value in ["0.8312", "0.8907", "23", "26", "0.7754"])
    assert "McNemar" in text


@pytest.mark.parametrize("section", [report.calibration_section, report.seeds_section,
                                     report.explanation_checks_section, report.corruptions_section],
                         ids=lambda section: section.what)
def test_a_stage_section_shows_every_table_and_figure_its_stage_left(section, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    section.folder.mkdir(parents=True)
    tables = [section.main_table, *(name for name, _ in section.tables)]
    for number, name in enumerate(tables):
        (section.folder / name).write_text(f"column\nvalue_{number}\n")
    for name, _ in section.figures:
        Image.new("RGB", (4, 4)).save(section.folder / name)
    page = report.write_report(tmp_path / "experiments" / "report")
    text = page.read_text()
    assert all(f"<td>value_{number}</td>" in text for number in range(len(tables)))
    assert {f"../{section.folder.name}/{name}" for name, _ in section.figures} <= set(image_sources(page))
    assert f"<code>{section.command}</code>" not in text
