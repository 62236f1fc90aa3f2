"""Finding and loading checkpoints: hub ids, diffusers folders, single files, built-ins."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import OnewordError
from ..files import atomic_write_text
from .builtin import TINY_MODELS, cache_folder, tiny_model_folder
from .device import check_device, pick_device, pick_dtype
from .pipelines import SDXLModel, TextToImageModel, wrap_pipeline
from .prediction import set_prediction_type
from .single_file import Checkpoint, checkpoint_config, remembered_prediction
from .tiny import Components, sd_pipeline

log = logging.getLogger(__name__)

BUILTIN_MODELS = (*TINY_MODELS, "world")
WORLD_MODEL_FOLDER = Path(__file__).parent.parent / "world" / "weights" / "model"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
# Beside model_index.json: oneword's defaults for that model, e.g. {"learn_steps": 300}.
SETTINGS_FILE = "oneword.json"
DEFAULT_MODEL = "world"


@dataclass(frozen=True)
class ModelChoice:
    """Which checkpoint to load, and where and how to run it."""

    model: str = DEFAULT_MODEL
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self):
        # a misspelt device or precision is refused before any work; whether this machine
        # has the device is checked where the model loads (a Ray worker may, the driver not)
        if self.device:
            check_device(self.device, here=False)
        if self.dtype:
            pick_dtype(torch.device("cpu"), self.dtype)

    def load(self) -> TextToImageModel:
        return load_model(self.model, self.device, self.dtype)


def resolve_model(model: str) -> tuple[str, str]:
    """('builtin'|'folder'|'file'|'hub', location) for what the user named."""
    if model == "world":
        if not (WORLD_MODEL_FOLDER / "model_index.json").exists():
            raise OnewordError(
                "--model world: the world model's weights are not in this "
                "installation; train them with `python -m oneword.world.model "
                "train --out oneword/world/weights/model`"
            )
        return "folder", str(WORLD_MODEL_FOLDER)
    if model in TINY_MODELS:
        return "folder", str(tiny_model_folder(model))
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise OnewordError(
                f"--model {model}: this folder is not a diffusers pipeline (no model_index.json); "
                "give a pipeline folder, a .safetensors/.ckpt checkpoint or a hub id"
            )
        return "folder", str(path)
    if path.suffix in SINGLE_FILE_SUFFIXES:
        if not path.is_file():
            raise OnewordError(f"--model {model}: no such checkpoint file")
        return "file", str(path)
    if path.exists() or model.startswith((".", "/", "~")):
        raise OnewordError(
            f"--model {model}: not a pipeline folder, .safetensors/.ckpt file or hub id"
        )
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
        raise OnewordError(
            f"{path}: give an object whose learn_steps is a whole number, 1 or "
            "more; fix it or delete it"
        )
    return settings


def write_model_settings(folder: str | Path, settings: dict) -> Path:
    """Write `oneword.json` into a pipeline folder (atomically)."""
    return atomic_write_text(Path(folder) / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")


def load_model(
    model: str = "tiny", device: str | None = None, dtype: str | None = None
) -> TextToImageModel:
    """Load a Stable Diffusion 1.x/2.x or SDXL pipeline and freeze it."""
    kind, location = resolve_model(model)
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    found = _single_file_config(location, model) if kind == "file" else None
    pipe = _load_pipe(kind, location, model, dt, found)
    wrapped = wrap_pipeline(pipe, model, dev, dt)
    if found is not None and not found.prediction_known:
        told = remembered_prediction(location, cache_folder())
        if told:
            set_prediction_type(wrapped, told)
        else:  # learn tells it from the photos; drawing without knowing is refused
            wrapped.prediction_guessed = True
    return wrapped


def _load_pipe(kind: str, location: str, model: str, dtype: torch.dtype, found=None):
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    try:
        if kind == "file":
            pipe = _load_single_file(location, dtype, found)
        else:
            pipe = _from_pretrained(location, dtype)
    except OnewordError:
        raise
    except Exception as exc:  # diffusers raises many kinds; the user needs one line
        raise OnewordError(load_failure(model, exc)) from exc
    parts = ["tokenizer", "text_encoder", "unet", "vae", "scheduler"]
    if hasattr(pipe, "text_encoder_2"):
        parts += ["tokenizer_2", "text_encoder_2"]
    for part in parts:
        if getattr(pipe, part, None) is None:
            raise OnewordError(
                f"--model {model}: the pipeline has no {part}; give a Stable "
                "Diffusion 1.x/2.x or SDXL base text-to-image pipeline"
            )
    return pipe


def load_failure(model: str, exc: Exception) -> str:
    """One line on a pipeline that did not load: a hub id neither cached nor reachable is
    said plainly (diffusers' text points at a stack trace the user never sees)."""
    text = str(exc).strip()
    if "not fully cached" in text or "not cached locally" in text:
        return (
            f"--model {model}: not in the Hugging Face cache, and the Hub could not be reached "
            "(offline, or HF_HUB_OFFLINE=1); run once with a network to download it, or give a "
            "local diffusers folder or .safetensors file"
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"--model {model}: could not load a pipeline ({first})"


def _from_pretrained(location: str, dtype: torch.dtype):
    """diffusers' `from_pretrained`; in half precision the fp16 weight files where the model
    has them (half the download: SDXL's fp32 files are ~14 GB), else the plain ones."""
    import diffusers

    # SD 1.x/2.x take the first two, SDXL the last; each pipeline ignores the others
    settings = dict(safety_checker=None, requires_safety_checker=False, add_watermarker=False)
    if dtype in (torch.float16, torch.bfloat16):
        try:
            return diffusers.DiffusionPipeline.from_pretrained(
                location, dtype=dtype, variant="fp16", **settings
            )
        except Exception as exc:  # no fp16 files (a ValueError), or not in an offline cache
            log.info("%s: no fp16 weight files (%s); loading the plain ones", location, exc)
    return diffusers.DiffusionPipeline.from_pretrained(location, dtype=dtype, **settings)


def _single_file_config(location: str, model: str) -> Checkpoint:
    try:
        return checkpoint_config(location, cache_folder())
    except OnewordError:
        raise
    except Exception as exc:  # writing the config folder: a full disk, permissions
        raise OnewordError(load_failure(model, exc)) from exc


def _load_single_file(location: str, dtype: torch.dtype, found: Checkpoint):
    """diffusers' own `from_single_file`, given the family's local config folder so that it
    never fetches anything (see oneword.adapters.single_file)."""
    import diffusers

    log.info("%s: a %s checkpoint (configs in %s)", location, found.family, found.config)
    cls = getattr(diffusers, found.pipeline)
    xl = found.pipeline == "StableDiffusionXLPipeline"
    extra = {"add_watermarker": False} if xl else {"safety_checker": None}
    return cls.from_single_file(
        location, config=str(found.config), local_files_only=True, dtype=dtype, **extra
    )


def sdxl_model_from_parts(
    parts: dict, name: str, device: str | None = None, dtype: str | None = None
) -> "SDXLModel":
    """An SDXLModel over parts held in memory (benchmarks; no save and reload)."""
    import diffusers

    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    pipe = diffusers.StableDiffusionXLPipeline(**parts, add_watermarker=False)
    pipe.to(dtype=dt)
    return wrap_pipeline(pipe, name, dev, dt)


def model_from_components(
    parts: Components, name: str, device: str | None = None, dtype: str | None = None
) -> TextToImageModel:
    """A TextToImageModel over parts held in memory (benchmarks; no save and reload)."""
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    pipe = sd_pipeline(parts)
    pipe.to(dtype=dt)
    return wrap_pipeline(pipe, name, dev, dt)
