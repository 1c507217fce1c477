"""Study B, stage 3: why hard examples are hard in embedding space: centroid similarities, nearest neighbours, t-SNE."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: runs without pip install -e
from stresstest.stages.probing.embedding_similarity import main  # noqa: E402 (after the path it is found on)

if __name__ == "__main__":
    main(__doc__)
