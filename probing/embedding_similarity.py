"""Study B, stage 3: why hard examples are hard in embedding space: centroid similarities, nearest neighbours, t-SNE."""
from stresstest.stages.probing.embedding_similarity import main

if __name__ == "__main__":
    main(__doc__)
