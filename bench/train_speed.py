"""Textual Inversion training speed with Stable Diffusion 1.5 shapes (random weights).

Prints samples/s, step time, MFU and peak GPU memory for
  1. a plain loop following the diffusers example recipe (VAE encode every step, fp16 autocast
     over fp32 weights, the whole token table in the optimizer, batch 1 x accumulation 4),
  2. oneword's default trainer (batch 1 x accumulation 4),
  3. oneword with batched candidates at larger batches,
  4. oneword's low-memory mode (gradient checkpointing),
and generation images/s (512 px, 30 steps) against a plain diffusers pipeline call.

    python bench/train_speed.py --device cuda            # SD 1.5 shapes, 512 px
    python bench/train_speed.py --small --device cpu     # tiny shapes: a smoke run
    python bench/train_speed.py --sdxl --device cuda     # SDXL base shapes, 1024 px (rows 2-4)
    python bench/train_speed.py --sdxl --small --device cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from oneword.core import diffusion
from oneword.core.generate import Sampling, draw
from oneword.adapters.tiny import (TinySDXLShapes, TinyShapes, build_components,
                                   build_sdxl_components)
from full_size import build_sd15_components, build_sdxl_base_components
from oneword.adapters.loading import model_from_components, sdxl_model_from_parts
from oneword.core.prompts import template_words
from oneword.core.train import Candidate, PhotoLatents, TrainConfig, caption_token_ids, \
    optimizer_step, start_state

PEAK_TFLOPS = 800.0  # measured bf16 matrix rate of an H100/H200 here (see the issue)


@dataclass
class Row:
    name: str
    samples_per_step: int
    step_s: float
    peak_gib: float
    flops_per_sample: float

    @property
    def samples_per_s(self) -> float:
        return self.samples_per_step / self.step_s

    @property
    def mfu(self) -> float:
        return self.samples_per_s * self.flops_per_sample / (PEAK_TFLOPS * 1e12)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup: int, repeat: int) -> tuple[float, float]:
    """Median seconds per call and peak GiB of device memory."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return sorted(times)[len(times) // 2], peak


def build(small: bool, device: torch.device):
    if small:
        words = template_words()
        return build_components(words, TinyShapes(latent_size=16), seed=0)
    return build_sd15_components(seed=0, device=device)


def baseline_step(parts, pixels, ids, alphas, device, accum=4):
    """The diffusers example's inner loop, written out: everything it does per step."""
    table = parts.text_encoder.get_input_embeddings()
    opt = baseline_step.opt
    for _ in range(accum):
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            lat = parts.vae.encode(pixels.half() if device.type == "cuda" else pixels)
            latents = lat.latent_dist.sample() * parts.vae.config.scaling_factor
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (latents.shape[0],), device=device)
            noisy = diffusion.add_noise(latents.float(), noise.float(), alphas[t]).to(latents.dtype)
            states = parts.text_encoder(ids)[0]
            pred = parts.unet(noisy, t, encoder_hidden_states=states).sample
            loss = F.mse_loss(pred.float(), noise.float()) / accum
        loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():  # the example restores every row but the placeholder's
        table.weight[:-1] = baseline_step.original[:-1]


def run_baseline(parts, res, device, warmup, repeat, flops):
    gpu = device.type == "cuda"
    parts.unet.to(device, torch.float16 if gpu else torch.float32).requires_grad_(False)
    parts.vae.to(device, torch.float16 if gpu else torch.float32).requires_grad_(False)
    parts.text_encoder.to(device, torch.float32).requires_grad_(False)
    table = parts.text_encoder.get_input_embeddings()
    table.weight.requires_grad_(True)
    parts.text_encoder.train()
    baseline_step.opt = torch.optim.AdamW([table.weight], lr=5e-4)
    baseline_step.original = table.weight.detach().clone()
    pixels = torch.rand(1, 3, res, res, device=device) * 2 - 1
    ids = parts.tokenizer(["a photo of a cat"], padding="max_length", max_length=77,
                          return_tensors="pt").input_ids.to(device)
    alphas = torch.linspace(0.9991, 0.0047, 1000, device=device)
    step_s, peak = timed(lambda: baseline_step(parts, pixels, ids, alphas, device),
                         device, warmup, repeat)
    table.weight.requires_grad_(False)
    parts.text_encoder.eval()
    del baseline_step.opt, baseline_step.original
    return Row("1. diffusers example recipe (baseline)", 4, step_s, peak, flops)


def oneword_row(model, config, latents, name, warmup, repeat, flops):
    state = start_state(model, config)
    caption_ids = caption_token_ids(model, config)
    step_s, peak = timed(lambda: optimizer_step(model, state, config, latents, caption_ids),
                         model.device, warmup, repeat)
    samples = config.batch_size * config.grad_accum * len(config.candidate_list)
    return Row(name, samples, step_s, peak, flops)


def count_flops(model, latents) -> float:
    """FLOPs of one training sample: text encoder and UNet forward, backward to the rows."""
    from torch.utils.flop_counter import FlopCounterMode
    config = TrainConfig(token="<t>", init_word="cat", grad_accum=1, steps=10**6)
    state = start_state(model, config)
    caption_ids = caption_token_ids(model, config)
    with FlopCounterMode(display=False) as counter:
        optimizer_step(model, state, config, latents, caption_ids)
    return float(counter.get_total_flops())


def candidate_rows(model, sizes, latents, label, repeat, flops) -> list[Row]:
    """Row 3: K candidates x batch 1 for each K in `sizes`; a K that runs out of GPU memory
    is reported and skipped. `label` formats K into the row's name."""
    rows = []
    for size in sizes:
        try:
            rows.append(oneword_row(model, config_for(size, 1, 1), latents, label.format(size),
                                    2, repeat, flops))
        except torch.cuda.OutOfMemoryError:
            print(f"# {size} candidates: out of memory", flush=True)
            torch.cuda.empty_cache()
    return rows


def config_for(candidates: int, batch: int, accum: int, max_batch=None) -> TrainConfig:
    return TrainConfig(token="<t>", init_word="cat", batch_size=batch, grad_accum=accum,
                       steps=10**6, max_batch=max_batch,
                       candidates=tuple(Candidate(seed=k) for k in range(candidates)))


def generation_rows(model, res, device, n=8, steps=30):
    prompts, seeds = ["a photo of a cat on the beach"] * n, list(range(n))
    ours, _ = timed(lambda: draw(model, prompts, seeds, None, Sampling(steps, 7.5, "pndm", res),
                                 batch=n), device, 1, 3)
    plain, _ = timed(lambda: model.pipe(prompt=prompts, num_inference_steps=steps, height=res,
                                        width=res, output_type="pt"), device, 1, 3)
    return {"oneword images/s": n / ours, "diffusers pipeline images/s": n / plain}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="tiny shapes (CPU smoke run)")
    p.add_argument("--sdxl", action="store_true",
                   help="SDXL base shapes (two text encoders, 1024 px): oneword's rows only")
    p.add_argument("--batches", help="samples per step to try (row 3; default 32,64,128, "
                                     "SDXL 4,8,16)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also try torch.compile (slow start)")
    p.add_argument("--json", help="write the figures here too")
    return p.parse_args(argv)


def random_latents(side: int, device) -> PhotoLatents:
    gen = torch.Generator(device="cpu").manual_seed(0)
    return PhotoLatents(torch.randn(10, 4, side, side, generator=gen).to(device),
                        torch.rand(10, 4, side, side, generator=gen).to(device) * 0.1)


def main_sdxl(a, device) -> int:
    """SDXL shapes (random weights): oneword's trainer rows; the diffusers example recipe
    (row 1) is SD 1.x's script and has no SDXL counterpart here."""
    res = 64 if a.small else 1024
    parts = (build_sdxl_components(template_words(), TinySDXLShapes(latent_size=16), seed=0)
             if a.small else build_sdxl_base_components(seed=0, device=device))
    model = sdxl_model_from_parts(parts, "sdxl-random", str(device))
    model.add_placeholder_tokens(["<t>"])
    latents = random_latents(res // model.vae_factor, device)
    flops = count_flops(model, latents)
    rows = [oneword_row(model, config_for(1, 1, 4), latents, "2. oneword SDXL default (1x4)",
                        2, a.repeat, flops)]
    rows += candidate_rows(model, [int(x) for x in (a.batches or "4,8,16").split(",")],
                           latents, "3. oneword SDXL {} cand. x 1", a.repeat, flops)
    model.speed_up(low_memory=True)
    rows.append(oneword_row(model, config_for(1, 1, 4), latents,
                            "4. oneword SDXL low-memory (1x4)", 2, a.repeat, flops))
    report(rows, {}, flops, device, a.json)
    return 0


def main(argv=None) -> int:
    a = parse(argv)
    device = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    if a.sdxl:
        return main_sdxl(a, device)
    res = 64 if a.small else 512
    parts = build(a.small, device)
    rows = []
    flops_probe = None
    # row 1 runs first: it needs fp32 text-encoder weights, later rows convert to bf16
    rows.append(run_baseline(parts, res, device, 2, a.repeat, 0.0))
    model = model_from_components(parts, "sd15-random", str(device))
    model.add_placeholder_tokens(["<t>"])
    latents = random_latents(res // model.vae_factor, device)
    flops_probe = count_flops(model, latents)
    rows[0].flops_per_sample = flops_probe
    rows.append(oneword_row(model, config_for(1, 1, 4), latents, "2. oneword default (1x4)",
                            2, a.repeat, flops_probe))
    batches = a.batches or "32,64,128"
    rows += candidate_rows(model, [int(x) for x in batches.split(",")], latents,
                           "3. oneword {} candidates x 1", a.repeat, flops_probe)
    extra = generation_rows(model, res, device) if not a.small else {}
    if a.compile:
        model.speed_up(channels_last=True, compile_unet=True)
        best = max(int(x) for x in batches.split(","))
        rows.append(oneword_row(model, config_for(best, 1, 1), latents,
                                f"3c. oneword {best} cand. + compile", 3, a.repeat, flops_probe))
    model.speed_up(low_memory=True)
    rows.append(oneword_row(model, config_for(1, 1, 4), latents, "4. oneword low-memory (1x4)",
                            2, a.repeat, flops_probe))
    report(rows, extra, flops_probe, device, a.json)
    return 0


def report(rows, extra, flops, device, json_path):
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"\n# device: {name}; FLOPs per training sample: {flops / 1e12:.3f} TFLOP; "
          f"MFU against {PEAK_TFLOPS:.0f} TFLOP/s")
    base = rows[0].samples_per_s
    print(f"{'configuration':42s} {'samples/s':>10s} {'step s':>8s} {'MFU':>6s} "
          f"{'peak GiB':>9s} {'x base':>7s}")
    for r in rows:
        print(f"{r.name:42s} {r.samples_per_s:10.2f} {r.step_s:8.4f} {r.mfu:6.1%} "
              f"{r.peak_gib:9.2f} {r.samples_per_s / base:7.2f}")
    for key, value in extra.items():
        print(f"{key:42s} {value:10.2f}")
    if json_path:
        data = {"device": name, "flops_per_sample": flops, "extra": extra,
                "rows": [dict(r.__dict__, samples_per_s=r.samples_per_s, mfu=r.mfu) for r in rows]}
        with open(json_path, "w") as f:
            json.dump(data, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
