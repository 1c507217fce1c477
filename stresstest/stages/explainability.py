"""Stage 3 (explainability.py): Grad-CAM of the baseline on every failure case."""
from ..explain import TwinSettings, explanation_stage

SETTINGS = TwinSettings(stage="explainability", tag="baseline")


def main(description: str | None, argv: list[str] | None = None) -> None:
    explanation_stage(description, SETTINGS, argv)
