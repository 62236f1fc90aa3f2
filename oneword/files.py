"""Writing files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import unicodedata
import uuid
from pathlib import Path
from typing import Callable

from .errors import OnewordError, WriteFailed

_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
# What the writers of torch and safetensors say when the disk fills under them.
_WRITER_FAILURES = ("unexpected pos", "write", "No space left")


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call write(temp_path) for a temp file beside `path`, then rename it over `path`.

    The temp file is created here, by a plain open, and keeps that mode after `write` (some
    writers, safetensors among them, make their files 0600). A write that fails (a full disk)
    leaves `path` as it was and raises WriteFailed naming it."""
    path = Path(path)
    if path.is_dir():
        raise OnewordError(f"{path}: is a folder; give the name of a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x"):
            mode = os.stat(tmp).st_mode & 0o7777
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_failed(path, exc) from exc
    except RuntimeError as exc:
        Path(tmp).unlink(missing_ok=True)
        if not any(text in str(exc) for text in _WRITER_FAILURES):
            raise
        raise write_failed(path, exc) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_failed(path: Path, exc: BaseException) -> WriteFailed:
    """A one-line WriteFailed for `path`: the reason, and the free space left beside it."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        reason = "no space left on the disk"
    else:
        lines = str(exc).strip().splitlines()
        reason = (lines[0] if lines else type(exc).__name__)[:160]
    try:
        free = shutil.disk_usage(path.parent).free
        room = f"{free / 2**20:.0f} MiB free there"
    except OSError:
        room = "free space unknown"
    return WriteFailed(f"{path}: could not write it ({reason}; {room}); make room on that disk")


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def file_stem(text: str, fallback: str) -> str:
    """A file-name stem for a token or a run: '<my-cat>' -> 'my-cat', '<うちのねこ>' ->
    'うちのねこ' (letters and digits of any script are kept); a text with none of them (only
    emoji, say) -> `fallback` and a short hash of the text, so different tokens never share
    a folder."""
    text = unicodedata.normalize("NFC", text)
    stem = re.sub(r"[^\w.-]+", "-", text).strip("-.")[:80]
    if stem:
        return stem
    if not text:
        return fallback
    return f"{fallback}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def output_folder(path: str | Path, option: str) -> Path:
    """`path` as a folder to write into: refused, naming `option`, if it is an existing file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OnewordError(
            f"{option} {path}: is a file, not a folder; give a folder name "
            f"(e.g. {path.with_suffix('')}-run)"
        )
    return path
