"""Study B, stage 2: rank the test images by how hard they are for a backbone's probe;
save the hardest with their nearest training neighbours and Grad-CAM."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: runs without pip install -e
from stresstest.stages.probing.hard_examples import main  # noqa: E402 (after the path it is found on)

if __name__ == "__main__":
    main(__doc__)
