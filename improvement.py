"""Stage 4: retrain the same ResNet-18 with one change, label smoothing 0.1, into experiments/improved/."""
from stresstest.training import training_cli

if __name__ == "__main__":
    training_cli(__doc__, tag="improved")
