"""Search in embedding space: operations on words (on the sphere too), evolution, successive
halving and the label-free picks, standing on the store and the training pipeline."""
