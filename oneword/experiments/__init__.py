"""Experiments: the store, the training pipeline (learn, sweeps, Ray), scoring, search in
embedding space and evolution, DreamBench."""
