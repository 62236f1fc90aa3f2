"""Model adapters: the one folder that imports diffusers and transformers.

They load Stable Diffusion pipelines (hub id, diffusers folder, single file, built-in model)
and feature models (CLIP, DINO), and expose them as `core.interface.TextToImage`: plain
tensors and modules. Tests swap in tiny models built in code (`tiny`).
"""

import os
import warnings


def _quiet_library_output() -> None:
    # transformers warns about torchvision on import and both libraries draw their own progress
    # bars; oneword reports progress itself.
    warnings.filterwarnings("ignore", message=".*torchvision.*")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


_quiet_library_output()
