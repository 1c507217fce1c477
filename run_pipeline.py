"""Studies A and C in one command: the stages in order (listed below), stopping at the first that fails; each stage
reads the files of the stages before it, and the last writes experiments/report/index.html."""
from stresstest.stages.run_pipeline import main

if __name__ == "__main__":
    main(__doc__)
