"""Stage 1 (train.py): the CIFAR ResNet-18 baseline, no label smoothing, into experiments/baseline/."""
from ..training import RunSettings, training_stage

SETTINGS = RunSettings(stage="train", tag="baseline", label_smoothing=0.0)


def main(description: str | None, argv: list[str] | None = None) -> None:
    training_stage(description, SETTINGS, argv)
