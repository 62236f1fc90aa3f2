"""Single-file checkpoints (the `.safetensors`/`.ckpt` files of AUTOMATIC1111 and ComfyUI)
loaded offline.

diffusers' `from_single_file` turns the file's original (LDM) key layout into a pipeline, but it
needs the diffusers configs of the model's family and fetches them from the hub unless given a
local folder. This module tells the family from the file's keys and writes that folder itself:
the configs of SD 1.x, SD 2.x (epsilon or v-prediction) and SDXL are written here in code, and
the built-in tiny model's own folder serves files of its architecture. What cannot be written
from code is CLIP's tokenizer vocabulary (vocab.json, merges.txt): it comes from the hub cache,
is downloaded once when the network is there, or is named in a one-line error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import OnewordError
from ..files import atomic_write_text
from .builtin import tiny_model_folder

log = logging.getLogger(__name__)

SD1_TEXT = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
SD2_TEXT = "cond_stage_model.model.token_embedding.weight"
SDXL_TEXT = "conditioner.embedders.1.model.token_embedding.weight"
UNET_PREFIX = "model.diffusion_model."
TOKENIZER_FILES = ("vocab.json", "merges.txt")
TOKENIZER_REPO = "openai/clip-vit-large-patch14"  # the vocabulary every SD text encoder shares


@dataclass(frozen=True)
class Checkpoint:
    """What the loader needs to know of a single-file checkpoint: its family and config folder."""

    family: str  # sd1, sd2, sd2-v, sdxl, sdxl-v, or a built-in model's name (tiny)
    pipeline: str  # StableDiffusionPipeline or StableDiffusionXLPipeline
    config: Path
    # False for SD 2.x without a .yaml beside it: noise or v, the keys cannot tell (loaded as
    # v until the photos tell, see adapters.prediction)
    prediction_known: bool = True


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """{key: shape} of every tensor in a .safetensors or .ckpt file (no weights are read from
    a .safetensors file)."""
    path = str(path)
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt", device="cpu") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # safetensors, pickle and zip errors: the file is unreadable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnewordError(
            f"--model {path}: not a readable checkpoint file ({first[:200]}); re-download it"
        ) from exc
    data = data.get("state_dict", data) if isinstance(data, dict) else {}
    return {k: tuple(v.shape) for k, v in data.items() if isinstance(v, torch.Tensor)}


def family_of(path: str | Path, shapes: dict[str, tuple[int, ...]]) -> str:
    """The model family of a checkpoint, from which text encoder its keys hold."""
    if not any(k.startswith(UNET_PREFIX) for k in shapes):
        raise OnewordError(
            f"--model {path}: this file holds no Stable Diffusion UNet (no "
            f"{UNET_PREFIX}* weights); give an SD 1.x/2.x or SDXL checkpoint"
        )
    v_pred = "v_pred" in shapes or _yaml_says_v(path)
    if SDXL_TEXT in shapes:
        return "sdxl-v" if v_pred else "sdxl"
    if SD2_TEXT in shapes:
        # SD 2.x's 768 px models predict v, its 512 px base predicts noise: the keys cannot
        # tell, so a yaml beside the file decides (A1111's convention); without one, v.
        yaml = Path(path).with_suffix(".yaml")
        return "sd2" if yaml.is_file() and not v_pred else "sd2-v"
    if SD1_TEXT in shapes:
        width = shapes[SD1_TEXT][-1]
        if width == 768:
            return "sd1"
        from .tiny import TinyShapes

        if width == TinyShapes().text_width:
            return "tiny"
        raise OnewordError(
            f"--model {path}: its text encoder is {width}-d, not SD 1.x's 768-d; "
            "convert it to a diffusers folder and give that folder"
        )
    raise OnewordError(
        f"--model {path}: found no SD 1.x (CLIP), SD 2.x (OpenCLIP) or SDXL text encoder "
        "in this file; give a full checkpoint (UNet, VAE and text encoder in one file)"
    )


def _yaml_says_v(path: str | Path) -> bool:
    yaml = Path(path).with_suffix(".yaml")
    if not yaml.is_file():
        return False
    text = yaml.read_text(errors="replace")
    return any(
        line.split("#")[0].replace(" ", "").replace("'", '"') in ('parameterization:"v"',)
        for line in text.splitlines()
    )


def checkpoint_config(path: str | Path, cache: Path) -> Checkpoint:
    """The family of a single-file checkpoint and a local diffusers config folder for it."""
    family = family_of(path, read_shapes(path))
    pipeline = (
        "StableDiffusionXLPipeline" if family.startswith("sdxl") else "StableDiffusionPipeline"
    )
    if family == "tiny":
        return Checkpoint(family, pipeline, tiny_model_folder("tiny"))
    folder = cache / "single-file" / family
    if not (folder / "model_index.json").is_file():
        write_family_config(family, folder, tokenizer_files(cache))
    known = not family.startswith("sd2") or Path(path).with_suffix(".yaml").is_file()
    return Checkpoint(family, pipeline, folder, known)


# -- SD 2.x files whose prediction type the photos told ------------------------------------
PREDICTIONS_FILE = "predictions.json"


def unknown_prediction(path: str | Path) -> str:
    """The one-line question for an SD 2.x file whose prediction type nothing has told."""
    yaml = Path(path).with_suffix(".yaml")
    return (
        f"--model {path}: an SD 2.x checkpoint predicts noise (the 512 px base) or v (the "
        f"768 px models), and its keys do not say which; write {yaml} with the line "
        "'parameterization: \"v\"' for a v model, or an empty one for a noise model (or run "
        "oneword learn with it first: it tells from the photos)"
    )


def _file_key(path: str | Path) -> tuple[str, dict]:
    stat = Path(path).stat()
    return str(Path(path).resolve()), {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def remembered_prediction(path: str | Path, cache: Path) -> str | None:
    """The prediction type the photos told for this very file (same size and time), if any."""
    record = cache / "single-file" / PREDICTIONS_FILE
    try:
        known = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    key, stamp = _file_key(path)
    entry = known.get(key) if isinstance(known, dict) else None
    if not isinstance(entry, dict) or {k: entry.get(k) for k in stamp} != stamp:
        return None
    return entry.get("prediction")


def remember_prediction(path: str | Path, cache: Path, prediction: str) -> None:
    record = cache / "single-file" / PREDICTIONS_FILE
    try:
        known = json.loads(record.read_text())
    except (OSError, ValueError):
        known = {}
    key, stamp = _file_key(path)
    known = known if isinstance(known, dict) else {}
    known[key] = {**stamp, "prediction": prediction}
    atomic_write_text(record, json.dumps(known, indent=2))


def tokenizer_files(cache: Path) -> Path:
    """A folder holding CLIP's vocab.json and merges.txt: the one in oneword's cache, filled
    from the hub cache or, when the network is there, from the hub."""
    folder = cache / "single-file" / "clip-tokenizer"
    if all((folder / name).is_file() for name in TOKENIZER_FILES):
        return folder
    try:
        from huggingface_hub import hf_hub_download

        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        found = [
            hf_hub_download(TOKENIZER_REPO, name, local_files_only=offline)
            for name in TOKENIZER_FILES
        ]
    except Exception as exc:  # offline and not cached, or no network: say what is missing
        raise OnewordError(
            f"a single-file checkpoint needs CLIP's tokenizer files {' and '.join(TOKENIZER_FILES)}"
            f", which are not on this machine; copy them (from the hub's {TOKENIZER_REPO}) "
            f"into {folder}, or run once with network access"
        ) from exc
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in zip(TOKENIZER_FILES, found):
        shutil.copyfile(source, folder / name)
    return folder


# -- the configs of each family ------------------------------------------------------------
def _clip_l(**extra) -> dict:
    return dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        projection_dim=768,
        hidden_act="quick_gelu",
        **extra,
    )


OPEN_CLIP_H = dict(  # SD 2.x: OpenCLIP ViT-H, its last layer left out as SD 2 does
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    projection_dim=512,
    hidden_act="gelu",
)
OPEN_CLIP_G = dict(  # SDXL's second encoder: OpenCLIP ViT-bigG
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    projection_dim=1280,
    hidden_act="gelu",
)
SD2_UNET = dict(
    cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True
)
SDXL_UNET = dict(
    sample_size=128,
    cross_attention_dim=2048,
    attention_head_dim=[5, 10, 20],
    block_out_channels=[320, 640, 1280],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=[1, 2, 10],
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
# family: (UNet config, VAE sample size and scaling, text encoders, prediction type)
FAMILIES = {
    "sd1": (dict(sample_size=64, cross_attention_dim=768), 512, 0.18215, [_clip_l()], "epsilon"),
    "sd2": (dict(SD2_UNET, sample_size=64), 512, 0.18215, [OPEN_CLIP_H], "epsilon"),
    "sd2-v": (dict(SD2_UNET, sample_size=96), 768, 0.18215, [OPEN_CLIP_H], "v_prediction"),
    "sdxl": (SDXL_UNET, 1024, 0.13025, [_clip_l(), OPEN_CLIP_G], "epsilon"),
    "sdxl-v": (SDXL_UNET, 1024, 0.13025, [_clip_l(), OPEN_CLIP_G], "v_prediction"),
}


def write_family_config(family: str, folder: Path, vocabulary: Path) -> Path:
    """A diffusers pipeline folder without weights: the configs `from_single_file` builds the
    family's pipeline from, and CLIP's tokenizer."""
    unet, image_size, scaling, encoders, prediction = FAMILIES[family]
    xl = family.startswith("sdxl")
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vae = dict(
        block_out_channels=[128, 256, 512, 512],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=image_size,
        scaling_factor=scaling,
        force_upcast=xl,
    )
    scheduler = dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        prediction_type=prediction,
        # SD never clips its predicted x0: without these keys DDIM and DDPM clip it to [-1, 1]
        clip_sample=False,
        set_alpha_to_one=False,
        **({"timestep_spacing": "leading"} if xl else {}),
    )
    parts = {
        "unet": ("diffusers", "UNet2DConditionModel", "config.json", unet),
        "vae": ("diffusers", "AutoencoderKL", "config.json", vae),
        "scheduler": (
            "diffusers",
            "EulerDiscreteScheduler" if xl else "DDIMScheduler",
            "scheduler_config.json",
            scheduler,
        ),
    }
    for i, encoder in enumerate(encoders):
        suffix = f"_{i + 1}" if i else ""
        cls = "CLIPTextModelWithProjection" if i else "CLIPTextModel"
        text = dict(encoder, vocab_size=49408, max_position_embeddings=77, architectures=[cls])
        text.update(bos_token_id=49406, eos_token_id=2 if i else 49407, pad_token_id=1)
        parts[f"text_encoder{suffix}"] = ("transformers", cls, "config.json", text)
        pad = "!" if i or family.startswith("sd2") else "<|endoftext|>"
        _write_tokenizer(tmp / f"tokenizer{suffix}", vocabulary, pad)
    index = {"_class_name": "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline"}
    for name, (library, cls, filename, config) in parts.items():
        atomic_write_text(
            tmp / name / filename, json.dumps({"_class_name": cls, **config}, indent=2)
        )
        index[name] = [library, cls]
    for i in range(len(encoders)):
        suffix = f"_{i + 1}" if i else ""
        index[f"tokenizer{suffix}"] = ["transformers", "CLIPTokenizer"]
    if xl:
        index["force_zeros_for_empty_prompt"] = True
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None])
        index["requires_safety_checker"] = False
    atomic_write_text(tmp / "model_index.json", json.dumps(index, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    log.info("wrote the %s configs for single-file checkpoints to %s", family, folder)
    return folder


def _write_tokenizer(folder: Path, vocabulary: Path, pad: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(vocabulary / name, folder / name)
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad,
    }
    atomic_write_text(folder / "tokenizer_config.json", json.dumps(config, indent=2))
