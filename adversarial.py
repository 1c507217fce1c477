"""Study C, stage 9: both study A models (or any given with --baseline/--improved) under adversarial attack: robust
accuracy against the Linf and L2 radius (FGSM, PGD, APGD, Square, AutoAttack), each image's least perturbation that
changes its answer, transfer between the models, and the gradient-masking checks."""
from stresstest.stages.adversarial import main

if __name__ == "__main__":
    main(__doc__)
