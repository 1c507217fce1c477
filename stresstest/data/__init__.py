"""Data: CIFAR-10, the CIFAR-10-C corruptions and file layout, and the reference data the stages check against."""
