"""Study B, step 0: penultimate features of a frozen backbone for CIFAR-10 train and test,
cached under experiments/probing/<model>/ (every other probing stage does this first when needed)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: runs without pip install -e
from stresstest.stages.probing.extract_features import main  # noqa: E402 (after the path it is found on)

if __name__ == "__main__":
    main(__doc__)
