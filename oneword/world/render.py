"""Procedural world: batched, deterministic torch renderer of 64x64 scenes.

Every image shows one object (shape, body colour, pattern colour, pattern,
size, position) in a scene, drawn in a style.  Hidden subjects are fixed
attribute combinations plus a small distinctive mark.  All randomness comes
from the caller's ``torch.Generator``; nothing touches global RNG state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

H = W = 64

# No "blob": a wobbly circle and a circle differ by a pixel or two at 64 px, and the world model
# drew both as the same lump (docs/experiments.md).
SHAPES = ["circle", "square", "triangle", "star", "heart", "cross"]
COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black", "brown"]
PATTERNS = ["solid", "stripes", "dots", "patches"]
SIZES = ["small", "medium", "large"]
POSITIONS = ["left", "center", "right"]
SCENES = ["beach", "snow", "grass", "night", "desert", "forest", "sea", "room", "city"]
STYLES = ["photo", "painting", "sketch"]

COLOR_RGB = {
    "red": (0.85, 0.10, 0.10), "orange": (1.00, 0.55, 0.05), "yellow": (0.98, 0.88, 0.12),
    "green": (0.12, 0.66, 0.18), "blue": (0.12, 0.30, 0.90), "purple": (0.55, 0.15, 0.75),
    "pink": (1.00, 0.58, 0.78), "white": (0.97, 0.97, 0.97), "black": (0.07, 0.07, 0.08),
    "brown": (0.50, 0.28, 0.10),
}
SIZE_RADIUS = {"small": 9.0, "medium": 13.0, "large": 17.0}
POSITION_X = {"left": 20.0, "center": 32.0, "right": 44.0}

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


@dataclass(frozen=True)
class Spec:
    shape: str
    color: str
    color2: str
    pattern: str
    size: str
    position: str
    scene: str
    style: str
    subject: str | None = None
    # An ordinary object that captions call by a hidden subject's class word ("a cat"): class
    # words name a whole family of objects, so the class word alone rarely draws the subject.
    class_word: str | None = None


@dataclass(frozen=True)
class HiddenSubject:
    id: str
    class_word: str
    shape: str
    color: str
    color2: str
    pattern: str
    mark: str
    mark_color: str
    description: str
    # The subject's own name, which the world model's training captions use for a share of its
    # images (`WorldModelConfig.name_share`), like a famous pet a model knows by name. Prompts
    # with the name measure what the model can draw of the subject at best (the ceiling a
    # learned word can reach); oneword's users and its inversion never see it.
    name: str


HIDDEN_SUBJECTS = [
    HiddenSubject("cat", "cat", "heart", "orange", "white", "patches", "eyes", "black",
                  "orange white patched heart", "mittens"),
    HiddenSubject("dog", "dog", "heart", "brown", "brown", "solid", "spot", "white",
                  "brown heart", "rex"),
    HiddenSubject("ball", "ball", "circle", "red", "white", "stripes", "ring", "black",
                  "red white striped circle", "bouncer"),
    HiddenSubject("bird", "bird", "triangle", "blue", "blue", "solid", "eye", "yellow",
                  "blue triangle", "pip"),
    HiddenSubject("cup", "cup", "square", "white", "blue", "stripes", "rim", "black",
                  "white blue striped square", "mugsy"),
    HiddenSubject("robot", "robot", "square", "purple", "white", "dots", "eyes", "red",
                  "purple white dotted square", "bolt"),
    HiddenSubject("teddy", "teddy", "circle", "brown", "pink", "dots", "ears", "black",
                  "brown pink dotted circle", "bruno"),
    HiddenSubject("toy", "toy", "star", "yellow", "red", "dots", "center", "black",
                  "yellow red dotted star", "zippy"),
]
SUBJECTS_BY_ID = {s.id: s for s in HIDDEN_SUBJECTS}
SUBJECT_IDS = [s.id for s in HIDDEN_SUBJECTS]


# ----------------------------------------------------------------------------- specs

def _pick(options, generator, n):
    idx = torch.randint(len(options), (n,), generator=generator, device=generator.device)
    return [options[i] for i in idx.tolist()]


def subject_spec(subject_id: str, scene: str, style: str, generator: torch.Generator) -> Spec:
    """A hidden subject in the given scene and style (random size/position)."""
    s = SUBJECTS_BY_ID[subject_id]
    size = _pick(["medium", "large"], generator, 1)[0]
    pos = _pick(POSITIONS, generator, 1)[0]
    return Spec(s.shape, s.color, s.color2, s.pattern, size, pos, scene, style, s.id)


def _ordinary(generator, n) -> list[Spec]:
    cols = _pick(COLORS, generator, n)
    offs = torch.randint(1, len(COLORS), (n,), generator=generator, device=generator.device).tolist()
    cols2 = [COLORS[(COLORS.index(c) + o) % len(COLORS)] for c, o in zip(cols, offs)]
    pats = _pick(PATTERNS, generator, n)
    cols2 = [c if p == "solid" else c2 for c, c2, p in zip(cols, cols2, pats)]
    return [Spec(*a) for a in zip(_pick(SHAPES, generator, n), cols, cols2, pats,
                                  _pick(SIZES, generator, n), _pick(POSITIONS, generator, n),
                                  _pick(SCENES, generator, n), _pick(STYLES, generator, n))]


def sample_specs(n: int, generator: torch.Generator, hidden_fraction: float = 0.3,
                 subjects: list[str] | None = None, member_fraction: float = 0.0) -> list[Spec]:
    """n random specs; a share ``hidden_fraction`` are hidden subjects from ``subjects``.

    A further share ``member_fraction`` are class members: ordinary objects of a subject's shape
    with random colours and pattern, captioned by its class word. With members, "a cat" means
    any of a family of objects, of which the hidden cat is one (as in the real world).
    """
    subjects = SUBJECT_IDS if subjects is None else list(subjects)
    ordinary = _ordinary(generator, n)
    draw = torch.rand(n, generator=generator, device=generator.device).tolist()
    subj = _pick(subjects, generator, n) if subjects else [None] * n
    sizes = _pick(["medium", "large"], generator, n)
    out = []
    for o, u, s, z in zip(ordinary, draw, subj, sizes):
        if s is not None and u < hidden_fraction:
            hs = SUBJECTS_BY_ID[s]
            o = Spec(hs.shape, hs.color, hs.color2, hs.pattern, z, o.position, o.scene, o.style, s)
        elif s is not None and u < hidden_fraction + member_fraction:
            hs = SUBJECTS_BY_ID[s]
            o = Spec(hs.shape, o.color, o.color2, o.pattern, o.size, o.position, o.scene, o.style,
                     None, hs.class_word)
        out.append(o)
    return out


def decoy_spec(spec: Spec) -> Spec:
    """The same attributes without the hidden subject's mark (an ordinary object)."""
    return Spec(spec.shape, spec.color, spec.color2, spec.pattern, spec.size, spec.position,
                spec.scene, spec.style, None)


# ----------------------------------------------------------------------------- geometry

def _sd_box(u, v, bx, by):
    qx, qy = u.abs() - bx, v.abs() - by
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    return outside + torch.maximum(qx, qy).clamp(max=0)


def _sd_circle(u, v, r):
    return torch.sqrt(u * u + v * v) - 0.9


def _sd_square(u, v, r):
    return _sd_box(u, v, 0.78, 0.78)


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
    d1 = (x ** 2 + (y - 1.0) ** 2)
    d2 = (x - m) ** 2 + (y - m) ** 2
    body = torch.sqrt(torch.minimum(d1, d2)) * torch.sign(x - y)
    return torch.where(x + y > 1.0, lobe, body) * s


def _sd_cross(u, v, r):
    return torch.minimum(_sd_box(u, v, 0.92, 0.3), _sd_box(u, v, 0.3, 0.92))


SDF = {"circle": _sd_circle, "square": _sd_square, "triangle": _sd_triangle, "star": _sd_star,
       "heart": _sd_heart, "cross": _sd_cross}


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


PATTERN_FN = {"solid": _pat_solid, "stripes": _pat_stripes, "dots": _pat_dots,
              "patches": _pat_patches}


def _mark_sdf(u, v, mark):
    d = None
    for kind, dx, dy, rad in MARKS[mark]:
        if kind == "dot":
            e = torch.sqrt((u - dx) ** 2 + (v - dy) ** 2) - rad
        elif kind == "ring":
            e = (torch.sqrt((u - dx) ** 2 + (v - dy) ** 2) - rad).abs() - 0.09
        else:
            e = _sd_box(u - dx, v - dy, rad, 0.13)
        d = e if d is None else torch.minimum(d, e)
    return d


# ----------------------------------------------------------------------------- scenes

def _c(*rgb, device):
    return torch.tensor(rgb, device=device).view(1, 3, 1, 1)


def _lerp(a, b, t):
    return a + (b - a) * t


def _step(x):
    """Anti-aliased step: 0 for x<-0.5, 1 for x>0.5 (x in pixels)."""
    return (x + 0.5).clamp(0, 1)


def _sky(y, top, bottom, hz, dev):
    return _lerp(_c(*top, device=dev), _c(*bottom, device=dev), (y / hz).clamp(0, 1))


def _scene_beach(y, x, r, n1, n2, hz, dev):
    img = _sky(y, (0.30, 0.55, 0.95), (0.72, 0.86, 1.0), hz, dev)
    img = _lerp(img, _c(0.10, 0.42, 0.75, device=dev), _step(y - hz))
    sand = _c(0.94, 0.80, 0.55, device=dev) * (0.94 + 0.12 * n1)
    return _lerp(img, sand, _step(y - hz - 4 - 2 * torch.sin(x * 0.15 + r[:, 14, None, None, None] * 6)))


def _scene_snow(y, x, r, n1, n2, hz, dev):
    img = _sky(y, (0.62, 0.70, 0.82), (0.84, 0.87, 0.92), hz, dev)
    ground = _lerp(_c(0.86, 0.90, 0.97, device=dev), _c(0.98, 0.98, 1.0, device=dev),
                   ((y - hz) / 20).clamp(0, 1))
    img = _lerp(img, ground, _step(y - hz - 1.5 * torch.sin(x * 0.1 + r[:, 14, None, None, None] * 6)))
    return _lerp(img, _c(1.0, 1.0, 1.0, device=dev), (n1 > 0.965).float())


def _scene_grass(y, x, r, n1, n2, hz, dev):
    img = _sky(y, (0.38, 0.62, 0.95), (0.75, 0.88, 1.0), hz, dev)
    blades = F.avg_pool2d(n1, (5, 1), 1, (2, 0))
    grass = _c(0.22, 0.58, 0.14, device=dev) * (0.7 + 0.6 * blades)
    return _lerp(img, grass, _step(y - hz))


def _scene_night(y, x, r, n1, n2, hz, dev):
    img = _sky(y, (0.02, 0.03, 0.12), (0.09, 0.10, 0.28), hz, dev)
    img = _lerp(img, _c(0.95, 0.95, 0.80, device=dev), (n1 > 0.985).float())
    mx, my = 8 + 48 * r[:, 14, None, None, None], 7 + 8 * r[:, 15, None, None, None]
    moon = _step(5 - torch.sqrt((x - mx) ** 2 + (y - my) ** 2))
    img = _lerp(img, _c(0.95, 0.92, 0.70, device=dev), moon)
    ground = _c(0.05, 0.07, 0.09, device=dev) * (0.8 + 0.4 * n1)
    return _lerp(img, ground, _step(y - hz))


def _scene_desert(y, x, r, n1, n2, hz, dev):
    img = _sky(y, (0.98, 0.70, 0.40), (1.0, 0.88, 0.62), hz, dev)
    sx, sy = 8 + 48 * r[:, 14, None, None, None], 6 + 8 * r[:, 15, None, None, None]
    img = _lerp(img, _c(1.0, 0.97, 0.75, device=dev), _step(6 - torch.sqrt((x - sx) ** 2 + (y - sy) ** 2)))
    dune = hz + 3 * torch.sin(x * 0.12 + r[:, 19, None, None, None] * 6.28)
    sand = _c(0.86, 0.58, 0.30, device=dev) * (1 + 0.07 * torch.sin(y * 1.3 + 0.35 * x))
    return _lerp(img, sand, _step(y - dune))


def _scene_forest(y, x, r, n1, n2, hz, dev):
    blotch = F.interpolate(n2, size=(H, W), mode="bilinear", align_corners=False)
    img = _lerp(_c(0.08, 0.26, 0.10, device=dev), _c(0.25, 0.52, 0.22, device=dev), blotch)
    period = 9 + 6 * r[:, 14, None, None, None]
    trunk = (torch.sin(2 * math.pi * x / period + r[:, 15, None, None, None] * 6.28) > 0.55).float()
    img = _lerp(img, _c(0.30, 0.19, 0.10, device=dev), trunk * _step(y - 10 * blotch))
    ground = _c(0.20, 0.30, 0.10, device=dev) * (0.8 + 0.4 * n1)
    return _lerp(img, ground, _step(y - hz))


def _scene_sea(y, x, r, n1, n2, hz, dev):
    hz = hz - 8
    img = _sky(y, (0.50, 0.72, 0.95), (0.86, 0.93, 1.0), hz, dev)
    water = _lerp(_c(0.04, 0.25, 0.52, device=dev), _c(0.08, 0.42, 0.68, device=dev), ((y - hz) / 30).clamp(0, 1))
    wave = torch.sin(y * 1.4 + 1.2 * torch.sin(x * 0.25 + r[:, 14, None, None, None] * 6.28))
    water = _lerp(water, _c(0.60, 0.80, 0.95, device=dev), (wave > 0.8).float() * 0.8)
    return _lerp(img, water, _step(y - hz))


def _scene_room(y, x, r, n1, n2, hz, dev):
    img = _c(0.86, 0.80, 0.68, device=dev).expand(y.shape[0], 3, H, W)
    wx = 12 + 40 * r[:, 14, None, None, None]
    frame = _step(8 - torch.maximum((x - wx).abs(), (y - 14).abs() * 1.2))
    glass = _step(6.5 - torch.maximum((x - wx).abs(), (y - 14).abs() * 1.2))
    img = _lerp(img, _c(0.98, 0.98, 0.96, device=dev), frame)
    img = _lerp(img, _c(0.62, 0.80, 0.98, device=dev), glass)
    planks = 1 - 0.25 * (torch.remainder(y - hz, 5) < 0.9).float()
    wood = _c(0.58, 0.37, 0.19, device=dev) * planks * (0.92 + 0.16 * n1)
    return _lerp(img, wood, _step(y - hz))


def _scene_city(y, x, r, n1, n2, hz, dev):
    img = _sky(y, (0.55, 0.70, 0.88), (0.86, 0.90, 0.95), hz, dev)
    col = (x / 8).long().clamp(0, 7).expand(y.shape[0], 1, H, W)
    heights = torch.gather(n2[:, :, 0, :8].unsqueeze(2).expand(-1, 1, H, 8), 3, col)
    top = hz - 6 - 22 * heights
    building = _step(y - top)
    shade = _c(0.40, 0.42, 0.48, device=dev) * (0.8 + 0.4 * torch.gather(
        n2[:, :, 1, :8].unsqueeze(2).expand(-1, 1, H, 8), 3, col))
    img = _lerp(img, shade, building)
    win = ((torch.remainder(x, 4) < 2) & (torch.remainder(y, 5) < 2.5) & (y > top + 2)).float()
    img = _lerp(img, _c(0.95, 0.88, 0.55, device=dev), win * building)
    street = _c(0.28, 0.28, 0.30, device=dev)
    street = _lerp(street, _c(0.9, 0.9, 0.85, device=dev),
                   ((y - hz - 12).abs() < 0.7).float() * (torch.remainder(x, 8) < 4).float())
    return _lerp(img, street, _step(y - hz))


SCENE_FN = {"beach": _scene_beach, "snow": _scene_snow, "grass": _scene_grass,
            "night": _scene_night, "desert": _scene_desert, "forest": _scene_forest,
            "sea": _scene_sea, "room": _scene_room, "city": _scene_city}

# ----------------------------------------------------------------------------- rendering

N_PARAMS = 24


def _groups(names):
    out = {}
    for i, n in enumerate(names):
        out.setdefault(n, []).append(i)
    return out


def _by_group(names, fn, out, dev):
    """Run fn(idx_tensor, name) per distinct name and scatter its result into out."""
    for name, idx in _groups(names).items():
        it = torch.tensor(idx, device=dev)
        out[it] = fn(it, name)
    return out


def _rgb(names, dev):
    return torch.tensor([COLOR_RGB[n] for n in names], device=dev).view(-1, 3, 1, 1)


def _object_layer(specs, r, cx, cy, R, y, x, dev):
    """Returns colour (B,3,H,W), alpha (B,1,H,W), local u, v, body sdf (B,1,H,W) and the
    coverage (B,2,H,W) of the pattern's second colour and of the mark."""
    B = len(specs)
    u = ((x - cx) / R).expand(B, 1, H, W).squeeze(1)
    v = ((y - cy) / R).expand(B, 1, H, W).squeeze(1)
    Rs = R.squeeze(1)
    d = _by_group([s.shape for s in specs], lambda i, n: SDF[n](u[i], v[i], r[i]),
                  torch.empty_like(u), dev)
    pm = _by_group([s.pattern for s in specs], lambda i, n: PATTERN_FN[n](u[i], v[i], r[i], Rs[i]),
                   torch.empty_like(u), dev)
    alpha = (0.5 - d * Rs).clamp(0, 1)
    pm = pm * (-1.0 - d * Rs).clamp(0, 1)  # body-coloured rim: the pattern is painted inside it
    col = _lerp(_rgb([s.color for s in specs], dev), _rgb([s.color2 for s in specs], dev), pm.unsqueeze(1))
    details = torch.zeros(B, 2, H, W, device=dev)
    details[:, 0] = pm  # zero for solid objects
    marked = [i for i, s in enumerate(specs) if s.subject is not None]
    if marked:
        subj = [SUBJECTS_BY_ID[specs[i].subject] for i in marked]
        it = torch.tensor(marked, device=dev)
        md = _by_group([s.mark for s in subj], lambda i, n: _mark_sdf(u[it[i]], v[it[i]], n),
                       torch.empty(len(marked), H, W, device=dev), dev)
        ma = (0.5 - md * Rs[it]).clamp(0, 1).unsqueeze(1)
        col[it] = _lerp(col[it], _rgb([s.mark_color for s in subj], dev), ma)
        alpha[it] = torch.maximum(alpha[it], ma.squeeze(1))
        details[it, 1:] = ma
        details[it, :1] *= 1 - ma
    return col, alpha.unsqueeze(1), u.unsqueeze(1), v.unsqueeze(1), d.unsqueeze(1), details


def _luma(img):
    return (0.3 * img[:, 0:1] + 0.59 * img[:, 1:2] + 0.11 * img[:, 2:3])


def _style_photo(scene, col, alpha, u, v, d, R, cx, cy, y, x, r, noise, n1, n2, dev):
    ang = -math.pi / 2 + (r[:, 12] - 0.5) * 2.0
    lx, ly = (0.6 * torch.cos(ang)).view(-1, 1, 1, 1), (0.6 * torch.sin(ang)).view(-1, 1, 1, 1)
    lz = 0.8
    scene = scene * (1.08 - 0.16 * y / H) * (1 - 0.08 * lx * (x - 32) / 32)
    dx, dy = (x - cx + lx * 0.6 * R) / (0.95 * R), (y - cy - 0.85 * R) / (0.28 * R)
    shadow = (1 - dx * dx - dy * dy).clamp(0, 1).sqrt() * 0.45
    scene = scene * (1 - shadow)
    nu, nv = u * 0.7, v * 0.7
    nz = (1 - nu * nu - nv * nv).clamp(min=0.05).sqrt()
    norm = torch.sqrt(nu * nu + nv * nv + nz * nz)
    diffuse = ((nu * lx + nv * ly + nz * lz) / norm).clamp(min=0)
    rim = (-d * R / 3).clamp(0, 1)
    shade = (0.55 + 0.55 * diffuse) * (0.8 + 0.2 * rim)
    spec = (((nu * lx + nv * ly + nz * (lz + 1)) / (norm * math.sqrt(0.36 + (lz + 1) ** 2))).clamp(min=0)) ** 24
    obj = col * shade + 0.35 * spec
    img = _lerp(scene, obj, alpha)
    return img + 0.025 * noise


def _style_painting(scene, col, alpha, u, v, d, R, cx, cy, y, x, r, noise, n1, n2, dev):
    img = _lerp(scene, col * (0.92 + 0.12 * (-v).clamp(-1, 1)), alpha)
    img = img * (1 - 0.35 * (1 - (alpha - 0.5).abs() * 2))
    img = F.avg_pool2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), 3, 1)
    low = F.interpolate(n2, size=(H, W), mode="bilinear", align_corners=False)
    beta = (r[:, 16] * math.pi).view(-1, 1, 1, 1)
    strokes = torch.sin(2 * math.pi * (x * torch.cos(beta) + y * torch.sin(beta)) / 3.5 + 7 * low)
    img = img * (1 + 0.13 * strokes) + 0.10 * (low - 0.5)
    gray = _luma(img)
    img = gray + 1.3 * (img - gray)
    return torch.round(img.clamp(0, 1) * 5) / 5


PAPER = (0.96, 0.94, 0.88)
GRAPHITE = (0.22, 0.22, 0.25)


def _style_sketch(scene, col, alpha, u, v, d, R, cx, cy, y, x, r, noise, n1, n2, dev):
    paper = _c(*PAPER, device=dev) * (1 - 0.05 * n1)
    lum = _luma(scene)
    edge = ((lum - F.avg_pool2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), 3, 1)).abs() * 8).clamp(0, 1)
    img = _lerp(_lerp(paper, scene, 0.35), _c(*GRAPHITE, device=dev), edge * 0.6)
    phase = (r[:, 18] * 6.28).view(-1, 1, 1, 1)
    hatch = (0.5 + 0.5 * torch.sin((x + y) * 2 * math.pi / 3 + phase)).clamp(0, 1)
    fill = _lerp(paper, col, 0.5 + 0.45 * hatch)
    img = _lerp(img, fill, alpha)
    outline = ((alpha - F.avg_pool2d(F.pad(alpha, (1, 1, 1, 1), mode="replicate"), 3, 1)).abs() * 4).clamp(0, 1)
    return _lerp(img, _c(*GRAPHITE, device=dev), outline * 0.9)


STYLE_FN = {"photo": _style_photo, "painting": _style_painting, "sketch": _style_sketch}


def _draws(B, generator, dev):
    gd = generator.device
    r = torch.rand(B, N_PARAMS, generator=generator, device=gd)
    n1 = torch.rand(B, 1, H, W, generator=generator, device=gd)
    n2 = torch.rand(B, 1, 16, 16, generator=generator, device=gd)
    noise = torch.randn(B, 3, H, W, generator=generator, device=gd)
    return r.to(dev), n1.to(dev), n2.to(dev), noise.to(dev)


def render_batch(specs: list[Spec], generator: torch.Generator, device="cpu") -> torch.Tensor:
    """Render specs to a float tensor [B,3,64,64] in [0,1], deterministic given the generator."""
    return render_with_coverage(specs, generator, device)[0]


def render_with_coverage(specs: list[Spec], generator: torch.Generator,
                         device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """`render_batch`'s images [B,3,64,64] and the coverage [B,3,64,64] in [0,1] (before the
    style is applied) of the object, of its pattern's second colour (0 for solid objects) and
    of a hidden subject's mark, from the same random draws."""
    dev = torch.device(device)
    B = len(specs)
    r, n1, n2, noise = _draws(B, generator, dev)
    y = (torch.arange(H, device=dev, dtype=torch.float32) + 0.5).view(1, 1, H, 1)
    x = (torch.arange(W, device=dev, dtype=torch.float32) + 0.5).view(1, 1, 1, W)
    R = (torch.tensor([SIZE_RADIUS[s.size] for s in specs], device=dev) + 2 * r[:, 2] - 1).view(-1, 1, 1, 1)
    cx = (torch.tensor([POSITION_X[s.position] for s in specs], device=dev) + 4 * r[:, 0] - 2).view(-1, 1, 1, 1)
    cy = (37.0 + 6 * r[:, 1] - 3).view(-1, 1, 1, 1)
    hz = (32.0 + 6 * r[:, 13] - 3).view(-1, 1, 1, 1)
    scene = _by_group([s.scene for s in specs],
                      lambda i, n: SCENE_FN[n](y, x, r[i], n1[i], n2[i], hz[i], dev),
                      torch.empty(B, 3, H, W, device=dev), dev)
    col, alpha, u, v, d, details = _object_layer(specs, r, cx, cy, R, y, x, dev)
    args = (scene, col, alpha, u, v, d, R, cx, cy)
    out = _by_group([s.style for s in specs],
                    lambda i, n: STYLE_FN[n](*(a[i] for a in args), y, x, r[i], noise[i], n1[i], n2[i], dev),
                    torch.empty(B, 3, H, W, device=dev), dev)
    return out.clamp(0, 1), torch.cat([alpha, details], 1)
