"""The photos of a run and their masks: read from files or made by the model (`--mask auto`),
described in the run's settings, and kept in the run folder (`masks/`) for the gallery, for
`--mask-dir` and for a resumed run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..adapters.loading import ModelChoice
from ..core import data
from ..core.train import TrainConfig
from ..errors import OnewordError
from ..events import EventSink, Message
from ..files import atomic_write, atomic_write_text
from .auto_masks import AutoMasking, mask_photos, recipe_record
from .recording import RunRecorder

MASKS_FOLDER = "masks"
MADE_WITH = "made_with.json"  # how the automatic masks kept beside it were made

log = logging.getLogger(__name__)


def run_photos(
    photos: list[str],
    config: TrainConfig,
    choice: ModelChoice,
    on_event: EventSink,
    mask_dir: str | None = None,
    auto_mask: AutoMasking | None = None,
    resumed: Path | None = None,
) -> tuple[data.TrainingPhotos, dict]:
    """The photos of a run with their masks (read from files, or made by the model with
    `auto_mask`; a run resumed in folder `resumed` reads back the automatic masks it kept, as
    a GPU may not make them again to the last bit), and what the run's settings say of the
    masks."""
    if auto_mask is None:
        images = read_photos(photos, on_event, config.mask_floor is not None, mask_dir)
        return images, mask_settings(images, config, mask_dir)
    if mask_dir is not None:
        raise OnewordError(f"--mask-dir {mask_dir}: not with --mask auto; leave one out")
    if config.mask_floor is None:
        raise ValueError("automatic masks need config.mask_floor")
    images = read_photos(photos, on_event)
    wanted = recipe_record(auto_mask, config.resolution)
    kept = kept_masks(resumed, images, wanted) if resumed is not None else None
    if kept is not None:
        on_event(Message(f"the masks made for this run, read back from {resumed / MASKS_FOLDER}"))
        return kept, mask_settings(kept, config, None, kept.made_with)
    images, record = mask_photos(images, choice, config.resolution, auto_mask, on_event)
    return images, mask_settings(images, config, None, record)


def inherited_masks(
    photos: list[str], config: TrainConfig, source, on_event: EventSink
) -> tuple[data.TrainingPhotos, dict]:
    """The photos of run `source` (a RunRecord) with the masks it trained with, read back
    from the copies it keeps in its folder (`masks/`, as `--mask-dir` would): what words bred
    from its words train on, however their masks were first made. The run's settings say
    where the masks came from."""
    files, images, skipped = data.load_photo_files(photos)
    for line in skipped:
        on_event(Message(line))
    folder = Path(source.folder) / MASKS_FOLDER
    names = [folder / f"{stem}.png" for stem in kept_stems(files)]
    gone = next((name for name in names if not name.is_file()), None)
    if gone is not None:
        raise OnewordError(
            f"--train-steps: {gone}: a mask run {source.name} trained with is gone, so its "
            "words' children cannot train as it did; breed without --train-steps, or learn "
            "the run again"
        )
    masks = [data.PhotoMask(data.read_mask(name), name) for name in names]
    kept = data.TrainingPhotos(images, files, masks)
    settings = mask_settings(kept, config, folder)
    settings["mask"]["from_run"] = source.name
    return kept, settings


def made_by_the_model(photos) -> bool:
    """Whether a run's masks were made by the model (`--mask auto`)."""
    masks = getattr(photos, "masks", None)
    return bool(masks) and masks[0].made_by is not None


def kept_masks(
    folder: Path, photos: data.TrainingPhotos, wanted: dict
) -> data.TrainingPhotos | None:
    """The photos with the automatic masks their run kept in `folder`, or None if it kept
    none for some photo or made them otherwise than `wanted` (a recipe record; the
    resolution they were seen at aside)."""
    names = [folder / MASKS_FOLDER / f"{stem}.png" for stem in kept_stems(photos.files)]
    recipe = folder / MASKS_FOLDER / MADE_WITH
    if not recipe.is_file() or not all(name.is_file() for name in names):
        return None
    try:
        made_with = json.loads(recipe.read_text())
    except (OSError, ValueError):
        return None
    if _without_size(made_with) != _without_size(wanted):
        return None
    how = "automatic, made for this run ({})"
    masks = [
        data.PhotoMask(data.read_mask(name), file, made_by=how.format(name.name))
        for file, name in zip(photos.files, names)
    ]
    return data.TrainingPhotos(photos.images, photos.files, masks, made_with)


def _without_size(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "resolution"}


def kept_stems(files: list[Path]) -> list[str]:
    """The names the masks of a run's photos are kept under (their stems, numbered where two
    photos share one)."""
    return [
        f"{k:02d}-{f.stem}" if sum(g.stem == f.stem for g in files) > 1 else f.stem
        for k, f in enumerate(files)
    ]


def read_photos(
    photos: list[str], on_event: EventSink, masked: bool = False, mask_dir: str | None = None
) -> data.TrainingPhotos:
    """The photos of a run (with their masks, if `masked`), each skipped file reported as a
    message."""
    if mask_dir is not None and not masked:
        raise OnewordError(f"--mask-dir {mask_dir}: only with --mask; add --mask")
    files, images, skipped = data.load_photo_files(photos)
    for line in skipped:
        on_event(Message(line))
    if not masked:
        found = data.find_mask_files(photos)
        if found:
            note = f"note: {len(found)} mask file(s) ({data.MASK_SUFFIX}) are not training photos"
            on_event(Message(f"{note}; give --mask to weight the loss with them"))
        return data.TrainingPhotos(images, files)
    masks = data.load_masks(files, photos, mask_dir)
    for mask in masks:
        log.info("mask of %s: %s", mask.source, mask.describe())
    return data.TrainingPhotos(images, files, masks)


def mask_settings(
    photos: data.TrainingPhotos, config: TrainConfig, mask_dir=None, auto_record=None
) -> dict:
    """What a run's settings say of its masks: where each photo's came from (with how
    automatic masks were made, `auto_record`), and the floor."""
    if photos.masks is None:
        return {}
    folder = str(Path(mask_dir).expanduser().absolute()) if mask_dir is not None else None
    files = [
        {"photo": str(f.absolute()), "mask": _mask_origin(m)}
        for f, m in zip(photos.files, photos.masks)
    ]
    made = {"auto": auto_record} if auto_record is not None else {}
    return {"mask": {"dir": folder, **made, "files": files}, "mask_floor": config.mask_floor}


def _mask_origin(mask: data.PhotoMask) -> str:
    if mask.alpha or mask.made_by is not None:
        return mask.describe()
    return str(mask.source.absolute())


def write_masks(folder: Path, photos: data.TrainingPhotos) -> tuple[list, list] | None:
    """A copy of the masks in the run folder (`masks/<photo stem>.png`, which --mask-dir
    reads back; with how automatic ones were made) and, for the gallery, each photo with its
    mask over it (`masks/shown/`): the copies' and the views' paths, or None without masks."""
    if photos.masks is None:
        return None
    folder = folder / MASKS_FOLDER
    copies, shown = [], []
    stems = kept_stems(photos.files)
    for stem, image, mask in zip(stems, photos.images, photos.masks):
        copies.append(save_image(data.mask_image(mask.weight), folder / f"{stem}.png"))
        shown.append(save_image(masked_view(image, mask.weight), folder / "shown" / f"{stem}.png"))
    if photos.made_with is not None:
        atomic_write_text(folder / MADE_WITH, json.dumps(photos.made_with, indent=1))
    return copies, shown


def keep_masks(rec: RunRecorder, photos: data.TrainingPhotos, written=None) -> None:
    """`write_masks` in the run's folder (unless `written` already: its paths), recorded in
    the store."""
    written = written or write_masks(rec.run.folder, photos)
    if written is not None:
        rec.files("mask", written[0])
        rec.files("mask_view", written[1])


def early_masks(rec: RunRecorder, photos: data.TrainingPhotos) -> tuple[list, list] | None:
    """Automatic masks written before training (a resumed run reads them back), recorded
    with the other files after it; other masks wait until then (a resume refused keeps the
    run's own)."""
    return write_masks(rec.run.folder, photos) if made_by_the_model(photos) else None


def save_image(image, path: Path) -> Path:
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def masked_view(image, weight: torch.Tensor, size: int = 256):
    """The photo, small, darkened where its mask gives it little weight (what the gallery
    shows)."""
    from PIL import Image

    shade = data.mask_image(0.25 + 0.75 * weight)
    view = Image.composite(image, Image.new("RGB", image.size), shade)
    view.thumbnail((size, size))
    return view
