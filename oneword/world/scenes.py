"""The world's nine backgrounds, drawn from per-image random parameters, and the small
colour helpers the renderer shares with them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

H = W = 64


def const_rgb(*rgb, device):
    return torch.tensor(rgb, device=device).view(1, 3, 1, 1)


def lerp(a, b, t):
    return a + (b - a) * t


def soft_step(x):
    """Anti-aliased step: 0 for x<-0.5, 1 for x>0.5 (x in pixels)."""
    return (x + 0.5).clamp(0, 1)


def sky(y, top, bottom, hz, dev):
    return lerp(const_rgb(*top, device=dev), const_rgb(*bottom, device=dev), (y / hz).clamp(0, 1))


def _scene_beach(y, x, r, n1, n2, hz, dev):
    img = sky(y, (0.30, 0.55, 0.95), (0.72, 0.86, 1.0), hz, dev)
    img = lerp(img, const_rgb(0.10, 0.42, 0.75, device=dev), soft_step(y - hz))
    sand = const_rgb(0.94, 0.80, 0.55, device=dev) * (0.94 + 0.12 * n1)
    return lerp(
        img, sand, soft_step(y - hz - 4 - 2 * torch.sin(x * 0.15 + r[:, 14, None, None, None] * 6))
    )


def _scene_snow(y, x, r, n1, n2, hz, dev):
    img = sky(y, (0.62, 0.70, 0.82), (0.84, 0.87, 0.92), hz, dev)
    ground = lerp(
        const_rgb(0.86, 0.90, 0.97, device=dev),
        const_rgb(0.98, 0.98, 1.0, device=dev),
        ((y - hz) / 20).clamp(0, 1),
    )
    img = lerp(
        img, ground, soft_step(y - hz - 1.5 * torch.sin(x * 0.1 + r[:, 14, None, None, None] * 6))
    )
    return lerp(img, const_rgb(1.0, 1.0, 1.0, device=dev), (n1 > 0.965).float())


def _scene_grass(y, x, r, n1, n2, hz, dev):
    img = sky(y, (0.38, 0.62, 0.95), (0.75, 0.88, 1.0), hz, dev)
    blades = F.avg_pool2d(n1, (5, 1), 1, (2, 0))
    grass = const_rgb(0.22, 0.58, 0.14, device=dev) * (0.7 + 0.6 * blades)
    return lerp(img, grass, soft_step(y - hz))


def _scene_night(y, x, r, n1, n2, hz, dev):
    img = sky(y, (0.02, 0.03, 0.12), (0.09, 0.10, 0.28), hz, dev)
    img = lerp(img, const_rgb(0.95, 0.95, 0.80, device=dev), (n1 > 0.985).float())
    mx, my = 8 + 48 * r[:, 14, None, None, None], 7 + 8 * r[:, 15, None, None, None]
    moon = soft_step(5 - torch.sqrt((x - mx) ** 2 + (y - my) ** 2))
    img = lerp(img, const_rgb(0.95, 0.92, 0.70, device=dev), moon)
    ground = const_rgb(0.05, 0.07, 0.09, device=dev) * (0.8 + 0.4 * n1)
    return lerp(img, ground, soft_step(y - hz))


def _scene_desert(y, x, r, n1, n2, hz, dev):
    img = sky(y, (0.98, 0.70, 0.40), (1.0, 0.88, 0.62), hz, dev)
    sx, sy = 8 + 48 * r[:, 14, None, None, None], 6 + 8 * r[:, 15, None, None, None]
    img = lerp(
        img,
        const_rgb(1.0, 0.97, 0.75, device=dev),
        soft_step(6 - torch.sqrt((x - sx) ** 2 + (y - sy) ** 2)),
    )
    dune = hz + 3 * torch.sin(x * 0.12 + r[:, 19, None, None, None] * 6.28)
    sand = const_rgb(0.86, 0.58, 0.30, device=dev) * (1 + 0.07 * torch.sin(y * 1.3 + 0.35 * x))
    return lerp(img, sand, soft_step(y - dune))


def _scene_forest(y, x, r, n1, n2, hz, dev):
    blotch = F.interpolate(n2, size=(H, W), mode="bilinear", align_corners=False)
    img = lerp(
        const_rgb(0.08, 0.26, 0.10, device=dev), const_rgb(0.25, 0.52, 0.22, device=dev), blotch
    )
    period = 9 + 6 * r[:, 14, None, None, None]
    trunk = (torch.sin(2 * math.pi * x / period + r[:, 15, None, None, None] * 6.28) > 0.55).float()
    img = lerp(img, const_rgb(0.30, 0.19, 0.10, device=dev), trunk * soft_step(y - 10 * blotch))
    ground = const_rgb(0.20, 0.30, 0.10, device=dev) * (0.8 + 0.4 * n1)
    return lerp(img, ground, soft_step(y - hz))


def _scene_sea(y, x, r, n1, n2, hz, dev):
    hz = hz - 8
    img = sky(y, (0.50, 0.72, 0.95), (0.86, 0.93, 1.0), hz, dev)
    water = lerp(
        const_rgb(0.04, 0.25, 0.52, device=dev),
        const_rgb(0.08, 0.42, 0.68, device=dev),
        ((y - hz) / 30).clamp(0, 1),
    )
    wave = torch.sin(y * 1.4 + 1.2 * torch.sin(x * 0.25 + r[:, 14, None, None, None] * 6.28))
    water = lerp(water, const_rgb(0.60, 0.80, 0.95, device=dev), (wave > 0.8).float() * 0.8)
    return lerp(img, water, soft_step(y - hz))


def _scene_room(y, x, r, n1, n2, hz, dev):
    img = const_rgb(0.86, 0.80, 0.68, device=dev).expand(y.shape[0], 3, H, W)
    wx = 12 + 40 * r[:, 14, None, None, None]
    frame = soft_step(8 - torch.maximum((x - wx).abs(), (y - 14).abs() * 1.2))
    glass = soft_step(6.5 - torch.maximum((x - wx).abs(), (y - 14).abs() * 1.2))
    img = lerp(img, const_rgb(0.98, 0.98, 0.96, device=dev), frame)
    img = lerp(img, const_rgb(0.62, 0.80, 0.98, device=dev), glass)
    planks = 1 - 0.25 * (torch.remainder(y - hz, 5) < 0.9).float()
    wood = const_rgb(0.58, 0.37, 0.19, device=dev) * planks * (0.92 + 0.16 * n1)
    return lerp(img, wood, soft_step(y - hz))


def _scene_city(y, x, r, n1, n2, hz, dev):
    img = sky(y, (0.55, 0.70, 0.88), (0.86, 0.90, 0.95), hz, dev)
    col = (x / 8).long().clamp(0, 7).expand(y.shape[0], 1, H, W)
    heights = torch.gather(n2[:, :, 0, :8].unsqueeze(2).expand(-1, 1, H, 8), 3, col)
    top = hz - 6 - 22 * heights
    building = soft_step(y - top)
    shade = const_rgb(0.40, 0.42, 0.48, device=dev) * (
        0.8 + 0.4 * torch.gather(n2[:, :, 1, :8].unsqueeze(2).expand(-1, 1, H, 8), 3, col)
    )
    img = lerp(img, shade, building)
    win = ((torch.remainder(x, 4) < 2) & (torch.remainder(y, 5) < 2.5) & (y > top + 2)).float()
    img = lerp(img, const_rgb(0.95, 0.88, 0.55, device=dev), win * building)
    street = const_rgb(0.28, 0.28, 0.30, device=dev)
    street = lerp(
        street,
        const_rgb(0.9, 0.9, 0.85, device=dev),
        ((y - hz - 12).abs() < 0.7).float() * (torch.remainder(x, 8) < 4).float(),
    )
    return lerp(img, street, soft_step(y - hz))


SCENE_FN = {
    "beach": _scene_beach,
    "snow": _scene_snow,
    "grass": _scene_grass,
    "night": _scene_night,
    "desert": _scene_desert,
    "forest": _scene_forest,
    "sea": _scene_sea,
    "room": _scene_room,
    "city": _scene_city,
}
