"""Study C, stage 7: calibration (ECE, NLL, Brier, reliability diagrams, temperature scaling fitted on the
validation split) and selective prediction (risk-coverage, AURC, E-AURC) of the baseline and improved models."""
from stresstest.stages.calibration import main

if __name__ == "__main__":
    main(__doc__)
