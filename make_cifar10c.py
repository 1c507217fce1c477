"""Export the CIFAR-10 test set under the 15 CIFAR-10-C corruptions (severities 1-5, CIFAR-10-C's own
parameters, computed here in torch) in CIFAR-10-C's file layout: <name>.npy and labels.npy."""
from stresstest.stages.make_cifar10c import main

if __name__ == "__main__":
    main(__doc__)
