"""`--mask auto`: each photo's mask made by the loaded model itself, from where its class word's
cross-attention falls in the photo (the recipe and its math: oneword.core.masking).

A photo is seen as in training: resized so its short side is the training resolution (each side
a multiple of what the UNet needs), encoded by the VAE, noised at a small timestep with a few
noise draws, and passed once through the UNet with the caption "a photo of a <class word>".
The mask is made on the latent grid and brought back to the photo's own size, so it follows
every crop and flip of training like a mask file.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..adapters.attention_maps import latent_multiple, record_attention
from ..adapters.segmenters import load_clipseg
from ..core import data, masking
from ..core.diffusion import add_noise
from ..core.interface import TextToImage
from ..errors import OnewordError
from ..events import EventSink, Message, ignore
from ..files import atomic_write, output_folder

CAPTION = "a photo of a {}"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoMask:
    """A photo's automatic mask [H, W] in [0, 1] at the photo's size, the share of the photo it
    covers, and None or why it is not used ("nothing" / "everything": the photo trains
    unmasked)."""

    weight: torch.Tensor
    share: float
    verdict: str | None

    def training_weight(self) -> torch.Tensor:
        """What training uses: the mask, or all ones where the map found nothing or all."""
        return self.weight if self.verdict is None else torch.ones_like(self.weight)


def class_token_positions(model: TextToImage, caption: str, word: str) -> list[int]:
    """Positions of the word's tokens in the caption's token ids (not its article's)."""
    ids = model.token_ids([caption])
    ids = (ids[0, 0] if ids.dim() == 3 else ids[0]).tolist()
    wanted = model.word_token_ids(word)
    for start in range(len(ids) - len(wanted), -1, -1) if wanted else ():
        if ids[start : start + len(wanted)] == wanted:
            return list(range(start, start + len(wanted)))
    raise OnewordError(f"--class-word {word}: not found in the caption {caption!r}")


def photo_heat(
    model: TextToImage,
    image: Image.Image,
    word: str,
    resolution: int,
    recipe: masking.MaskRecipe,
    generator: torch.Generator,
) -> torch.Tensor:
    """The class word's heat map [h, w] on the latent grid of the photo (not normalised). The
    noise draws pass the UNet together, or one by one where they do not fit in memory (the
    same map: each draw's is made alone, then they are averaged)."""
    pixels = _model_pixels(model, image, resolution)
    mean, _ = model.encode_images(pixels[None])  # [1, c, h, w]
    noise = torch.randn((recipe.draws, *mean.shape[1:]), generator=generator)
    t = torch.full((recipe.draws,), recipe.timestep, dtype=torch.long)
    noisy = add_noise(mean.cpu().expand_as(noise), noise, model.alphas_cumprod[t].float())
    try:
        return _heat_of_draws(model, noisy, t, word, recipe, recipe.draws).mean(0)
    except torch.cuda.OutOfMemoryError:
        _free_memory(model)
    try:
        return _heat_of_draws(model, noisy, t, word, recipe, 1).mean(0)
    except torch.cuda.OutOfMemoryError:
        _free_memory(model)
        raise OnewordError(
            "--mask auto: out of GPU memory making the masks (one UNet pass a photo); free "
            "the GPU's memory (other programs) and run again, or learn with --no-mask"
        ) from None


def _heat_of_draws(model, noisy, t, word: str, recipe: masking.MaskRecipe, chunk: int):
    """Heat maps [draws, h, w], `chunk` draws a UNet pass."""
    caption = CAPTION.format(word)
    tokens = class_token_positions(model, caption, word)
    heats = []
    for start in range(0, len(noisy), chunk):
        part = noisy[start : start + chunk].to(model.device)
        states = model.encode_text(model.token_ids([caption] * len(part)))
        maps = record_attention(model, part, t[: len(part)].to(model.device), states, tokens)
        heat = masking.combine_layers([m.cpu() for m in maps.cross], tuple(noisy.shape[-2:]))
        if recipe.refine and maps.self_attention is not None:
            heat = masking.refine(heat, maps.self_attention.cpu(), maps.self_size, recipe.refine)
        heats.append(heat)
    return torch.cat(heats)


def _free_memory(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.empty_cache()


def auto_mask(
    model: TextToImage,
    image: Image.Image,
    word: str,
    resolution: int,
    recipe: masking.MaskRecipe,
    generator: torch.Generator,
) -> AutoMask:
    """The photo's automatic mask (see the module's description)."""
    heat = photo_heat(model, image, word, resolution, recipe, generator)[None]
    mask, share = masking.heat_to_mask(masking.normalise(heat), recipe)
    verdict = masking.found_subject(float(share[0]), float(masking.contrast(heat)[0]), recipe)
    width, height = image.size
    full = F.interpolate(mask[None], size=(height, width), mode="bilinear", align_corners=False)
    return AutoMask(full[0, 0].clamp(0, 1), float(share[0]), verdict)


def auto_masks(
    model: TextToImage,
    images: list[Image.Image],
    word: str,
    resolution: int,
    recipe: masking.MaskRecipe = masking.MaskRecipe(),
    seed: int = 0,
) -> list[AutoMask]:
    """Every photo's automatic mask; photo i draws its noise from seed + i."""
    return [
        auto_mask(model, image, word, resolution, recipe, torch.Generator().manual_seed(seed + i))
        for i, image in enumerate(images)
    ]


def segmenter_mask(segmenter, image: Image.Image, word: str, recipe: masking.MaskRecipe):
    """A dedicated segmentation model's mask (`--mask-model`, e.g. CLIPSeg): its probability
    map [h, w] cut at SEGMENTER_LEVEL, the largest part kept and feathered, at the photo's
    size; no more than the model says is claimed of it."""
    probability = segmenter.heat(image, word)[None].float()  # [1, h, w]
    kept = masking.largest_component(probability >= SEGMENTER_LEVEL)
    share = float(kept.float().mean())
    soft = masking.feather(kept, recipe.feather * probability.shape[-1] / 64)
    width, height = image.size
    full = F.interpolate(soft[None], size=(height, width), mode="bilinear", align_corners=False)
    verdict = masking.found_subject(share, float("inf"), recipe)
    return AutoMask(full[0, 0].clamp(0, 1), share, verdict)


SEGMENTER_LEVEL = 0.5  # a probability: the subject where the model says more likely than not


def recipe_record(auto: AutoMasking, resolution: int) -> dict:
    """How automatic masks were made, as a run's settings record it."""
    word = auto.class_word
    if auto.mask_model is not None:
        return {"method": "clipseg", "mask_model": auto.mask_model, "class_word": word,
                "level": SEGMENTER_LEVEL, "feather": auto.recipe.feather,
                "min_area": auto.recipe.min_area, "max_area": auto.recipe.max_area}  # fmt: skip
    return {"method": "attention", "class_word": word, "caption": CAPTION.format(word),
            "resolution": resolution, "seed": auto.seed, **asdict(auto.recipe)}  # fmt: skip


def _model_pixels(model: TextToImage, image: Image.Image, resolution: int) -> torch.Tensor:
    """[3, H, W] in [-1, 1]: the photo with its short side at `resolution`, each side rounded to
    a multiple of what the UNet's downsampling needs."""
    step = model.vae_factor * latent_multiple(model)
    width, height = image.size
    scale = resolution / min(width, height)
    size = [max(step, round(side * scale / step) * step) for side in (width, height)]
    rgb = data.to_rgb(image) if image.mode != "RGB" else image
    resized = rgb.resize(tuple(size), Image.Resampling.LANCZOS)
    raw = torch.frombuffer(bytearray(resized.tobytes()), dtype=torch.uint8)
    return raw.view(size[1], size[0], 3).permute(2, 0, 1).float() / 127.5 - 1.0


@dataclass(frozen=True)
class AutoMasking:
    """`--mask auto`: masks made by the model from the class word's attention (`seed`: of the
    noise draws), or by a segmentation model the user has (`mask_model`)."""

    class_word: str
    recipe: masking.MaskRecipe = masking.MaskRecipe()
    seed: int = 0
    mask_model: str | None = None  # a CLIPSeg folder to use instead of the model's attention

    def __post_init__(self):
        if not self.class_word.strip():
            raise OnewordError(
                "--mask auto: needs the word for what the photos show; give --init WORD "
                "or --class-word WORD"
            )


def class_word_of(init_word: str | None, class_word: str | None) -> str:
    """The word the masks look for: --class-word, else the --init words ("face,logo" reads
    "face logo")."""
    if class_word:
        return class_word.strip()
    return " ".join(w.strip() for w in (init_word or "").split(",") if w.strip())


def make_masks(
    photos: data.TrainingPhotos,
    choice,
    resolution: int | None,
    auto: AutoMasking,
    on_event: EventSink = ignore,
) -> tuple[list[AutoMask], int]:
    """The photos' automatic masks, made by `choice`'s model (loaded here and let go), and
    the resolution they were seen at; a photo whose map found nothing or everything is said
    in a message."""
    word = auto.class_word
    if auto.mask_model is not None:
        segmenter = load_clipseg(auto.mask_model)
        made = [segmenter_mask(segmenter, image, word, auto.recipe) for image in photos.images]
        on_event(Message(f"made {len(made)} masks with {auto.mask_model} asked for '{word}'"))
        return made, resolution or 0
    model = choice.load()
    size = resolution or model.native_resolution
    made = auto_masks(model, photos.images, word, size, auto.recipe, auto.seed)
    del model
    on_event(Message(f"made {len(made)} masks from the model's own attention to '{word}'"))
    for file, mask in zip(photos.files, made):
        if mask.verdict is not None:
            on_event(Message(f"{file}: {VERDICTS[mask.verdict]} '{word}'; it trains unmasked"))
    return made, size


def mask_photos(
    photos: data.TrainingPhotos,
    choice,
    resolution: int | None,
    auto: AutoMasking,
    on_event: EventSink = ignore,
) -> tuple[data.TrainingPhotos, dict]:
    """The photos with their automatic masks (see `make_masks`; a photo whose map found
    nothing or everything trains unmasked), and how they were made, as the run's settings
    record it."""
    made, size = make_masks(photos, choice, resolution, auto, on_event)
    masks = [
        data.PhotoMask(
            eight_bit(mask.training_weight()), file, made_by=describe(mask, auto.class_word)
        )
        for file, mask in zip(photos.files, made)
    ]
    record = recipe_record(auto, size)
    return data.TrainingPhotos(photos.images, photos.files, masks, record), record


def eight_bit(weight: torch.Tensor) -> torch.Tensor:
    """The weights as the mask file kept in the run folder holds them (8 bits), so a resumed
    run that reads the file back trains on the very same weights."""
    return (weight.clamp(0, 1) * 255).round() / 255.0


def describe(mask: AutoMask, word: str) -> str:
    if mask.verdict is not None:
        return f"automatic: the map found {mask.verdict} of '{word}'; trained unmasked"
    return f"automatic ('{word}', covers {mask.share:.0%} of the photo)"


VERDICTS = {
    "nothing": "the model's attention finds nothing that looks like",
    "everything": "the model's attention spreads over the whole photo for",
}


@dataclass(frozen=True)
class WrittenMasks:
    masks: list[Path]  # <photo stem>.png in the folder, in the photos' order
    sheet: Path  # each photo beside its mask, labelled
    verdicts: list[str | None]


def write_masks(
    photos: list[str],
    choice,
    auto: AutoMasking,
    out: str | Path,
    resolution: int | None = None,
    on_event: EventSink = ignore,
) -> WrittenMasks:
    """`oneword masks`: the photos' automatic masks as `<photo stem>.png` in `out` (a folder
    `--mask-dir` reads; a photo whose map found nothing or everything gets a white mask: it
    trains unmasked) and a contact sheet `review/contact_sheet.png` to look at them."""
    folder = output_folder(out, "--out")
    files, images, skipped = data.load_photo_files(photos)
    for line in skipped:
        on_event(Message(line))
    if any(f.parent.resolve() == folder.resolve() for f in files):
        raise OnewordError(f"--out {out}: the photos' own folder; choose another, e.g. masks/")
    stems = [f.stem for f in files]
    if len(set(stems)) < len(stems):
        raise OnewordError("masks: two photos share a name; rename one (masks are named so)")
    made, _ = make_masks(data.TrainingPhotos(images, files), choice, resolution, auto, on_event)
    weights = [m.training_weight() for m in made]
    paths = [_save(data.mask_image(w), folder / f"{f.stem}.png") for f, w in zip(files, weights)]
    verdicts = [m.verdict for m in made]
    sheet = mask_sheet(images, weights, files, verdicts)
    return WrittenMasks(paths, _save(sheet, folder / "review" / "contact_sheet.png"), verdicts)


def _save(image: Image.Image, path: Path) -> Path:
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def mask_sheet(images, weights, files, verdicts, size: int = 160) -> Image.Image:
    """One row per photo: the photo, the photo darkened outside its mask, the mask; each row
    labelled with the file's name (and why a photo trains unmasked)."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=14)
    row_h = size + 28
    sheet = Image.new("RGB", (3 * size + 40, row_h * len(images) + 10), "white")
    pen = ImageDraw.Draw(sheet)
    for k, (image, weight, file, verdict) in enumerate(zip(images, weights, files, verdicts)):
        y = 10 + k * row_h
        label = file.name + (f"  (found {verdict}: trains unmasked)" if verdict else "")
        pen.text((10, y), label, fill="black", font=font)
        shade = data.mask_image(0.2 + 0.8 * weight)
        tiles = [image, Image.composite(image, Image.new("RGB", image.size), shade),
                 data.mask_image(weight).convert("RGB")]  # fmt: skip
        for i, tile in enumerate(tiles):
            sheet.paste(_fit(tile, size), (10 + i * (size + 10), y + 20))
    return sheet


def _fit(image: Image.Image, size: int) -> Image.Image:
    scale = size / max(image.size)
    new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
    return image.resize(new, resample)
