"""Does training work on this GPU, in each precision, at full size? (random weights)

For SD 1.5 and SDXL base shapes, in fp16 (with its loss scale) and bf16: learn a word for
--steps steps from four made-up photos at the native size through oneword's own trainer
(VAE encoding, text encoders, UNet, checkpoints), and report
  the losses (all finite? the mean of the last ten below the first ten's?), the loss scale
  and the steps it skipped (fp16), seconds per step;
  GPU memory per training sample and the fixed part, from passes of 1 and 2 samples, and the
  largest batch that fits the free memory, without and with --low-memory.
Random weights compute and fill memory as the real models do; they learn nothing of note, so
"falling" only says the optimizer moves the loss the way it should.

    python bench/gpu_check.py --json bench/results/gpu_check.json     # on a CUDA GPU
    python bench/gpu_check.py --small --device cpu --steps 5          # tiny shapes: a dry run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from oneword.adapters.loading import model_from_components, sdxl_model_from_parts
from oneword.adapters.tiny import (
    TinySDXLShapes,
    TinyShapes,
    build_components,
    build_sdxl_components,
)
from oneword.core.prompts import template_words
from oneword.core.train import TrainConfig, train
from oneword.errors import OnewordError
from oneword.experiments.micro_batch import probe_peak, samples_that_fit

sys.path.insert(0, str(Path(__file__).parent))  # the full-size builders beside this file
from full_size import build_sd15_components, build_sdxl_base_components  # noqa: E402

GIB = 2**30


def build(family: str, small: bool, device: torch.device):
    """The family's parts (random weights); SD: Components, SDXL: the pipeline's kwargs."""
    if family == "sd15":
        if small:
            return build_components(template_words(), TinyShapes(latent_size=16), seed=0)
        return build_sd15_components(seed=0, device=device)
    if small:
        return build_sdxl_components(template_words(), TinySDXLShapes(latent_size=16), seed=0)
    return build_sdxl_base_components(seed=0, device=device)


def load(family: str, parts, device: torch.device, dtype: str):
    """A model over `parts` in `dtype` (converted in place), with the word added."""
    if family == "sd15":
        model = model_from_components(parts, f"sd15-{dtype}", str(device), dtype)
    else:
        model = sdxl_model_from_parts(parts, f"sdxl-{dtype}", str(device), dtype)
    model.add_placeholder_tokens(["<t>"])
    return model


def photos(resolution: int) -> torch.Tensor:
    """Four smooth made-up photos [4, 3, R, R] in [-1, 1]."""
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=resolution, mode="bicubic").clamp(-1, 1)


def learn(model, steps: int) -> dict:
    config = TrainConfig(
        token="<t>", init_word="cat", steps=steps, grad_accum=1, checkpoint_every=10**6
    )
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        start = time.perf_counter()
        state = train(model, photos(model.native_resolution), config, Path(folder))
        seconds = time.perf_counter() - start
    losses = state.history
    window = max(1, min(10, len(losses) // 2))
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    return {
        "losses": losses,
        "finite": all(math.isfinite(x) for x in losses) and bool(state.rows().isfinite().all()),
        "falling": last < first,
        "first_mean": first,
        "last_mean": last,
        "loss_scale": state.scaler.get_scale() if state.scaler is not None else None,
        "seconds_per_step": seconds / max(1, len(losses)),  # photo encoding included
    }


def memory(model, low_memory: bool) -> dict:
    """GPU memory per sample and the fixed part, from probe passes of 1 and 2 samples, and the
    largest batch that fits in the free memory (None off CUDA)."""
    if model.device.type != "cuda":
        return {}
    config = TrainConfig(token="<t>", init_word="cat", low_memory=low_memory)
    if low_memory:
        model.speed_up(low_memory=True)
    try:
        peaks = [probe_peak(model, config, size) for size in (1, 2)]
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"per_sample_gib": None, "largest_batch": 0}
    free = torch.cuda.mem_get_info(model.device)[0]
    per_sample = max(peaks[1] - peaks[0], 1)
    return {
        "per_sample_gib": per_sample / GIB,
        "fixed_gib": max(peaks[0] - per_sample, 0) / GIB,
        "weights_gib": torch.cuda.memory_allocated(model.device) / GIB,
        "largest_batch": samples_that_fit(peaks, free),
    }


def check(family: str, small: bool, device, dtype: str, steps: int) -> dict:
    """One family in one precision, on parts built afresh (--low-memory stays on a UNet)."""
    row = {"family": family, "dtype": dtype}
    model = None
    try:
        model = load(family, build(family, small, device), device, dtype)
        row["resolution"] = model.native_resolution
        row.update(learn(model, steps))
        row["memory"] = memory(model, low_memory=False)
        row["memory_low_memory"] = memory(model, low_memory=True)
    except (RuntimeError, OnewordError) as exc:  # a precision this device lacks, or no memory
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
    finally:
        model = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="tiny shapes (a dry run on CPU)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--families", default="sd15,sdxl")
    p.add_argument("--dtypes", default="fp16,bf16")
    p.add_argument("--json", help="write the figures here too")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for family in a.families.split(","):
        for dtype in a.dtypes.split(","):
            rows.append(check(family, a.small, device, dtype, a.steps))
            report(rows[-1])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {"device": name, "small": a.small, "steps": a.steps, "rows": rows}, f, indent=2
            )
    return 0 if all("error" not in r and r["finite"] for r in rows) else 1


def report(r: dict) -> None:
    if "error" in r:
        print(f"{r['family']:5s} {r['dtype']:5s} failed: {r['error']}", flush=True)
        return
    mem, low = r["memory"], r["memory_low_memory"]
    fits = (
        f"; {mem['per_sample_gib']:.2f} GiB/sample, fits {mem['largest_batch']}; low memory "
        f"{low['per_sample_gib'] or float('nan'):.2f} GiB/sample, fits {low['largest_batch']}"
        if mem
        else ""
    )
    print(
        f"{r['family']:5s} {r['dtype']:5s} {r['resolution']}px: loss {r['first_mean']:.4f} -> "
        f"{r['last_mean']:.4f} (finite {r['finite']}, falling {r['falling']}), scale "
        f"{r['loss_scale']}, {r['seconds_per_step']:.3f} s/step{fits}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
