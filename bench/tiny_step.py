"""Time of one training step of the built-in tiny model on this machine (default settings:
batch 1 x accumulation 4), median of many steps.

    python bench/tiny_step.py [--steps 50] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from oneword.adapters.loading import load_model
from oneword.core.train import (
    PhotoLatents,
    TrainConfig,
    caption_token_ids,
    encode_photos,
    optimizer_step,
    start_state,
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int)
    p.add_argument("--model", default="tiny")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(a.model)
    model.add_placeholder_tokens(["<t>"])
    config = TrainConfig(token="<t>", init_word="cat", steps=10**6)
    size = model.native_resolution
    photos = torch.rand(10, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents: PhotoLatents = encode_photos(model, photos)
    state = start_state(model, config)
    ids = caption_token_ids(model, config)
    times = []
    for _ in range(a.steps + 3):
        start = time.perf_counter()
        optimizer_step(model, state, config, latents, ids)
        times.append(time.perf_counter() - start)
    step = statistics.median(times[3:])
    print(
        f"{a.model}: {step * 1000:.1f} ms per step (batch {config.batch_size} x accumulation "
        f"{config.grad_accum}, median of {a.steps}, {torch.get_num_threads()} threads)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
