"""Where every stage reads and writes, in one place. The names are the output contract of SPEC.md;
stages take these as the defaults of their --*-dir flags and name the producing script in their hints."""
from pathlib import Path

EXPERIMENTS = Path("experiments")
CASES_ROOT = Path("failure_cases")

BEST_MODEL = "best_model.pth"        # written by the training stages
LAST_STATE = "last_state.pth"        # training loop state for --resume
CONFIG = "config.json"               # the training config of a run
CASES_SUMMARY = "summary.json"       # failure analysis: threshold, counts, representative cases
LABEL_ISSUES_SUMMARY = "summary.json"  # failure_analysis.py --train-folds: training-set label issues

# Study A: each training run's folder and the stage script that writes it.
RUNS = {"baseline": (EXPERIMENTS / "baseline", "train.py"),
        "improved": (EXPERIMENTS / "improved", "improvement.py")}
CASES_DIR = CASES_ROOT / "baseline"  # failure_analysis.py
CASES_PRODUCER = "failure_analysis.py"
EXPLAINERS = {"baseline": "explainability.py", "improved": "explainability_improved.py"}  # gradcam_<tag>.npz
COMPARISON_DIR = EXPERIMENTS / "comparison"
CALIBRATION_DIR = EXPERIMENTS / "calibration"  # study C: calibration.py
ROBUSTNESS_DIR = EXPERIMENTS / "robustness"    # study C: robustness.py
ADVERSARIAL_DIR = EXPERIMENTS / "adversarial"  # study C: adversarial.py
SEEDS_DIR = EXPERIMENTS / "seeds"              # study C: seeds.py (<model>/seed_<k>/ run folders)
EXPLANATIONS_DIR = EXPERIMENTS / "explanations"  # study C: explanation_checks.py
LABEL_ISSUES_DIR = EXPERIMENTS / "label_issues"  # failure_analysis.py --train-folds (fold_<k>/ run folders)
REPORT_DIR = EXPERIMENTS / "report"              # report.py
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
