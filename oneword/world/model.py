"""The world model: oneword's own small *pretrained* text-to-image model of the procedural world.

No real Stable Diffusion weights can be downloaded here, so oneword trains an SD-layout model
(CLIP text encoder, UNet2DConditionModel, AutoencoderKL, DDIM scheduler) on images rendered on
the fly by `render.py` and captioned by `captions.py`. Hidden subjects ("cat", "dog", ...) appear
in many training images but their captions use only the class word, which also names the other
members of the class (same shape, any colours); Textual Inversion must be able to learn the
subjects back. This model is oneword's default model and its quality bench.

    python -m oneword.world.model train --out DIR --device cuda --minutes 6 --seed 0
    python -m oneword.world.model train --out DIR --preset cpu --threads 2  # 110 min, 2 cores

Phase 1 trains the VAE (MSE + a little L1 + a small KL) and sets its scaling factor to
1/std of its latents (as SD's 0.18215). Phase 2 freezes the VAE and trains UNet and text
encoder jointly on the noise-prediction loss (Ho et al. 2020) with Min-SNR weighting (Hang et al.
2023), 10% empty captions for classifier-free guidance (Ho & Salimans 2022), AdamW with warm-up
and cosine decay, gradient clipping, bf16 autocast on CUDA and an EMA of the weights; with
`--align-weight` (0.5 by default) also representation alignment to the oracle's features
(Yu et al. 2024; `FeatureAlignment`), which only steers training and is not saved. Both
phases run against a wall-clock budget checked every step, so the model is saved in time even
when the machine is slower than expected. The folder is saved in fp16 and loads with
`oneword.adapters.loading.load_model(folder)`; `train_log.json` beside the weights records the run.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ..adapters.loading import load_model, write_model_settings
from ..adapters.tiny import (
    Components,
    build_components,
    load_components,
    save_components,
)
from ..core import diffusion
from ..errors import OnewordError
from .alignment import make_alignment, oracle_or_none
from .render import HIDDEN_SUBJECTS, render_batch, sample_specs
from .training_config import (
    IMAGE_SIZE,
    LEARN_STEPS,
    LOG_NAME,
    MAX_FILE_MB,
    MAX_TOTAL_MB,
    PRESETS,
    WorldModelConfig,
    preset,
    world_vocabulary,
)
from .training_loop import (
    CaptionTokens,
    Clock,
    Ema,
    Generators,
    PhaseLog,
    Stream,
    amp_context,
    make_optimizer,
    run_phase,
    size_report,
    training_captions,
    use_amp,
    use_vae_amp,
)
from .vae_phase import (
    encode_latent_params,
    measure_scaling_factor,
    render_images,
    sample_latents,
    train_vae,
)


def snr_weights(alpha_bar: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023); ones when gamma is 0."""
    if not gamma:
        return torch.ones_like(alpha_bar)
    snr = alpha_bar / (1 - alpha_bar)
    clipped = snr.clamp(max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr


def train_unet(
    parts: Components,
    config: WorldModelConfig,
    gens: Generators,
    device: torch.device,
    seconds: float,
) -> tuple[PhaseLog, Ema | None]:
    unet, text_encoder, vae = parts.unet, parts.text_encoder, parts.vae
    unet.train().requires_grad_(True)
    text_encoder.train().requires_grad_(True)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = make_optimizer(params, config.lr, config.weight_decay, device)
    ema = Ema(params, config.ema_decay) if config.ema_decay else None
    amp = use_amp(config, device)
    scale = float(vae.config.scaling_factor)
    prediction_type = parts.scheduler.config.prediction_type
    alphas = parts.scheduler.alphas_cumprod.to(device, torch.float32)
    tokens = CaptionTokens(parts.tokenizer, device)
    forward = torch.compile(unet) if config.compile else unet

    vae_amp = use_vae_amp(config, device)
    align = make_alignment(unet, config, device)
    if align is not None:
        params += list(align.projectors.parameters())
        optimizer.add_param_group({"params": list(align.projectors.parameters())})
    channels = 2 * vae.config.latent_channels + 1

    def make(n: int):  # [n, 2c+1 (+f), h, w]: posterior mean, std, loss weights (, REPA)
        specs, images = render_images(n, config, gens, device)
        params = encode_latent_params(vae, images[:, :3], vae_amp)
        size = params.shape[-1]
        pieces = [params, F.adaptive_avg_pool2d(images[:, 3:], params.shape[-2:])]
        if align is not None:
            pieces.append(align.targets(images[:, :3], size))
        return specs, torch.cat(pieces, 1)

    stream = Stream(make, config.batch_size, config.fresh_share, config.pool_batches, gens.pool)

    def step(i: int) -> torch.Tensor:
        specs, stored = stream.next()
        latent_params, targets = stored[:, :channels], stored[:, channels:]
        latents = sample_latents(latent_params[:, :-1], gens.noise) * scale
        ids = tokens(training_captions(specs, config, gens.captions))
        noise = torch.randn(latents.shape, generator=gens.noise, device=device)
        t = torch.randint(
            0, alphas.shape[0], (latents.shape[0],), generator=gens.noise, device=device
        )
        alpha_bar = alphas[t]
        noisy = diffusion.add_noise(latents, noise, alpha_bar)
        with amp_context(device, amp):
            states = text_encoder(ids)[0]
            pred = forward(noisy, t, encoder_hidden_states=states).sample
        target = diffusion.prediction_target(prediction_type, latents, noise, alpha_bar)
        weights = snr_weights(alpha_bar, config.min_snr_gamma, prediction_type)
        pixels = latent_params[:, -1:]
        loss = (diffusion.weighted_per_sample_mse(pred, target, pixels) * weights).mean()
        if align is not None:
            loss = loss + config.align_weight * align.loss(targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(i)
        return loss.detach().float()

    log = run_phase(
        PhaseLog("unet"),
        step,
        optimizer,
        config.lr,
        config.steps,
        seconds,
        config.batch_size,
        config,
        device,
    )
    if align is not None:
        align.close()
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    return log, ema


@torch.no_grad()
def reconstruction_check(
    vae, oracle, n: int, seed: int, device: torch.device, batch: int = 128
) -> dict[str, dict[str, float]]:
    """Oracle accuracy per head on fresh renders and on their VAE reconstructions."""
    from .oracle import HEADS, labels

    g = torch.Generator(device=device).manual_seed(seed)
    hits = {"real": {k: 0 for k in HEADS}, "vae": {k: 0 for k in HEADS}}
    for i in range(0, n, batch):
        specs = sample_specs(min(batch, n - i), torch.Generator().manual_seed(seed + i))
        images = render_batch(specs, g, device)
        dist = vae.encode(images * 2 - 1).latent_dist
        recon = ((vae.decode(dist.mean).sample.float() + 1) / 2).clamp(0, 1)
        target = labels(specs, device)
        for kind, x in (("real", images), ("vae", recon)):
            logits = oracle(x)
            for k in HEADS:
                hits[kind][k] += int((logits[k].argmax(1) == target[k]).sum())
    return {kind: {k: round(v / n, 4) for k, v in h.items()} for kind, h in hits.items()}


# -- the whole run -------------------------------------------------------------------------
def build_world_components(config: WorldModelConfig) -> Components:
    if config.init_from is not None:
        parts = load_components(config.init_from)
        add_subject_names(parts)
        return parts
    return build_components(world_vocabulary(), config.shapes, seed=config.seed)


def add_subject_names(parts: Components) -> list[str]:
    """Give a loaded model's tokenizer the hidden subjects' names it lacks, one token each,
    whose embeddings start at the subject's class word; returns the names added."""
    tokenizer = parts.tokenizer
    missing = [
        s
        for s in HIDDEN_SUBJECTS
        if len(tokenizer(s.name, add_special_tokens=False).input_ids) != 1
    ]
    if not missing:
        return []
    tokenizer.add_tokens([s.name for s in missing])
    parts.text_encoder.resize_token_embeddings(len(tokenizer))
    table = parts.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for s in missing:
            [class_id] = tokenizer(s.class_word, add_special_tokens=False).input_ids
            table[tokenizer.convert_tokens_to_ids(s.name)] = table[class_id]
    return [s.name for s in missing]


def save_fp16(parts: Components, folder: Path) -> dict[str, float]:
    """Save the pipeline with fp16 weights (copies: `parts` stay as they are); returns the
    size (MB) of each weights file."""
    half = [
        copy.deepcopy(m).to("cpu", torch.float16)
        for m in (parts.text_encoder, parts.unet, parts.vae)
    ]
    save_components(Components(parts.tokenizer, *half, parts.scheduler), folder)
    files = sorted(folder.glob("*/*.safetensors"))
    return {str(p.relative_to(folder)): round(p.stat().st_size / 1e6, 2) for p in files}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (
        f"{device.type} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads)"
    )


def train_world_model(
    config: WorldModelConfig,
    out: str | Path,
    device: str | torch.device,
    start: float | None = None,
    oracle_check: int = 512,
) -> dict:
    """Train the world model and save it (fp16 diffusers folder + train_log.json) in `out`.

    `start` (time.monotonic()) is when the budget began; default now. Returns the log.
    """
    clock = Clock(config.minutes, start)
    device = torch.device(device)
    out = Path(out)
    gens = Generators.from_seed(config.seed, device)
    parts = build_world_components(config)
    sizes = size_report(parts)
    print(
        "parameters: "
        + ", ".join(
            f"{k} {v['params_m']:.2f}M ({v['fp16_mb']:.1f} MB fp16)" for k, v in sizes.items()
        ),
        flush=True,
    )
    for name in ("text_encoder", "unet", "vae"):
        getattr(parts, name).to(device)
    if config.init_from is None:
        train_seconds = clock.seconds_left(config.reserve_share)
        vae_log = train_vae(parts, config, gens, device, train_seconds * config.vae_share)
        scale = measure_scaling_factor(parts.vae, config, gens, device)
        parts.vae.register_to_config(scaling_factor=scale)
    else:  # continued training keeps the VAE, so the UNet's latents keep their meaning
        vae_log, scale = PhaseLog("vae"), float(parts.vae.config.scaling_factor)
        parts.vae.eval().requires_grad_(False)
    print(f"vae scaling factor {scale}", flush=True)
    unet_seconds = clock.seconds_left(config.reserve_share)
    unet_log, ema = train_unet(parts, config, gens, device, unet_seconds)
    if ema is not None:
        ema.copy_to_params()
    files = save_fp16(parts, out)
    write_model_settings(out, {"learn_steps": LEARN_STEPS})
    log = _run_log(config, device, sizes, scale, vae_log, unet_log, files, clock)
    (out / LOG_NAME).write_text(json.dumps(log, indent=2) + "\n")
    print(
        f"saved {out} in {clock.elapsed():.0f}s: "
        + ", ".join(f"{k} {v} MB" for k, v in files.items()),
        flush=True,
    )
    check = _vae_check(parts, device, oracle_check, clock, config)
    if check is not None:
        log["reconstruction_oracle"] = check
        (out / LOG_NAME).write_text(json.dumps(log, indent=2) + "\n")
    return log


def _vae_check(parts, device, n, clock: Clock, config: WorldModelConfig):
    """Oracle accuracy on reconstructions, if the oracle exists and the budget is not spent
    (it runs after saving, so it never holds the model back)."""
    if not n or clock.seconds_left() <= 0:
        return None
    oracle = oracle_or_none(device)
    if oracle is None:
        return None
    check = reconstruction_check(parts.vae, oracle, n, seed=config.seed + 777, device=device)
    print(
        "oracle on real / VAE-reconstructed renders: "
        + ", ".join(f"{k} {check['real'][k]:.2f}/{check['vae'][k]:.2f}" for k in check["real"]),
        flush=True,
    )
    return check


def _run_log(config, device, sizes, scale, vae_log, unet_log, files, clock) -> dict:
    big = {k: v for k, v in files.items() if v >= MAX_FILE_MB}
    if big or sum(files.values()) > MAX_TOTAL_MB:
        print(
            f"warning: weights exceed {MAX_FILE_MB} MB per file or {MAX_TOTAL_MB} MB in all: "
            f"{files}",
            flush=True,
        )
    return {
        "config": asdict(config),
        "device": str(device),
        "device_name": _device_name(device),
        "torch": torch.__version__,
        "sizes": sizes,
        "files_mb": files,
        "scaling_factor": scale,
        "phases": {"vae": asdict(vae_log), "unet": asdict(unet_log)},
        "reconstruction_oracle": None,
        "wall_seconds": round(clock.elapsed(), 1),
    }


def verify(folder: Path, device: str) -> tuple[int, ...]:
    """Load the saved folder as oneword does and draw one image; returns its shape."""
    from ..core.generate import Sampling, draw

    model = load_model(str(folder), device)
    image = draw(
        model,
        ["a photo of a red star on the beach"],
        [0],
        None,
        Sampling(steps=4, cfg=3.0, scheduler="ddim", size=IMAGE_SIZE),
    )
    if image.shape != (1, 3, IMAGE_SIZE, IMAGE_SIZE) or not torch.isfinite(image).all():
        raise OnewordError(f"{folder}: the saved world model draws {tuple(image.shape)} images")
    return tuple(image.shape)


# -- command line --------------------------------------------------------------------------
def _blocks(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give block numbers like 0,1") from None


_OVERRIDES = {
    "minutes": float,
    "steps": int,
    "vae_steps": int,
    "batch_size": int,
    "vae_batch_size": int,
    "lr": float,
    "vae_lr": float,
    "vae_share": float,
    "hidden_fraction": float,
    "member_fraction": float,
    "fresh_share": float,
    "object_weight": float,
    "pattern_weight": float,
    "mark_weight": float,
    "align_weight": float,
    "align_blocks": _blocks,
    "name_share": float,
    "init_from": str,
    "ema_decay": float,
    "log_every": int,
    "seed": int,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m oneword.world.model",
        description="Train oneword's world model (see the module doc).",
    )
    p.add_argument("cmd", choices=["train"])
    p.add_argument("--out", required=True, help="folder for the diffusers pipeline")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: best available)")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="settings for the machine (default: gpu on CUDA, else cpu)",
    )
    for name, kind in _OVERRIDES.items():
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            help="overrides the preset" + ("; 0: no time limit" if name == "minutes" else ""),
        )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the UNet (compiling takes a minute or more)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (on a busy machine 1 can be fastest)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip loading the saved model back")
    p.add_argument(
        "--oracle-check",
        type=int,
        default=None,
        help="renders for the oracle's VAE check after saving, when its weights "
        "exist (default: 512 on CUDA, 128 elsewhere; 0: skip)",
    )
    return p


def config_from_args(args) -> WorldModelConfig:
    from ..adapters.device import pick_device

    device = pick_device(args.device)
    name = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    overrides = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    if overrides.get("minutes") == 0:
        overrides["minutes"] = None
    if args.compile:
        overrides["compile"] = True
    return preset(name, **overrides)


def main(argv: list[str] | None = None) -> int:
    start = time.monotonic()
    args = build_parser().parse_args(argv)
    try:
        return _train_command(args, start)
    except OnewordError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


def _train_command(args, start: float) -> int:
    from ..adapters.device import pick_device

    device = pick_device(args.device)
    config = config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    print(
        f"training the world model on {_device_name(device)}: {json.dumps(asdict(config))}",
        flush=True,
    )
    check = args.oracle_check
    if check is None:
        check = 512 if device.type == "cuda" else 128
    log = train_world_model(config, args.out, device, start=start, oracle_check=check)
    vae, unet = log["phases"]["vae"], log["phases"]["unet"]
    print(
        f"done: vae {vae['steps']} steps ({vae['samples_per_s']:.0f} img/s), unet "
        f"{unet['steps']} steps ({unet['samples_per_s']:.0f} img/s), scaling factor "
        f"{log['scaling_factor']}",
        flush=True,
    )
    if not args.no_verify:
        shape = verify(Path(args.out), str(device))
        print(
            f"verified: load_model draws {shape} images ({time.monotonic() - start:.0f}s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
