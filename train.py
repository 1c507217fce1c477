"""Stage 1: train the CIFAR ResNet-18 baseline (no label smoothing) into experiments/baseline/."""
from stresstest.training import training_cli

if __name__ == "__main__":
    training_cli(__doc__, tag="baseline")
