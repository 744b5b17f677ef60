"""Cache of a driving video's conditioning (head pose + motion tokens per frame), by content.

Hundreds of rows often share one driving clip. The animator needs only each frame's
:class:`~pipeline.animate.Observation` from it, so the first row to render a clip writes them to
``<output_root>/_cache/conditioning/<key>.bin`` and every later row (in this job or another one
with the same output root) reads them instead of decoding the video and running the keypoint
extractor and the motion encoder again.

``<key>`` hashes the video's content fingerprint and everything the observations depend on (model
weights, dtype, resolution, fit). The file is a small JSON header and then one float32 record per
frame, so a row reads only the frames it needs (ranged reads on S3), in constant memory.
"""

from __future__ import annotations

import json
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .animate import HostCopy, Observation
from .models import HeadPose

MAGIC = b"PRCOND01"
_HEADER = struct.Struct("<8sI")  # magic, JSON length


@dataclass(frozen=True)
class Layout:
    """Sizes of one frame's record: K keypoints, T motion tokens of C channels."""

    keypoints: int
    tokens: int
    channels: int

    @property
    def width(self) -> int:  # canonical K*3, pitch, yaw, roll, translation 3, scale 1, motion T*C
        return self.keypoints * 3 + 3 + 3 + 1 + self.tokens * self.channels


def _flatten(observation: Observation) -> torch.Tensor:
    """One float32 record per frame, on the observation's device."""
    pose = observation.pose
    parts = [
        pose.canonical.flatten(1),
        pose.pitch.reshape(-1, 1),
        pose.yaw.reshape(-1, 1),
        pose.roll.reshape(-1, 1),
        pose.translation,
        pose.scale.reshape(-1, 1),
        observation.motion.flatten(1),
    ]
    return torch.cat([p.float() for p in parts], dim=1)


def _unflatten(records: np.ndarray, layout: Layout) -> Observation:
    # a copy: records may view the cache file's read-only bytes, and a tensor over a read-only
    # array is undefined behaviour to PyTorch (it warns); a chunk's records are a few KB
    data = torch.from_numpy(np.array(records, dtype=np.float32))
    k3 = layout.keypoints * 3
    pose = HeadPose(
        canonical=data[:, :k3].reshape(-1, layout.keypoints, 3),
        pitch=data[:, k3],
        yaw=data[:, k3 + 1],
        roll=data[:, k3 + 2],
        translation=data[:, k3 + 3 : k3 + 6],
        scale=data[:, k3 + 6 : k3 + 7],
    )
    motion = data[:, k3 + 7 :].reshape(-1, layout.tokens, layout.channels)
    return Observation(pose, motion)


class ConditioningWriter:
    """Append observations to a local file as they are computed; :meth:`close` adds the header.

    Records go to disk a few chunks late: each chunk's copy to the host is queued at once and
    written once the GPU has long finished it, so the row's thread never waits for a denoising
    call (it would miss the next batched call). Memory stays flat however long the video.
    """

    lag = 2  # chunks whose copy to the host may still be in flight

    def __init__(self, path: str | Path, meta: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.meta = meta or {}
        self.frames = 0
        self.layout: Layout | None = None
        self._pending: deque[HostCopy] = deque()
        self._body = open(self.path.with_suffix(".records"), "wb")  # noqa: SIM115 - closed in close()

    def add(self, observation: Observation) -> None:
        if self.layout is None:
            canonical, motion = observation.pose.canonical, observation.motion
            self.layout = Layout(canonical.shape[1], motion.shape[1], motion.shape[2])
        self._pending.append(HostCopy(_flatten(observation)))
        while len(self._pending) > self.lag:
            self._write(self._pending.popleft())

    def _write(self, records: HostCopy) -> None:
        values = records.result().numpy()
        self._body.write(values.astype("<f4").tobytes())
        self.frames += values.shape[0]

    def close(self) -> Path:
        """Write the final file (header + records) and return its path."""
        while self._pending:
            self._write(self._pending.popleft())
        self._body.close()
        body = self.path.with_suffix(".records")
        header = json.dumps(
            {"frames": self.frames, "layout": vars(self.layout or Layout(0, 0, 0)), **self.meta}
        )
        encoded = header.encode()
        with open(self.path, "wb") as out, open(body, "rb") as records:
            out.write(_HEADER.pack(MAGIC, len(encoded)) + encoded)
            while block := records.read(1 << 20):
                out.write(block)
        body.unlink()
        return self.path

    def discard(self) -> None:
        self._pending.clear()
        self._body.close()
        self.path.with_suffix(".records").unlink(missing_ok=True)


class ConditioningReader:
    """Read the observations of frames ``[start, stop)`` from a cache file, chunk by chunk."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        magic, length = _HEADER.unpack(source.read(_HEADER.size))
        if magic != MAGIC:
            raise ValueError("not a portrait-render conditioning cache (bad magic)")
        self.header = json.loads(source.read(length))
        self.layout = Layout(**self.header["layout"])
        self.frames = int(self.header["frames"])
        self._data_start = _HEADER.size + length

    def chunks(self, start: int, stop: int, size: int = 4) -> Iterator[Observation]:
        width = self.layout.width * 4
        for first in range(start, min(stop, self.frames), size):
            count = min(size, stop - first, self.frames - first)
            self.source.seek(self._data_start + first * width)
            data = self.source.read(count * width)
            records = np.frombuffer(data, dtype="<f4").reshape(count, self.layout.width)
            yield _unflatten(records, self.layout)
