"""Study C, stage 8: both study A models on the 15 CIFAR-10-C corruptions at severities 1-5 (computed here,
or the published files with --cifar10c-dir), and occlusion sensitivity of each failure case beside its Grad-CAM."""
from stresstest.stages.robustness import main

if __name__ == "__main__":
    main(__doc__)
