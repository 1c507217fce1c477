"""Benchmark: this pipeline's training and inference images/s beside ../shared/bench/peer_dataloader.py."""
from stresstest.stages.bench import main

if __name__ == "__main__":
    main(__doc__)
