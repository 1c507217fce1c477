"""Stage 3: Grad-CAM of the baseline on every failure case (failure_cases/baseline/case_XX/gradcam_baseline.png)."""
from stresstest.stages.explainability import main

if __name__ == "__main__":
    main(__doc__)
