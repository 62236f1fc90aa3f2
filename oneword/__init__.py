"""oneword: teach Stable Diffusion a new word from a few photos (Textual Inversion)."""

__version__ = "0.1.0"
