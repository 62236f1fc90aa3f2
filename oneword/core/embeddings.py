"""Learned embedding files that load everywhere: diffusers, AUTOMATIC1111 and ComfyUI.

A learned word is N vectors of the text encoder's width. Each tool expects its own file layout:
  - diffusers: `learned_embeds.safetensors` = {token: [N, d]} (one key per token);
  - AUTOMATIC1111/ComfyUI: `<name>.safetensors` = {"emb_params": [N, d]}, or the classic
    `<name>.pt` = {"string_to_param": {"*": [N, d]}, "name": ..., ...} that A1111 itself writes;
  - SDXL (A1111, ComfyUI, diffusers): `<name>.safetensors` = {"clip_l": [N, 768],
    "clip_g": [N, 1280]}, one row set per text encoder. In memory an SDXL word is one
    [N, 768 + 1280] tensor (the halves side by side) with metadata `clip_l_width`.
Our own metadata (token, init word, model, steps, seed...) rides along as safetensors metadata,
and as an extra "metadata" dict in the .pt, which the other tools ignore.

diffusers' SDXL training example writes one file per text encoder: `learned_embeds.safetensors`
(clip_l) and `learned_embeds_2.safetensors` (clip_g); either file of such a pair loads as the
one SDXL word.

Reading is safe by construction: .pt/.bin files are only ever opened with
`torch.load(weights_only=True)`, a restricted unpickler that builds only tensors, parameters
and plain containers, plus `nn.ParameterDict` (the original Textual Inversion code keeps its
vectors in one); a file that holds any other pickled object is refused, never run. Every
vector loaded is checked to be finite, so a damaged file is refused here, not drawn flat.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import OnewordError
from ..files import atomic_write, file_stem
from . import per_layer
from .embedding_card import read_card

FORMATS = ("diffusers", "a1111", "a1111-pt", "sdxl")
FORMAT_VERSION = "1"
DIFFUSERS_FILE = "learned_embeds.safetensors"
A1111_KEY = "emb_params"
SDXL_KEYS = ("clip_l", "clip_g")
SPLIT_KEY = "clip_l_width"  # metadata: where the clip_g half starts in an SDXL word's vectors
_TORCH_SUFFIXES = (".pt", ".bin", ".pth")
PAIR_SUFFIX = "_2"  # diffusers' SDXL example: <name>.safetensors + <name>_2.safetensors
# Classes a .pt may hold besides tensors and plain containers (none of them runs code).
SAFE_CLASSES = [torch.nn.ParameterDict]


@dataclass
class LearnedEmbedding:
    """N learned vectors for one token, plus string metadata describing how they were made."""

    token: str  # e.g. "<my-cat>"
    vectors: torch.Tensor  # [N, d] float32; a per-layer word: [layers, N, d]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[-2])

    @property
    def layers(self) -> int:
        """1 for a plain word; the UNet's cross-attention layers for a per-layer word."""
        return 1 if self.vectors.dim() == 2 else int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def layout(self) -> tuple[int, ...]:
        """(d,) for one text encoder; (d_l, d_g) for an SDXL word."""
        split = str(self.metadata.get(SPLIT_KEY, ""))
        if split.isdigit() and 0 < int(split) < self.width:
            return (int(split), self.width - int(split))
        return (self.width,)


def layout_metadata(layout: tuple[int, ...]) -> dict[str, str]:
    """The metadata that marks vectors of a two-encoder (SDXL) layout; empty for one encoder."""
    if len(layout) == 1:
        return {}
    return {"family": "sdxl", SPLIT_KEY: str(layout[0])}


# -- writing -------------------------------------------------------------------------------
def save_embedding(emb: LearnedEmbedding, path: str | Path, fmt: str = "diffusers") -> Path:
    """Write `emb` in one format, atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    if path.is_dir():
        raise OnewordError(
            f"{path}: is a folder; give the embedding a file name, e.g. "
            f"{path / (file_stem(emb.token, 'embedding') + '.safetensors')}"
        )
    if fmt not in FORMATS:
        raise OnewordError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if emb.layers > 1:
        if fmt == "diffusers":
            return _save_per_layer(emb, path)
        emb = mean_word(emb)  # A1111's formats hold one set of vectors
    vectors = _plain_vectors(emb.vectors, path)
    metadata = _file_metadata(emb)
    if len(emb.layout) == 2 or fmt == "sdxl":
        return _save_sdxl(emb, vectors, metadata, path, fmt)
    if fmt == "diffusers":
        atomic_write(path, lambda tmp: save_file({emb.token: vectors}, tmp, metadata))
    elif fmt == "a1111":
        metadata = {**metadata, "name": metadata.get("name", path.stem)}
        atomic_write(path, lambda tmp: save_file({A1111_KEY: vectors}, tmp, metadata))
    elif fmt == "a1111-pt":
        data = _a1111_pt_dict(vectors, path.stem, metadata)
        atomic_write(path, lambda tmp: torch.save(data, tmp))
    else:
        raise OnewordError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    return path


def _save_sdxl(
    emb: LearnedEmbedding, vectors: torch.Tensor, metadata: dict[str, str], path: Path, fmt: str
) -> Path:
    """{"clip_l": [N, d_l], "clip_g": [N, d_g]} in a .safetensors file."""
    if len(emb.layout) != 2:
        raise OnewordError(
            f"--format sdxl: {emb.token} has {emb.width}-d vectors of one text "
            "encoder, not an SDXL pair; choose diffusers, a1111 or a1111-pt"
        )
    if fmt == "a1111-pt" or path.suffix.lower() != ".safetensors":
        raise OnewordError(
            f"{path}: SDXL embeddings are written as .safetensors "
            "(clip_l + clip_g); use --format sdxl and a .safetensors name"
        )
    halves = dict(zip(SDXL_KEYS, (h.contiguous() for h in vectors.split(list(emb.layout), dim=1))))
    metadata = {**metadata, "name": metadata.get("name", path.stem)}
    atomic_write(path, lambda tmp: save_file(halves, tmp, metadata))
    return path


def write_embedding_files(emb: LearnedEmbedding, folder: str | Path, name: str) -> dict[str, Path]:
    """All three files in `folder`: learned_embeds.safetensors, <name>.safetensors, <name>.pt;
    for an SDXL word the one file the SDXL tools read, <name>.safetensors (clip_l + clip_g)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if emb.layers > 1:
        return _write_per_layer(emb, folder, name)
    if len(emb.layout) == 2:
        return {"sdxl": save_embedding(emb, folder / f"{name}.safetensors", "sdxl")}
    targets = {
        "diffusers": folder / DIFFUSERS_FILE,
        "a1111": folder / f"{name}.safetensors",
        "a1111-pt": folder / f"{name}.pt",
    }
    if targets["a1111"] == targets["diffusers"]:
        raise OnewordError(
            f"--name {name}: this name clashes with {DIFFUSERS_FILE}; choose another name"
        )
    return {fmt: save_embedding(emb, path, fmt) for fmt, path in targets.items()}


def _write_per_layer(emb: LearnedEmbedding, folder: Path, name: str) -> dict[str, Path]:
    """A per-layer word (oneword.core.per_layer): `<name>.per-layer.safetensors`, first, then
    its mean over layers as a plain word in the three usual files, for the tools that read
    one set of vectors (A1111, ComfyUI, diffusers' loader)."""
    path = _save_per_layer(emb, folder / f"{name}{per_layer.PER_LAYER_SUFFIX}")
    return {"per-layer": path, **write_embedding_files(mean_word(emb), folder, name)}


def _save_per_layer(emb: LearnedEmbedding, path: Path) -> Path:
    if len(emb.layout) != 1:
        raise OnewordError(f"{emb.token}: per-layer words are for one text encoder, not SDXL")
    if path.suffix.lower() != ".safetensors":
        raise OnewordError(
            f"{path}: per-layer words are written as .safetensors; give a .safetensors name, "
            "or --format a1111 for their mean over layers as a plain word"
        )
    metadata = {**_file_metadata(emb), "layers": str(emb.layers)}
    tensors = per_layer.layer_dict(emb.vectors)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata))
    return path


def mean_word(emb: LearnedEmbedding) -> LearnedEmbedding:
    """The plain word [N, d] nearest a per-layer word: its mean over layers."""
    meta = {k: v for k, v in emb.metadata.items() if k != "layers"}
    meta[per_layer.MEAN_KEY] = f"mean of {emb.layers} layers"
    return LearnedEmbedding(emb.token, per_layer.mean_over_layers(emb.vectors), meta)


def _plain_vectors(vectors: torch.Tensor, path: Path) -> torch.Tensor:
    """A detached, contiguous fp32 CPU copy [N, d] (safetensors refuses shared or strided
    memory, and every loader expects fp32 rows)."""
    if vectors.dim() == 1:
        vectors = vectors[None]
    if vectors.dim() != 2 or not vectors.is_floating_point() or vectors.shape[0] < 1:
        raise ValueError(
            f"{path}: embedding vectors must be a float [N, d] tensor, "
            f"not {tuple(vectors.shape)} {vectors.dtype}"
        )
    return vectors.detach().to("cpu", torch.float32).contiguous().clone()


def _file_metadata(emb: LearnedEmbedding) -> dict[str, str]:
    metadata = {str(k): str(v) for k, v in emb.metadata.items()}
    metadata["token"] = emb.token
    metadata.setdefault("oneword_format", FORMAT_VERSION)
    return metadata


def _a1111_pt_dict(vectors: torch.Tensor, name: str, metadata: dict[str, str]) -> dict:
    """The dict AUTOMATIC1111's `Embedding.save` writes (265 is its fixed placeholder id)."""
    steps = metadata.get("steps", "0")
    return {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vectors},
        "name": metadata.get("name", name),
        "step": int(steps) if steps.isdigit() else 0,
        "sd_checkpoint": None,
        "sd_checkpoint_name": metadata.get("model"),
        "metadata": metadata,
    }


# -- reading -------------------------------------------------------------------------------
def load_embeddings(path: str | Path, token: str | None = None) -> list[LearnedEmbedding]:
    """Every learned token in a diffusers, A1111 or ComfyUI embedding file.

    token: the word to use for a file that holds one embedding (A1111 files name theirs after
    the file, so without it we use their stored token/name, then '<file stem>'). For a file
    holding several tokens it picks the one with that name.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise OnewordError(f"{path}: no such embedding file")
    pair = _sdxl_pair(path, token)
    if pair is not None:
        return [pair]
    return _load_file(path, token)


def _load_file(path: Path, token: str | None) -> list[LearnedEmbedding]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        tensors, metadata = _read_safetensors(path)
    elif suffix in _TORCH_SUFFIXES:
        tensors, metadata = _read_torch(path)
    elif suffix == ".png":  # an embedding card (oneword.core.embedding_card)
        tensors, metadata = read_card(path)
    else:
        raise OnewordError(
            f"{path}: not an embedding file; give a .safetensors, .pt, .bin or card .png file"
        )
    if isinstance(tensors, dict) and set(SDXL_KEYS) <= set(tensors):
        return [_sdxl_embedding(path, tensors, metadata, token)]
    layered = per_layer.stacked_layers(tensors)
    if layered is not None:
        return [_per_layer_embedding(path, layered, metadata, token)]
    found = _entries(path, tensors, metadata)
    return _pick(path, found, token, metadata)


def _sdxl_pair(path: Path, token: str | None) -> LearnedEmbedding | None:
    """The SDXL word of a diffusers pair (<name>.safetensors and <name>_2.safetensors, one
    token each, of one text encoder each) if `path` is either file of one; else None."""
    if path.suffix.lower() != ".safetensors":
        return None
    if path.stem.endswith(PAIR_SUFFIX):
        files = (path.with_name(path.stem[: -len(PAIR_SUFFIX)] + path.suffix), path)
    else:
        files = (path, path.with_name(path.stem + PAIR_SUFFIX + path.suffix))
    if not files[0].is_file() or not files[1].is_file():
        return None
    halves = [_load_file(f, token) for f in files]
    if any(len(h) != 1 or len(h[0].layout) != 1 for h in halves):
        return None
    (first,), (second,) = halves
    if first.token != second.token:
        return None
    if first.num_vectors != second.num_vectors:
        raise OnewordError(
            f"{files[1]}: holds {second.num_vectors} vectors of {second.token} but {files[0]} "
            f"holds {first.num_vectors}; this pair of SDXL files does not belong together"
        )
    vectors = torch.cat([first.vectors, second.vectors], dim=1)
    layout = (first.width, second.width)
    meta = {**second.metadata, **first.metadata, **layout_metadata(layout), "token": first.token}
    return LearnedEmbedding(first.token, vectors, meta)


def _read_safetensors(path: Path) -> tuple[dict, dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            return {key: f.get_tensor(key) for key in f.keys()}, metadata
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise OnewordError(
            f"{path}: not a readable .safetensors file ({_first_line(exc)}); "
            "re-download or re-export it"
        ) from exc


def _read_torch(path: Path) -> tuple[object, dict[str, str]]:
    """torch.load with weights_only=True only: plain tensors, dicts, strings and numbers."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it cannot check
            warnings.simplefilter("ignore")
            with torch.serialization.safe_globals(SAFE_CLASSES):
                data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names a blocked class/function ("global"); a pickle it cannot even parse
        # safely is refused as well, since only an unsafe load would read it.
        if "global" not in str(exc).lower() and not _is_pickle_or_torch_zip(path):
            raise _damaged(path) from exc
        raise OnewordError(
            f"{path}: refusing to load: this {path.suffix} holds pickled objects, not plain "
            "tensors; loading it could run code. Use a .safetensors version of the embedding"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, AttributeError) as exc:
        raise _damaged(path) from exc
    metadata = data.get("metadata") if isinstance(data, dict) else None
    return data, _string_dict(metadata)


def _is_pickle_or_torch_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(2)
    return head == b"PK" or head[:1] == b"\x80"  # zip archive, or pickle PROTO opcode


def _damaged(path: Path) -> OnewordError:
    return OnewordError(
        f"{path}: not a readable embedding file (damaged, or not a PyTorch "
        "file); re-download or re-export it"
    )


def _entries(path: Path, data, metadata: dict[str, str]) -> list[tuple[str | None, object]]:
    """(stored token or None, tensor) pairs, whatever the layout."""
    if isinstance(data, torch.Tensor):
        return [(None, data)]
    if not isinstance(data, dict) or not data:
        raise OnewordError(
            f"{path}: holds no embedding tensors; give a diffusers or A1111 embedding file"
        )
    if "string_to_param" in data:  # A1111 .pt
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        if not isinstance(params, dict) or len(params) != 1:
            raise OnewordError(
                f"{path}: an A1111 embedding must hold exactly one vector set in string_to_param"
            )
        stored = metadata.get("token") or _as_str(data.get("name"))
        return [(stored, next(iter(params.values())))]
    if set(data) == {A1111_KEY}:  # A1111/ComfyUI .safetensors
        return [(metadata.get("token") or metadata.get("name"), data[A1111_KEY])]
    # diffusers: one key per token
    return [
        (str(key), value)
        for key, value in data.items()
        if not (key == "metadata" and isinstance(value, dict))
    ]


def _pick(
    path: Path, found: list[tuple[str | None, object]], token: str | None, metadata: dict[str, str]
) -> list[LearnedEmbedding]:
    """Name the entries; a file with several tokens shares its metadata, each with its token."""
    if len(found) == 1:
        stored, tensor = found[0]
        name = token or stored or f"<{path.stem}>"
        return [_make(path, name, tensor, dict(metadata))]
    if token is not None:
        chosen = [(t, v) for t, v in found if t == token]
        if not chosen:
            names = ", ".join(str(t) for t, _ in found)
            raise OnewordError(f"{path}: holds tokens {names} but not {token}; pass one of those")
        found = chosen
    return [_make(path, str(t), v, {**metadata, "token": str(t)}) for t, v in found]


def _sdxl_embedding(
    path: Path, data: dict, metadata: dict[str, str], token: str | None
) -> LearnedEmbedding:
    """One SDXL word: its clip_l and clip_g rows side by side."""
    name = token or metadata.get("token") or metadata.get("name") or f"<{path.stem}>"
    halves = [_make(path, f"{name} ({key})", data[key], {}) for key in SDXL_KEYS]
    if halves[0].num_vectors != halves[1].num_vectors:
        raise OnewordError(
            f"{path}: clip_l has {halves[0].num_vectors} vectors but clip_g has "
            f"{halves[1].num_vectors}; this SDXL embedding is damaged"
        )
    vectors = torch.cat([h.vectors for h in halves], dim=1)
    meta = {**metadata, **layout_metadata((halves[0].width, halves[1].width)), "token": name}
    return LearnedEmbedding(token=name, vectors=vectors, metadata=meta)


def _per_layer_embedding(
    path: Path, layered: torch.Tensor, metadata: dict[str, str], token: str | None
) -> LearnedEmbedding:
    """One per-layer word [layers, N, d], each layer's vectors checked like a plain word's."""
    stem = path.name.removesuffix(per_layer.PER_LAYER_SUFFIX).removesuffix(".safetensors")
    name = token or metadata.get("token") or f"<{stem}>"
    parts = [_make(path, f"{name} (layer {i})", part, {}).vectors for i, part in enumerate(layered)]
    return LearnedEmbedding(name, torch.stack(parts), {**metadata, "token": name})


def _make(path: Path, token: str, tensor, metadata: dict[str, str]) -> LearnedEmbedding:
    """A LearnedEmbedding with fp32 CPU [N, d] vectors, checked."""
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise OnewordError(
            f"{path}: the entry for {token} is not a float tensor; this is not an embedding file"
        )
    vectors = tensor.detach().to("cpu", torch.float32)
    if vectors.dim() == 1:
        vectors = vectors[None]
    if vectors.dim() != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
        raise OnewordError(
            f"{path}: the entry for {token} has shape {tuple(tensor.shape)}, "
            "not [vectors, width]; this is not an embedding file"
        )
    bad = (~torch.isfinite(vectors)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise OnewordError(
            f"{path}: the vectors of {token} hold NaN or infinite values (vector "
            f"{', '.join(map(str, bad[:5]))}); this embedding is damaged: re-train or "
            "re-export it"
        )
    return LearnedEmbedding(token=token, vectors=vectors.contiguous(), metadata=metadata)


def _string_dict(value) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _as_str(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


# -- checks --------------------------------------------------------------------------------
def check_width(
    emb: LearnedEmbedding, width: int | tuple[int, ...], model_name: str, path: str | Path
) -> None:
    """Refuse an embedding made for another model family (its vectors would be meaningless).

    width: the model's `embedding_layout` ((d,) or SDXL's (d_l, d_g)), or one width."""
    layout = (width,) if isinstance(width, int) else tuple(width)
    own = emb.layout
    if own != layout:
        raise OnewordError(
            f"{path}: {emb.token} has {_widths(own)} vectors, made for {describe_layout(own)}, "
            f"but model {model_name} has {_widths(layout)} token embeddings "
            f"({describe_layout(layout)}); use an embedding trained for this model family "
            "or choose a matching --model"
        )


def _widths(layout: tuple[int, ...]) -> str:
    return " + ".join(f"{w}-d" for w in layout)


# -- model families: what an embedding width or layout belongs to --------------------------
def model_family(width: int) -> str:
    """The model family an embedding width belongs to."""
    return {768: "sd1", 1024: "sd2", 1280: "sdxl-g"}.get(width, f"custom-{width}")


FAMILY_NAMES = {
    "sd1": "Stable Diffusion 1.x (768-d)",
    "sd2": "Stable Diffusion 2.x (1024-d)",
    "sdxl-g": "SDXL OpenCLIP bigG (1280-d)",
}


def describe_family(width: int) -> str:
    fam = model_family(width)
    return FAMILY_NAMES.get(fam, f"a {width}-d text encoder")


def describe_layout(layout: tuple[int, ...]) -> str:
    """The model family of an embedding layout: (768,) one encoder, (768, 1280) SDXL's pair."""
    if len(layout) == 1:
        return describe_family(layout[0])
    name = "SDXL" if tuple(layout) == (768, 1280) else "an SDXL-architecture model"
    return f"{name} (clip_l {layout[0]} + clip_g {layout[1]})"
