"""The users' photos: finding them, reading them robustly and cutting them into training crops.

Phone photos come rotated by an EXIF tag, PNGs come with transparency or 16 bits per channel,
scans come in CMYK or grayscale. Each is turned into plain 8-bit RGB here, so the trainer sees
what the user sees. A file that cannot be read is skipped with a warning rather than stopping a
run: one bad file in a folder of twenty should not cost the user the other nineteen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import OnewordError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CROPS = ("center", "random")
_DEEP_GRAY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_WHITE = (255, 255, 255)


# -- finding and reading -------------------------------------------------------------------
def find_photos(sources: list[str | Path]) -> list[Path]:
    """The photo files the user named: each source is a folder (its photos, sorted, not
    recursive) or a file (taken as given, so `load_photos` can say why it is not usable)."""
    found: list[Path] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            found += sorted(
                (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES),
                key=lambda p: p.name,
            )
        elif path.is_file():
            found.append(path)
        else:
            raise OnewordError(
                f"{source}: no such file or folder; give a folder of photos or photo files"
            )
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path, None)
    return list(unique)


def load_photos(sources: list[str | Path]) -> tuple[list[Image.Image], list[str]]:
    """RGB images of every readable photo, and a 'skipped <file>: <reason>' line for each other.

    Raises OnewordError when nothing usable is left, since training needs at least one photo.
    """
    images: list[Image.Image] = []
    warnings: list[str] = []
    for path in find_photos(sources):
        try:
            images.append(read_photo(path))
        except _READ_ERRORS as exc:
            warnings.append(f"skipped {path}: {_reason(exc)}")
    if not images:
        named = ", ".join(str(s) for s in sources) or "(nothing given)"
        why = "; ".join(w.removeprefix("skipped ") for w in warnings[:10])
        more = f"; and {len(warnings) - 10} more" if len(warnings) > 10 else ""
        found = f" ({why}{more})" if why else " (no .jpg, .jpeg, .png or .webp files there)"
        raise OnewordError(
            f"no usable photos in {named}{found}: give a folder or files of JPEG/PNG/WebP images"
        )
    return images, warnings


def read_photo(path: str | Path) -> Image.Image:
    """One photo as upright 8-bit RGB (EXIF rotation applied, transparency over white)."""
    with Image.open(path) as opened:
        opened.load()
        source_format = opened.format
        upright = ImageOps.exif_transpose(opened)
    return to_rgb(upright, source_format)


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file that can be read (expected JPEG, PNG or WebP)"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def to_rgb(image: Image.Image, source_format: str | None = None) -> Image.Image:
    """8-bit RGB for any Pillow mode: transparency is composited over white (a transparent
    background should read as plain, not as black), deep grayscale is rescaled to 8 bits.

    source_format: the file's format (Pillow drops it on transposed copies); a PNG in mode 'I'
    is always 16-bit.
    """
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in _DEEP_GRAY_MODES:
        return _deep_gray_to_l(image, source_format or image.format).convert("RGB")
    if image.mode == "RGB":
        return image.copy()
    return image.convert("RGB")


def _has_alpha(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    return "transparency" in image.info and image.mode in ("P", "L", "RGB", "1")


def _deep_gray_to_l(image: Image.Image, source_format: str | None) -> Image.Image:
    """16/32-bit integer or float grayscale as 8-bit 'L', scaled rather than clipped.

    Pillow's own conversion clips 16-bit values at 255, which turns most 16-bit photos white.
    16-bit sources are scaled by 255/65535; float images in [0, 1] by 255; anything wider is
    scaled by its own maximum.
    """
    values = np.asarray(
        image.convert("F") if image.mode == "F" else image.convert("I"), dtype=np.float64
    )
    peak = float(values.max()) if values.size else 0.0
    if image.mode == "F":
        scale = 255.0 if peak <= 1.0 else 255.0 / peak
    elif image.mode.startswith("I;16") or source_format == "PNG" or 255 < peak <= 65535:
        scale = 255.0 / 65535.0
    else:
        scale = 1.0 if peak <= 255 else 255.0 / peak
    eight = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.frombytes("L", image.size, eight.tobytes())


# -- crops ---------------------------------------------------------------------------------
def photo_crops(
    image: Image.Image,
    resolution: int,
    crop: str = "center",
    count: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Square crops [count, 3, R, R] in [-1, 1] (float32) of one photo.

    The photo is first resized so its short side is R (Lanczos, which keeps fine detail the
    VAE would otherwise never see), then cut to R x R: one center crop, or `count` crops at
    positions drawn from `generator` (so the same seed gives the same crops).
    """
    _check_crop_options(resolution, crop, count)
    if crop == "random" and generator is None:
        raise ValueError("random crops need a torch.Generator, so runs are reproducible")
    pixels = _to_tensor(
        _resize_short_side(to_rgb(image) if image.mode != "RGB" else image, resolution)
    )
    _, height, width = pixels.shape
    if crop == "center":
        corners = [((height - resolution) // 2, (width - resolution) // 2)]
    else:
        tops = torch.randint(height - resolution + 1, (count,), generator=generator).tolist()
        lefts = torch.randint(width - resolution + 1, (count,), generator=generator).tolist()
        corners = list(zip(tops, lefts))
    crops = [pixels[:, top : top + resolution, left : left + resolution] for top, left in corners]
    return torch.stack(crops).contiguous()


def photo_batch(
    images: list[Image.Image],
    resolution: int,
    crop: str = "center",
    crops_per_photo: int = 1,
    flip: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Every crop of every photo [M, 3, R, R], then (if `flip`) their mirror images.

    M = photos x crops x (2 if flip else 1). The trainer encodes this batch with the VAE once
    and caches the latents, so augmentation is fixed here rather than redrawn every step.
    """
    if not images:
        raise OnewordError("no photos to train on: give a folder or files of JPEG/PNG/WebP images")
    crops = torch.cat(
        [photo_crops(image, resolution, crop, crops_per_photo, generator) for image in images]
    )
    if flip:
        crops = torch.cat([crops, crops.flip(-1)])
    return crops


def _check_crop_options(resolution: int, crop: str, count: int) -> None:
    if crop not in CROPS:
        raise OnewordError(f"--crop {crop}: choose one of {', '.join(CROPS)}")
    if int(resolution) < 8:
        raise OnewordError(f"--resolution {resolution}: give a size of at least 8 pixels, e.g. 512")
    if int(count) < 1:
        raise OnewordError(f"--crops-per-photo {count}: give 1 or more")


def _resize_short_side(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new == image.size:
        return image
    return image.resize(new, Image.Resampling.LANCZOS)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """[3, H, W] float32 in [-1, 1] from an RGB image."""
    width, height = image.size
    raw = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    pixels = raw.view(height, width, 3).permute(2, 0, 1).float()
    return pixels / 127.5 - 1.0
