"""The report page renders what the stages recorded: headline rows with their intervals and the profile figure at
the top, each stage's section in pipeline order (a stage it has never heard of too), every image it shows exists
(relative paths from experiments/report/), and a stage that has not run is named with its command, unless it
cannot apply to the models there."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import run_stage_in_process, write_checkpoint
from stresstest.core import paths
from stresstest.core.findings import (HIGHER, LOWER, NUMBER, Estimate, Headline, Picture, Section, Table, Tile,
                                      number)
from stresstest.core.record import write_record
from stresstest.stages import report
from stresstest.stages.adversarial import strongest

PIPELINE_SCRIPTS = [stage.script for stage in paths.PIPELINE if stage.script != "report.py"]


def image_sources(page: Path) -> list[str]:
    return re.findall(r"<img src='([^']+)'", page.read_text())


def write_page(tmp_path: Path) -> str:
    return report.write_report(report.ReportParams(out_dir=tmp_path / "experiments" / "report")).read_text()


def card(origin: str = "trained here") -> dict:
    return {"arch": "resnet18", "origin": origin, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
            "checkpoint": "x.pth", "checkpoint_sha256": "0" * 64}


def test_report_of_nothing_names_every_stage_of_the_pipeline(tmp_path):
    result = run_stage_in_process("report.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = tmp_path / "experiments" / "report" / "index.html"
    text = page.read_text()
    for script in PIPELINE_SCRIPTS:
        assert f"<code>python {script}</code>" in text, script
    assert "<code>python report.py</code>" not in text and image_sources(page) == []


def test_sections_render_in_pipeline_order_with_estimates_in_percent_and_relative_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "somewhere else"
    folder.mkdir()
    for name in ["lead.png", "more.png", "case/image.png", "case/gradcam_baseline.png"]:
        (folder / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(folder / name)
    (folder / "table.csv").write_text("a\n1\n")
    write_record("calibration", {"out": folder}, sections=[Section(
        "Calibration section", lead=Picture(folder / "lead.png", "lead"),
        tables=[Table(["model", "ECE", "T"], [["baseline", Estimate(0.0229, 0.015, 0.06), 1.5]], note="a note")],
        pictures=[Picture(folder / "more.png", "more"), Picture(folder / "absent.png", "never made")],
        links=[folder / "table.csv"])])
    write_record("failure_analysis", {"cases": folder}, sections=[Section(
        "Cases section", gallery=[Tile("case_00", folder / "case", "case_00: cat -> dog (97.0%)", "label issue?")])])
    write_record("compare_models", {"comparison": folder}, tile_notes={"case_00": "improved: cat (51.0%)"})
    text = write_page(tmp_path)
    assert text.index("Cases section") < text.index("Calibration section")  # the pipeline's order
    assert "<td>2.3% (1.5-6.0)</td>" in text and "<td>1.5000</td>" in text and "a note" in text
    sources = image_sources(tmp_path / "experiments" / "report" / "index.html")
    assert sources == ["../../somewhere else/case/image.png", "../../somewhere else/case/gradcam_baseline.png",
                       "../../somewhere else/lead.png", "../../somewhere else/more.png"]
    assert "case_00: cat -&gt; dog (97.0%); improved: cat (51.0%)" in text and "label issue?" in text
    assert "href='../../somewhere else/table.csv'" in text
    assert "<code>python calibration.py</code>" not in text and "<code>python robustness.py</code>" in text


def test_a_stage_the_report_has_never_heard_of_appears_with_its_headline_and_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_record("brand_new_stage", {}, headline=[Headline(
        "OOD AUROC, near", {"baseline": Estimate(0.881, 0.85, 0.91)}, "500 + 500", "MSP",
        axis="near-OOD AUROC", better=HIGHER)], sections=[Section("A brand-new stage", notes=["it ran"])])
    text = write_page(tmp_path)
    summary = text[:text.index("Contents")]
    assert "OOD AUROC, near" in summary and "88.1% (85.0-91.0)" in summary and "MSP" in summary
    assert "A brand-new stage" in text and "it ran" in text
    assert (tmp_path / "experiments" / "report" / "profile.png").is_file()
    assert "profile.png" in summary


def test_the_summary_gives_headlines_with_intervals_the_profile_and_what_ran(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = {"data_dir": "elsewhere/cifar", "train_images": 5085, "test_images": 500, "full_cifar10": False}
    models = {"baseline": card(), "improved": card()}
    write_record("calibration", {}, headline=[
        Headline("test accuracy (Wilson 95%)", {"baseline": Estimate(0.782, 0.744, 0.816),
                                                "improved": Estimate(0.752, 0.712, 0.788)}, "500",
                 axis="clean accuracy", better=HIGHER),
        Headline("AURC", {"baseline": Estimate(0.07, 0.052, 0.091, NUMBER),
                          "improved": Estimate(0.096, 0.071, 0.129, NUMBER)}, "500", axis="AURC", better=LOWER)],
        data=data, device="cpu", precision="fp32", models=models)
    write_record("compare_models", {}, headline=[Headline(
        "McNemar", {"baseline": Estimate(36, unit=NUMBER), "improved": Estimate(21, unit=NUMBER)}, "500",
        "p = 0.063")], data=data, models=models)
    text = write_page(tmp_path)
    summary = text[:text.index("Contents")]
    assert "78.2% (74.4-81.6)" in summary and "75.2% (71.2-78.8)" in summary
    assert "0.0700 (0.0520-0.0910)" in summary and "<td>36</td>" in summary and "p = 0.063" in summary
    assert summary.index("profile.png") < summary.index("test accuracy (Wilson 95%)")  # the figure opens the page
    assert "elsewhere/cifar (5085 train / 500 test)" in summary
    assert "ran on other data than --data-dir" in summary  # the default data/ is not elsewhere/cifar
    assert "href='#section-1'" not in text  # no stage wrote a section


def test_one_imported_model_gets_a_page_that_fits_one_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    imported = card("imported (import_model.py)") | {"test_accuracy": 0.9, "test_accuracy_low95": 0.87,
                                                     "test_accuracy_high95": 0.92, "test_images": 500}
    write_record("calibration", {}, headline=[Headline("test accuracy", {"baseline": Estimate(0.9, 0.87, 0.92)},
                                                       "500")], models={"baseline": imported})
    text = write_page(tmp_path)
    assert "<th>improved</th>" not in text
    assert "90.0% (87.0-92.0)" in text[:text.index("Contents")]
    for script in ["train.py", "improvement.py", "seeds.py", "compare_models.py", "explainability_improved.py"]:
        assert f"<code>python {script}</code>" not in text, script
    assert "<code>python robustness.py</code>" in text


def test_adversarial_headline_takes_the_strongest_attack_and_names_autoattack_on_a_tie():
    rows = [("baseline", "PGD-CE", 0.2), ("baseline", "PGD-CE, twice the steps", 0.5),
            ("baseline", "AutoAttack (standard)", 0.5), ("baseline", "Square (black-box)", 0.66),
            ("improved", "APGD-T", 0.36), ("improved", "AutoAttack (standard)", 0.38)]
    table = pd.DataFrame([{"model": model, "radius": "Linf 1/255", "attack": attack, "n": 50,
                           "robust_accuracy": accuracy} for model, attack, accuracy in rows])
    worst = strongest(table, "Linf 1/255")
    assert worst["baseline"].attack == "AutoAttack (standard)"  # PGD-CE is the sweep, not a strong attack
    assert worst["improved"].attack == "APGD-T" and worst["improved"].robust_accuracy == 0.36


def test_numbers_and_estimates_are_printed_one_way():
    values = [0.78213456, 35.0, np.int64(12).item(), 3.1e-05, 0.0, float("nan"), 1.5, "cat", True, None]
    assert [number(x) for x in values] == ["0.7821", "35", "12", "3.1e-05", "0", "", "1.5000", "cat", "True", ""]
    assert Estimate(0.78213).text() == "78.2%" and Estimate(0.5, 0.4, 0.6).text() == "50.0% (40.0-60.0)"
    assert Estimate(0.861, 0.8, 0.9, NUMBER).text() == "0.8610 (0.8000-0.9000)"
    assert report.cell_text({"value": 0.1, "low": None, "high": None, "unit": "percent"}) == "10.0%"
    assert report.cell_text({"value": None, "low": None, "high": None, "unit": "number"}) == "not defined"
    assert Estimate(float("nan"), float("nan"), float("nan")).text() == "not defined"
    assert Estimate(-0.043, -0.09, 0.019).text() == "-4.3% (-9.0 to 1.9)"


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
    assert "../../my comparison/confusion_matrices.png" in sources
    text = page.read_text()
    assert "<code>python compare_models.py</code>" not in text and "<code>python calibration.py</code>" in text
    assert "right only for this model (McNemar)" in text and "improved: " in text
