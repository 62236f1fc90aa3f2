"""SD 2.x single files without a .yaml: which target their UNet predicts, told from the user's
photos (core.prediction) and remembered for the file, instead of guessed."""

from __future__ import annotations

import torch

from ..core.prediction import pick_prediction, prediction_errors
from ..errors import OnewordError
from .builtin import cache_folder
from .pipelines import TextToImageModel
from .single_file import remember_prediction, unknown_prediction

# SD 2.x's UNet sample size per prediction type: the 512 px base predicts noise, the 768 px
# models v (as the configs of stabilityai/stable-diffusion-2-1-base and -2-1 say)
SD2_SAMPLE_SIZE = {"epsilon": 64, "v_prediction": 96}


def set_prediction_type(model: TextToImageModel, prediction: str) -> None:
    """Train and draw `model` as predicting `prediction`; an SD 2.x model also takes the
    native size that goes with it."""
    scheduler = model.pipe.scheduler
    model.pipe.scheduler = type(scheduler).from_config(scheduler.config, prediction_type=prediction)
    if model.family == "sd2":
        model.pipe.unet.register_to_config(sample_size=SD2_SAMPLE_SIZE[prediction])
    model.prediction_type = prediction
    model.prediction_guessed = False


def settle_prediction(model: TextToImageModel, pixels: torch.Tensor, seed: int = 0) -> str:
    """Tell the prediction type of a model loaded with a guessed one from photos [M, 3, R, R]
    in [-1, 1], set and remember it; returns a note saying what was found. Refused in one
    line where the errors do not tell."""
    errors = prediction_errors(model, pixels, torch.Generator().manual_seed(seed))
    found = pick_prediction(errors)
    said = (
        f"relative error {errors['epsilon']:.2f} against noise, "
        f"{errors['v_prediction']:.2f} against v"
    )
    if found is None:
        raise OnewordError(f"{unknown_prediction(model.name)}; on your photos: {said}")
    set_prediction_type(model, found)
    remember_prediction(model.name, cache_folder(), found)
    what = "noise (epsilon: a 512 px model)" if found == "epsilon" else "v (a 768 px model)"
    return f"note: --model {model.name} predicts {what} on your photos ({said})"
