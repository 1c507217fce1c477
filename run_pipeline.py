"""Studies A and C in one command: the stages in order, stopping at the first that fails.

train.py -> failure_analysis.py -> explainability.py -> improvement.py -> compare_models.py
-> explainability_improved.py (study A) -> calibration.py -> robustness.py -> explanation_checks.py -> seeds.py
(study C) -> report.py (experiments/report/index.html). Each stage reads the files of the stages before it."""
from stresstest.stages.run_pipeline import main

if __name__ == "__main__":
    main(__doc__)
