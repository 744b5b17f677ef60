"""Rendering one manifest row: driving video in, committed output video out.

:class:`RowRenderer` holds no model state of its own: it streams the driving video through a
:class:`~pipeline.animate.StreamingAnimator` four frames at a time, encodes frames as they come,
muxes the audio and commits the result through :class:`~pipeline.storage.Storage`. Memory stays
flat however long the video. :class:`RenderWorker` is the Ray actor around it: the model is loaded
once in ``__init__`` and every ``render`` call handles one row.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .animate import (
    HostCopy,
    StepBatcher,
    StreamingAnimator,
    StreamState,
    deserialize_state,
    serialize_state,
)
from .conditioning_cache import ConditioningReader, ConditioningWriter
from .config import ModelConfig, StorageConfig, VideoConfig
from .ledger import Ledger, RowLedger
from .media import MediaError, VideoEncoder, VideoReader, concat_segments, load_image, mux_audio
from .progress import RowProgress, RowStarted
from .storage import Storage, StorageError, basename, is_s3

logger = logging.getLogger(__name__)

EventSink = Callable[[Any], None]


@dataclass(frozen=True)
class RowTask:
    """What the driver sends a worker for one row (plain data: cheap to pickle).

    Attributes:
        row_id: the manifest row's stable id.
        portrait / driving_video / audio: input URIs (local paths or ``s3://``).
        job_uri: the job's output folder (``<output_root>/<job>``).
        row_key: ``<stem>-<hash>`` naming the row's outputs (see :mod:`pipeline.ledger`).
        max_frames: cap on frames (None: the whole driving video).
        seed: noise seed of the row.
        meta: recorded in the row's commit marker (fingerprint, config hash, model revision).
        attempt: 1 for the first try, 2 for the first retry, ...
    """

    row_id: str
    portrait: str
    driving_video: str
    audio: str | None
    job_uri: str
    row_key: str
    max_frames: int | None
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    isolate: bool = False  # render without other rows on the same worker (a retry after a crash)
    conditioning_uri: str | None = None  # cache of the driving video's pose/motion (shared by rows)


@dataclass(frozen=True)
class RowOutcome:
    """The verdict on one row.

    ``status`` is "done" or "failed"; ``retryable`` marks failures worth another attempt
    (transient storage errors); ``error`` is one line a user can act on, ``detail`` the traceback
    of an unexpected failure.
    """

    row_id: str
    status: str
    frames: int = 0
    seconds: float = 0.0
    output: str | None = None
    error: str | None = None
    retryable: bool = False
    detail: str | None = None
    has_audio: bool = False
    worker: str = ""
    started_at: float = 0.0  # wall clock (Unix time) when the worker began the row; 0 if unknown

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class RowError(Exception):
    """A problem with the row's input; retrying cannot help. The message says what to fix."""


def square_image(image: np.ndarray, fit: str) -> np.ndarray:
    """Make a portrait square at its own resolution: centre "crop", black "pad", or "stretch"."""
    height, width = image.shape[:2]
    if height == width:
        return image
    if fit == "crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return image[top : top + side, left : left + side]
    side = max(height, width)
    if fit == "pad":
        canvas = np.zeros((side, side, 3), dtype=image.dtype)
        top, left = (side - height) // 2, (side - width) // 2
        canvas[top : top + height, left : left + width] = image
        return canvas
    from PIL import Image  # noqa: PLC0415

    return np.asarray(Image.fromarray(image).resize((side, side), resample=Image.LANCZOS))


class RowRenderer:
    """Render rows with one animator; I/O goes through ``storage``, progress to ``events``.

    Args:
        animator: a ready :class:`StreamingAnimator`.
        storage: where inputs are read and outputs committed.
        video: encoding and audio settings.
        scratch_dir: local folder for intermediate files (one sub-folder per row, removed after).
        events: called with progress events (:class:`RowStarted`, :class:`RowProgress`).
        worker_name: shown in progress events.
        batcher: shared by the rows a worker renders at once (one batched denoising call for
            all of them); a private one when not given.
    """

    progress_interval_s = 0.5

    def __init__(
        self,
        animator: StreamingAnimator,
        storage: Storage,
        video: VideoConfig,
        scratch_dir: str | os.PathLike,
        events: EventSink | None = None,
        worker_name: str = "",
        batcher: StepBatcher | None = None,
    ) -> None:
        self.animator = animator
        self.storage = storage
        self.video = video
        self.scratch_dir = Path(scratch_dir)
        self.events = events or (lambda event: None)
        self.worker_name = worker_name
        self.batcher = batcher or StepBatcher(animator)

    def render(self, task: RowTask) -> RowOutcome:
        """Render ``task``; never raises for row-level problems (they become a failed outcome)."""
        started = time.monotonic()
        started_at = time.time()
        scratch = Path(tempfile.mkdtemp(prefix=f"{task.row_id[:40]}-", dir=self.scratch_dir))
        try:
            frames, has_audio, output = self._render(task, scratch, started)
            return RowOutcome(
                task.row_id,
                "done",
                frames=frames,
                seconds=time.monotonic() - started,
                output=output,
                has_audio=has_audio,
                worker=self.worker_name,
                started_at=started_at,
            )
        except (RowError, MediaError) as err:
            return self._failed(task, started, self._scratch_hint(err))
        except StorageError as err:
            return self._failed(task, started, str(err), retryable=True)
        except torch.cuda.OutOfMemoryError:
            return self._failed(
                task,
                started,
                "GPU out of memory; lower model.streams_per_worker (or model.resolution), or use a GPU "
                "with more memory",
            )
        except Exception as err:  # noqa: BLE001 - any other failure of this row must not stop the worker
            logger.exception("row %s failed unexpectedly", task.row_id)
            return self._failed(
                task,
                started,
                f"internal error: {type(err).__name__}: {err}",
                detail=traceback.format_exc(),
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _scratch_hint(self, err: Exception) -> str:
        """The error's text, plus what to do when it was the scratch disk filling up (the encoder
        and ffmpeg write there, and report it in their own words)."""
        cause: BaseException | None = err
        while cause is not None and not (
            isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)
        ):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            return str(err)
        return (
            f"{err}; the workers' scratch disk ({self.scratch_dir}) is full: free space there or "
            "point TMPDIR at a larger disk (it holds the current segment of each active row)"
        )

    def _failed(self, task: RowTask, started: float, error: str, **kwargs: Any) -> RowOutcome:
        return RowOutcome(
            task.row_id,
            "failed",
            seconds=time.monotonic() - started,
            error=error,
            worker=self.worker_name,
            **kwargs,
        )

    def _render(self, task: RowTask, scratch: Path, started: float) -> tuple[int, bool, str]:
        """Render (or resume) the row segment by segment, then concatenate, mux and commit."""
        ledger = Ledger(self.storage, task.job_uri)
        record = ledger.row(task.row_key)
        if record.commit is not None:  # another attempt finished it already
            if not ledger.verify_commit(record.commit):
                ledger.repair_public(record.commit, str(scratch / "repair.mp4"))
            ledger.tidy(task.row_key, record.commit)
            return (
                int(record.commit.get("frames", 0)),
                bool(record.commit.get("has_audio")),
                record.commit["video"],
            )
        animator, video = self.animator, self.video
        size = animator.resolution
        with ExitStack() as stack:
            driving = stack.enter_context(self._open(task.driving_video))
            probe_reader = VideoReader(
                driving, size=size, fit=video.fit, max_frames=task.max_frames
            )
            total, rate = len(probe_reader), probe_reader.frame_rate
            if total == 0:
                raise RowError(
                    f"{task.driving_video}: no frames to render (max_frames={task.max_frames})"
                )
            self.events(
                RowStarted(task.row_id, total, worker=self.worker_name, attempt=task.attempt)
            )
            portrait = self._load_portrait(task.portrait)
            stream = self._start_stream(task, portrait, ledger, record)
            if record.segments:
                logger.info(
                    "row %s: resuming at frame %d from segment %d",
                    task.row_id,
                    stream.frames_out,
                    len(record.segments),
                )
            reader = VideoReader(
                driving,
                size=size,
                fit=video.fit,
                max_frames=task.max_frames,
                start_frame=stream.frames_in,
            )
            sink = _SegmentSink(
                ledger,
                task,
                scratch,
                video,
                rate,
                size,
                segment_frames(rate, video.segment_seconds),
                first_index=len(record.segments),
                first_frame=stream.frames_out,
                worker=self.worker_name,
            )
            cached = self._cached_conditioning(task, total, stack)
            writer = None
            if cached is not None:
                source = cached.chunks(stream.frames_in, total)
            else:
                source = (chunk.frames for chunk in reader.chunks(4))
                if task.conditioning_uri and stream.frames_in == 0 and not stream.ended:
                    writer = ConditioningWriter(
                        scratch / "conditioning.bin", {"video": task.driving_video}
                    )
            self.batcher.register(stream)
            try:
                last_report = time.monotonic()
                for item in _prefetch(source) if not stream.ended else iter(()):
                    sink.put(self.batcher.advance(stream, item), stream)
                    if writer is not None and stream.last_observation is not None:
                        writer.add(stream.last_observation)
                    if time.monotonic() - last_report >= self.progress_interval_s:
                        self.events(
                            RowProgress(
                                task.row_id, stream.frames_out, total, time.monotonic() - started
                            )
                        )
                        last_report = time.monotonic()
                while not stream.done:  # the input ended: flush the window
                    sink.put(self.batcher.advance(stream, None), stream)
            finally:
                self.batcher.unregister(stream)
                sink.close(stream)
            if writer is not None:
                self.storage.put(writer.close(), task.conditioning_uri)
            conditioning = "cached" if cached is not None else "computed"
            self.events(
                RowProgress(task.row_id, stream.frames_out, total, time.monotonic() - started)
            )
        silent = scratch / "video.mp4"
        segments = self._segment_files(ledger, task, scratch, record, sink)
        if len(segments) == 1:  # nothing to join: no ffmpeg run needed
            shutil.copyfile(segments[0], silent)
        else:
            concat_segments(segments, silent, ffmpeg_binary=video.ffmpeg)
        final, has_audio = self._mux(task, silent, scratch)
        meta = {
            **task.meta,
            "row_id": task.row_id,
            "frames": stream.frames_out,
            "has_audio": has_audio,
            "worker": self.worker_name,
            "attempt": task.attempt,
            "resumed_from_frame": record.frames_committed,
            "conditioning": conditioning,
        }
        _, marker = ledger.commit_row(task.row_key, str(final), meta)
        return stream.frames_out, has_audio, marker["video"]

    def _cached_conditioning(
        self, task: RowTask, total: int, stack: ExitStack
    ) -> ConditioningReader | None:
        """The driving video's cached pose/motion, if some row already computed all we need."""
        uri = task.conditioning_uri
        if not uri or not self.storage.exists(uri):
            return None
        local = self.storage.local_path(uri)
        source = stack.enter_context(open(local, "rb") if local else self.storage.open(uri))
        try:
            reader = ConditioningReader(source)
        except (ValueError, KeyError, json.JSONDecodeError) as err:
            logger.warning("%s: unreadable conditioning cache (%s); computing it again", uri, err)
            return None
        if reader.frames < total:
            return None  # written by a row that rendered fewer frames
        logger.info("row %s: driving video's pose/motion from cache %s", task.row_id, uri)
        return reader

    def _start_stream(
        self, task: RowTask, portrait: np.ndarray, ledger: Ledger, record: RowLedger
    ) -> StreamState:
        """A fresh stream, or the one saved with the last committed segment."""
        if not record.segments:
            return self.animator.fuse_reference(portrait, seed=task.seed, stream_id=task.row_id)
        saved = deserialize_state(ledger.read_state(record.segments[-1]))
        stream = self.animator.restore(portrait, saved)
        if stream.frames_out != record.frames_committed:
            raise RowError(
                f"row {task.row_id}: saved state is at frame {stream.frames_out} but its segment ends at "
                f"{record.frames_committed}; delete {ledger.row_uri(task.row_key)} to start the row over"
            )
        return stream

    def _segment_files(
        self, ledger: Ledger, task: RowTask, scratch: Path, record: RowLedger, sink: _SegmentSink
    ) -> list[str]:
        """Local paths of every segment: earlier attempts' (downloaded if remote), then this one's."""
        paths = []
        for segment in record.segments:
            local = self.storage.local_path(segment.video_uri)
            if local is None:
                local = str(scratch / f"previous-{segment.index:06d}.mp4")
                self.storage.download(segment.video_uri, local)
            paths.append(local)
        return paths + sink.paths

    def _open(self, uri: str):
        """A context manager yielding a path (local) or a streaming binary file (S3)."""
        from contextlib import nullcontext  # noqa: PLC0415

        local = self.storage.local_path(uri)
        if local is not None:
            if not os.path.isfile(local):
                raise RowError(f"{uri}: file not found")
            return nullcontext(local)
        return self.storage.open(uri)

    def _load_portrait(self, uri: str) -> np.ndarray:
        with self._open(uri) as source:
            image = load_image(source)
        return square_image(image, self.video.fit)

    def _mux(self, task: RowTask, silent: Path, scratch: Path) -> tuple[Path, bool]:
        """Add the row's audio (its audio file, else the driving video's track) to the video."""
        video = self.video
        if video.audio == "none":
            return silent, False
        source_uri = task.audio or task.driving_video
        source = self.storage.local_path(source_uri)
        if source is None:  # S3 input: ffmpeg reads a local copy (audio files are small)
            source = str(scratch / f"audio-source-{basename(source_uri)}")
            self.storage.download(source_uri, source)
        final = scratch / "final.mp4"
        result = mux_audio(
            silent,
            final,
            audio_source=source,
            length_policy=video.audio_length,
            audio_codec=video.audio_codec,
            audio_bitrate=video.audio_bitrate,
            ffmpeg_binary=video.ffmpeg,
        )
        if not result.has_audio:
            logger.info("row %s: no audio (%s)", task.row_id, result.reason)
        return final, result.has_audio


def segment_frames(rate: Fraction, seconds: float, chunk: int = 4) -> int:
    """Frames per segment: about ``seconds`` long, a multiple of the animator's 4-frame chunk
    (so a segment boundary always falls between two denoising calls)."""
    return max(chunk, round(float(rate) * seconds / chunk) * chunk)


class _SegmentSink:
    """Encodes output frames into segment files on its own thread, committing each full segment
    together with the stream state that produced its last frame.

    ``put`` hands over a call's frames (still on the GPU) and, at a segment boundary, a snapshot
    of the stream's state; the copy to the host, the H.264 encoding and the uploads happen on the
    sink's thread, so the row can hand in its next chunk at once. At most ``depth`` calls' frames
    wait in the queue (flat memory).
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
        length: int,
        *,
        first_index: int,
        first_frame: int,
        worker: str,
    ) -> None:
        self.ledger, self.task, self.scratch, self.video = ledger, task, scratch, video
        self.rate, self.size, self.length = rate, size, length
        self.index, self.start = first_index, first_frame
        self.worker = worker
        self.encoder: VideoEncoder | None = None
        self.count = 0  # frames handed over for the current segment
        self.encoded = 0  # frames encoded into the current segment
        self.paths: list[str] = []
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(
            target=self._run, name=f"encode-{task.row_id[:20]}", daemon=True
        )
        self._thread.start()

    def put(self, frames: torch.Tensor, stream: StreamState) -> None:
        self._raise()
        if not frames.shape[0]:
            return
        self.count += int(frames.shape[0])
        state = None
        if self.count >= self.length or stream.done:
            state = serialize_state(
                stream.state_dict()
            )  # the stream as of this segment's last frame
            self.count = 0
        # queued now, right behind the decode that made them; the encoder thread waits for it
        self._queue.put((HostCopy(frames), state))

    def close(self, stream: StreamState) -> None:
        """Commit the last (partial) segment, wait for the thread, and raise what it hit."""
        if self.count and self.error is None:
            self._queue.put((None, serialize_state(stream.state_dict())))
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
                    self._encode(frames.result().numpy())
                if state is not None and self.encoder is not None:
                    self._commit(state)
            except BaseException as err:  # noqa: BLE001 - re-raised in the row's thread
                self.error = err

    def _encode(self, frames: np.ndarray) -> None:
        if self.encoder is None:
            self.encoder = VideoEncoder(
                self.scratch / f"segment-{self.index:06d}.mp4",
                frame_rate=self.rate,
                width=self.size,
                height=self.size,
                codec=self.video.codec,
                crf=self.video.crf,
                preset=self.video.preset,
                pix_fmt=self.video.pix_fmt,
            )
        self.encoder.add_frames(frames)
        self.encoded += frames.shape[0]

    def _commit(self, state: bytes) -> None:
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
            state,
            extra={"row_id": self.task.row_id, "worker": self.worker, "pid": os.getpid()},
        )
        self.paths.append(path)
        self.index, self.start, self.encoded, self.encoder = self.index + 1, end, 0, None


def _prefetch(chunks: Iterator[Any], depth: int = 3) -> Iterator[Any]:
    """Decode ahead on another thread (at most ``depth`` chunks waiting)."""
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for chunk in chunks:
                waiting.put(chunk)
        except BaseException as err:  # noqa: BLE001 - re-raised by the consumer
            waiting.put(err)
        waiting.put(done)

    threading.Thread(target=produce, name="decode-ahead", daemon=True).start()
    while (item := waiting.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def build_animator(model: ModelConfig) -> StreamingAnimator:
    """Load the model described by ``model`` and wrap it in an animator."""
    from .models import load_personalive  # noqa: PLC0415

    models = load_personalive(
        model.weights_dir,
        model.dtype,
        model.device,
        architecture=model.architecture,
        attention=model.attention,
        vae_decoder=model.vae_decoder,
    )
    models.optimize(
        channels_last=model.channels_last,
        compile_mode=model.compile,
        cuda_graphs=model.cuda_graphs,
    )
    return StreamingAnimator(models, model.animator, resolution=model.resolution)


class RenderWorker:
    """Ray actor body: loads the model once, then renders rows one ``render`` call at a time.

    Args:
        model / video / storage: the job's config sections (plain dataclasses).
        name: shown in progress displays.
        cpu_threads: torch threads on CPU (Ray gives actors one thread by default).
    """

    def __init__(
        self,
        model: ModelConfig,
        video: VideoConfig,
        storage: StorageConfig,
        name: str = "",
        cpu_threads: int | None = None,
    ) -> None:
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        self.name = name
        self.events: Any = None
        self.scratch = tempfile.mkdtemp(prefix="portrait-render-")
        self.animator = build_animator(model)
        self.batcher = StepBatcher(self.animator)  # the rows this actor renders at once share it
        self.renderer = RowRenderer(
            self.animator,
            Storage(storage),
            video,
            self.scratch,
            events=self._emit,
            worker_name=name,
            batcher=self.batcher,
        )

    def _emit(self, event: Any) -> None:
        if self.events is not None:
            try:
                self.events.put_nowait(event)
            except Exception:  # noqa: BLE001 - progress is best effort; never fail a row over it
                logger.debug("progress event dropped", exc_info=True)

    def render(self, task: RowTask, events: Any = None) -> RowOutcome:
        """Render one row; progress events go to ``events`` (a ``ray.util.queue.Queue``), if given.

        The queue comes with each call rather than to the constructor: Ray restarts a dead actor
        by re-running its constructor, which must not depend on objects that may be gone.
        """
        self.events = events
        return self.renderer.render(task)

    def pid(self) -> int:
        return os.getpid()

    def describe(self) -> dict[str, Any]:
        models = self.animator.models
        return {
            "name": self.name,
            "device": str(models.device),
            "dtype": str(models.dtype),
            "pid": os.getpid(),
        }

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "scratch", ""), ignore_errors=True)


def is_remote(uri: str) -> bool:
    return is_s3(uri)
