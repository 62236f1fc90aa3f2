"""diffusers' textual_inversion example script against oneword's default recipe, on the world model.

Both learn the same subject from the same 5 rendered photos with the same samples: 300
optimizer steps of batch 1 x accumulation 4, lr 5e-3 constant, no weight decay, init word =
the class word. Recipes:

  script           the example script's training loop, step for step (its dataset: PNG files
                   read per sample, a random caption from its 27 ImageNet-style templates,
                   bicubic resize, a mirror half of the time; the VAE encodes every sample;
                   AdamW over the whole token table through accelerate, every row but the new
                   token's put back after each micro-batch; global seeding as its --seed does);
  oneword          oneword's trainer as `oneword learn` runs it (photos and their mirror
                   images encoded once, a fresh posterior draw per sample, its own caption
                   templates, per-candidate generators);
  oneword-script-captions   oneword's trainer with the script's caption templates: the one
                   difference that changes what the model reads.

Each learned word is scored by the oracle on the quality bench's novel-context prompts x
image seeds (held out from training); the table gives concept and prompt fidelity per
learning seed and pooled over seeds, with 95% bootstrap intervals over images.

    python bench/script_vs_oneword.py                      # robot, 3 seeds x 48 images
    python bench/script_vs_oneword.py --subject dog --seeds 0,1,2 --image-seeds 8
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from quality import cell, interval  # noqa: E402
from train_speed import (  # noqa: E402
    ScriptPhotos,
    ScriptRun,
    epochs,
    forget_accelerate_state,
    script_accelerator,
    script_step,
)

from oneword.adapters.loading import load_model, resolve_model  # noqa: E402
from oneword.core import train as train_module  # noqa: E402
from oneword.core.generate import Sampling, Words, draw  # noqa: E402
from oneword.core.train import TrainConfig, train  # noqa: E402
from oneword.world import evaluate  # noqa: E402
from oneword.world.oracle import load_oracle  # noqa: E402
from oneword.world.render import SUBJECTS_BY_ID  # noqa: E402

# The example script's object captions (its `imagenet_templates_small`), as data.
SCRIPT_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)
RECIPES = ("script", "oneword", "oneword-script-captions")
STEPS, ACCUM, LR = 300, 4, 5e-3


# -- the example script ----------------------------------------------------------------------
def script_parts(model_name: str):
    """The script's own loads: tokenizer, text encoder, VAE, UNet and DDPM scheduler, every
    weight in fp32 as the script's models are under --mixed_precision no (transformers would
    otherwise keep the fp16 of the world model's files)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    _, folder = resolve_model(model_name)
    return (
        CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=torch.float32),
        AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32),
        UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32),
        DDPMScheduler.from_pretrained(folder, subfolder="scheduler"),
    )


def script_learn(model_name, photo_files: list[Path], token: str, init: str, seed: int, steps):
    """The script's run for `steps` optimizer steps; returns the learned row [d]."""
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler

    set_seed(seed)  # the script's --seed: python, numpy and torch, globally
    tokenizer, text_encoder, vae, unet, scheduler = script_parts(model_name)
    tokenizer.add_tokens([token])
    (init_id,) = tokenizer.encode(init, add_special_tokens=False)
    (token_id,) = tokenizer.convert_tokens_to_ids([token])
    text_encoder.resize_token_embeddings(len(tokenizer))
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[token_id] = table[init_id].clone()
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    body = getattr(text_encoder, "text_model", text_encoder)  # transformers 5 has none
    for frozen in (body.encoder, body.final_layer_norm, body.embeddings.position_embedding):
        frozen.requires_grad_(False)
    optimizer = torch.optim.AdamW(
        text_encoder.get_input_embeddings().parameters(), lr=LR, weight_decay=0.0
    )
    size = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    folder = tempfile.TemporaryDirectory(prefix="ti-script-")
    photos = ScriptPhotos(photo_files, tokenizer, size, token, seed)
    photos.rng = random  # the script draws captions and mirrors from the global generator
    photos.captions = [t.format(token) for t in SCRIPT_TEMPLATES]
    loader = torch.utils.data.DataLoader(photos, batch_size=1, shuffle=True)
    accelerator = script_accelerator("no", torch.device("cpu"), Path(folder.name))
    lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_training_steps=steps)
    text_encoder, optimizer, loader, lr_scheduler = accelerator.prepare(
        text_encoder, optimizer, loader, lr_scheduler
    )
    original = accelerator.unwrap_model(text_encoder).get_input_embeddings().weight.data.clone()
    text_encoder.train()
    run = ScriptRun(
        accelerator, tokenizer, text_encoder, unet, vae, torch.float32, scheduler, optimizer,
        lr_scheduler, epochs(loader), [token_id], original, tqdm(disable=True), folder,
    )  # fmt: skip
    try:
        for _ in range(steps):
            script_step(run)
        table = accelerator.unwrap_model(text_encoder).get_input_embeddings().weight
        return table[token_id].detach().clone()
    finally:
        run.batches.close()
        accelerator.end_training()
        forget_accelerate_state()
        folder.cleanup()


# -- oneword ---------------------------------------------------------------------------------
def oneword_learn(model, photos: torch.Tensor, token, init, seed, work: Path, steps: int):
    """oneword's default trainer (batch 1 x accumulation 4, the photos and their mirrors)."""
    pixels = torch.cat([photos, photos.flip(-1)]) * 2 - 1
    model.add_placeholder_tokens([token])
    config = TrainConfig(
        token=token, init_word=init, steps=steps, lr=LR, seed=seed, checkpoint_every=steps
    )
    assert (config.batch_size, config.grad_accum, config.weight_decay) == (1, ACCUM, 0.0)
    state = train(model, pixels, config, work)
    return state.rows()[0, 0]


def learn(recipe, model_name, photos, photo_files, token, init, seed, work, steps):
    if recipe == "script":
        return script_learn(model_name, photo_files, token, init, seed, steps)
    model = load_model(model_name)
    if recipe == "oneword":
        return oneword_learn(model, photos, token, init, seed, work, steps)
    with mock.patch.object(train_module, "templates", lambda mode: SCRIPT_TEMPLATES):
        return oneword_learn(model, photos, token, init, seed, work, steps)


# -- scoring ---------------------------------------------------------------------------------
def score_row(model_name, oracle, row, token, subject_id, photos, image_seeds):
    """The oracle's verdicts on the novel-context prompts x image seeds, drawn with the row."""
    model = load_model(model_name)
    model.add_placeholder_tokens([token])
    words = Words({token: 1}, row.reshape(1, 1, -1).to(model.device))
    texts = [t.format(token) for t in evaluate.NOVEL_PROMPTS]
    batch = [p for p in texts for _ in image_seeds]
    seeds = [s for _ in texts for s in image_seeds]
    images = draw(model, batch, seeds, words, Sampling(20, 5.0, "ddim", 64))
    return evaluate.score_images(oracle, images, batch, subject_id, photos)


def write_photo_files(photos: torch.Tensor, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, photo in enumerate(photos):
        pixels = (photo.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
        files.append(folder / f"photo_{i}.png")
        Image.fromarray(np.ascontiguousarray(pixels)).save(files[-1])
    return files


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="world")
    p.add_argument("--subject", default="robot")
    p.add_argument("--seeds", default="0,1,2", help="learning seeds")
    p.add_argument("--image-seeds", type=int, default=4, help="image seeds per novel prompt")
    p.add_argument("--steps", type=int, default=STEPS, help="optimizer steps of both")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--json", help="write the figures here too")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    subject = SUBJECTS_BY_ID[a.subject]
    token = f"<s-{a.subject}>"
    photos = evaluate.subject_photos(a.subject, 5, torch.Generator().manual_seed(0))
    oracle = load_oracle("cpu")
    seeds = [int(s) for s in a.seeds.split(",")]
    image_seeds = list(range(a.image_seeds))
    figures = {}
    print(f"{'recipe':26s}{'seed':>5s}{'concept':>20s}{'prompt':>20s}{'learn s':>9s}")
    with tempfile.TemporaryDirectory() as work:
        files = write_photo_files(photos, Path(work) / "photos")
        for recipe in a.recipes.split(","):
            hits = {"concept": [], "prompt": []}
            for seed in seeds:
                start = time.time()
                row = learn(recipe, a.model, photos, files, token, subject.class_word, seed,
                            Path(work) / f"{recipe}-{seed}", a.steps)  # fmt: skip
                learn_s = time.time() - start
                s = score_row(a.model, oracle, row, token, a.subject, photos, image_seeds)
                hits["concept"].append(s.concept_hits)
                hits["prompt"].append(s.prompt_hits)
                concept = cell(s.concept_fidelity, interval([s.concept_hits]))
                prompt = cell(s.prompt_fidelity, interval([s.prompt_hits]))
                print(f"{recipe:26s}{seed:5d}{concept:>20s}{prompt:>20s}{learn_s:9.0f}", flush=True)
            figures[recipe] = pooled(hits, seeds)
            f = figures[recipe]
            print(f"{recipe:26s}{'all':>5s}{cell(f['concept'], f['concept_ci95']):>20s}"
                  f"{cell(f['prompt'], f['prompt_ci95']):>20s}")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps({"settings": vars(a), "recipes": figures}, indent=2))
    return 0


def pooled(hits: dict, seeds: list[int]) -> dict:
    """Per-seed shares and the share over every image of every seed, with its interval."""
    concept, prompt = torch.cat(hits["concept"]), torch.cat(hits["prompt"])
    return {
        "per_seed_concept": [h.mean().item() for h in hits["concept"]],
        "seeds": seeds,
        "concept": concept.mean().item(),
        "concept_ci95": interval([concept]),
        "prompt": prompt.mean().item(),
        "prompt_ci95": interval([prompt]),
        "images": concept.numel(),
    }


if __name__ == "__main__":
    sys.exit(main())
