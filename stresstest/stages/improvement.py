"""Stage 4 (improvement.py): the same ResNet-18 and recipe with the study's one change, label smoothing 0.1, into
experiments/improved/."""
from ..training import RunSettings, training_stage

SETTINGS = RunSettings(stage="improvement", tag="improved", label_smoothing=0.1)


def main(description: str | None, argv: list[str] | None = None) -> None:
    training_stage(description, SETTINGS, argv)
