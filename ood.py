"""Study C, out-of-distribution detection: does each model notice images of no CIFAR-10 class? Twelve scores
(MSP, temperature-scaled MSP, max logit, energy, GEN, ODIN; Mahalanobis, relative Mahalanobis, KNN, ViM, ReAct,
ASH) through pytorch-ood on real images from installed packages, noise and any folder you give, with AUROC,
AUPR and FPR@95 and their bootstrap intervals. Run after calibration.py (it reads the fitted temperature)."""
from stresstest.stages.ood import main

if __name__ == "__main__":
    main(__doc__)
