"""Study B, stage 2: rank the test images by how hard they are for a backbone's probe;
save the hardest with their nearest training neighbours and Grad-CAM."""
from stresstest.stages.probing.hard_examples import main

if __name__ == "__main__":
    main(__doc__)
