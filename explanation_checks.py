"""Study C: is Grad-CAM faithful? ROAD against random maps, the model-randomisation sanity check and the agreement
of both models' maps against a shuffled baseline, on the saved failure cases and correct test images, written to
experiments/explanations/."""
from stresstest.stages.explanation_checks import main

if __name__ == "__main__":
    main(__doc__)
