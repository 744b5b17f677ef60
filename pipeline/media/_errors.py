"""The one error type of the media layer, and how sources are named in messages."""

from __future__ import annotations

import os
from typing import BinaryIO, Union

#: A local path or a seekable binary file-like object (e.g. an open file or an S3 stream).
MediaSource = Union[str, "os.PathLike[str]", BinaryIO]


class MediaError(ValueError):
    """A media input or output the user can fix: unreadable, corrupt, wrong kind or wrong shape.

    The message names the source (path or file name), the stream when relevant, what was found
    and what the user can do. It is a `ValueError`: bad input, not a worker fault.
    """


def source_name(source: MediaSource) -> str:
    """A short, human-readable name for `source` to put in messages (path, or the file's name)."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)
    if isinstance(name, (str, os.PathLike)):
        return os.fspath(name)
    return f"<{type(source).__name__} stream>"
