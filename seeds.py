"""Study C: train both study A models over several seeds (experiments/seeds/<model>/seed_<k>/) and report every
comparison with its spread: t-intervals over seeds, McNemar per seed, stability of the confident failures."""
from stresstest.stages.seeds import main

if __name__ == "__main__":
    main(__doc__)
