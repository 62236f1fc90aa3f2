"""The core: what learning and drawing a word is (the trainer and its invariant, the diffusion
math, prompts, photos and embedding files). It never imports diffusers or transformers; it
works on any model that has the `interface.TextToImage` shape."""
