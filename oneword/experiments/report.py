"""What `oneword score` shows: a ranked text table, an HTML report, a scatter plot PNG
(fidelity against prompt-following, drawn with Pillow) and the picture of the best word found
against compute (`compute_picture`)."""

from __future__ import annotations

import html
import math
from dataclasses import replace
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..files import atomic_write, atomic_write_text
from .compute_picture import COMPUTE_PICTURE, write_compute_picture
from .cuts import run_cuts
from .score_math import FIDELITY_METRICS, METRIC_LABELS, PROMPT_METRICS

PLOT_SIZE = (720, 540)
_MARGIN = (80, 30, 30, 70)  # left, top, right, bottom
_FRONT = (214, 39, 40)
_OTHER = (120, 120, 120)
_INK = (30, 30, 30)


def metric_columns(rows) -> list[str]:
    """The raw metrics present, fidelity metrics first."""
    present = set(rows[0].metrics) if rows else set()
    return [m for m in FIDELITY_METRICS + PROMPT_METRICS if m in present]


def _init_label(cand) -> str:
    return cand.init if cand.init != "jitter" else f"jitter {cand.jitter:g}"


def combined_text(metrics: dict) -> str:
    """The weighted score with its 95% interval where there is one: 0.812 ±0.031."""
    pm = metrics.get("combined_pm")
    return f"{metrics['combined']:.3f}" + (f" ±{pm:.3f}" if pm is not None else "")


def ranked_table(board) -> str:
    """The ranked candidates as a plain-text table (best first; * marks the Pareto front)."""
    metrics = metric_columns(board.rows)
    head = (
        ["rank", "cand", "seed", "init", "lr"]
        + [METRIC_LABELS[m] for m in metrics]
        + ["combined", "front"]
    )
    lines = [head]
    for row in board.rows:
        c = row.candidate
        lines.append(
            [str(row.rank), c.name, str(c.seed), _init_label(c), f"{c.lr:g}"]
            + [f"{row.metrics[m]:.4f}" for m in metrics]
            + [combined_text(row.metrics), "*" if row.pareto else ""]
        )
    if board.reference:
        lines.append(
            ["", "photos", "", "", ""]
            + [f"{board.reference[m]:.4f}" if m in board.reference else "" for m in metrics]
            + ["", ""]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines
    )


# -- scatter plot ----------------------------------------------------------------------------
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    step = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(step))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= step), default=step)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _axis_range(values: list[float], min_span: float = 0.0) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 0.01)
    lo, hi = lo - pad, hi + pad
    grow = max(0.0, min_span - (hi - lo)) / 2  # small differences are not drawn large
    return lo - grow, hi + grow


def scatter_plot(
    points: list[tuple[float, float, str, bool]],
    path: Path,
    x_label: str,
    y_label: str,
    title: str = "",
    min_span: float = 0.0,
) -> Path:
    """A PNG scatter of (x, y, label, on_front) points; the front is joined by a line."""
    width, height = PLOT_SIZE
    left, top, right, bottom = _MARGIN
    img = Image.new("RGB", PLOT_SIZE, "white")
    pen = ImageDraw.Draw(img)
    font, small = _font(14), _font(11)
    clean = [
        (0.0 if math.isnan(x) else x, 0.0 if math.isnan(y) else y, lab, f)
        for x, y, lab, f in points
    ]
    x0, x1 = _axis_range([p[0] for p in clean], min_span)
    y0, y1 = _axis_range([p[1] for p in clean], min_span)

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (width - left - right),
            height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom),
        )

    _draw_axes(pen, (x0, x1, y0, y1), to_px, small)
    front = sorted((p for p in clean if p[3]), key=lambda p: p[0])
    if len(front) > 1:
        pen.line([to_px(x, y) for x, y, _, _ in front], fill=_FRONT, width=2)
    for x, y, label, on_front in clean:
        px, py = to_px(x, y)
        color = _FRONT if on_front else _OTHER
        pen.ellipse(
            [px - 5, py - 5, px + 5, py + 5],
            fill=color if on_front else "white",
            outline=color,
            width=2,
        )
        pen.text((px + 7, py - 14), label, fill=color, font=small)
    pen.text((left, 6), title, fill=_INK, font=font)
    pen.text(((width + left - right) / 2, height - 22), x_label, fill=_INK, font=font, anchor="mm")
    _vertical_label(img, y_label, font, (16, (height - bottom + top) / 2))
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def _draw_axes(pen, ranges, to_px, font) -> None:
    x0, x1, y0, y1 = ranges
    bottom_left, top_left = to_px(x0, y0), to_px(x0, y1)
    bottom_right = to_px(x1, y0)
    pen.line([top_left, bottom_left, bottom_right], fill=_INK, width=1)
    for x in _nice_ticks(x0, x1):
        px, py = to_px(x, y0)
        pen.line([(px, py), (px, py + 5)], fill=_INK)
        pen.text((px, py + 8), f"{x:.3g}", fill=_INK, font=font, anchor="ma")
    for y in _nice_ticks(y0, y1):
        px, py = to_px(x0, y)
        pen.line([(px - 5, py), (px, py)], fill=_INK)
        pen.text((px - 8, py), f"{y:.3g}", fill=_INK, font=font, anchor="rm")


def _vertical_label(img: Image.Image, text: str, font, center) -> None:
    box = font.getbbox(text)
    label = Image.new("RGB", (box[2] - box[0] + 4, box[3] - box[1] + 6), "white")
    ImageDraw.Draw(label).text((2 - box[0], 2 - box[1]), text, fill=_INK, font=font)
    rotated = label.rotate(90, expand=True)
    img.paste(rotated, (int(center[0] - rotated.width / 2), int(center[1] - rotated.height / 2)))


def axis_labels(board) -> tuple[str, str]:
    metrics = metric_columns(board.rows)
    fid = [METRIC_LABELS[m] for m in metrics if m in FIDELITY_METRICS]
    fol = [METRIC_LABELS[m] for m in metrics if m in PROMPT_METRICS]

    def name(parts):
        return (
            "n/a" if not parts else parts[0] if len(parts) == 1 else "mean of " + ", ".join(parts)
        )

    return f"image fidelity ({name(fid)})", f"prompt fidelity ({name(fol)})"


def write_scatter(board, path: Path) -> Path:
    points = [
        (r.metrics["fidelity"], r.metrics["prompt"], r.candidate.name, r.pareto) for r in board.rows
    ]
    x_label, y_label = axis_labels(board)
    title = f"{board.run.name} {board.run.token}: {len(points)} candidates (red: Pareto front)"
    spread = [r.metrics["combined_pm"] for r in board.rows if "combined_pm" in r.metrics]
    if spread:
        title += f"; differences under ±{max(spread):.2f} are noise"
    # axes at least 0.2 wide: the scores run 0 to 1, and 0.94 against 0.95 is no gap
    return scatter_plot(points, path, x_label, y_label, title, min_span=0.2)


def write_outputs(store, board):
    """The scatter plot, the picture of quality against compute of the run's lineage and
    report.html of an evaluation (a scoring.Scoreboard), recorded in the store."""
    plot = write_scatter(board, board.folder / "scatter.png")
    compute = write_compute_picture(store, board.run, board.folder / COMPUTE_PICTURE)
    page = write_report(board, board.folder / "report.html", plot, board.prompts, compute)
    store.add_files(board.run.id, "plot", [plot])
    if compute is not None:
        store.add_files(board.run.id, "compute_plot", [compute])
    store.add_files(board.run.id, "report", [page])
    return replace(board, report=page, plot=plot)


# -- HTML ------------------------------------------------------------------------------------
_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}tr.front td{font-weight:600}
.cand{margin:1.5em 0}.cand img{max-width:100%;image-rendering:pixelated}small{color:#666}"""


def write_report(
    board, path: Path, plot: Path, prompts: list[str], compute: Path | None = None
) -> Path:
    """report.html beside the plots and the candidates' contact sheets (relative links)."""
    base = path.parent
    run = board.run
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>oneword {html.escape(run.name)}"
        f"</title><style>{_STYLE}</style>",
        f"<h1>{html.escape(run.name)}: {html.escape(run.token)}</h1>",
        f"<p>model <b>{html.escape(run.model)}</b>, {len(board.rows)} candidates, judge "
        f"<b>{html.escape(board.judge)}</b>, evaluation e{board.evaluation_id}. "
        "Ranked by the combined score (the weighted mean of fidelity and prompt-following, "
        "with its 95% interval over the images; comparable across runs scored alike); "
        "bold rows are on the Pareto front.</p>",
        _table_html(board),
        f"<h2>Fidelity against prompt-following</h2><img src='{_rel(plot, base)}'>",
        _compute_html(compute, base),
        "<h2>Candidates</h2>",
    ]
    for row in board.rows:
        c = row.candidate
        parts.append(
            f"<div class='cand'><h3>#{row.rank} {c.name} <small>seed {c.seed}, "
            f"init {html.escape(_init_label(c))}, lr {c.lr:g}, combined "
            f"{combined_text(row.metrics)}</small></h3>"
            f"<img src='{_rel(row.sheet, base)}' alt='{c.name}'></div>"
        )
    parts.append(
        "<h2>Prompts</h2><ol>" + "".join(f"<li>{html.escape(p)}</li>" for p in prompts) + "</ol>"
    )
    return atomic_write_text(path, "\n".join(parts) + "\n")


def _compute_html(compute: Path | None, base: Path) -> str:
    if compute is None:
        return ""
    return (
        "<h2>Quality against compute</h2><p>The combined score of the best word found so far "
        "against the compute spent on the search (candidate-steps trained plus images drawn "
        "to score): the best of the first k seeds, and each line of generations bred from "
        f"them.</p><img src='{_rel(compute, base)}' alt='quality against compute'>"
    )


def _table_html(board) -> str:
    metrics = metric_columns(board.rows)
    head = (
        ["rank", "candidate", "seed", "init", "lr"]
        + [METRIC_LABELS[m] for m in metrics]
        + ["fidelity", "prompt", "combined", "Pareto"]
    )
    cells = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in board.rows:
        c = row.candidate
        values = [str(row.rank), c.name, str(c.seed), html.escape(_init_label(c)), f"{c.lr:g}"]
        values += [f"{row.metrics[m]:.4f}" for m in metrics]
        values += [
            f"{row.metrics['fidelity']:.4f}",
            f"{row.metrics['prompt']:.4f}",
            combined_text(row.metrics),
            "yes" if row.pareto else "",
        ]
        cls = " class='front'" if row.pareto else ""
        cells.append(f"<tr{cls}>" + "".join(f"<td>{v}</td>" for v in values) + "</tr>")
    if board.reference:
        ref = [f"{board.reference[m]:.4f}" if m in board.reference else "" for m in metrics]
        cells.append(
            "<tr><td></td><td class='l' colspan='4'>training photos among "
            "themselves</td>" + "".join(f"<td>{v}</td>" for v in ref) + "<td colspan='4'></td></tr>"
        )
    return "\n".join(cells) + "</table>"


def _rel(path: Path, base: Path) -> str:
    try:
        return html.escape(str(Path(path).relative_to(base)))
    except ValueError:
        return html.escape(Path(path).as_uri())


# -- oneword show ----------------------------------------------------------------------------
def describe_run(store, run) -> str:
    """Everything the store holds about a run, as text."""
    import json
    import time

    config = run.settings.get("config", {})
    lines = [
        f"run {run.name}: {run.kind} of {run.token or '-'}, {run.status}"
        + (f" ({run.note})" if run.note else ""),
        f"  started  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run.created))}, "
        f"step {run.step}",
        f"  model    {run.model}",
        f"  folder   {run.folder}",
    ]
    if run.status in ("interrupted", "failed") and run.kind in ("learn", "sweep"):
        lines.append(f"  resume   rerun its `oneword {run.kind}` command with --resume")
    if run.parent_run:
        lines.append(f"  part of  r{run.parent_run}")
    children = [r for r in store.runs() if r.parent_run == run.id]
    if children:
        lines.append("  runs     " + ", ".join(f"{r.name} ({r.token})" for r in children))
    lines.append("  photos   " + ", ".join(run.photos))
    lines += _describe_masks(run.settings)
    if config:
        keys = (
            "init_word",
            "vectors",
            "steps",
            "lr",
            "batch_size",
            "grad_accum",
            "mode",
            "crop",
            "resolution",
        )
        lines.append("  settings " + json.dumps({k: config.get(k) for k in keys}))
        recipe = config.get("recipe") or {"name": "plain"}
        extra = {k: v for k, v in recipe.items() if k != "name" and v}
        lines.append(f"  recipe   {recipe['name']}" + (f" {json.dumps(extra)}" if extra else ""))
    if run.kind == "generate":
        lines += _describe_drawing(store, run)
    else:
        lines += _describe_candidates(store, run)
        lines += _describe_cuts(store, run)
    lines += _describe_evaluations(store, run)
    return "\n".join(lines)


def _describe_masks(settings: dict) -> list[str]:
    """Masked training: the floor, the mask folder, and each photo's mask."""
    mask = settings.get("mask")
    if not mask:
        return []
    floor = settings.get("mask_floor")
    where = f", --mask-dir {mask['dir']}" if mask.get("dir") else ""
    if mask.get("auto"):
        where = f", --mask auto: the model's attention to '{mask['auto']['class_word']}'"
    lines = [f"  masks    trained with masks (--mask-floor {floor}{where}):"]
    for item in mask.get("files", []):
        lines.append(f"           {Path(item['photo']).name}: {item['mask']}")
    return lines


def _describe_candidates(store, run) -> list[str]:
    cands = store.candidates(run.id)
    lines = [f"candidates ({len(cands)}):"] if cands else []
    for c in cands:
        files = store.files(run.id, "embedding", c.id)
        main = next((f for f in files if f.name == "learned_embeds.safetensors"), None)
        ratings = store.ratings(c.id)
        extra = [f"rated {', '.join(str(r['rating']) for r in ratings)}"] if ratings else []
        parents = store.parents(c.id)
        if parents:
            extra.append("from " + ", ".join(f"r{p.run_id}/{p.name}" for p in parents))
        lines.append(
            f"  {c.name}  seed {c.seed}  init {_init_label(c)}  lr {c.lr:g}  "
            f"{main or '(no embedding yet)'}" + ("  " + "; ".join(extra) if extra else "")
        )
    return lines


def _describe_cuts(store, run) -> list[str]:
    """The cuts of successive halving: at each rung, who was kept and by what score."""
    cuts = run_cuts(store, run.id)
    names = {c.id: c.name for c in store.candidates(run.id)}
    lines = ["halving (label-free score; kept first):"] if cuts else []
    for rung in sorted({c["rung"] for c in cuts}):
        at = [c for c in cuts if c["rung"] == rung]
        kept = ", ".join(f"{names[c['candidate_id']]} {c['score']:+.2f}" for c in at if c["kept"])
        gone = ", ".join(
            f"{names[c['candidate_id']]} {c['score']:+.2f}" for c in at if not c["kept"]
        )
        evaluation = at[0]["evaluation_id"]
        lines.append(f"  step {at[0]['step']}: kept {kept}; cut {gone} (evaluation e{evaluation})")
    return lines


def _describe_drawing(store, run) -> list[str]:
    """A drawing run: its prompt and settings, the embeddings it drew with, its images."""
    s = run.settings
    prompts = [s["prompt"]] if "prompt" in s else s.get("prompts", [])
    lines = [f"  prompt   {p}" for p in prompts]
    if s.get("negative"):
        lines.append(f"  negative {s['negative']}")
    keys = ("steps", "cfg", "scheduler")
    lines.append("  drawing  " + ", ".join(f"{k} {s.get(k)}" for k in keys if k in s))
    for cand in store.candidates(run.id):
        for path in store.files(run.id, "embedding", cand.id):
            lines.append(f"  word     {path}")
        images = store.images(cand.id)
        lines.append(f"images ({len(images)}):")
        lines += [f"  seed {i['seed']}  {i['path']}" for i in images]
    return lines


def _describe_evaluations(store, run) -> list[str]:
    lines = []
    cands = {c.id: c for c in store.candidates(run.id)}
    for ev in store.evaluations(run.id):
        scores = store.scores(ev["id"])
        ranked = sorted(scores.items(), key=lambda kv: kv[1].get("rank", 1e9))
        lines.append(
            f"evaluation e{ev['id']}: {len(scores)} candidates scored, "
            f"{ev['folder'] / 'report.html' if ev['folder'] else ''}"
        )
        for cid, metrics in ranked[:10]:
            shown = "  ".join(
                f"{METRIC_LABELS.get(k, k)} {v:.4f}"
                for k, v in metrics.items()
                if k in FIDELITY_METRICS + PROMPT_METRICS
            )
            if "combined" in metrics:
                shown = f"combined {combined_text(metrics)}  {shown}"
            front = " *" if metrics.get("pareto") else ""
            lines.append(f"  #{int(metrics.get('rank', 0))} {cands[cid].name}  {shown}{front}")
    return lines
