"""Textual Inversion training speed with Stable Diffusion 1.5 shapes (random weights).

Prints samples/s, step time, MFU and peak GPU memory for
  1a. diffusers' own examples/textual_inversion/textual_inversion.py, step for step, with its
      README's settings (batch 1 x accumulation 4, learning rate 5e-4 scaled, constant
      schedule) and its default --mixed_precision no: everything fp32, TF32 matmuls off;
  1b. the same with --mixed_precision fp16: UNet and VAE in fp16, the text encoder fp32 under
      accelerate's autocast, and a GradScaler (on a CPU accelerate gives neither);
      what both do per micro-batch: read, resize, mirror and normalise a JPEG and tokenise a
      caption (its dataset, through accelerate's data loader), VAE-encode it, noise it on the
      model's scaled-linear DDPM schedule, text encoder, UNet, MSE, backward through
      accelerate (optimizer, scheduler and zero_grad act at the accumulation boundary), put
      every row of the grown token table back but the added token's with a boolean mask, read
      the loss back and log it (TensorBoard where installed, as its default);
  2. oneword's default trainer (batch 1 x accumulation 4),
  3. oneword with batched candidates at larger batches,
  4. oneword's low-memory mode (gradient checkpointing),
and generation images/s (512 px, 30 steps) against a plain diffusers pipeline call. The table
gives each row's speed as a multiple of 1a's and of 1b's.

    python bench/train_speed.py --device cuda            # SD 1.5 shapes, 512 px
    python bench/train_speed.py --small --device cpu     # tiny shapes: a smoke run
    python bench/train_speed.py --sdxl --device cuda     # SDXL base shapes, 1024 px (rows 2-4)
    python bench/train_speed.py --sdxl --small --device cpu
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from oneword.adapters.loading import model_from_components, sdxl_model_from_parts
from oneword.adapters.tiny import (
    TinySDXLShapes,
    TinyShapes,
    build_components,
    build_sdxl_components,
)
from oneword.core.generate import Sampling, draw
from oneword.core.memory import OutOfMemory
from oneword.core.prompts import template_words, templates
from oneword.core.train import (
    Candidate,
    PhotoLatents,
    TrainConfig,
    caption_token_ids,
    optimizer_step,
    start_state,
)
from oneword.experiments.micro_batch import resolve_max_batch

sys.path.insert(0, str(Path(__file__).parent))  # the full-size builders beside this file
from full_size import build_sd15_components, build_sdxl_base_components  # noqa: E402

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


# -- rows 1a and 1b: diffusers' examples/textual_inversion/textual_inversion.py, per step ------
# Its README command: --train_batch_size 1 --gradient_accumulation_steps 4
# --learning_rate 5e-4 --scale_lr --lr_scheduler constant --lr_warmup_steps 0, and
# --mixed_precision left at its default, "no". Each timed call is one optimizer step of it.

SCRIPT_ACCUM = 4
SCRIPT_LR = 5e-4 * SCRIPT_ACCUM  # --scale_lr: times accumulation, batch size (1) and processes (1)
SCRIPT_REPEATS = 100  # --repeats: each photo is listed this often per epoch
SCRIPT_TOKEN, SCRIPT_INIT = "<cat-toy>", "cat"  # the README's placeholder; a one-token init word
SCRIPT_MODES = {"no": torch.float32, "fp16": torch.float16}  # --mixed_precision -> UNet/VAE dtype


class ScriptPhotos(torch.utils.data.Dataset):
    """The script's dataset, per sample: open the file, make it RGB, tokenise a random caption
    to the full context, resize it bicubically to the resolution, mirror it half of the time,
    scale it to [-1, 1] as a CHW tensor. Files are read again for every sample, as there."""

    def __init__(self, paths, tokenizer, size: int, token_text: str, seed: int = 0):
        self.paths, self.tokenizer, self.size = list(paths), tokenizer, size
        self.captions = [t.format(token_text) for t in templates("object")]
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.paths) * SCRIPT_REPEATS

    def __getitem__(self, i: int) -> dict:
        image = Image.open(self.paths[i % len(self.paths)])
        if image.mode != "RGB":
            image = image.convert("RGB")
        ids = self.tokenizer(
            self.rng.choice(self.captions),
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids[0]
        # through a uint8 array and back, where the script's optional centre crop happens
        image = Image.fromarray(np.array(image).astype(np.uint8))
        image = image.resize((self.size, self.size), resample=Image.Resampling.BICUBIC)
        if self.rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = (np.array(image).astype(np.uint8) / 127.5 - 1.0).astype(np.float32)
        return {"input_ids": ids, "pixel_values": torch.from_numpy(pixels).permute(2, 0, 1)}


def write_photos(folder: Path, res: int, count: int = 4) -> list[Path]:
    """`count` JPEG photos, 4:3 and larger than the training resolution like a camera's, so
    that reading, decoding and resizing them costs what it costs on real photos."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    width, height = res * 3 // 2, res * 9 // 8
    paths = []
    for k in range(count):
        ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(0, 255, 3)
        pixels = ramp + rng.uniform(0, 64, 3) + rng.normal(0, 24, (height, width, 3))
        paths.append(folder / f"photo_{k}.jpg")
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(paths[-1], quality=90)
    return paths


@dataclass
class ScriptRun:
    """What the script holds while it trains, for one --mixed_precision mode."""

    accelerator: object
    tokenizer: object  # the script's copies: it adds a token and grows the table
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    vae: torch.nn.Module
    weight_dtype: torch.dtype
    noise_scheduler: object
    optimizer: object
    lr_scheduler: object
    batches: Iterator[dict]
    placeholder_ids: list[int]
    original_rows: torch.Tensor
    progress: object  # the script's tqdm bar, written to a file in `folder` here
    folder: tempfile.TemporaryDirectory
    global_step: int = 0


def add_script_token(tokenizer, text_encoder) -> list[int]:
    """The script's new word: a token added to the tokenizer, the table grown by one row,
    the row copied from the initializer word's."""
    if tokenizer.add_tokens([SCRIPT_TOKEN]) != 1:
        raise ValueError(f"the tokenizer already has {SCRIPT_TOKEN}")
    init_ids = tokenizer.encode(SCRIPT_INIT, add_special_tokens=False)
    if len(init_ids) != 1:
        raise ValueError(f"initializer {SCRIPT_INIT!r} is {len(init_ids)} tokens, not one")
    placeholder_ids = tokenizer.convert_tokens_to_ids([SCRIPT_TOKEN])
    text_encoder.resize_token_embeddings(len(tokenizer))
    rows = text_encoder.get_input_embeddings().weight.data
    with torch.no_grad():
        for token_id in placeholder_ids:
            rows[token_id] = rows[init_ids[0]].clone()
    return placeholder_ids


def script_accelerator(mode: str, device: torch.device, folder: Path):
    """The script's Accelerator; it logs to TensorBoard (its --report_to default) where that
    is installed."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, is_tensorboard_available

    tensorboard = is_tensorboard_available()
    accelerator = Accelerator(
        gradient_accumulation_steps=SCRIPT_ACCUM,
        mixed_precision=mode,
        cpu=device.type == "cpu",
        log_with="tensorboard" if tensorboard else None,
        project_config=ProjectConfiguration(
            project_dir=str(folder), logging_dir=str(folder / "logs")
        ),
    )
    if tensorboard and accelerator.is_main_process:
        accelerator.init_trackers(
            "textual_inversion",
            config={
                "learning_rate": SCRIPT_LR,
                "gradient_accumulation_steps": SCRIPT_ACCUM,
                "train_batch_size": 1,
                "mixed_precision": mode,
            },
        )
    return accelerator


def start_script_run(parts, mode: str, device: torch.device, res: int) -> ScriptRun:
    """Everything the script sets up before its loop, over `parts` (left as found by
    end_script_run): a copy of the text encoder and tokenizer gets the new token, the UNet and
    VAE are cast to the mode's dtype."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    folder = tempfile.TemporaryDirectory(prefix="ti-script-")
    accelerator = script_accelerator(mode, device, Path(folder.name))
    tokenizer, text_encoder = copy.deepcopy(parts.tokenizer), copy.deepcopy(parts.text_encoder)
    placeholder_ids = add_script_token(tokenizer, text_encoder)
    parts.vae.requires_grad_(False).eval()  # eval: as from_pretrained leaves them
    parts.unet.requires_grad_(False).eval()
    body = getattr(text_encoder, "text_model", text_encoder)  # transformers 5 has no text_model
    for frozen in (body.encoder, body.final_layer_norm, body.embeddings.position_embedding):
        frozen.requires_grad_(False)  # what is left trainable is the token table
    optimizer = torch.optim.AdamW(
        text_encoder.get_input_embeddings().parameters(),
        lr=SCRIPT_LR,
        betas=(0.9, 0.999),
        weight_decay=1e-2,
        eps=1e-8,
    )
    token_text = " ".join(tokenizer.convert_ids_to_tokens(placeholder_ids))
    photos = ScriptPhotos(
        write_photos(Path(folder.name) / "photos", res), tokenizer, res, token_text
    )
    loader = torch.utils.data.DataLoader(photos, batch_size=1, shuffle=True, num_workers=0)
    lr_scheduler = get_scheduler(
        "constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=3000
    )
    text_encoder, optimizer, loader, lr_scheduler = accelerator.prepare(
        text_encoder, optimizer, loader, lr_scheduler
    )
    weight_dtype = SCRIPT_MODES[mode]
    parts.unet.to(accelerator.device, dtype=weight_dtype)
    parts.vae.to(accelerator.device, dtype=weight_dtype)
    table = accelerator.unwrap_model(text_encoder).get_input_embeddings()
    original_rows = table.weight.data.clone()
    text_encoder.train()
    return ScriptRun(
        accelerator,
        tokenizer,
        text_encoder,
        parts.unet,
        parts.vae,
        weight_dtype,
        DDPMScheduler.from_config(parts.scheduler.config),
        optimizer,
        lr_scheduler,
        epochs(loader),
        placeholder_ids,
        original_rows,
        tqdm(total=3000, desc="Steps", file=open(Path(folder.name) / "bar", "w")),
        folder,
    )


def epochs(loader) -> Iterator[dict]:
    while True:  # the script's epoch loop, for as long as the bench asks
        yield from loader


def script_loss(run: ScriptRun, batch: dict) -> torch.Tensor:
    """One micro-batch's forward pass: encode the photo (the VAE every time), noise it at a
    random DDPM timestep, condition on the caption, and compare the UNet's prediction."""
    latents = run.vae.encode(batch["pixel_values"].to(dtype=run.weight_dtype))
    latents = latents.latent_dist.sample().detach() * run.vae.config.scaling_factor
    noise = torch.randn_like(latents)
    steps = run.noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (latents.shape[0],), device=latents.device).long()
    noisy = run.noise_scheduler.add_noise(latents, noise, timesteps)
    states = run.text_encoder(batch["input_ids"])[0].to(dtype=run.weight_dtype)
    prediction = run.unet(noisy, timesteps, states).sample
    if run.noise_scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = run.noise_scheduler.get_velocity(latents, noise, timesteps)
    return F.mse_loss(prediction.float(), target.float(), reduction="mean")


def restore_frozen_rows(run: ScriptRun) -> None:
    """Put back every row but the new token's: a boolean mask over the whole table, built on
    the host each micro-batch (as the script does), so AdamW's weight decay moves only it."""
    frozen = torch.ones((len(run.tokenizer),), dtype=torch.bool)
    frozen[min(run.placeholder_ids) : max(run.placeholder_ids) + 1] = False
    table = run.accelerator.unwrap_model(run.text_encoder).get_input_embeddings()
    with torch.no_grad():
        table.weight[frozen] = run.original_rows[frozen]


def script_step(run: ScriptRun) -> None:
    """One optimizer step: SCRIPT_ACCUM micro-batches. accelerate divides each loss by the
    accumulation, scales it for fp16 on a GPU, and lets optimizer, scheduler and zero_grad act
    on the last micro-batch only; the loss is read back (a device sync) and logged every one."""
    for _ in range(SCRIPT_ACCUM):
        batch = next(run.batches)
        with run.accelerator.accumulate(run.text_encoder):
            loss = script_loss(run, batch)
            run.accelerator.backward(loss)
            run.optimizer.step()
            run.lr_scheduler.step()
            run.optimizer.zero_grad()
            restore_frozen_rows(run)
        if run.accelerator.sync_gradients:
            run.progress.update(1)
            run.global_step += 1
        logs = {"loss": loss.detach().item(), "lr": run.lr_scheduler.get_last_lr()[0]}
        run.progress.set_postfix(**logs)
        run.accelerator.log(logs, step=run.global_step)


def end_script_run(run: ScriptRun) -> None:
    """Close what the run opened and hand its UNet and VAE back in fp32."""
    run.batches.close()  # leave the data loader's epoch, as the script's loop ends
    bar_file = run.progress.fp
    run.progress.close()
    bar_file.close()
    run.accelerator.end_training()
    run.accelerator.free_memory()
    run.unet.to(torch.float32)
    run.vae.to(torch.float32)
    run.folder.cleanup()


def forget_accelerate_state() -> None:
    """accelerate keeps one process-wide state and refuses a second --mixed_precision in the
    same process; its own test scripts clear that state this way between cases."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def baseline_rows(parts, res, device, warmup, repeat) -> tuple[list[Row], dict[str, str]]:
    """Rows 1a and 1b: the script with --mixed_precision no and fp16, each timed per optimizer
    step. On a CPU, a mode whose kernels it lacks is returned as skipped, with the reason."""
    rows, skipped = [], {}
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the script turns it on only for --allow_tf32
    try:
        for label, mode in (("1a", "no"), ("1b", "fp16")):
            name = f"{label}. diffusers TI script, precision {mode}"
            try:
                rows.append(time_script(parts, mode, device, res, name, warmup, repeat))
            except (RuntimeError, NotImplementedError) as error:
                if device.type != "cpu":
                    raise
                skipped[name] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
                print(f"# {name}: skipped on this CPU ({skipped[name]})", flush=True)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    if device.type == "cpu" and not any(name.startswith("1b") for name in skipped):
        print(
            "# 1b on a CPU: accelerate applies no autocast and no GradScaler there, so the row "
            "runs an fp16 UNet and VAE under an fp32 text encoder, as the script would"
        )
    return rows, skipped


def time_script(parts, mode, device, res, name, warmup, repeat) -> Row:
    try:
        run = start_script_run(parts, mode, device, res)
        try:
            step_s, peak = timed(lambda: script_step(run), device, warmup, repeat)
        finally:
            end_script_run(run)
    finally:
        forget_accelerate_state()
        parts.unet.to(torch.float32)  # also where the run failed to start
        parts.vae.to(torch.float32)
        run = None  # its copies of the text encoder and optimizer state go before the next mode
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return Row(name, SCRIPT_ACCUM, step_s, peak, 0.0)


def oneword_row(model, config, latents, name, warmup, repeat, flops):
    state = start_state(model, config)
    caption_ids = caption_token_ids(model, config)
    step_s, peak = timed(
        lambda: optimizer_step(model, state, config, latents, caption_ids),
        model.device,
        warmup,
        repeat,
    )
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


def fitted_config(model, candidates: int) -> tuple[TrainConfig, str]:
    """K candidates x batch 1, micro-batched on a GPU to what the free memory holds (as
    `sweep --max-batch auto` does: 128 SD 1.5 samples in one pass need more than 80 GB), and
    the row name's note of the samples per pass."""
    config = config_for(candidates, 1, 1)
    if model.device.type != "cuda":
        return config, ""
    chunk = resolve_max_batch(model, config, "auto")
    return replace(config, max_batch=chunk), f" ({chunk}/pass)" if chunk else ""


def candidate_rows(model, sizes, latents, label, repeat, flops) -> list[Row]:
    """Row 3: K candidates x batch 1 for each K in `sizes`, micro-batched to fit; a K that
    runs out of GPU memory all the same is reported and skipped. `label` formats K into the
    row's name."""
    rows = []
    for size in sizes:
        try:
            config, note = fitted_config(model, size)
            rows.append(
                oneword_row(model, config, latents, label.format(size) + note, 2, repeat, flops)
            )
        except (torch.cuda.OutOfMemoryError, OutOfMemory):
            print(f"# {size} candidates: out of memory", flush=True)
            torch.cuda.empty_cache()
    return rows


def config_for(candidates: int, batch: int, accum: int, max_batch=None) -> TrainConfig:
    return TrainConfig(
        token="<t>",
        init_word="cat",
        batch_size=batch,
        grad_accum=accum,
        steps=10**6,
        max_batch=max_batch,
        candidates=tuple(Candidate(seed=k) for k in range(candidates)),
    )


def generation_rows(model, res, device, n=8, steps=30):
    prompts, seeds = ["a photo of a cat on the beach"] * n, list(range(n))
    ours, _ = timed(
        lambda: draw(model, prompts, seeds, None, Sampling(steps, 7.5, "pndm", res), batch=n),
        device,
        1,
        3,
    )
    plain, _ = timed(
        lambda: model.pipe(
            prompt=prompts, num_inference_steps=steps, height=res, width=res, output_type="pt"
        ),
        device,
        1,
        3,
    )
    return {"oneword images/s": n / ours, "diffusers pipeline images/s": n / plain}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="tiny shapes (CPU smoke run)")
    p.add_argument(
        "--sdxl",
        action="store_true",
        help="SDXL base shapes (two text encoders, 1024 px): oneword's rows only",
    )
    p.add_argument(
        "--batches", help="samples per step to try (row 3; default 32,64,128, SDXL 4,8,16)"
    )
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also try torch.compile (slow start)")
    p.add_argument("--json", help="write the figures here too")
    return p.parse_args(argv)


def random_latents(side: int, device) -> PhotoLatents:
    gen = torch.Generator(device="cpu").manual_seed(0)
    return PhotoLatents(
        torch.randn(10, 4, side, side, generator=gen).to(device),
        torch.rand(10, 4, side, side, generator=gen).to(device) * 0.1,
    )


def main_sdxl(a, device) -> int:
    """SDXL shapes (random weights): oneword's trainer rows; the diffusers example recipe
    (row 1) is SD 1.x's script and has no SDXL counterpart here."""
    res = 64 if a.small else 1024
    parts = (
        build_sdxl_components(template_words(), TinySDXLShapes(latent_size=16), seed=0)
        if a.small
        else build_sdxl_base_components(seed=0, device=device)
    )
    model = sdxl_model_from_parts(parts, "sdxl-random", str(device))
    model.add_placeholder_tokens(["<t>"])
    latents = random_latents(res // model.vae_factor, device)
    flops = count_flops(model, latents)
    rows = [
        oneword_row(
            model, config_for(1, 1, 4), latents, "2. oneword SDXL default (1x4)", 2, a.repeat, flops
        )
    ]
    rows += candidate_rows(
        model,
        [int(x) for x in (a.batches or "4,8,16").split(",")],
        latents,
        "3. oneword SDXL {} cand. x 1",
        a.repeat,
        flops,
    )
    model.speed_up(low_memory=True)
    rows.append(
        oneword_row(
            model,
            config_for(1, 1, 4),
            latents,
            "4. oneword SDXL low-memory (1x4)",
            2,
            a.repeat,
            flops,
        )
    )
    report(rows, {}, flops, device, a.json)
    return 0


def main(argv=None) -> int:
    a = parse(argv)
    device = torch.device(a.device)
    if a.sdxl:
        torch.backends.cuda.matmul.allow_tf32 = True
        return main_sdxl(a, device)
    res = 64 if a.small else 512
    parts = build(a.small, device)
    # rows 1a and 1b run first: they need fp32 text-encoder weights, later rows convert to bf16
    rows, skipped = baseline_rows(parts, res, device, 2, a.repeat)
    bases = {f"x {r.name.split()[-1]}": r for r in rows}  # "x no", "x fp16"
    torch.backends.cuda.matmul.allow_tf32 = True  # oneword's rows; the script's left it off
    model = model_from_components(parts, "sd15-random", str(device))
    model.add_placeholder_tokens(["<t>"])
    latents = random_latents(res // model.vae_factor, device)
    flops_probe = count_flops(model, latents)
    for row in rows:
        row.flops_per_sample = flops_probe  # the same useful work per sample as oneword's
    rows.append(
        oneword_row(
            model,
            config_for(1, 1, 4),
            latents,
            "2. oneword default (1x4)",
            2,
            a.repeat,
            flops_probe,
        )
    )
    batches = a.batches or "32,64,128"
    rows += candidate_rows(
        model,
        [int(x) for x in batches.split(",")],
        latents,
        "3. oneword {} candidates x 1",
        a.repeat,
        flops_probe,
    )
    extra = generation_rows(model, res, device) if not a.small else {}
    if a.compile:
        model.speed_up(channels_last=True, compile_unet=True)
        best = max(int(x) for x in batches.split(","))
        rows.append(
            oneword_row(
                model,
                fitted_config(model, best)[0],
                latents,
                f"3c. oneword {best} cand. + compile",
                3,
                a.repeat,
                flops_probe,
            )
        )
    model.speed_up(low_memory=True)
    rows.append(
        oneword_row(
            model,
            config_for(1, 1, 4),
            latents,
            "4. oneword low-memory (1x4)",
            2,
            a.repeat,
            flops_probe,
        )
    )
    report(rows, extra, flops_probe, device, a.json, bases or None, skipped)
    return 0


def report(rows, extra, flops, device, json_path, bases=None, skipped=None):
    """The table, with one ratio column per baseline row in `bases` (header -> row; default
    the first row), and the rows in `skipped` (name -> reason)."""
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    bases = bases or {"x base": rows[0]}
    skipped = skipped or {}
    print(
        f"\n# device: {name}; FLOPs per training sample: {flops / 1e12:.3f} TFLOP; "
        f"MFU against {PEAK_TFLOPS:.0f} TFLOP/s"
    )
    print(
        f"{'configuration':42s} {'samples/s':>10s} {'step s':>8s} {'MFU':>6s} {'peak GiB':>9s} "
        + " ".join(f"{header:>7s}" for header in bases)
    )
    ratios = {
        r.name: {header: r.samples_per_s / base.samples_per_s for header, base in bases.items()}
        for r in rows
    }
    for r in rows:
        print(
            f"{r.name:42s} {r.samples_per_s:10.2f} {r.step_s:8.4f} {r.mfu:6.1%} "
            f"{r.peak_gib:9.2f} " + " ".join(f"{x:7.2f}" for x in ratios[r.name].values())
        )
    for row_name, reason in skipped.items():
        print(f"{row_name:42s} skipped: {reason}")
    for key, value in extra.items():
        print(f"{key:42s} {value:10.2f}")
    if json_path:
        data = {
            "device": name,
            "flops_per_sample": flops,
            "extra": extra,
            "skipped": skipped,
            "rows": [
                dict(r.__dict__, samples_per_s=r.samples_per_s, mfu=r.mfu, ratios=ratios[r.name])
                for r in rows
            ],
        }
        with open(json_path, "w") as f:
            json.dump(data, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
