"""Geometry of the world's objects in object-local units (the body spans about [-1, 1]):
signed distances of the shapes and of the subjects' marks, and the patterns' masks."""

from __future__ import annotations

import math

import torch

# Mark primitives in object-local units: (kind, dx, dy, radius). Larger marks are drawn more
# often but made class words draw the subjects themselves (docs/experiments.md).
MARKS = {
    "eyes": [("dot", -0.32, -0.22, 0.17), ("dot", 0.32, -0.22, 0.17)],
    "ears": [("dot", -0.62, -0.72, 0.26), ("dot", 0.62, -0.72, 0.26)],
    "center": [("dot", 0.0, 0.0, 0.24)],
    "spot": [("dot", 0.30, -0.18, 0.24)],
    "ring": [("ring", 0.0, 0.0, 0.34)],
    "rim": [("bar", 0.0, -0.56, 0.56)],
    "eye": [("dot", 0.0, 0.12, 0.19)],
}


def sd_box(u, v, bx, by):
    qx, qy = u.abs() - bx, v.abs() - by
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    return outside + torch.maximum(qx, qy).clamp(max=0)


def _sd_circle(u, v, r):
    return torch.sqrt(u * u + v * v) - 0.9


def _sd_square(u, v, r):
    return sd_box(u, v, 0.78, 0.78)


def _sd_triangle(u, v, r):
    py = -v + 0.275
    d = torch.maximum(-py, torch.maximum(0.866 * u + 0.5 * py, -0.866 * u + 0.5 * py))
    return d - 0.55


def _sd_star(u, v, r):
    v = v - 0.08
    rho = torch.sqrt(u * u + v * v)
    seg = 2 * math.pi / 5
    a = (torch.remainder(torch.atan2(u, -v) + seg / 2, seg) - seg / 2).abs()
    px, py = rho * torch.cos(a), rho * torch.sin(a)
    ro, ri = 1.05, 0.47
    ex, ey = ri * math.cos(seg / 2) - ro, ri * math.sin(seg / 2)
    return -(ex * py - ey * (px - ro)) / math.hypot(ex, ey)


def _sd_heart(u, v, r):
    s = 1.57
    x, y = u.abs() / s, (-v + 0.87) / s
    lobe = torch.sqrt((x - 0.25) ** 2 + (y - 0.75) ** 2) - math.sqrt(2) / 4
    m = (x + y).clamp(min=0) * 0.5
    d1 = x**2 + (y - 1.0) ** 2
    d2 = (x - m) ** 2 + (y - m) ** 2
    body = torch.sqrt(torch.minimum(d1, d2)) * torch.sign(x - y)
    return torch.where(x + y > 1.0, lobe, body) * s


def _sd_cross(u, v, r):
    return torch.minimum(sd_box(u, v, 0.92, 0.3), sd_box(u, v, 0.3, 0.92))


SDF = {
    "circle": _sd_circle,
    "square": _sd_square,
    "triangle": _sd_triangle,
    "star": _sd_star,
    "heart": _sd_heart,
    "cross": _sd_cross,
}


def _rotate(u, v, ang):
    c, s = torch.cos(ang)[:, None, None], torch.sin(ang)[:, None, None]
    return u * c + v * s, -u * s + v * c


def _pat_solid(u, v, r, R):
    return torch.zeros_like(u)


def _pat_stripes(u, v, r, R):
    a, _ = _rotate(u, v, r[:, 3] * math.pi)
    return (0.5 + 1.5 * (torch.sin(2 * math.pi * a / 0.5) - 0.3)).clamp(0, 1)


def _pat_dots(u, v, r, R):
    a, b = _rotate(u, v, r[:, 3] * math.pi)
    qa = torch.frac(a / 0.5 + 10.0 + r[:, 4, None, None]) - 0.5
    qb = torch.frac(b / 0.5 + 10.0 + r[:, 5, None, None]) - 0.5
    dist = torch.sqrt(qa * qa + qb * qb)
    return (0.5 - (dist - 0.3) * 0.5 * R).clamp(0, 1)


def _pat_patches(u, v, r, R):
    f = torch.zeros_like(u)
    for k, freq in enumerate((3.0, 3.7, 2.6)):
        a, _ = _rotate(u, v, r[:, 4 + k] * 2 * math.pi)
        f = f + torch.sin(freq * a + r[:, 7 + k, None, None] * 2 * math.pi)
    a, b = (r[:, 20, None, None] - 0.5) * 0.6, (r[:, 21, None, None] - 0.5) * 0.6
    dist = torch.sqrt((u - a) ** 2 + (v - b) ** 2) - 0.3 - 0.04 * f
    return torch.maximum(((f - 0.8) * 3.0).clamp(0, 1), (0.5 - dist * R).clamp(0, 1))


PATTERN_FN = {
    "solid": _pat_solid,
    "stripes": _pat_stripes,
    "dots": _pat_dots,
    "patches": _pat_patches,
}


def mark_sdf(u, v, mark):
    d = None
    for kind, dx, dy, rad in MARKS[mark]:
        if kind == "dot":
            e = torch.sqrt((u - dx) ** 2 + (v - dy) ** 2) - rad
        elif kind == "ring":
            e = (torch.sqrt((u - dx) ** 2 + (v - dy) ** 2) - rad).abs() - 0.09
        else:
            e = sd_box(u - dx, v - dy, rad, 0.13)
        d = e if d is None else torch.minimum(d, e)
    return d
