"""Contact sheets of world renders (or any [B,3,H,W] images in [0,1]).

python -m oneword.world.sheet --out /tmp/world_sheet.png --seed 0
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image

from .captions import caption
from .render import render_batch, sample_specs


def contact_sheet(images: torch.Tensor, path: str, cols: int = 8, scale: int = 2) -> None:
    """Save images as a grid PNG (nearest-neighbour upscaled by ``scale``)."""
    B, _, h, w = images.shape
    rows = -(-B // cols)
    pad = torch.ones(rows * cols - B, 3, h, w)
    x = torch.cat([images.detach().float().cpu().clamp(0, 1), pad])
    grid = x.view(rows, cols, 3, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, 3)
    img = Image.fromarray((grid * 255).round().byte().numpy())
    img.resize((cols * w * scale, rows * h * scale), Image.NEAREST).save(path)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m oneword.world.sheet")
    p.add_argument("--out", default="/tmp/world_sheet.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=64)
    a = p.parse_args(argv)
    g = torch.Generator().manual_seed(a.seed)
    specs = sample_specs(a.n, g)
    contact_sheet(render_batch(specs, g), a.out)
    for i, s in enumerate(specs):
        print(f"{i // 8},{i % 8}: {caption(s, g)}")


if __name__ == "__main__":
    main()
