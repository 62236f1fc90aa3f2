"""Embedding cards: a PNG that carries a learned word inside it, as AUTOMATIC1111 reads it.

A1111 looks for a text chunk `sd-ti-embedding` in any PNG of its embeddings folder. The chunk
is base64 of a JSON text of the same dict its `.pt` files hold (`string_to_param` etc.), where
every tensor is written as {"TORCHTENSOR": nested lists of numbers}. An SDXL word is the dict
{"clip_l": ..., "clip_g": ...}, as in its `.safetensors` files. Our own metadata rides in a
second chunk, `oneword-embedding`, that other tools ignore.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

import torch
from PIL import Image

from ..errors import OnewordError

CARD_CHUNK = "sd-ti-embedding"
METADATA_CHUNK = "oneword-embedding"
TENSOR_KEY = "TORCHTENSOR"
A1111_PLACEHOLDER_ID = 265  # the id A1111 writes in string_to_token


def card_chunks(
    vectors: torch.Tensor, layout: tuple[int, ...], name: str, metadata: dict[str, str]
) -> dict[str, str]:
    """The text chunks of a card: the embedding as A1111 encodes it, and our metadata."""
    vectors = vectors.detach().to("cpu", torch.float32)
    if len(layout) == 2:
        clip_l, clip_g = vectors.split(list(layout), dim=1)
        data = {"clip_l": clip_l, "clip_g": clip_g}  # A1111 reads every entry as a tensor
    else:
        steps = str(metadata.get("steps", "0"))
        data = {
            "string_to_token": {"*": A1111_PLACEHOLDER_ID},
            "string_to_param": {"*": vectors},
            "name": name,
            "step": int(steps) if steps.isdigit() else 0,
            "sd_checkpoint": None,
            "sd_checkpoint_name": metadata.get("model"),
        }
    text = json.dumps(data, default=_tensor_to_json)
    return {
        CARD_CHUNK: base64.b64encode(text.encode()).decode("ascii"),
        METADATA_CHUNK: json.dumps(metadata, sort_keys=True),
    }


def _tensor_to_json(value):
    if isinstance(value, torch.Tensor):
        return {TENSOR_KEY: value.tolist()}
    raise TypeError(f"cannot write {type(value).__name__} into an embedding card")


def read_card(path: Path) -> tuple[dict, dict[str, str]]:
    """The embedding dict a card PNG carries (as a `.pt` would hold it) and our metadata."""
    try:
        with Image.open(path) as image:
            chunks = dict(getattr(image, "text", {}))
    except (OSError, ValueError) as exc:
        raise OnewordError(f"{path}: not a readable PNG ({exc}); re-download it") from exc
    if CARD_CHUNK not in chunks:
        raise OnewordError(
            f"{path}: this PNG carries no embedding (no {CARD_CHUNK} chunk); give an "
            "embedding card (oneword card) or an embedding file"
        )
    try:
        text = base64.b64decode(chunks[CARD_CHUNK], validate=True)
        data = json.loads(text, object_hook=_json_to_tensor)
    except RecursionError:  # JSON nested thousands deep: no embedding is
        raise OnewordError(
            f"{path}: its {CARD_CHUNK} chunk is damaged (nested too deep to be an embedding); "
            "re-export the card"
        ) from None
    except (binascii.Error, ValueError, TypeError) as exc:
        raise OnewordError(
            f"{path}: its {CARD_CHUNK} chunk is damaged ({str(exc)[:120]}); re-export the card"
        ) from exc
    if not isinstance(data, dict):
        raise OnewordError(f"{path}: its {CARD_CHUNK} chunk holds no embedding dict")
    try:
        metadata = json.loads(chunks.get(METADATA_CHUNK, "{}"))
    except (ValueError, RecursionError):
        metadata = {}
    metadata = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    return data, metadata


def _json_to_tensor(obj: dict):
    if TENSOR_KEY in obj:
        return torch.tensor(obj[TENSOR_KEY], dtype=torch.float32)
    return obj
