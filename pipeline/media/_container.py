"""Opening an input container with PyAV, turning its errors into `MediaError`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import av
from av.container import InputContainer

from ._errors import MediaError, MediaSource, source_name

#: What to tell the user when a file is not a video they can give us.
VIDEO_HINT = "give an MP4/MOV/MKV/WebM video"

#: Demuxers that read single still images; a video reader must not accept them.
_IMAGE_FORMATS = {"image2", "image2pipe", "apng", "gif", "webp"}


def is_still_image_format(format_name: str) -> bool:
    """True when `format_name` (PyAV's `container.format.name`) is an image demuxer."""
    return format_name in _IMAGE_FORMATS or format_name.endswith("_pipe")


@contextmanager
def open_input(source: MediaSource) -> Iterator[InputContainer]:
    """Open `source` for reading and close it afterwards.

    Args:
        source: local path or seekable binary file-like object; a file-like object is rewound
            to its start first, so the same object can be opened more than once (one at a time).

    Raises:
        MediaError: the file does not exist, or FFmpeg cannot read it as media.
    """
    name = source_name(source)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise MediaError(f"{name}: no such file; check the path")
        target: object = os.fspath(source)
    else:
        if not (hasattr(source, "read") and hasattr(source, "seek")):
            raise MediaError(
                f"{name}: expected a path or a seekable binary file object, "
                f"got {type(source).__name__}"
            )
        source.seek(0)
        target = source
    try:
        container = av.open(target, mode="r")
    except av.error.EOFError as err:
        raise MediaError(
            f"{name} ends before any media data: it is empty, has zero frames, or was cut "
            f"short; {VIDEO_HINT}"
        ) from err
    except av.error.FFmpegError as err:
        raise MediaError(
            f"{name} could not be read as a media file ({err.strerror or err}): it is not a "
            f"video, or it is corrupt or truncated (an MP4 cut short before its 'moov' index "
            f"was written looks like this); {VIDEO_HINT}"
        ) from err
    try:
        yield container
    finally:
        container.close()
