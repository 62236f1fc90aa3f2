"""`oneword demo`: the whole story offline in a few minutes on a CPU.

A hidden subject of the world model (the model can draw it, no word names it) gets five photos;
the model itself masks the subject in each (`--mask auto`: where its attention finds the class
word), oneword learns its word, draws it in new scenes and styles next to the class word alone,
and the oracle scores both. Writes a contact sheet and an HTML page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .api import ModelChoice, default_steps, learn
from .core.embeddings import load_embeddings
from .core.generate import (
    Sampling,
    contact_sheet,
    draw,
    labelled_sheet,
    register_words,
    sampling_record,
    save_png,
    to_pil,
)
from .core.train import TrainConfig
from .errors import OnewordError
from .events import EventSink, Message, ignore
from .experiments.auto_masks import AutoMasking
from .experiments.recording import recording
from .files import atomic_write, atomic_write_text


@dataclass(frozen=True)
class DemoConfig:
    subject: str = "cat"
    token: str | None = None  # None: <my-SUBJECT>
    auto_mask: bool = True  # learn with the masks the model makes itself
    out: Path = Path("demo")
    model: str = "world"
    steps: int | None = None  # None: the model's default (its folder's oneword.json)
    seed: int = 0
    seeds_per_prompt: int = 2
    prompts: int = 6
    sampling: Sampling = field(default_factory=lambda: Sampling(steps=20, cfg=5.0))
    project: Path | None = None  # the experiment store (None: $ONEWORD_PROJECT, else ./)

    def __post_init__(self):
        from .world.render import SUBJECTS_BY_ID

        if self.subject not in SUBJECTS_BY_ID:
            raise OnewordError(
                f"--subject {self.subject}: choose one of {', '.join(sorted(SUBJECTS_BY_ID))}"
            )
        for name in ("steps", "seeds_per_prompt", "prompts"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise OnewordError(f"--{name.replace('_', '-')}: must be 1 or more")


@dataclass(frozen=True)
class DemoResult:
    files: dict[str, Path]
    summary: dict[str, tuple[float, float]]  # "class"/"learned" -> (concept, prompt fidelity)


def demo(config: DemoConfig = DemoConfig(), on_event: EventSink = ignore) -> DemoResult:
    """Run the demo; returns the contact sheet and HTML page and the mean scores."""
    from .world import evaluate
    from .world.oracle import load_oracle
    from .world.render import SUBJECTS_BY_ID

    subject = SUBJECTS_BY_ID[config.subject]
    token = config.token or f"<my-{subject.id}>"
    photos = evaluate.subject_photos(subject.id, 5, torch.Generator().manual_seed(config.seed))
    photo_dir = config.out / "photos"
    for i, photo in enumerate(photos):
        save_png(photo, photo_dir / f"photo{i}.png", {"subject": subject.id})
    on_event(
        Message(
            f"learning {token} from 5 photos of the hidden '{subject.id}' "
            f"(init word: {subject.class_word})"
        )
    )
    steps = config.steps or default_steps(config.model)
    auto = AutoMasking(subject.class_word, seed=config.seed) if config.auto_mask else None
    if auto is not None:
        on_event(Message(f"masks: made by the model itself from where its attention finds "
                         f"'{subject.class_word}' in each photo; none drawn by hand"))  # fmt: skip
    train_config = TrainConfig(
        token=token,
        init_word=subject.class_word,
        steps=steps,
        lr=5e-3,
        batch_size=4,
        grad_accum=1,
        seed=config.seed,
        checkpoint_every=max(50, steps // 4),
        mask_floor=DEMO_MASK_FLOOR if auto is not None else None,
    )
    files = learn(
        [str(photo_dir)],
        train_config,
        ModelChoice(config.model),
        config.out / "run",
        on_event=on_event,
        project=config.project,
        auto_mask=auto,
    )
    on_event(Message("drawing the subject in new scenes and styles"))
    model = ModelChoice(config.model).load()
    words = register_words(model, load_embeddings(files["diffusers"]))
    table = _compare(model, words, token, subject.id, photos, config, load_oracle())
    _record_images(table, token, files["diffusers"], config)
    summary = {
        how: (_mean(table, how, "concept_fidelity"), _mean(table, how, "prompt_fidelity"))
        for how in ("class", "learned")
    }
    masks = _mask_views(config.out / "run", photos) if auto is not None else None
    return DemoResult(_write_outputs(table, token, subject, photos, config, masks), summary)


def _mask_views(run_dir: Path, photos: torch.Tensor) -> torch.Tensor | None:
    """The photos [5, 3, h, w] darkened outside the masks the run kept (its masks/)."""
    from .core import data

    files = sorted((run_dir / "masks").glob("*.png"))
    if len(files) != len(photos):
        return None
    masks = torch.stack([data.read_mask(f) for f in files])[:, None]  # [5, 1, H, W]
    masks = F.interpolate(masks, size=photos.shape[-2:], mode="area")
    return photos * (0.25 + 0.75 * masks)


def _compare(model, words, token, subject_id, photos, config, oracle):
    """Images and scores for each prompt, with the class word and with the learned word."""
    from .world import evaluate

    seeds = list(range(config.seed, config.seed + config.seeds_per_prompt))
    table = []
    for template in evaluate.NOVEL_PROMPTS[: config.prompts]:
        row = {"template": template}
        for how in ("class", "learned"):
            prompt = template.format(evaluate.subject_phrase(subject_id, how, token))
            images = draw(model, [prompt] * len(seeds), seeds, words, config.sampling)
            scores = evaluate.score_images(
                oracle, images, [prompt] * len(seeds), subject_id, photos
            )
            row[how] = (prompt, images, scores)
        table.append(row)
    return table


def _record_images(table, token: str, embedding: Path, config: DemoConfig) -> None:
    """Every image drawn, as a PNG under images/, recorded in the store as a `generate` run."""
    seeds = list(range(config.seed, config.seed + config.seeds_per_prompt))
    folder = (config.out / "images").absolute()
    settings = {
        "prompts": [row[how][0] for row in table for how in ("class", "learned")],
        **sampling_record(config.sampling, config.model),
        "embeddings": [str(Path(embedding).absolute())],
    }
    with recording(config.project, "generate", folder, config.model, token, settings) as rec:
        drawn = []
        for r, row in enumerate(table):
            for how in ("class", "learned"):
                prompt, images, _ = row[how]
                for image, seed in zip(images, seeds):
                    meta = {**settings, "prompt": prompt, "seed": seed}
                    del meta["prompts"]
                    path = save_png(image, folder / f"{r:02d}-{how}-s{seed}.png", meta)
                    drawn.append((prompt, seed, path))
        rec.images(config.seed, settings["embeddings"], drawn)


def _write_outputs(table, token, subject, photos, config, masks=None) -> dict[str, Path]:
    grid = torch.cat([torch.cat([row["class"][1], row["learned"][1]]) for row in table])
    columns = 2 * config.seeds_per_prompt
    seeds = range(config.seed, config.seed + config.seeds_per_prompt)
    captions = [f"{row[how][0]} · seed {s}" for row in table for how in ("class", "learned")
                for s in seeds]  # fmt: skip
    title = f"each row: the class word's images, then {token}'s"
    sheet = save_png(
        labelled_sheet(grid, captions, title, columns=columns),
        config.out / "contact_sheet.png",
        {"subject": subject.id, "token": token},
    )
    figure = config.out / "comparison.png"
    atomic_write(
        figure,
        lambda tmp: _comparison(photos, table, token, subject, masks).save(tmp, format="PNG"),
    )
    page = config.out / "index.html"
    atomic_write_text(page, _html(table, token, subject, masks is not None))
    return {"comparison": figure, "contact_sheet": sheet, "page": page}


DEMO_MASK_FLOOR = 0.1  # learn's default
MASK_NOTE = " and their masks, made by the model itself from its attention to '{}'"
SCALE = 3  # the world's 64 px images are shown at 192 px, drawn with sharp pixels


def _tiles(images: torch.Tensor) -> Image.Image:
    """A row of images [B, 3, H, W] in [0, 1], upscaled by SCALE without smoothing."""
    row = to_pil(contact_sheet(images, columns=images.shape[0], pad=4))
    return row.resize((row.width * SCALE, row.height * SCALE), Image.NEAREST)


def _comparison(photos, table, token, subject, masks=None) -> Image.Image:
    """The five photos (and, learned with automatic masks, the same photos darkened outside
    their masks), then per prompt the class word's images (left) beside the learned word's
    (right), under column headings with each side's concept and prompt fidelity."""
    font = ImageFont.load_default(size=18)
    pairs = [
        (row["template"].format("..."), _tiles(row["class"][1]), _tiles(row["learned"][1]))
        for row in table
    ]
    gap = 24
    right_x = 10 + pairs[0][1].width + gap
    heading = [f'class word "{subject.class_word}"', f"learned word {token}"]
    scores = [
        f"drawn as the subject: {_mean(table, how, 'concept_fidelity'):.0%}\n"
        f"in the prompted scene and style: {_mean(table, how, 'prompt_fidelity'):.0%}"
        for how in ("class", "learned")
    ]
    photo_row = _tiles(photos)
    mask_row = _tiles(masks) if masks is not None else None
    mask_h = 40 + mask_row.height if mask_row is not None else 0
    width = max(photo_row.width, right_x + pairs[0][2].width) + 20
    rows = sum(30 + left.height for _, left, _ in pairs)
    height = 40 + photo_row.height + mask_h + 96 + rows + 10
    out = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(out)
    pen.text((10, 10), f"training photos of the hidden {subject.id}", fill="black", font=font)
    out.paste(photo_row, (10, 40))
    y = 50 + photo_row.height
    if mask_row is not None:
        note = f"their masks, made by the model itself from its attention to '{subject.class_word}'"
        pen.text((10, y), note, fill="black", font=font)
        out.paste(mask_row, (10, y + 30))
        y += mask_h
    for x, title, score in zip((10, right_x), heading, scores):
        pen.text((x, y), title, fill="black", font=font)
        pen.multiline_text((x, y + 26), score, fill="black", font=font, spacing=4)
    y += 86
    for prompt, left, right in pairs:
        pen.text((10, y), prompt, fill="black", font=font)
        out.paste(left, (10, y + 30))
        out.paste(right, (right_x, y + 30))
        y += 30 + left.height
    return out


def _mean(table, how, field_name):
    return sum(getattr(r[how][2], field_name) for r in table) / len(table)


def _html(table, token, subject, masked: bool = False) -> str:
    rows = []
    for row in table:
        cells = []
        for how in ("class", "learned"):
            prompt, _, s = row[how]
            cells.append(
                f"<td><b>{html.escape(prompt)}</b><br>concept fidelity "
                f"{s.concept_fidelity:.2f} · prompt fidelity {s.prompt_fidelity:.2f}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    summary = " ".join(
        f"<p>{how} word: mean concept fidelity {_mean(table, how, 'concept_fidelity'):.2f}, "
        f"prompt fidelity {_mean(table, how, 'prompt_fidelity'):.2f}</p>"
        for how in ("class", "learned")
    )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>oneword demo: {html.escape(token)}</title>
<style>body{{font-family:sans-serif;margin:2em}} img{{max-width:100%}}
td{{padding:.4em;border-bottom:1px solid #ddd}}</style></head><body>
<h1>{html.escape(token)}: the hidden "{html.escape(subject.id)}"</h1>
{summary}
<p>The five training photos{MASK_NOTE.format(html.escape(subject.class_word)) if masked else ""},
then one row per prompt: left the class word
"{html.escape(subject.class_word)}", right the learned word {html.escape(token)}.</p>
<img src="comparison.png">
<table><tr><th>class word</th><th>learned word</th></tr>{"".join(rows)}</table>
</body></html>
"""
