"""Feature models that score generated images: CLIP (image and text) and DINO (image)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import OnewordError
from .device import pick_device

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
DEFAULT_DINO_MODEL = "facebook/dinov2-small"


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
        x = x[..., top : top + self.crop, left : left + self.crop].clamp(0, 1)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


@dataclass
class FeatureModel:
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
            pixels = self.preprocess(images[s : s + batch].to(self.device))
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
            ids = self.tokenizer(
                texts[s : s + batch],
                padding="max_length",
                truncation=True,
                max_length=self.tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids.to(self.device)
            parts.append(_pooled(self.model.get_text_features(input_ids=ids)).float().cpu())
        return torch.nn.functional.normalize(torch.cat(parts), dim=-1)


def _pooled(output) -> torch.Tensor:
    """The pooled feature of a transformers output (a tensor in older versions)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load_clip_model(
    name_or_path: str = DEFAULT_CLIP_MODEL, device: str | None = None
) -> FeatureModel:
    """A CLIP model (hub id or local folder) for CLIP-I and CLIP-T scores."""
    from transformers import AutoTokenizer, CLIPModel

    dev = pick_device(device)
    option = f"--clip-model {name_or_path}"
    model = _load_part(CLIPModel, name_or_path, option)
    tokenizer = _load_part(AutoTokenizer, name_or_path, option)
    return FeatureModel(
        name_or_path, model.to(dev).eval(), _read_preprocess(name_or_path, option), dev, tokenizer
    )


def load_dino_model(
    name_or_path: str = DEFAULT_DINO_MODEL, device: str | None = None
) -> FeatureModel:
    """A DINO/DINOv2 vision model (hub id or local folder) for the DINO fidelity score."""
    from transformers import AutoModel

    dev = pick_device(device)
    option = f"--dino-model {name_or_path}"
    model = _load_part(AutoModel, name_or_path, option)
    return FeatureModel(
        name_or_path, model.to(dev).eval(), _read_preprocess(name_or_path, option), dev
    )


def _load_part(cls, name_or_path: str, option: str):
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
    proc = _load_part(AutoImageProcessor, str(path) if path.is_dir() else name_or_path, option)
    size = getattr(proc, "size", None) or {}
    crop = getattr(proc, "crop_size", None) or {}
    short = size.get("shortest_edge") or size.get("height") or 224
    side = crop.get("height") or short
    return ImagePreprocess(int(short), int(side), tuple(proc.image_mean), tuple(proc.image_std))
