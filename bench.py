"""Benchmark: this pipeline's training and inference images/s beside ../shared/bench/peer_dataloader.py."""
from stresstest.benchmark import main

if __name__ == "__main__":
    main()
