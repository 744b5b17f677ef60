"""The ffmpeg binary: where it is, and running a command built with ffmpeg-python."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence

import ffmpeg

from ._errors import MediaError

logger = logging.getLogger(__name__)

#: Lines of ffmpeg's stderr quoted in a `MediaError`.
STDERR_TAIL_LINES = 12


@functools.cache
def _default_binary() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg  # noqa: PLC0415 - only where no ffmpeg is on PATH

    return imageio_ffmpeg.get_ffmpeg_exe()


def resolve_ffmpeg(binary: str | None = None) -> str:
    """The ffmpeg executable: `binary` if given, else the one on PATH, else imageio-ffmpeg's.

    Args:
        binary: a path or a command name on PATH (``VideoConfig.ffmpeg``), or None.

    Raises:
        ValueError: `binary` is given but is not an executable.
    """
    if binary is None:
        return _default_binary()
    found = shutil.which(binary)
    if found is None:
        if os.path.isfile(binary) and os.access(binary, os.X_OK):
            return binary
        raise ValueError(f"ffmpeg = {binary!r} is not an executable file or a command on PATH.")
    return found


def run_ffmpeg(
    stream: ffmpeg.nodes.OutputStream,
    *,
    binary: str | None,
    what: str,
    global_args: Sequence[str] = (),
) -> None:
    """Run an ffmpeg-python command as an argument list (no shell), overwriting its outputs.

    Args:
        stream: the output node built with ffmpeg-python.
        binary: ffmpeg executable, resolved with `resolve_ffmpeg`.
        what: what the command does, for the error message (e.g. "muxing audio into out.mp4").
        global_args: more global options, e.g. ``("-copyts",)``.

    Raises:
        MediaError: ffmpeg failed; the message ends with the last lines of its stderr.
    """
    args = (
        stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error", *global_args)
        .overwrite_output()
        .compile(cmd=resolve_ffmpeg(binary))
    )
    logger.debug("running %s", args)
    try:
        process = subprocess.run(args, capture_output=True, check=False)
    except OSError as err:
        raise MediaError(f"{what}: cannot run ffmpeg {args[0]!r} ({err})") from err
    if process.returncode != 0:
        lines = process.stderr.decode("utf-8", errors="replace").strip().splitlines()
        tail = "\n".join(lines[-STDERR_TAIL_LINES:]) or "(no output)"
        raise MediaError(f"{what}: ffmpeg exited with status {process.returncode}:\n{tail}")
