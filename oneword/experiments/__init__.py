"""Experiments: the store, the training pipeline (learn, sweeps, Ray), scoring, DreamBench."""
