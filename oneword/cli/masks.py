"""`oneword masks`: the masks `--mask auto` would make, written to look at and fix by hand."""

from __future__ import annotations

import argparse
import shlex

from .. import api
from ..experiments.auto_masks import AutoMasking, class_word_of, write_masks
from .options import add_auto_mask_options, add_model_options
from .progress import ProgressBar


def register(sub) -> None:
    p = sub.add_parser(
        "masks",
        help="make each photo's mask with the model itself (what --mask auto uses)",
        description="Make a mask per photo from where the model's cross-attention finds the "
        "class word, write them as <photo stem>.png in --out with a contact sheet "
        "(review/contact_sheet.png) to look at; fix any by hand, then learn with "
        "--mask --mask-dir OUT.",
    )
    p.add_argument("photos", nargs="+", help="a folder of photos, or photo files")
    p.add_argument("--init", dest="init_word", help="what the photos show, e.g. cat")
    p.add_argument("--out", required=True, help="the folder to write the masks to")
    p.add_argument("--resolution", type=int, help="size the photos are seen at (the model's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    add_auto_mask_options(p)
    add_model_options(p)
    p.set_defaults(func=_cmd_masks)


def _cmd_masks(a: argparse.Namespace) -> int:
    word = class_word_of(a.init_word, a.class_word)
    auto = AutoMasking(word, seed=a.seed, mask_model=a.mask_model)
    choice = api.ModelChoice(a.model, a.device, a.dtype)
    written = write_masks(a.photos, choice, auto, a.out, a.resolution, ProgressBar())
    print(f"{len(written.masks)} masks in {written.masks[0].parent}")
    for path, verdict in zip(written.masks, written.verdicts):
        print(f"  {path.name}" + (f"  (found {verdict}: left white)" if verdict else ""))
    print(f"look at them: {written.sheet}")
    photos = " ".join(shlex.quote(p) for p in a.photos)
    init = shlex.quote(a.init_word or auto.class_word)
    print(f"next: oneword learn {photos} --token '<my-word>' --init {init} --mask "
          f"--mask-dir {shlex.quote(a.out)}")  # fmt: skip
    return 0
