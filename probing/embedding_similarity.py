"""Study B, stage 3: why hard examples are hard in embedding space: centroid similarities, nearest neighbours, t-SNE."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from stresstest.embedding import main  # noqa: E402

if __name__ == "__main__":
    main(__doc__)
