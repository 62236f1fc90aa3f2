"""The users' photos: finding them, reading them robustly and cutting them into training crops.

Phone photos come rotated by an EXIF tag, PNGs come with transparency or 16 bits per channel,
scans come in CMYK or grayscale. Each is turned into plain 8-bit RGB here, so the trainer sees
what the user sees. A file that cannot be read is skipped with a warning rather than stopping a
run: one bad file in a folder of twenty should not cost the user the other nineteen.

A photo may come with a mask (masked training): `<stem>.mask.png` beside it, `<stem>.<any
photo suffix>` in a mask folder, or its own alpha channel. The mask's grey value / 255 says
how much each pixel counts; it is cut into the same crops and flips as its photo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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
MASK_SUFFIX = ".mask.png"

log = logging.getLogger(__name__)


def is_mask_file(path: Path) -> bool:
    """Whether a file is a photo's mask (`<photo stem>.mask.png`), never a training photo."""
    return path.name.lower().endswith(MASK_SUFFIX)


# -- finding and reading -------------------------------------------------------------------
def find_photos(sources: list[str | Path]) -> list[Path]:
    """The photo files the user named: each source is a folder (its photos, sorted, not
    recursive) or a file (taken as given, so `load_photos` can say why it is not usable)."""
    photos = []
    for path in _source_files(sources):
        if is_mask_file(path):
            log.info("%s: a mask (%s), not a training photo", path, MASK_SUFFIX)
        else:
            photos.append(path)
    return photos


def find_mask_files(sources: list[str | Path]) -> list[Path]:
    """The `*.mask.png` files among the sources (in their folders, or named)."""
    return [p for p in _source_files(sources) if is_mask_file(p)]


def _source_files(sources: list[str | Path]) -> list[Path]:
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
    _, images, warnings = load_photo_files(sources)
    return images, warnings


def load_photo_files(
    sources: list[str | Path],
) -> tuple[list[Path], list[Image.Image], list[str]]:
    """`load_photos`, with the file of each image read."""
    paths: list[Path] = []
    images: list[Image.Image] = []
    warnings: list[str] = []
    for path in find_photos(sources):
        try:
            images.append(read_photo(path))
            paths.append(path)
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
    return paths, images, warnings


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


@dataclass(frozen=True)
class TrainingPhotos:
    """The photos of a run as read: their images and files, and (masked training) their masks
    in the same order."""

    images: list[Image.Image]
    files: list[Path]
    masks: list[PhotoMask] | None = None
    made_with: dict | None = None  # how automatic masks were made (`--mask auto`)


# -- masks ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhotoMask:
    """A photo's mask: weights [H, W] in [0, 1] at the photo's (upright) size, and where it
    came from (a mask file, or the photo itself for its alpha channel)."""

    weight: torch.Tensor
    source: Path
    alpha: bool = False  # the photo's own alpha channel
    made_by: str | None = None  # how an automatic mask was made (`--mask auto`)

    def describe(self) -> str:
        if self.made_by is not None:
            return self.made_by
        return f"alpha channel of {self.source}" if self.alpha else str(self.source)


def load_masks(
    photos: list[Path], sources: list[str | Path], mask_dir: str | Path | None = None
) -> list[PhotoMask]:
    """The mask of each photo (in that order): `<stem>.mask.png` beside it, else
    `<stem>.<photo suffix>` in `mask_dir`, else its alpha channel. Refuses a mask whose photo
    is not among the sources, a photo without a mask, a mask of another size than its photo
    and an all-black mask, each with the file and what to do."""
    folder = _mask_folder(mask_dir)
    _check_no_orphans(sources, folder)
    return [_photo_mask(photo, folder) for photo in photos]


def _mask_folder(mask_dir: str | Path | None) -> Path | None:
    if mask_dir is None:
        return None
    folder = Path(mask_dir).expanduser()
    if not folder.is_dir():
        raise OnewordError(
            f"--mask-dir {mask_dir}: not a folder; give the folder that holds a mask "
            "<photo stem>.png for each photo"
        )
    return folder


def _mask_stem(path: Path) -> str:
    return path.name[: -len(MASK_SUFFIX)] if is_mask_file(path) else path.stem


def _check_no_orphans(sources: list[str | Path], folder: Path | None) -> None:
    """A mask file whose photo is missing is most often a renamed or forgotten photo: refuse
    it rather than train on fewer photos than the user meant."""
    photos = find_photos(sources)
    beside = {(p.parent, p.stem) for p in photos}
    for mask in find_mask_files(sources):
        if (mask.parent, _mask_stem(mask)) not in beside:
            raise OnewordError(
                f"{mask}: a mask whose photo ({_mask_stem(mask)}.jpg, .png, ...) is not among "
                "the photos; add its photo or remove the mask"
            )
    if folder is None:
        return
    stems = {p.stem for p in photos}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.is_file() and path.suffix.lower() in PHOTO_SUFFIXES:
            if _mask_stem(path) not in stems:
                raise OnewordError(
                    f"{path}: a mask in --mask-dir whose photo ({_mask_stem(path)}.jpg, .png, "
                    "...) is not among the photos; add its photo or remove the mask"
                )


def _mask_names(photo: Path, folder: Path | None) -> list[Path]:
    names = [photo.with_name(photo.stem + MASK_SUFFIX)]
    if folder is not None:
        names += [folder / (photo.stem + suffix) for suffix in PHOTO_SUFFIXES]
    return names


def _photo_mask(photo: Path, folder: Path | None) -> PhotoMask:
    size = _upright(photo).size
    for name in _mask_names(photo, folder):
        found = _existing(name)
        if found is not None:
            weight = _read_mask_file(found)
            return _checked(PhotoMask(weight, found), photo, size)
    alpha = _alpha_channel(photo)
    if alpha is not None:
        return _checked(PhotoMask(alpha, photo, alpha=True), photo, size)
    looked = ", ".join(str(n) for n in _mask_names(photo, folder))
    raise OnewordError(
        f"{photo}: no mask for this photo (looked for {looked}, and it has no alpha channel); "
        "give it a mask or leave --mask out"
    )


def _existing(path: Path) -> Path | None:
    """The file `path` names, its suffix in any case (cat.PNG for cat.png), or None."""
    if path.is_file():
        return path
    if not path.parent.is_dir():
        return None
    wanted = path.name.lower()
    return next((p for p in path.parent.iterdir() if p.name.lower() == wanted), None)


def _checked(mask: PhotoMask, photo: Path, size: tuple[int, int]) -> PhotoMask:
    height, width = mask.weight.shape
    if (width, height) != size:
        raise OnewordError(
            f"{mask.describe()}: the mask is {width}x{height} pixels but its photo {photo} is "
            f"{size[0]}x{size[1]}; give a mask of the photo's size"
        )
    if not bool((mask.weight > 0).any()):
        raise OnewordError(
            f"{mask.describe()}: the mask is empty (all black or transparent: nothing to "
            "learn); paint what the word means white"
        )
    return mask


def _upright(path: Path) -> Image.Image:
    try:
        with Image.open(path) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)
    except _READ_ERRORS as exc:
        raise OnewordError(f"{path}: {_reason(exc)}") from None


def read_mask(path: str | Path) -> torch.Tensor:
    """A mask file as weights [H, W] in [0, 1] (see `load_masks`)."""
    return _read_mask_file(Path(path))


def _read_mask_file(path: Path) -> torch.Tensor:
    """Weights [H, W] in [0, 1]: the grey value / 255 (times the alpha of a mask drawn on a
    transparent background)."""
    image = _upright(path)
    if image.mode in _DEEP_GRAY_MODES:
        image = _deep_gray_to_l(image, "PNG")
    grey = _unit(image.convert("L"))
    if _has_alpha(image):
        grey = grey * _unit(image.convert("RGBA").getchannel("A"))
    return grey


def _alpha_channel(photo: Path) -> torch.Tensor | None:
    image = _upright(photo)
    if not _has_alpha(image):
        return None
    return _unit(image.convert("RGBA").getchannel("A"))


def _unit(channel: Image.Image) -> torch.Tensor:
    width, height = channel.size
    raw = torch.frombuffer(bytearray(channel.tobytes()), dtype=torch.uint8)
    return raw.view(height, width).float() / 255.0


def mask_image(weight: torch.Tensor) -> Image.Image:
    """A mask [H, W] in [0, 1] as a grey 8-bit image (what `load_masks` reads back)."""
    grey = (weight.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(grey)


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
    return _cut(pixels, resolution, crop, count, generator)


def masked_crops(
    image: Image.Image,
    mask: torch.Tensor,
    resolution: int,
    crop: str = "center",
    count: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`photo_crops` of a photo and its mask [H, W] in [0, 1]: crops [count, 3, R, R] and the
    same crops of the mask [count, 1, R, R] (the mask resized by area average, so its weights
    stay in [0, 1]); the same generator draws give the same crops as `photo_crops`."""
    _check_crop_options(resolution, crop, count)
    if crop == "random" and generator is None:
        raise ValueError("random crops need a torch.Generator, so runs are reproducible")
    rgb = to_rgb(image) if image.mode != "RGB" else image
    if tuple(mask.shape) != (rgb.size[1], rgb.size[0]):
        raise ValueError(f"mask {tuple(mask.shape)} for a photo of {rgb.size}")
    pixels = _to_tensor(_resize_short_side(rgb, resolution))
    weights = _resize_mask(mask, pixels.shape[-1], pixels.shape[-2])
    both = _cut(torch.cat([pixels, weights[None]]), resolution, crop, count, generator)
    return both[:, :3].contiguous(), both[:, 3:].contiguous()


def _resize_mask(mask: torch.Tensor, width: int, height: int) -> torch.Tensor:
    if (height, width) == tuple(mask.shape):
        return mask.float()
    image = Image.fromarray(mask.float().numpy())
    resized = image.resize((width, height), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32).copy()).clamp(0, 1)


def _cut(pixels: torch.Tensor, resolution: int, crop: str, count: int, generator) -> torch.Tensor:
    """Square crops [n, C, R, R] of [C, H, W] (H, W >= R): the center, or `count` drawn."""
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


def masked_photo_batch(
    images: list[Image.Image],
    masks: list[torch.Tensor],
    resolution: int,
    crop: str = "center",
    crops_per_photo: int = 1,
    flip: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`photo_batch` of photos with masks: the crops [M, 3, R, R] (the very ones
    `photo_batch` gives for the same generator) and the same crops and flips of the masks
    [M, 1, R, R]."""
    if not images:
        raise OnewordError("no photos to train on: give a folder or files of JPEG/PNG/WebP images")
    if len(masks) != len(images):
        raise ValueError(f"{len(masks)} masks for {len(images)} photos")
    cut = [
        masked_crops(image, mask, resolution, crop, crops_per_photo, generator)
        for image, mask in zip(images, masks)
    ]
    crops, weights = torch.cat([c for c, _ in cut]), torch.cat([w for _, w in cut])
    if flip:
        crops, weights = torch.cat([crops, crops.flip(-1)]), torch.cat([weights, weights.flip(-1)])
    return crops, weights


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
