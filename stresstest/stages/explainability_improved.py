"""Stage 6 (explainability_improved.py): Grad-CAM of the label-smoothed model on the same failure cases."""
from ..explain import TwinSettings, explanation_stage

SETTINGS = TwinSettings(stage="explainability_improved", tag="improved")


def main(description: str | None, argv: list[str] | None = None) -> None:
    explanation_stage(description, SETTINGS, argv)
