"""Procedural world: batched, deterministic torch renderer of 64x64 scenes.

Every image shows one object (shape, body colour, pattern colour, pattern,
size, position) in a scene, drawn in a style.  Hidden subjects are fixed
attribute combinations plus a small distinctive mark.  All randomness comes
from the caller's ``torch.Generator``; nothing touches global RNG state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .scenes import SCENE_FN, H, W, const_rgb, lerp
from .shapes import PATTERN_FN, SDF, mark_sdf

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
    "red": (0.85, 0.10, 0.10),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.98, 0.88, 0.12),
    "green": (0.12, 0.66, 0.18),
    "blue": (0.12, 0.30, 0.90),
    "purple": (0.55, 0.15, 0.75),
    "pink": (1.00, 0.58, 0.78),
    "white": (0.97, 0.97, 0.97),
    "black": (0.07, 0.07, 0.08),
    "brown": (0.50, 0.28, 0.10),
}
SIZE_RADIUS = {"small": 9.0, "medium": 13.0, "large": 17.0}
POSITION_X = {"left": 20.0, "center": 32.0, "right": 44.0}


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
    HiddenSubject(
        id="cat",
        class_word="cat",
        name="mittens",
        shape="heart",
        color="orange",
        color2="white",
        pattern="patches",
        mark="eyes",
        mark_color="black",
        description="orange white patched heart",
    ),
    HiddenSubject(
        id="dog",
        class_word="dog",
        name="rex",
        shape="heart",
        color="brown",
        color2="brown",
        pattern="solid",
        mark="spot",
        mark_color="white",
        description="brown heart",
    ),
    HiddenSubject(
        id="ball",
        class_word="ball",
        name="bouncer",
        shape="circle",
        color="red",
        color2="white",
        pattern="stripes",
        mark="ring",
        mark_color="black",
        description="red white striped circle",
    ),
    HiddenSubject(
        id="bird",
        class_word="bird",
        name="pip",
        shape="triangle",
        color="blue",
        color2="blue",
        pattern="solid",
        mark="eye",
        mark_color="yellow",
        description="blue triangle",
    ),
    HiddenSubject(
        id="cup",
        class_word="cup",
        name="mugsy",
        shape="square",
        color="white",
        color2="blue",
        pattern="stripes",
        mark="rim",
        mark_color="black",
        description="white blue striped square",
    ),
    HiddenSubject(
        id="robot",
        class_word="robot",
        name="bolt",
        shape="square",
        color="purple",
        color2="white",
        pattern="dots",
        mark="eyes",
        mark_color="red",
        description="purple white dotted square",
    ),
    HiddenSubject(
        id="teddy",
        class_word="teddy",
        name="bruno",
        shape="circle",
        color="brown",
        color2="pink",
        pattern="dots",
        mark="ears",
        mark_color="black",
        description="brown pink dotted circle",
    ),
    HiddenSubject(
        id="toy",
        class_word="toy",
        name="zippy",
        shape="star",
        color="yellow",
        color2="red",
        pattern="dots",
        mark="center",
        mark_color="black",
        description="yellow red dotted star",
    ),
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
    return Spec(
        shape=s.shape,
        color=s.color,
        color2=s.color2,
        pattern=s.pattern,
        size=size,
        position=pos,
        scene=scene,
        style=style,
        subject=s.id,
    )


def _ordinary(generator, n) -> list[Spec]:
    cols = _pick(COLORS, generator, n)
    offs = torch.randint(
        1, len(COLORS), (n,), generator=generator, device=generator.device
    ).tolist()
    cols2 = [COLORS[(COLORS.index(c) + o) % len(COLORS)] for c, o in zip(cols, offs)]
    pats = _pick(PATTERNS, generator, n)
    cols2 = [c if p == "solid" else c2 for c, c2, p in zip(cols, cols2, pats)]
    shapes, sizes = _pick(SHAPES, generator, n), _pick(SIZES, generator, n)
    positions, scenes = _pick(POSITIONS, generator, n), _pick(SCENES, generator, n)
    styles = _pick(STYLES, generator, n)
    return [
        Spec(shape=a, color=b, color2=c, pattern=d, size=e, position=f, scene=g, style=h)
        for a, b, c, d, e, f, g, h in zip(
            shapes, cols, cols2, pats, sizes, positions, scenes, styles
        )
    ]


def sample_specs(
    n: int,
    generator: torch.Generator,
    hidden_fraction: float = 0.3,
    subjects: list[str] | None = None,
    member_fraction: float = 0.0,
) -> list[Spec]:
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
            o = replace(
                o,
                shape=hs.shape,
                color=hs.color,
                color2=hs.color2,
                pattern=hs.pattern,
                size=z,
                subject=s,
            )
        elif s is not None and u < hidden_fraction + member_fraction:
            o = replace(o, shape=SUBJECTS_BY_ID[s].shape, class_word=SUBJECTS_BY_ID[s].class_word)
        out.append(o)
    return out


def decoy_spec(spec: Spec) -> Spec:
    """The same attributes without the hidden subject's mark (an ordinary object)."""
    return replace(spec, subject=None)


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
    d = _by_group(
        [s.shape for s in specs], lambda i, n: SDF[n](u[i], v[i], r[i]), torch.empty_like(u), dev
    )
    pm = _by_group(
        [s.pattern for s in specs],
        lambda i, n: PATTERN_FN[n](u[i], v[i], r[i], Rs[i]),
        torch.empty_like(u),
        dev,
    )
    alpha = (0.5 - d * Rs).clamp(0, 1)
    pm = pm * (-1.0 - d * Rs).clamp(0, 1)  # body-coloured rim: the pattern is painted inside it
    col = lerp(
        _rgb([s.color for s in specs], dev), _rgb([s.color2 for s in specs], dev), pm.unsqueeze(1)
    )
    details = torch.zeros(B, 2, H, W, device=dev)
    details[:, 0] = pm  # zero for solid objects
    marked = [i for i, s in enumerate(specs) if s.subject is not None]
    if marked:
        subj = [SUBJECTS_BY_ID[specs[i].subject] for i in marked]
        it = torch.tensor(marked, device=dev)
        md = _by_group(
            [s.mark for s in subj],
            lambda i, n: mark_sdf(u[it[i]], v[it[i]], n),
            torch.empty(len(marked), H, W, device=dev),
            dev,
        )
        ma = (0.5 - md * Rs[it]).clamp(0, 1).unsqueeze(1)
        col[it] = lerp(col[it], _rgb([s.mark_color for s in subj], dev), ma)
        alpha[it] = torch.maximum(alpha[it], ma.squeeze(1))
        details[it, 1:] = ma
        details[it, :1] *= 1 - ma
    return col, alpha.unsqueeze(1), u.unsqueeze(1), v.unsqueeze(1), d.unsqueeze(1), details


@dataclass(frozen=True)
class Draws:
    """A batch's random draws: uniform parameters [B, N_PARAMS] (the slots named below and in
    `shapes`/`scenes`), fine noise [B, 1, 64, 64], coarse noise [B, 1, 16, 16] and pixel noise
    [B, 3, 64, 64]."""

    params: torch.Tensor
    fine: torch.Tensor
    coarse: torch.Tensor
    pixel: torch.Tensor

    def __getitem__(self, i) -> "Draws":
        return Draws(self.params[i], self.fine[i], self.coarse[i], self.pixel[i])


@dataclass(frozen=True)
class Body:
    """The object before a style is applied: colour [B, 3, H, W], alpha [B, 1, H, W], object-local
    coordinates u, v and the body's signed distance [B, 1, H, W], its radius and centre in
    pixels [B, 1, 1, 1]."""

    colour: torch.Tensor
    alpha: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    sdf: torch.Tensor
    radius: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor

    def __getitem__(self, i) -> "Body":
        return Body(*(getattr(self, f)[i] for f in self.__dataclass_fields__))


# Slots of Draws.params the layout and the styles read (the shapes and scenes read others).
JITTER_X, JITTER_Y, JITTER_RADIUS, HORIZON = 0, 1, 2, 13
LIGHT_ANGLE, STROKE_ANGLE, HATCH_PHASE = 12, 16, 18


def _luma(img):
    return 0.3 * img[:, 0:1] + 0.59 * img[:, 1:2] + 0.11 * img[:, 2:3]


def _style_photo(scene: torch.Tensor, body: Body, draws: Draws, y, x, dev) -> torch.Tensor:
    """Lit from a random angle above, with a soft shadow, shading, a highlight and sensor noise."""
    col, alpha, u, v, d = body.colour, body.alpha, body.u, body.v, body.sdf
    R, cx, cy = body.radius, body.cx, body.cy
    ang = -math.pi / 2 + (draws.params[:, LIGHT_ANGLE] - 0.5) * 2.0
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
    spec = (
        ((nu * lx + nv * ly + nz * (lz + 1)) / (norm * math.sqrt(0.36 + (lz + 1) ** 2))).clamp(
            min=0
        )
    ) ** 24
    obj = col * shade + 0.35 * spec
    img = lerp(scene, obj, alpha)
    return img + 0.025 * draws.pixel


def _style_painting(scene: torch.Tensor, body: Body, draws: Draws, y, x, dev) -> torch.Tensor:
    """Dark outlines, blurred, brush strokes along a random angle, saturated, five tones."""
    alpha = body.alpha
    img = lerp(scene, body.colour * (0.92 + 0.12 * (-body.v).clamp(-1, 1)), alpha)
    img = img * (1 - 0.35 * (1 - (alpha - 0.5).abs() * 2))
    img = F.avg_pool2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), 3, 1)
    low = F.interpolate(draws.coarse, size=(H, W), mode="bilinear", align_corners=False)
    beta = (draws.params[:, STROKE_ANGLE] * math.pi).view(-1, 1, 1, 1)
    strokes = torch.sin(2 * math.pi * (x * torch.cos(beta) + y * torch.sin(beta)) / 3.5 + 7 * low)
    img = img * (1 + 0.13 * strokes) + 0.10 * (low - 0.5)
    gray = _luma(img)
    img = gray + 1.3 * (img - gray)
    return torch.round(img.clamp(0, 1) * 5) / 5


PAPER = (0.96, 0.94, 0.88)
GRAPHITE = (0.22, 0.22, 0.25)


def _style_sketch(scene: torch.Tensor, body: Body, draws: Draws, y, x, dev) -> torch.Tensor:
    """Graphite edges of the scene on paper, the object hatched in its colour and outlined."""
    alpha = body.alpha
    paper = const_rgb(*PAPER, device=dev) * (1 - 0.05 * draws.fine)
    lum = _luma(scene)
    edge = ((lum - F.avg_pool2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), 3, 1)).abs() * 8).clamp(
        0, 1
    )
    img = lerp(lerp(paper, scene, 0.35), const_rgb(*GRAPHITE, device=dev), edge * 0.6)
    phase = (draws.params[:, HATCH_PHASE] * 6.28).view(-1, 1, 1, 1)
    hatch = (0.5 + 0.5 * torch.sin((x + y) * 2 * math.pi / 3 + phase)).clamp(0, 1)
    fill = lerp(paper, body.colour, 0.5 + 0.45 * hatch)
    img = lerp(img, fill, alpha)
    outline = (
        (alpha - F.avg_pool2d(F.pad(alpha, (1, 1, 1, 1), mode="replicate"), 3, 1)).abs() * 4
    ).clamp(0, 1)
    return lerp(img, const_rgb(*GRAPHITE, device=dev), outline * 0.9)


STYLE_FN = {"photo": _style_photo, "painting": _style_painting, "sketch": _style_sketch}


def _draws(B, generator, dev) -> Draws:
    gd = generator.device
    params = torch.rand(B, N_PARAMS, generator=generator, device=gd)
    fine = torch.rand(B, 1, H, W, generator=generator, device=gd)
    coarse = torch.rand(B, 1, 16, 16, generator=generator, device=gd)
    pixel = torch.randn(B, 3, H, W, generator=generator, device=gd)
    return Draws(params.to(dev), fine.to(dev), coarse.to(dev), pixel.to(dev))


def render_batch(specs: list[Spec], generator: torch.Generator, device="cpu") -> torch.Tensor:
    """Render specs to a float tensor [B,3,64,64] in [0,1], deterministic given the generator."""
    return render_with_coverage(specs, generator, device)[0]


def render_with_coverage(
    specs: list[Spec], generator: torch.Generator, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """`render_batch`'s images [B,3,64,64] and the coverage [B,3,64,64] in [0,1] (before the
    style is applied) of the object, of its pattern's second colour (0 for solid objects) and
    of a hidden subject's mark, from the same random draws."""
    dev = torch.device(device)
    B = len(specs)
    draws = _draws(B, generator, dev)
    r = draws.params
    y = (torch.arange(H, device=dev, dtype=torch.float32) + 0.5).view(1, 1, H, 1)
    x = (torch.arange(W, device=dev, dtype=torch.float32) + 0.5).view(1, 1, 1, W)
    sizes = torch.tensor([SIZE_RADIUS[s.size] for s in specs], device=dev)
    R = (sizes + 2 * r[:, JITTER_RADIUS] - 1).view(-1, 1, 1, 1)
    positions = torch.tensor([POSITION_X[s.position] for s in specs], device=dev)
    cx = (positions + 4 * r[:, JITTER_X] - 2).view(-1, 1, 1, 1)
    cy = (37.0 + 6 * r[:, JITTER_Y] - 3).view(-1, 1, 1, 1)
    hz = (32.0 + 6 * r[:, HORIZON] - 3).view(-1, 1, 1, 1)
    scene = _by_group(
        [s.scene for s in specs],
        lambda i, n: SCENE_FN[n](y, x, r[i], draws.fine[i], draws.coarse[i], hz[i], dev),
        torch.empty(B, 3, H, W, device=dev),
        dev,
    )
    col, alpha, u, v, d, details = _object_layer(specs, r, cx, cy, R, y, x, dev)
    body = Body(col, alpha, u, v, d, R, cx, cy)
    out = _by_group(
        [s.style for s in specs],
        lambda i, n: STYLE_FN[n](scene[i], body[i], draws[i], y, x, dev),
        torch.empty(B, 3, H, W, device=dev),
        dev,
    )
    return out.clamp(0, 1), torch.cat([alpha, details], 1)
