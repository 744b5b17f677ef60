"""Encoding a row's output frames into segments, each committed with the state that made it."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..animate import HostCopy, StateSnapshot, StreamState
from ..config import VideoConfig
from ..ledger import Ledger
from ..media import VideoEncoder
from ._task import RowTask


def segment_frames(rate: Fraction, seconds: float, chunk: int = 4) -> int:
    """Frames per segment: about ``seconds`` long, a multiple of the animator's 4-frame chunk
    (so a segment boundary always falls between two denoising calls)."""
    return max(chunk, round(float(rate) * seconds / chunk) * chunk)


class SegmentSink:
    """Encodes output frames into segment files on its own thread, committing each full segment
    together with the stream state that produced its last frame.

    ``put`` hands over a call's frames (still on the GPU) and, at a segment boundary, a snapshot
    of the stream's state; the copies to the host, the H.264 encoding and the uploads happen on
    the sink's thread, so the row hands in its next chunk at once (it never waits for the GPU
    here). At most ``depth`` calls' frames wait in the queue (flat memory). A row's first segment
    is ``first_length`` frames (a short one puts the row's first frames, and its first resume
    point, on storage early); the others are ``length``. ``compose``, when given, turns each
    call's squares into the output pictures (paste-back onto the canvas) on the same thread.
    """

    depth = 8

    def __init__(
        self,
        ledger: Ledger,
        task: RowTask,
        scratch: Path,
        video: VideoConfig,
        rate: Fraction,
        size: int,
        *,
        first_index: int,
        first_frame: int,
        worker: str,
        compose: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.ledger, self.task, self.scratch, self.video = ledger, task, scratch, video
        self.rate, self.size = rate, size
        # output frames: the animated squares, or composed onto a canvas (paste-back)
        self.compose = compose
        self.height, self.width = getattr(compose, "shape", (size, size))
        self.length = segment_frames(rate, video.segment_seconds)
        first_seconds = video.first_segment_seconds
        self.first_length = (
            self.length if first_seconds is None else segment_frames(rate, first_seconds)
        )
        self.index, self.start = first_index, first_frame
        self.worker = worker
        self.encoder: VideoEncoder | None = None
        self.count = 0  # frames handed over for the current segment
        self.encoded = 0  # frames encoded into the current segment
        self.paths: list[str] = []
        self.error: BaseException | None = None
        self.first_frame_at: float | None = None  # Unix time the first frames were handed over
        self.first_commit_at: float | None = None  # Unix time this sink committed a segment first
        self.compose_seconds = 0.0  # spent composing frames onto the canvas (paste-back)
        self.encode_seconds = 0.0  # spent encoding them
        self._handed = first_index  # segments handed over (the index of the one being filled)
        self._queue: queue.Queue = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(
            target=self._run, name=f"encode-{task.row_id[:20]}", daemon=True
        )
        self._thread.start()

    def _current_length(self) -> int:
        return self.first_length if self._handed == 0 else self.length

    def put(self, frames: torch.Tensor, stream: StreamState) -> None:
        self._raise()
        if not frames.shape[0]:
            return
        if self.first_frame_at is None:
            self.first_frame_at = time.time()
        self.count += int(frames.shape[0])
        state = None
        if self.count >= self._current_length() or stream.done:
            state = stream.snapshot()  # the stream as of this segment's last frame
            self.count = 0
            self._handed += 1
        # queued now, right behind the decode that made them; the encoder thread waits for it
        self._queue.put((HostCopy(frames), state))

    def close(self, stream: StreamState) -> None:
        """Commit the last (partial) segment, wait for the thread, and raise what it hit."""
        if self.count and self.error is None:
            self._queue.put((None, stream.snapshot()))
            self.count = 0
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.error is not None:
                continue  # drain: the row thread raises the first error
            frames, state = item
            try:
                if frames is not None:
                    pictures = frames.result().numpy()
                    started = time.perf_counter()
                    if self.compose is not None:
                        pictures = self.compose(pictures)
                    composed = time.perf_counter()
                    self._encode(pictures)
                    self.compose_seconds += composed - started
                    self.encode_seconds += time.perf_counter() - composed
                if state is not None and self.encoder is not None:
                    self._commit(state)
            except BaseException as err:  # noqa: BLE001 - re-raised in the row's thread
                self.error = err

    def _encode(self, frames: np.ndarray) -> None:
        if self.encoder is None:
            self.encoder = VideoEncoder(
                self.scratch / f"segment-{self.index:06d}.mp4",
                frame_rate=self.rate,
                width=self.width,
                height=self.height,
                codec=self.video.codec,
                crf=self.video.crf,
                preset=self.video.preset,
                pix_fmt=self.video.pix_fmt,
                threads=self.video.encoder_threads,
            )
        self.encoder.add_frames(frames)
        self.encoded += frames.shape[0]

    def _commit(self, state: StateSnapshot) -> None:
        assert self.encoder is not None
        self.encoder.close()
        path = str(self.encoder.dest_path)
        end = self.start + self.encoded
        self.ledger.commit_segment(
            self.task.row_key,
            self.index,
            self.start,
            end,
            path,
            state.to_bytes(),
            extra={"row_id": self.task.row_id, "worker": self.worker, "pid": os.getpid()},
        )
        if self.first_commit_at is None:
            self.first_commit_at = time.time()
        self.paths.append(path)
        self.index, self.start, self.encoded, self.encoder = self.index + 1, end, 0, None
