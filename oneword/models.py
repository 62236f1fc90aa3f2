"""The one module that talks to diffusers and transformers.

It loads a Stable Diffusion pipeline (hub id, local diffusers folder, single file, or a built-in
model) and exposes what the rest of oneword needs as plain tensors and modules: tokenizing,
text encoding with placeholder rows injected, VAE encoding, noise prediction, the noise schedule
and image generation. Tests swap in tiny pipelines built in code by `build_tiny_pipeline`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import OnewordError
from .files import atomic_write_text

log = logging.getLogger(__name__)

BUILTIN_MODELS = ("tiny", "tiny-sdxl", "world")
WORLD_MODEL_FOLDER = Path(__file__).parent / "world" / "weights" / "model"
SCHEDULERS = ("ddim", "pndm", "euler", "euler-a", "dpm++", "ddpm", "lms")
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
# Beside model_index.json: oneword's defaults for that model, e.g. {"learn_steps": 300}.
SETTINGS_FILE = "oneword.json"


def _quiet_imports():
    # transformers warns about torchvision on import and both libraries draw their own progress
    # bars; oneword reports progress itself.
    warnings.filterwarnings("ignore", message=".*torchvision.*")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


_quiet_imports()


def pick_device(device: str | None = None) -> torch.device:
    """`device` if given, else CUDA, then MPS, then CPU."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """Frozen-weight dtype: bf16 on CUDA that supports it, else fp16 on GPUs, fp32 on CPU."""
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype:
        if dtype not in names:
            raise OnewordError(f"--dtype {dtype}: choose one of fp32, fp16, bf16")
        return names[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


class PlaceholderEmbedding(nn.Module):
    """The text encoder's token table with the placeholder rows kept outside it.

    Token ids below `base_size` read the frozen table; ids from `base_size` on read row
    `id - base_size` of `rows[candidate[b]]`. Keeping the learned rows out of the table makes the
    Textual Inversion invariant structural: the table has no gradient and is never written.
    """

    def __init__(self, table: nn.Embedding):
        super().__init__()
        self.table = table
        self.base_size = table.num_embeddings
        self.rows: torch.Tensor | None = None  # [K, P, d]
        self.candidate: torch.Tensor | None = None  # [B] index into K

    @property
    def weight(self) -> torch.Tensor:
        return self.table.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_new = input_ids >= self.base_size  # [B, L]
        x = self.table(input_ids.masked_fill(is_new, 0))  # [B, L, d]
        if not bool(is_new.any()):
            return x
        if self.rows is None:
            raise RuntimeError("placeholder tokens used but no placeholder rows were given")
        candidate = self.candidate
        if candidate is None:
            candidate = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        row = (input_ids - self.base_size).clamp(min=0)
        new = self.rows[candidate[:, None].expand_as(input_ids), row]  # [B, L, d]
        return torch.where(is_new[..., None], new.to(x.dtype), x)


@dataclass
class TextToImageModel:
    """A loaded Stable Diffusion 1.x/2.x pipeline, seen through what oneword needs (SDXL:
    `SDXLModel`)."""

    pipe: object
    name: str
    family: str  # "sd1", "sd2", "sdxl"
    device: torch.device
    dtype: torch.dtype
    prediction_type: str  # "epsilon" or "v_prediction"
    alphas_cumprod: torch.Tensor  # [T] float64 on CPU
    placeholder_tokens: list[str] = field(default_factory=list)

    @property
    def tokenizer(self):
        return self.pipe.tokenizer

    @property
    def text_encoder(self):
        return self.pipe.text_encoder

    @property
    def embedding(self) -> PlaceholderEmbedding:
        return self.pipe.text_encoder.get_input_embeddings()

    @property
    def embedding_width(self) -> int:
        return self.embedding.table.embedding_dim

    @property
    def embedding_layout(self) -> tuple[int, ...]:
        """The widths a learned vector is made of: (d,) here, (d_l, d_g) for SDXL."""
        return (self.embedding_width,)

    @property
    def vocabulary_table(self) -> torch.Tensor:
        """The frozen token table [V, d] (a view: never write to it)."""
        return self.embedding.table.weight

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @property
    def native_resolution(self) -> int:
        return int(self.pipe.unet.config.sample_size) * self.vae_factor

    @property
    def max_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    # -- tokens --------------------------------------------------------------------------
    def add_placeholder_tokens(self, tokens: list[str]) -> list[int]:
        """Add new tokens to the tokenizer; their rows come from `rows` at encode time."""
        taken = [t for t in tokens if self.is_known_token(t)]
        if taken:
            raise OnewordError(
                f"--token {taken[0]}: this token already exists in the model's vocabulary; "
                "choose a new one, e.g. <my-thing>")
        expected = self.embedding.base_size + len(self.placeholder_tokens)
        if len(self.tokenizer) != expected:
            raise OnewordError(
                f"model {self.name}: its tokenizer has {len(self.tokenizer)} tokens but its text "
                f"encoder has {self.embedding.base_size} rows; resave the pipeline without added tokens")
        self.tokenizer.add_tokens(tokens)
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        self.placeholder_tokens += tokens
        return [int(i) for i in ids]

    def is_known_token(self, token: str) -> bool:
        """True if the text already is one token of the vocabulary (e.g. 'cat' is 'cat</w>')."""
        return (token in self.tokenizer.get_vocab()
                or len(self.word_token_ids(token)) == 1)

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """Token ids [B, L], padded to the full context as Stable Diffusion does."""
        out = self.tokenizer(prompts, padding="max_length", max_length=self.max_length,
                             truncation=True, return_tensors="pt")
        return out.input_ids.to(self.device)

    def word_token_ids(self, word: str) -> list[int]:
        """Ids of the vocabulary tokens a word is made of (no start/end tokens)."""
        return [int(i) for i in self.tokenizer(word, add_special_tokens=False).input_ids]

    # -- forward passes ------------------------------------------------------------------
    def encode_text(self, input_ids: torch.Tensor, rows: torch.Tensor | None = None,
                    candidate: torch.Tensor | None = None) -> torch.Tensor:
        """All hidden states [B, L, d] of the text encoder (padding included, as SD uses them).

        rows: [K, P, d] placeholder rows; candidate: [B] which of the K each sample uses.
        """
        emb = self.embedding
        emb.rows, emb.candidate = rows, candidate
        try:
            return self.text_encoder(input_ids)[0]
        finally:
            emb.rows, emb.candidate = None, None

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latent mean and std [B, c, h, w] (fp32) of images in [-1, 1] [B, 3, H, W]."""
        vae = self.pipe.vae
        dist = vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        scale = float(vae.config.scaling_factor)
        return (dist.mean.float() * scale, dist.std.float() * scale)

    def predict_noise(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor,
                      text_states: torch.Tensor) -> torch.Tensor:
        """The UNet's output (epsilon or v, see `prediction_type`) in fp32."""
        out = self.pipe.unet(noisy_latents.to(self.dtype), timesteps,
                             encoder_hidden_states=text_states.to(self.dtype)).sample
        return out.float()

    def speed_up(self, channels_last: bool = False, compile_unet: bool = False,
                 low_memory: bool = False) -> None:
        """Execution options that leave what is computed unchanged (up to rounding).

        low_memory recomputes UNet and text-encoder activations in the backward pass
        (gradient checkpointing, Chen et al. 2016) instead of keeping them.
        """
        unet = self.pipe.unet
        if channels_last:
            unet.to(memory_format=torch.channels_last)
        if low_memory:
            unet.enable_gradient_checkpointing()
            self.text_encoder.activation_checkpointing_enable({"use_reentrant": False})
            self.text_encoder.train()  # transformers checkpoints only in train mode; no dropout
        if compile_unet:
            self.pipe.unet = torch.compile(unet, dynamic=False)

    # -- generation ----------------------------------------------------------------------
    def set_scheduler(self, name: str) -> None:
        self.pipe.scheduler = _make_scheduler(name, self.pipe.scheduler.config)

    @torch.no_grad()
    def generate(self, text_states: torch.Tensor, negative_states: torch.Tensor,
                 generators: list[torch.Generator], steps: int, cfg: float,
                 size: int) -> torch.Tensor:
        """Images [B, 3, size, size] in [0, 1] from prompt hidden states, one generator each."""
        out = self.pipe(prompt_embeds=text_states.to(self.dtype),
                        negative_prompt_embeds=negative_states.to(self.dtype),
                        num_inference_steps=steps, guidance_scale=cfg, height=size, width=size,
                        generator=generators, output_type="pt", return_dict=True)
        return out.images.float().cpu()


@dataclass
class SDXLText:
    """What an SDXL UNet is conditioned on: both encoders' penultimate hidden states side by
    side [B, L, d_l + d_g] and text_encoder_2's projected pooled state [B, p]."""
    hidden: torch.Tensor
    pooled: torch.Tensor


class SDXLModel(TextToImageModel):
    """An SDXL base pipeline: two text encoders (CLIP ViT-L and OpenCLIP bigG).

    A learned vector is the concatenation [clip_l | clip_g]: both tokenizers share CLIP's ids,
    so one placeholder id reads row i of each half, and the trainer sees one [N, d_l + d_g]
    tensor per candidate. Token ids are [B, 2, L]: the two tokenizers pad differently.
    """

    @property
    def tokenizer_2(self):
        return self.pipe.tokenizer_2

    @property
    def text_encoder_2(self):
        return self.pipe.text_encoder_2

    @property
    def embedding_2(self) -> PlaceholderEmbedding:
        return self.pipe.text_encoder_2.get_input_embeddings()

    @property
    def embedding_layout(self) -> tuple[int, ...]:
        return (self.embedding.table.embedding_dim, self.embedding_2.table.embedding_dim)

    @property
    def embedding_width(self) -> int:
        return sum(self.embedding_layout)

    @property
    def vocabulary_table(self) -> torch.Tensor:
        """Both frozen token tables side by side [V, d_l + d_g] (a copy)."""
        return torch.cat([self.embedding.table.weight, self.embedding_2.table.weight], dim=1)

    def add_placeholder_tokens(self, tokens: list[str]) -> list[int]:
        expected = self.embedding.base_size + len(self.placeholder_tokens)
        if self.embedding_2.base_size != self.embedding.base_size or \
                len(self.tokenizer_2) != expected:
            raise OnewordError(
                f"model {self.name}: its two tokenizers or text encoders disagree on the "
                "vocabulary size; resave the pipeline without added tokens")
        ids = super().add_placeholder_tokens(tokens)
        self.tokenizer_2.add_tokens(tokens)
        if [int(i) for i in self.tokenizer_2.convert_tokens_to_ids(tokens)] != ids:
            raise OnewordError(f"model {self.name}: its two tokenizers gave {tokens[0]} "
                               "different ids; resave the pipeline without added tokens")
        return ids

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """Token ids [B, 2, L] of both tokenizers (they differ in padding)."""
        ids = [tok(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                   return_tensors="pt").input_ids for tok in (self.tokenizer, self.tokenizer_2)]
        return torch.stack(ids, dim=1).to(self.device)

    def encode_text(self, input_ids: torch.Tensor, rows: torch.Tensor | None = None,
                    candidate: torch.Tensor | None = None) -> SDXLText:
        """Penultimate states of both encoders and the pooled projection, as SDXL uses them.

        The pooled state is read at the first end-of-text token: SDXL's bigG config has the
        legacy eos id that makes transformers pool at the highest id, a placeholder's.
        An empty prompt encodes as zeros when the pipeline says so (SDXL base's
        force_zeros_for_empty_prompt: its unconditional input, as diffusers draws it)."""
        width_l = self.embedding_layout[0]
        halves = (None, None) if rows is None else (rows[..., :width_l], rows[..., width_l:])
        outs = []
        for i, (encoder, half) in enumerate(zip((self.text_encoder, self.text_encoder_2), halves)):
            emb = encoder.get_input_embeddings()
            emb.rows, emb.candidate = half, candidate
            try:
                outs.append(encoder(input_ids[:, i], output_hidden_states=True))
            finally:
                emb.rows, emb.candidate = None, None
        hidden = torch.cat([outs[0].hidden_states[-2], outs[1].hidden_states[-2]], dim=-1)
        ids_g = input_ids[:, 1]
        end = (ids_g == self.tokenizer_2.eos_token_id).int().argmax(dim=-1)
        last = outs[1].last_hidden_state
        pooled = self.text_encoder_2.text_projection(last[torch.arange(len(last)), end])
        if getattr(self.pipe.config, "force_zeros_for_empty_prompt", False):
            keep = (ids_g[:, 1] != self.tokenizer_2.eos_token_id).to(hidden.dtype)  # [B]
            hidden, pooled = hidden * keep[:, None, None], pooled * keep[:, None]
        return SDXLText(hidden, pooled)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As for SD; SDXL's VAE overflows in fp16, so it encodes in fp32 then (as diffusers)."""
        vae = self.pipe.vae
        if self.dtype != torch.float16 or not getattr(vae.config, "force_upcast", False):
            return super().encode_images(pixels)
        vae.to(torch.float32)
        try:
            dist = vae.encode(pixels.to(self.device, torch.float32)).latent_dist
        finally:
            vae.to(torch.float16)
        scale = float(vae.config.scaling_factor)
        return (dist.mean.float() * scale, dist.std.float() * scale)

    def time_ids(self, batch: int, height: int, width: int) -> torch.Tensor:
        """SDXL's size conditioning [B, 6]: original size, crop corner (0, 0), target size."""
        row = torch.tensor([height, width, 0, 0, height, width], dtype=self.dtype)
        return row.to(self.device).expand(batch, 6)

    def predict_noise(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor,
                      text_states: SDXLText) -> torch.Tensor:
        """The UNet's output in fp32, conditioned on the text and the training size."""
        h, w = (s * self.vae_factor for s in noisy_latents.shape[-2:])
        extra = {"text_embeds": text_states.pooled.to(self.dtype),
                 "time_ids": self.time_ids(len(noisy_latents), h, w)}
        out = self.pipe.unet(noisy_latents.to(self.dtype), timesteps,
                             encoder_hidden_states=text_states.hidden.to(self.dtype),
                             added_cond_kwargs=extra).sample
        return out.float()

    def speed_up(self, channels_last: bool = False, compile_unet: bool = False,
                 low_memory: bool = False) -> None:
        super().speed_up(channels_last, compile_unet, low_memory)
        if low_memory:
            self.text_encoder_2.activation_checkpointing_enable({"use_reentrant": False})
            self.text_encoder_2.train()

    @torch.no_grad()
    def generate(self, text_states: SDXLText, negative_states: SDXLText,
                 generators: list[torch.Generator], steps: int, cfg: float,
                 size: int) -> torch.Tensor:
        """Images [B, 3, size, size] in [0, 1]; SDXL derives the size conditioning itself."""
        out = self.pipe(prompt_embeds=text_states.hidden.to(self.dtype),
                        pooled_prompt_embeds=text_states.pooled.to(self.dtype),
                        negative_prompt_embeds=negative_states.hidden.to(self.dtype),
                        negative_pooled_prompt_embeds=negative_states.pooled.to(self.dtype),
                        num_inference_steps=steps, guidance_scale=cfg, height=size, width=size,
                        generator=generators, output_type="pt", return_dict=True)
        return out.images.float().cpu()


def _make_scheduler(name: str, config):
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
    return cls.from_config(config, **extra)


def builtin_model_folder(name: str) -> Path:
    root = Path(os.environ.get("ONEWORD_CACHE", Path.home() / ".cache" / "oneword"))
    return root / "models" / name


def resolve_model(model: str) -> tuple[str, str]:
    """('builtin'|'folder'|'file'|'hub', location) for what the user named."""
    if model == "world":
        if not (WORLD_MODEL_FOLDER / "model_index.json").exists():
            raise OnewordError("--model world: the world model's weights are not in this "
                               "installation; train them with `python -m oneword.world.model "
                               "train --out oneword/world/weights/model`")
        return "folder", str(WORLD_MODEL_FOLDER)
    if model in BUILTIN_MODELS:
        folder = builtin_model_folder(model)
        if not (folder / "model_index.json").exists():
            builder = build_tiny_sdxl_pipeline if model == "tiny-sdxl" else build_tiny_pipeline
            builder(folder, seed=0)
        return "folder", str(folder)
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise OnewordError(
                f"--model {model}: this folder is not a diffusers pipeline (no model_index.json); "
                "give a pipeline folder, a .safetensors/.ckpt checkpoint or a hub id")
        return "folder", str(path)
    if path.suffix in _SINGLE_FILE_SUFFIXES:
        if not path.is_file():
            raise OnewordError(f"--model {model}: no such checkpoint file")
        return "file", str(path)
    if path.exists() or model.startswith((".", "/", "~")):
        raise OnewordError(
            f"--model {model}: not a pipeline folder, .safetensors/.ckpt file or hub id")
    return "hub", model


def model_settings(model: str) -> dict:
    """oneword's defaults for `model` (a --model value) from its folder's `oneword.json`;
    {} for models without one (checkpoint files, hub ids, folders that do not carry it)."""
    if model in BUILTIN_MODELS and model != "world":
        return {}
    folder = WORLD_MODEL_FOLDER if model == "world" else Path(model).expanduser()
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise OnewordError(f"{path}: not readable as JSON ({e}); fix it or delete it") from None
    steps = settings.get("learn_steps", 1) if isinstance(settings, dict) else None
    if not isinstance(steps, int) or steps < 1:
        raise OnewordError(f"{path}: give an object whose learn_steps is a whole number, 1 or "
                           "more; fix it or delete it")
    return settings


def write_model_settings(folder: str | Path, settings: dict) -> Path:
    """Write `oneword.json` into a pipeline folder (atomically)."""
    return atomic_write_text(Path(folder) / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")


def load_model(model: str = "tiny", device: str | None = None,
               dtype: str | None = None) -> TextToImageModel:
    """Load a Stable Diffusion 1.x/2.x or SDXL pipeline and freeze it."""
    kind, location = resolve_model(model)
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    pipe = _load_pipe(kind, location, model, dt)
    return _wrap_pipeline(pipe, model, dev, dt)


def _load_pipe(kind: str, location: str, model: str, dtype: torch.dtype):
    import diffusers
    import transformers
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    try:
        if kind == "file" and single_file_is_sdxl(location):
            pipe = diffusers.StableDiffusionXLPipeline.from_single_file(location, dtype=dtype)
        elif kind == "file":
            pipe = diffusers.StableDiffusionPipeline.from_single_file(
                location, dtype=dtype, safety_checker=None)
        else:
            pipe = diffusers.DiffusionPipeline.from_pretrained(
                location, dtype=dtype, safety_checker=None, requires_safety_checker=False)
    except OnewordError:
        raise
    except Exception as exc:  # diffusers raises many kinds; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnewordError(f"--model {model}: could not load a pipeline ({first})") from exc
    parts = ["tokenizer", "text_encoder", "unet", "vae", "scheduler"]
    if hasattr(pipe, "text_encoder_2"):
        parts += ["tokenizer_2", "text_encoder_2"]
    for part in parts:
        if getattr(pipe, part, None) is None:
            raise OnewordError(f"--model {model}: the pipeline has no {part}; give a Stable "
                               "Diffusion 1.x/2.x or SDXL base text-to-image pipeline")
    return pipe


def single_file_is_sdxl(path: str) -> bool:
    """True if a single-file checkpoint holds SDXL's second text encoder (OpenCLIP bigG)."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors import safe_open
            with safe_open(str(path), framework="pt", device="cpu") as f:
                keys = list(f.keys())
        else:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            keys = list(data.get("state_dict", data)) if isinstance(data, dict) else []
    except Exception:  # an unreadable file is reported by the loader itself
        return False
    return any(k.startswith("conditioner.embedders.1.") for k in keys)


def _wrap_pipeline(pipe, name: str, device: torch.device, dtype: torch.dtype) -> TextToImageModel:
    import diffusers
    pipe.to(device)
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if _is_sdxl(pipe) else [])
    for module in (*encoders, pipe.unet, pipe.vae):
        module.requires_grad_(False)
        module.eval()
    for encoder in encoders:
        table = encoder.get_input_embeddings()
        if not isinstance(table, PlaceholderEmbedding):
            encoder.set_input_embeddings(PlaceholderEmbedding(table))
    pipe.set_progress_bar_config(disable=True)
    ddpm = diffusers.DDPMScheduler.from_config(pipe.scheduler.config)
    width = pipe.text_encoder.get_input_embeddings().table.embedding_dim
    cls, family = (SDXLModel, "sdxl") if _is_sdxl(pipe) else (TextToImageModel, model_family(width))
    return cls(
        pipe=pipe, name=name, family=family, device=device, dtype=dtype,
        prediction_type=ddpm.config.prediction_type,
        alphas_cumprod=ddpm.alphas_cumprod.double().cpu())


def _is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def model_family(width: int) -> str:
    """The model family an embedding width belongs to."""
    return {768: "sd1", 1024: "sd2", 1280: "sdxl-g"}.get(width, f"custom-{width}")


FAMILY_NAMES = {"sd1": "Stable Diffusion 1.x (768-d)", "sd2": "Stable Diffusion 2.x (1024-d)",
                "sdxl-g": "SDXL OpenCLIP bigG (1280-d)"}


def describe_family(width: int) -> str:
    fam = model_family(width)
    return FAMILY_NAMES.get(fam, f"a {width}-d text encoder")


def describe_layout(layout: tuple[int, ...]) -> str:
    """The model family of an embedding layout: (768,) one encoder, (768, 1280) SDXL's pair."""
    if len(layout) == 1:
        return describe_family(layout[0])
    name = "SDXL" if tuple(layout) == (768, 1280) else "an SDXL-architecture model"
    return f"{name} (clip_l {layout[0]} + clip_g {layout[1]})"


# -- built-in tiny models ------------------------------------------------------------------
TINY_EXTRA_WORDS = (
    "cat dog toy calico orange white black red blue green yellow pink brown ball bird cup robot "
    "teddy bear car house tree flower star heart blob sun moon sky sea snow grass night beach "
    "forest desert room painting sketch drawing watercolor oil by claude monet van gogh in at "
    "with and on under next to sitting wearing hat shirt girl boy person man woman face logo "
    "outfit style art photo picture image").split()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars)))


def build_clip_tokenizer(words: list[str], vocab_size: int | None = None):
    """A CLIPTokenizer whose BPE merges make each of `words` one token, like CLIP's own layout:
    byte characters, the same with '</w>', learned merges, then start and end tokens.

    vocab_size pads the vocabulary with unused tokens (to match a real table's size)."""
    from transformers import CLIPTokenizer
    byte_chars = list(_bytes_to_unicode().values())
    merges = list(_bpe_merges(tuple(sorted(set(w.lower() for w in words)))))
    vocab: dict[str, int] = {}
    for token in byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]:
        vocab.setdefault(token, len(vocab))
    while vocab_size and len(vocab) < vocab_size - 2:
        vocab[f"<|unused{len(vocab)}|>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


@functools.lru_cache(maxsize=8)
def _bpe_merges(words: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """BPE merges (Sennrich et al. 2016) until every piece of every word is one symbol.

    Written out rather than `tokenizers`' BpeTrainer because that breaks ties between equally
    frequent pairs differently from one process to the next, so the same words gave other token
    ids each run; here ties go to the smallest pair, so a model built in code is the same
    everywhere."""
    from tokenizers import pre_tokenizers
    split = pre_tokenizers.Whitespace()
    pieces: dict[tuple[str, ...], int] = {}
    for word in words:
        for piece, _ in split.pre_tokenize_str(word):
            symbols = tuple(piece[:-1]) + (piece[-1] + "</w>",)
            pieces[symbols] = pieces.get(symbols, 0) + 1
    merges = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols, n in pieces.items():
            for pair in zip(symbols, symbols[1:]):
                counts[pair] = counts.get(pair, 0) + n
        if not counts:
            return tuple(merges)
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        pieces = {_merge(symbols, best): n for symbols, n in pieces.items()}


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if symbols[i:i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


@dataclass(frozen=True)
class TinyShapes:
    """Sizes of a built-in tiny SD-architecture model."""
    text_width: int = 32
    text_layers: int = 2
    unet_channels: tuple[int, ...] = (32, 64)
    vae_channels: tuple[int, ...] = (32, 32, 32)
    unet_layers: int = 1
    latent_size: int = 8
    context: int = 77
    prediction_type: str = "epsilon"


@dataclass
class Components:
    """The parts of an SD-architecture pipeline, as plain torch modules (for training them)."""
    tokenizer: object
    text_encoder: nn.Module
    unet: nn.Module
    vae: nn.Module
    scheduler: object


def build_components(words: list[str], shapes: TinyShapes = TinyShapes(),
                     seed: int = 0) -> Components:
    """Randomly initialised SD-architecture parts with a tokenizer that knows `words`."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel
    tokenizer = build_clip_tokenizer(words)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # diffusers/transformers initialise weights from the global RNG
    try:
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=shapes.text_width,
            intermediate_size=shapes.text_width * 4, num_hidden_layers=shapes.text_layers,
            num_attention_heads=max(2, shapes.text_width // 64),
            max_position_embeddings=shapes.context,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, projection_dim=shapes.text_width))
        unet = _build_unet(shapes)
        m = len(shapes.vae_channels)
        vae = diffusers.AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
            block_out_channels=shapes.vae_channels, layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * m, up_block_types=("UpDecoderBlock2D",) * m,
            sample_size=shapes.latent_size * 2 ** (m - 1))
    finally:
        torch.random.set_rng_state(torch_state)
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                                        beta_schedule="scaled_linear", clip_sample=False,
                                        set_alpha_to_one=False, steps_offset=1,
                                        prediction_type=shapes.prediction_type)
    return Components(tokenizer, text_encoder, unet, vae, scheduler)


def _build_unet(shapes: TinyShapes):
    import diffusers
    n = len(shapes.unet_channels)
    return diffusers.UNet2DConditionModel(
        sample_size=shapes.latent_size, in_channels=4, out_channels=4,
        layers_per_block=shapes.unet_layers, block_out_channels=shapes.unet_channels,
        norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=shapes.text_width, attention_head_dim=8)


def save_components(parts: Components, folder: str | Path) -> Path:
    """Save the parts as a diffusers StableDiffusionPipeline folder (atomically)."""
    import diffusers
    diffusers.utils.logging.disable_progress_bar()
    pipe = diffusers.StableDiffusionPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
        unet=parts.unet, scheduler=parts.scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    folder = Path(folder)
    _save_atomically(pipe, folder)
    return folder


def load_components(folder: str | Path) -> Components:
    """The fp32 parts of a saved SD-architecture folder, to continue training them."""
    import diffusers
    from transformers import CLIPTextModel, CLIPTokenizer
    folder = Path(folder)
    fp32 = {"torch_dtype": torch.float32}
    return Components(CLIPTokenizer.from_pretrained(folder / "tokenizer"),
                      CLIPTextModel.from_pretrained(folder / "text_encoder", **fp32),
                      diffusers.UNet2DConditionModel.from_pretrained(folder / "unet", **fp32),
                      diffusers.AutoencoderKL.from_pretrained(folder / "vae", **fp32),
                      diffusers.DDIMScheduler.from_pretrained(folder / "scheduler"))


def build_tiny_pipeline(folder: str | Path, seed: int = 0, words: list[str] | None = None,
                        shapes: TinyShapes = TinyShapes()) -> Path:
    """Build an SD-architecture pipeline with random weights and save it as a diffusers folder.

    It is loaded back through the same `from_pretrained` path as real checkpoints.
    """
    from .prompts import template_words
    vocabulary = list(words or []) + template_words() + list(TINY_EXTRA_WORDS)
    return save_components(build_components(vocabulary, shapes, seed), folder)


@dataclass(frozen=True)
class TinySDXLShapes:
    """Sizes of the built-in tiny SDXL-architecture model (two text encoders of different
    widths, like CLIP ViT-L 768 and OpenCLIP bigG 1280)."""
    width_l: int = 32
    width_g: int = 48
    text_layers: int = 2
    unet_channels: tuple[int, ...] = (32, 64)
    vae_channels: tuple[int, ...] = (32, 32, 32)
    time_embed_dim: int = 8
    latent_size: int = 8


def build_sdxl_components(words: list[str], shapes: TinySDXLShapes = TinySDXLShapes(),
                          seed: int = 0) -> dict:
    """Randomly initialised SDXL-architecture parts (as diffusers' own SDXL tests build them):
    the keyword arguments of `StableDiffusionXLPipeline`."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    import copy
    tokenizer = build_clip_tokenizer(words)
    tokenizer_2 = copy.deepcopy(tokenizer)  # the same ids, as SDXL's two tokenizers have
    tokenizer_2.pad_token = "!"  # bigG's tokenizer pads with "!"

    def text_config(width: int, legacy_eos: bool):
        # SDXL's real bigG config has the legacy eos id 2 (pooling at the highest id)
        return CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width * 4,
            num_hidden_layers=shapes.text_layers, num_attention_heads=2,
            max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=2 if legacy_eos else tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, projection_dim=width)

    def make():
        n = len(shapes.unet_channels)
        m = len(shapes.vae_channels)
        return dict(
            text_encoder=CLIPTextModel(text_config(shapes.width_l, False)),
            text_encoder_2=CLIPTextModelWithProjection(text_config(shapes.width_g, True)),
            unet=diffusers.UNet2DConditionModel(
                sample_size=shapes.latent_size, in_channels=4, out_channels=4,
                layers_per_block=1, block_out_channels=shapes.unet_channels, norm_num_groups=8,
                down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
                up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
                cross_attention_dim=shapes.width_l + shapes.width_g, attention_head_dim=8,
                use_linear_projection=True, addition_embed_type="text_time",
                addition_time_embed_dim=shapes.time_embed_dim,
                projection_class_embeddings_input_dim=6 * shapes.time_embed_dim + shapes.width_g),
            vae=diffusers.AutoencoderKL(
                in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
                block_out_channels=shapes.vae_channels, layers_per_block=1,
                down_block_types=("DownEncoderBlock2D",) * m,
                up_block_types=("UpDecoderBlock2D",) * m, scaling_factor=0.13025,
                sample_size=shapes.latent_size * 2 ** (m - 1)))

    parts = _seeded(seed, make)
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading")
    return dict(parts, tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=scheduler)


def build_tiny_sdxl_pipeline(folder: str | Path, seed: int = 0, words: list[str] | None = None,
                             shapes: TinySDXLShapes = TinySDXLShapes()) -> Path:
    """Build an SDXL-architecture pipeline with random weights and save it as a diffusers
    folder, loaded back through `from_pretrained` like a real SDXL checkpoint."""
    import diffusers
    from .prompts import template_words
    diffusers.utils.logging.disable_progress_bar()
    vocabulary = list(words or []) + template_words() + list(TINY_EXTRA_WORDS)
    pipe = diffusers.StableDiffusionXLPipeline(
        **build_sdxl_components(vocabulary, shapes, seed), force_zeros_for_empty_prompt=True,
        add_watermarker=False)
    folder = Path(folder)
    _save_atomically(pipe, folder)
    return folder


def build_sd15_components(seed: int = 0, device: str | torch.device = "cpu") -> Components:
    """Stable Diffusion 1.5's exact architecture with random weights, built from its config
    (no download): it computes, times and fills memory like the real model, draws nothing."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel
    from .prompts import template_words
    tokenizer = build_clip_tokenizer(template_words() + list(TINY_EXTRA_WORDS), vocab_size=49408)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.device(device):
            text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                projection_dim=768, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
            unet = diffusers.UNet2DConditionModel(sample_size=64, cross_attention_dim=768,
                                                  attention_head_dim=8)
            vae = diffusers.AutoencoderKL(
                block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
    finally:
        torch.random.set_rng_state(torch_state)
    scheduler = diffusers.PNDMScheduler(beta_start=0.00085, beta_end=0.012,
                                        beta_schedule="scaled_linear", skip_prk_steps=True,
                                        set_alpha_to_one=False, steps_offset=1)
    return Components(tokenizer, text_encoder, unet, vae, scheduler)


def build_sdxl_base_components(seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """SDXL base 1.0's exact architecture with random weights, built from its config (no
    download), as `StableDiffusionXLPipeline` keyword arguments: for speed benchmarks."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    from .prompts import template_words
    tokenizer = build_clip_tokenizer(template_words() + list(TINY_EXTRA_WORDS), vocab_size=49408)

    def text_config(width, layers, heads, act, eos):
        return CLIPTextConfig(
            vocab_size=49408, hidden_size=width, intermediate_size=width * 4,
            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
            hidden_act=act, projection_dim=width, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)

    def make():
        with torch.device(device):
            return dict(
                text_encoder=CLIPTextModel(text_config(768, 12, 12, "quick_gelu",
                                                       tokenizer.eos_token_id)),
                text_encoder_2=CLIPTextModelWithProjection(text_config(1280, 32, 20, "gelu", 2)),
                unet=diffusers.UNet2DConditionModel(
                    sample_size=128, block_out_channels=(320, 640, 1280),
                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                      "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                    cross_attention_dim=2048, use_linear_projection=True,
                    addition_embed_type="text_time", addition_time_embed_dim=256,
                    projection_class_embeddings_input_dim=2816),
                vae=diffusers.AutoencoderKL(
                    block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                    latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024,
                    scaling_factor=0.13025))

    import copy
    tokenizer_2 = copy.deepcopy(tokenizer)
    tokenizer_2.pad_token = "!"
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading")
    return dict(_seeded(seed, make), tokenizer=tokenizer, tokenizer_2=tokenizer_2,
                scheduler=scheduler)


def sdxl_model_from_parts(parts: dict, name: str, device: str | None = None,
                          dtype: str | None = None) -> "SDXLModel":
    """An SDXLModel over parts held in memory (benchmarks; no save and reload)."""
    import diffusers
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    pipe = diffusers.StableDiffusionXLPipeline(**parts, add_watermarker=False)
    pipe.to(dtype=dt)
    return _wrap_pipeline(pipe, name, dev, dt)


def model_from_components(parts: Components, name: str, device: str | None = None,
                          dtype: str | None = None) -> TextToImageModel:
    """A TextToImageModel over parts held in memory (benchmarks; no save and reload)."""
    import diffusers
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    pipe = diffusers.StableDiffusionPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
        unet=parts.unet, scheduler=parts.scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.to(dtype=dt)
    return _wrap_pipeline(pipe, name, dev, dt)


def _save_atomically(pipe, folder: Path) -> None:
    import shutil
    import tempfile
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    pipe.save_pretrained(tmp, safe_serialization=True)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


# -- evaluators: image and text feature models that score generated images -----------------
DEFAULT_CLIP_EVALUATOR = "openai/clip-vit-large-patch14"
DEFAULT_DINO_EVALUATOR = "facebook/dinov2-small"


@dataclass(frozen=True)
class ImagePreprocess:
    """An evaluator's input transform, done in torch: resize the short side, center-crop,
    normalize (the values come from the model's preprocessor_config.json)."""
    size: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] → [B, 3, crop, crop] normalized."""
        import torch.nn.functional as F
        h, w = images.shape[-2:]
        scale = self.size / min(h, w)
        new = (max(self.crop, round(h * scale)), max(self.crop, round(w * scale)))
        x = images.float().clamp(0, 1)
        if new != (h, w):
            x = F.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False)
        top, left = (new[0] - self.crop) // 2, (new[1] - self.crop) // 2
        x = x[..., top:top + self.crop, left:left + self.crop].clamp(0, 1)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


@dataclass
class ImageEvaluator:
    """A frozen vision model (CLIP or DINO) that maps images to unit feature vectors."""
    name: str
    model: object
    preprocess: ImagePreprocess
    device: torch.device
    tokenizer: object = None  # CLIP only

    @torch.no_grad()
    def image_features(self, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
        """Unit features [B, d] (fp32, CPU) of images [B, 3, H, W] in [0, 1]."""
        parts = []
        for s in range(0, len(images), batch):
            pixels = self.preprocess(images[s:s + batch].to(self.device))
            parts.append(_pooled(self._image_forward(pixels)).float().cpu())
        return torch.nn.functional.normalize(torch.cat(parts), dim=-1)

    def _image_forward(self, pixels: torch.Tensor):
        if self.tokenizer is not None:
            return self.model.get_image_features(pixel_values=pixels)
        return self.model(pixel_values=pixels)

    @torch.no_grad()
    def text_features(self, texts: list[str], batch: int = 64) -> torch.Tensor:
        """Unit CLIP text features [B, d] (fp32, CPU)."""
        if self.tokenizer is None:
            raise OnewordError(f"evaluator {self.name}: has no text tower; use a CLIP model")
        parts = []
        for s in range(0, len(texts), batch):
            ids = self.tokenizer(texts[s:s + batch], padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length,
                                 return_tensors="pt").input_ids.to(self.device)
            parts.append(_pooled(self.model.get_text_features(input_ids=ids)).float().cpu())
        return torch.nn.functional.normalize(torch.cat(parts), dim=-1)


def _pooled(output) -> torch.Tensor:
    """The pooled feature of a transformers output (a tensor in older versions)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load_clip_evaluator(name_or_path: str = DEFAULT_CLIP_EVALUATOR,
                        device: str | None = None) -> ImageEvaluator:
    """A CLIP model (hub id or local folder) for CLIP-I and CLIP-T scores."""
    from transformers import AutoTokenizer, CLIPModel
    dev = pick_device(device)
    option = f"--clip-model {name_or_path}"
    model = _load_evaluator_part(CLIPModel, name_or_path, option)
    tokenizer = _load_evaluator_part(AutoTokenizer, name_or_path, option)
    return ImageEvaluator(name_or_path, model.to(dev).eval(),
                          _read_preprocess(name_or_path, option), dev, tokenizer)


def load_dino_evaluator(name_or_path: str = DEFAULT_DINO_EVALUATOR,
                        device: str | None = None) -> ImageEvaluator:
    """A DINO/DINOv2 vision model (hub id or local folder) for the DINO fidelity score."""
    from transformers import AutoModel
    dev = pick_device(device)
    option = f"--dino-model {name_or_path}"
    model = _load_evaluator_part(AutoModel, name_or_path, option)
    return ImageEvaluator(name_or_path, model.to(dev).eval(),
                          _read_preprocess(name_or_path, option), dev)


def _load_evaluator_part(cls, name_or_path: str, option: str):
    import transformers
    transformers.utils.logging.disable_progress_bar()
    path = Path(name_or_path).expanduser()
    if name_or_path.startswith((".", "/", "~")) and not path.is_dir():
        raise OnewordError(f"{option}: no such folder; give a hub id or a model folder")
    try:
        part = cls.from_pretrained(str(path) if path.is_dir() else name_or_path)
    except Exception as exc:  # transformers raises many kinds; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnewordError(f"{option}: could not load it ({first})") from exc
    if hasattr(part, "requires_grad_"):
        part.requires_grad_(False)
    return part


def _read_preprocess(name_or_path: str, option: str) -> ImagePreprocess:
    from transformers import AutoImageProcessor
    path = Path(name_or_path).expanduser()
    proc = _load_evaluator_part(AutoImageProcessor, str(path) if path.is_dir() else name_or_path,
                                option)
    size = getattr(proc, "size", None) or {}
    crop = getattr(proc, "crop_size", None) or {}
    short = size.get("shortest_edge") or size.get("height") or 224
    side = crop.get("height") or short
    return ImagePreprocess(int(short), int(side), tuple(proc.image_mean), tuple(proc.image_std))


TINY_EVALUATOR_PREPROCESS = {"size": 32, "crop": 32}


def build_tiny_clip_evaluator(folder: str | Path, seed: int = 0,
                              words: list[str] | None = None) -> Path:
    """A CLIP model with random weights and tiny sizes, saved as a transformers folder and
    loaded back by `load_clip_evaluator` like a real one (for tests)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel
    tokenizer = build_clip_tokenizer(list(words or []) + list(TINY_EXTRA_WORDS))
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=32, patch_size=8)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    model = _seeded(seed, lambda: CLIPModel(config))
    side = TINY_EVALUATOR_PREPROCESS
    processor = CLIPImageProcessor(size={"shortest_edge": side["size"]},
                                   crop_size={"height": side["crop"], "width": side["crop"]})
    return _save_parts_atomically(Path(folder), [model, tokenizer, processor])


def build_tiny_dino_evaluator(folder: str | Path, seed: int = 0) -> Path:
    """A DINOv2 model with random weights and tiny sizes, saved as a transformers folder."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, image_size=32, patch_size=8)
    model = _seeded(seed, lambda: Dinov2Model(config))
    side = TINY_EVALUATOR_PREPROCESS
    processor = BitImageProcessor(size={"shortest_edge": side["size"]},
                                  crop_size={"height": side["crop"], "width": side["crop"]},
                                  do_center_crop=True, image_mean=[0.485, 0.456, 0.406],
                                  image_std=[0.229, 0.224, 0.225])
    return _save_parts_atomically(Path(folder), [model, processor])


def _seeded(seed: int, make):
    """make() with the global RNG seeded (transformers initialises weights from it), then
    the RNG restored."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return make()
    finally:
        torch.random.set_rng_state(state)


def _save_parts_atomically(folder: Path, parts: list) -> Path:
    import shutil
    import tempfile
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    for part in parts:
        part.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def vocabulary_tokens(model: TextToImageModel) -> list[str]:
    """The token string of each row of `model.vocabulary_table` (e.g. 'cat</w>')."""
    count = model.embedding.base_size
    return [str(t) for t in model.tokenizer.convert_ids_to_tokens(list(range(count)))]
