"""Study B, stage 1: kNN (DINO protocol, k=20) and a linear head on frozen ResNet-50 / ViT-B/16 features."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: runs without pip install -e
from stresstest.stages.probing.baseline_knn import main  # noqa: E402 (after the path it is found on)

if __name__ == "__main__":
    main(__doc__)
