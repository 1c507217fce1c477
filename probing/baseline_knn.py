"""Study B, stage 1: kNN (DINO protocol, k=20) and a linear head on frozen ResNet-50 / ViT-B/16 features."""
from stresstest.stages.probing.baseline_knn import main

if __name__ == "__main__":
    main(__doc__)
