"""Stage 6: Grad-CAM of the label-smoothed model on the same failure cases (gradcam_improved.png)."""
from stresstest.stages.explainability_improved import main

if __name__ == "__main__":
    main(__doc__)
