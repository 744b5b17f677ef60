"""Output files appear only when complete: write to a hidden temporary beside them, then rename."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

#: Output container formats by file suffix (FFmpeg muxer names).
_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def muxer_for(dest: Path) -> str:
    """FFmpeg muxer name for `dest`'s suffix; `ValueError` for an unsupported one."""
    try:
        return _MUXERS[dest.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"{dest}: unsupported output suffix {dest.suffix!r}; use one of {', '.join(_MUXERS)}"
        ) from None


def temp_path_for(dest: Path) -> Path:
    """A unique hidden path in `dest`'s folder (same file system, so the rename is atomic)."""
    return dest.with_name(f".{dest.stem}.partial-{uuid.uuid4().hex[:12]}{dest.suffix}")


def commit(temp: Path, dest: Path) -> None:
    """Atomically move the finished `temp` to `dest` (replacing an older `dest`)."""
    os.replace(temp, dest)


def discard(temp: Path) -> None:
    """Remove an unfinished temporary file, if it exists."""
    temp.unlink(missing_ok=True)
