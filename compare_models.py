"""Stage 5: compare the baseline and the label-smoothed model on the failure cases and the whole test set."""
from stresstest.stages.compare_models import main

if __name__ == "__main__":
    main(__doc__)
