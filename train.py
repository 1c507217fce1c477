"""Stage 1: train the CIFAR ResNet-18 baseline (no label smoothing) into experiments/baseline/."""
from stresstest.stages.train import main

if __name__ == "__main__":
    main(__doc__)
