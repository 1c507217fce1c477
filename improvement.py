"""Stage 4: retrain the same ResNet-18 with one change, label smoothing 0.1, into experiments/improved/."""
from stresstest.stages.improvement import main

if __name__ == "__main__":
    main(__doc__)
