"""The stages in pipeline order and where each reads and writes, in one place: run_pipeline.py, --from-stage, the
report's section order and every stage's default folders read this table. The file names are the output
contract; stages take these as the defaults of their --*-dir flags and name the producing script in their hints."""
from dataclasses import dataclass
from pathlib import Path

EXPERIMENTS = Path("experiments")
CASES_ROOT = Path("failure_cases")

BEST_MODEL = "best_model.pth"        # written by the training stages
LAST_STATE = "last_state.pth"        # training loop state for --resume
CONFIG = "config.json"               # the training config of a run
CASES_SUMMARY = "summary.json"       # failure analysis: threshold, counts, representative cases
LABEL_ISSUES_SUMMARY = "summary.json"  # failure_analysis.py --train-folds: training-set label issues


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, in order: its script (its record is named as the script's stem), its default
    output folder, whether it has a --smoke preset, and which models it takes when the pipeline analyses models
    given to it (imported ones) instead of training: TRAINS (it retrains a recipe: skipped, `why`), BASELINE or
    IMPROVED (--checkpoint), PAIR (both models, skipped without a second), BOTH (--baseline and --improved, the
    second `none` when absent), RECORDS_ONLY (reads only the other stages' records)."""
    script: str
    folder: Path
    smoke: bool
    models: str
    why: str = ""

    @property
    def name(self) -> str:
        return Path(self.script).stem


TRAINS, BASELINE, IMPROVED, PAIR, BOTH, RECORDS_ONLY = "trains", "baseline", "improved", "pair", "both", "records"
PIPELINE = (
    Stage("train.py", EXPERIMENTS / "baseline", True, TRAINS, "trains the built-in ResNet-18"),
    Stage("failure_analysis.py", CASES_ROOT / "baseline", True, BASELINE),
    Stage("explainability.py", CASES_ROOT / "baseline", False, BASELINE),
    Stage("improvement.py", EXPERIMENTS / "improved", True, TRAINS, "trains the built-in ResNet-18"),
    Stage("compare_models.py", EXPERIMENTS / "comparison", False, PAIR),
    Stage("explainability_improved.py", CASES_ROOT / "baseline", False, IMPROVED),
    Stage("calibration.py", EXPERIMENTS / "calibration", False, BOTH),
    Stage("ood.py", EXPERIMENTS / "ood", True, BOTH),
    Stage("robustness.py", EXPERIMENTS / "robustness", True, BOTH),
    Stage("adversarial.py", EXPERIMENTS / "adversarial", True, BOTH),
    Stage("explanation_checks.py", EXPERIMENTS / "explanations", True, BOTH),
    Stage("seeds.py", EXPERIMENTS / "seeds", True, TRAINS,
          "retrains each model's training recipe over seeds (a run of train.py/improvement.py)"),
    Stage("stress_profile.py", EXPERIMENTS / "profile", True, BOTH),
    Stage("report.py", EXPERIMENTS / "report", False, RECORDS_ONLY),
)
STAGES = {stage.script: stage for stage in PIPELINE}

# Study A: each training run's folder and the stage script that writes it.
RUNS = {"baseline": (STAGES["train.py"].folder, "train.py"),
        "improved": (STAGES["improvement.py"].folder, "improvement.py")}
CASES_DIR = STAGES["failure_analysis.py"].folder
CASES_PRODUCER = "failure_analysis.py"
EXPLAINERS = {"baseline": "explainability.py", "improved": "explainability_improved.py"}  # gradcam_<tag>.npz
COMPARISON_DIR = STAGES["compare_models.py"].folder
CALIBRATION_DIR = STAGES["calibration.py"].folder
OOD_DIR = STAGES["ood.py"].folder
ROBUSTNESS_DIR = STAGES["robustness.py"].folder
ADVERSARIAL_DIR = STAGES["adversarial.py"].folder
SEEDS_DIR = STAGES["seeds.py"].folder             # <model>/seed_<k>/ run folders
EXPLANATIONS_DIR = STAGES["explanation_checks.py"].folder
PROFILE_DIR = STAGES["stress_profile.py"].folder
OPEN_SET_DIR = EXPERIMENTS / "open_set"        # train.py --classes: a run on some classes (ood.py --open-set)
LABEL_ISSUES_DIR = EXPERIMENTS / "label_issues"  # failure_analysis.py --train-folds (fold_<k>/ run folders)
REPORT_DIR = STAGES["report.py"].folder
IMPORT_CARD = "import.json"                      # import_model.py: beside the imported model's best_model.pth

# Study B
PROBING_DIR = EXPERIMENTS / "probing"
PROBING_CASES_DIR = CASES_ROOT / "probing"


def run_dir(tag: str) -> Path:
    return RUNS[tag][0]


def checkpoint_path(tag: str) -> Path:
    return RUNS[tag][0] / BEST_MODEL


def producer(tag: str) -> str:
    return RUNS[tag][1]
