"""The samplers `generate`, previews and scoring draw with, by oneword's names."""

from __future__ import annotations

from ..errors import OnewordError

SCHEDULERS = ("ddim", "pndm", "euler", "euler-a", "dpm++", "ddpm", "lms")
UNCLIPPED = ("clip_sample", "set_alpha_to_one")  # scheduler keys SD's configs set to False


def make_scheduler(name: str, config):
    import diffusers

    classes = {
        "ddim": (diffusers.DDIMScheduler, {}),
        "pndm": (diffusers.PNDMScheduler, {"skip_prk_steps": True}),
        "euler": (diffusers.EulerDiscreteScheduler, {}),
        "euler-a": (diffusers.EulerAncestralDiscreteScheduler, {}),
        "dpm++": (diffusers.DPMSolverMultistepScheduler, {}),
        "ddpm": (diffusers.DDPMScheduler, {}),
        "lms": (diffusers.LMSDiscreteScheduler, {}),
    }
    if name not in classes:
        raise OnewordError(f"--scheduler {name}: choose one of {', '.join(SCHEDULERS)}")
    cls, extra = classes[name]
    # Stable Diffusion never clips its predicted x0 (DDIM and DDPM default to clipping it to
    # [-1, 1], which washes images out); a config that does not say so gets them off
    for key in UNCLIPPED:
        if key not in config:
            extra[key] = False
    return cls.from_config(config, **extra)
