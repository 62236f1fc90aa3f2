"""Writing files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call write(temp_path) for a temp file beside `path`, then rename it over `path`.

    The temp name is made here rather than by mkstemp, so the file gets the usual permissions
    (mkstemp's 0600 would follow the file through the rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def file_stem(text: str, fallback: str) -> str:
    """A file-name stem for a token or a run: '<my-cat>' -> 'my-cat'; `fallback` if nothing
    is left."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or fallback
