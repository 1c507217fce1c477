"""Stage 2: find the baseline's confident failures on the test set and save them as failure_cases/baseline/case_XX/."""
from stresstest.stages.failure_analysis import main

if __name__ == "__main__":
    main(__doc__)
