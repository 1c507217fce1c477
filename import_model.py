"""Import a CIFAR-10 classifier from elsewhere (any architecture, its weights and preprocessing) into
experiments/<name>/best_model.pth, checked on the test images, for every analysis stage and the report."""
from stresstest.stages.import_model import main

if __name__ == "__main__":
    main(__doc__)
