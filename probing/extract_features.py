"""Study B, step 0: penultimate features of a frozen backbone for CIFAR-10 train and test,
cached under experiments/probing/<model>/ (every other probing stage does this first when needed)."""
from stresstest.stages.probing.extract_features import main

if __name__ == "__main__":
    main(__doc__)
