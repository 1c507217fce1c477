"""Study C, failures in groups: one row per test image and model joining every stage's per-image signals
(confidence, temperature-scaled confidence, label quality, corruption flips, adversarial distance, OOD
percentiles, seeds that get it wrong), the correlations between them, and the failure slices: groups of
look-alike test images a model gets wrong together, found on one half of the test set and measured on the other."""
from stresstest.stages.stress_profile import main

if __name__ == "__main__":
    main(__doc__)
