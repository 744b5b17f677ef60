"""Rendering one manifest row: driving video in, committed output video out.

:class:`RowRenderer` holds no model state of its own: it streams the driving video through a
shared :class:`~pipeline.animate.StreamingAnimator` (via the worker's
:class:`~pipeline.animate.StepBatcher`) four frames at a time, encodes frames as they come,
muxes the audio and commits the result through :class:`~pipeline.storage.Storage`. Memory stays
flat however long the video.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.profiler import record_function

from ..animate import Observation, StepBatcher, StreamingAnimator, StreamState, deserialize_state
from ..animate._parts import SCAN_BLOCK, ObservationSource, PartStarter
from ..conditioning_cache import ConditioningReader, ConditioningWriter
from ..config import FramingConfig, VideoConfig, parse_canvas
from ..framing import (
    CoverCanvas,
    DrivingFramer,
    FaceBox,
    FaceDetector,
    FaceTrack,
    PasteBack,
    Square,
    cut_square,
    face_square,
    no_face_message,
    sample_detections,
    square_picture,
)
from ..ledger import Ledger, RowLedger
from ..media import MediaError, VideoReader, concat_segments, load_image, mux_audio
from ..progress import RowAccepted, RowProgress, RowReleased, RowStarted
from ..storage import Storage, StorageError, basename
from ._ahead import ReadAhead
from ._segments import SegmentSink
from ._signals import SignalRecorder, clip_embedder, encoder_name
from ._slots import SlotTicket, StreamSlots
from ._task import RowError, RowResult, RowTask, RowTimeline

logger = logging.getLogger(__name__)

EventSink = Callable[[Any], None]


@dataclass
class _PreparedRow:
    """A row ready for its first denoising call (everything phase 1 made for phases 2 and 3)."""

    task: RowTask
    scratch: Path
    ledger: Ledger
    record: RowLedger
    stream: StreamState
    total: int  # output frames the row will have
    sink: SegmentSink
    source: ReadAhead | None  # driving chunks (pixels or cached observations); None: none left
    writer: ConditioningWriter | None  # this row computes the clip's conditioning cache
    cached: bool  # its conditioning comes from the cache
    timeline: RowTimeline
    framing: dict[str, Any]  # where the face was and what was cut (in the outcome and commit)
    framer: DrivingFramer | None  # driving frames cut around the face (counts frames without)
    streaming: float = 0.0  # monotonic time it took its stream slot
    signals: SignalRecorder | None = None  # identity/motion samples (job.signals_every_seconds)


class _DrivingChunks(NamedTuple):
    """Where a row's driving chunks come from (:meth:`RowRenderer._driving_chunks`)."""

    chunks: Any  # iterable of chunks: pixels, or cached observations
    cached: bool  # from the clip's conditioning cache
    writer: ConditioningWriter | None = None  # this row computes the clip's conditioning cache
    framer: DrivingFramer | None = None  # frames cut around the face


@dataclass
class _Attempt:
    """One render call: its clocks and, once prepared, its row (both go into the result)."""

    task: RowTask
    worker: str
    accepted: float = field(default_factory=time.monotonic)
    timeline: RowTimeline = field(default_factory=lambda: RowTimeline(accepted_at=time.time()))
    row: _PreparedRow | None = None

    def result(self, status: str, **kwargs: Any) -> RowResult:
        """The attempt's result; the row's time runs from its first denoising call (else from
        its acceptance)."""
        row, timeline = self.row, self.timeline
        since = row.streaming if row is not None and row.streaming else self.accepted
        timeline.finished_at = time.time()
        return RowResult(
            self.task.row_id, status, seconds=time.monotonic() - since, worker=self.worker,
            started_at=timeline.streaming_at or timeline.accepted_at,
            timeline=timeline, framing=row.framing if row is not None else None, **kwargs,
        )  # fmt: skip


class RowRenderer:
    """Render rows through a shared animator; I/O goes through ``storage``, progress to ``events``.

    A row passes three phases (:meth:`render`), and holds one of the worker's stream slots only
    for the second, so the batched denoising call never waits for a row to start or to end:

    1. **prepare** (no slot; while other rows stream): the ledger (committed already? resume from
       a segment?), the driving video opened and probed, the portrait fused into a stream (its
       reference pass runs on the GPU beside the batched calls), the first chunks decoded ahead
       or read from the clip's conditioning cache;
    2. **stream** (one slot): the row's chunks go through the batched call, its warm-up and flush
       calls riding along with the other rows' calls, until its last frame is out;
    3. **finish** (no slot): the last segment encoded and committed, the segments joined, the
       audio muxed, the row committed.

    Args:
        animator: a ready :class:`StreamingAnimator`.
        storage: where inputs are read and outputs committed.
        video: encoding and audio settings.
        scratch_dir: local folder for intermediate files (one sub-folder per row, removed after).
        events: called with progress events (:class:`RowAccepted`, :class:`RowStarted`,
            :class:`RowProgress`).
        worker_name: shown in progress events.
        batcher: shared by the rows a worker renders at once (one batched denoising call for
            all of them); a private one when not given.
        slots: the worker's stream slots, shared by its rows; a private single slot when not
            given.
        gpu_prep: the one thread of the worker that runs the rows' reference passes (portrait
            encode, CLIP, reference UNet, bank projection): the GPU libraries set up their
            per-thread state once, not in every row's thread; None: the row's own thread.
        part_prep: the thread that starts a split row's later parts (`PartStarter`: a keyframe
            scan from the video's start, seconds to minutes for a long video, then a few
            single-stream calls), apart from ``gpu_prep`` so that other rows' reference passes
            do not queue behind it; None: ``gpu_prep``.
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
        slots: StreamSlots | None = None,
        gpu_prep: Executor | None = None,
        part_prep: Executor | None = None,
    ) -> None:
        self.animator = animator
        self.storage = storage
        self.video = video
        self.scratch_dir = Path(scratch_dir)
        self.events = events or (lambda event: None)
        self.worker_name = worker_name
        self.batcher = batcher or StepBatcher(animator)
        self.slots = slots or StreamSlots(1)
        self.gpu_prep = gpu_prep
        self.part_prep = part_prep or gpu_prep
        self._embed: Any = None  # output frames' CLIP embeddings (made on first use)
        self.portrait_detector = FaceDetector()
        # driving frames are searched every few frames, on the decode-ahead thread: a quicker
        # coarse scan (faces down to 1/20 of the frame's long side; the fine pass is the same)
        self.driving_detector = FaceDetector(coarse_side=400, coarse_step=1.1)

    def render(self, task: RowTask, order: int | None = None) -> RowResult:
        """Render ``task``; never raises for row-level problems (they become a failed result).
        ``order``: the driver's order of the row, in which rows take the worker's stream slots
        (:meth:`StreamSlots.accept`; None: the order they arrive)."""
        # 1. Accepted: the driver learns the row started here; a scratch folder of its own.
        attempt = _Attempt(task, self.worker_name)
        ticket = self.slots.accept(order)  # its turn for a stream slot
        self.events(RowAccepted(task.row_id, worker=self.worker_name, attempt=task.attempt))
        label = "".join(c if c.isalnum() or c in "-_." else "_" for c in task.row_id[:40])
        scratch = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=self.scratch_dir))
        try:
            # 2. The three phases (or an earlier attempt's commit), then the verdict.
            return attempt.result(**self._render_phases(attempt, scratch, ticket))
        except Exception as err:  # noqa: BLE001 - a row's failure must not stop the worker
            return attempt.result("failed", **self._failure(task, err))
        finally:
            self.slots.leave(ticket)  # a row that never streamed keeps no slot from the others
            shutil.rmtree(scratch, ignore_errors=True)

    def _render_phases(
        self, attempt: _Attempt, scratch: Path, ticket: SlotTicket
    ) -> dict[str, Any]:
        """The row through prepare, stream and finish; what the outcome says of it when done."""
        task, timeline = attempt.task, attempt.timeline
        # 1. The ledger: a row another attempt committed already is done.
        ledger = Ledger(self.storage, task.job_uri)
        record = ledger.row(task.row_key)
        if record.commit is not None:
            earlier = self._committed_earlier(task, ledger, record.commit, scratch)
            return earlier if task.part is None else self._joined(task, ledger, scratch, earlier)
        with ExitStack() as stack:
            # 2. Prepare (no slot): probe, portrait, stream, driving chunks, threads.
            row = attempt.row = self._prepare(task, ledger, record, scratch, timeline, stack)
            # 3. Stream (one slot); the last (partial) segment is committed however it ends.
            try:
                self._stream(row, ticket)
            finally:
                row.sink.close(row.stream)
                timeline.encoded_at = time.time()
                timeline.first_frame_at = row.sink.first_frame_at
                timeline.first_commit_at = row.sink.first_commit_at
                self._framing_costs(row)
            # 4. Finish (no slot): segments joined, audio muxed, the row committed (a part:
            #    committed, and the row's parts joined if it was the last to commit).
            frames, has_audio, output = self._finish(row)
            timeline.committed_at = time.time()
            signals = row.signals.finish() if row.signals is not None else None
        verdict = {
            "status": "done", "frames": frames, "output": output, "has_audio": has_audio,
            "conditioning": "cached" if row.cached else "computed", "signals": signals,
        }  # fmt: skip
        return verdict if task.part is None else self._joined(task, ledger, scratch, verdict)

    def _failure(self, task: RowTask, err: Exception) -> dict[str, Any]:
        """A failed row's error (and whether a retry may help), from what went wrong; call it
        while handling ``err`` (an unexpected error keeps its traceback)."""
        if isinstance(err, (RowError, MediaError)):
            return {"error": self._scratch_hint(err)}
        if isinstance(err, StorageError):
            return {"error": str(err), "retryable": True}
        if isinstance(err, torch.cuda.OutOfMemoryError):
            return {
                "error": "GPU out of memory; lower model.streams_per_worker (or model.resolution), "
                "or use a GPU with more memory"
            }
        logger.exception("row %s failed unexpectedly", task.row_id)
        return {
            "error": f"internal error: {type(err).__name__}: {err}",
            "detail": traceback.format_exc(),
        }

    # ------------------------------------------------------------------ 1. prepare

    def _prepare(
        self,
        task: RowTask,
        ledger: Ledger,
        record: RowLedger,
        scratch: Path,
        timeline: RowTimeline,
        stack: ExitStack,
    ) -> _PreparedRow:
        """Everything the row needs before its first denoising call."""
        size, video = self.animator.resolution, self.video
        # 1. The driving video: opened; its length and frame rate as validation probed them
        #    (probed here only for a task made without validation).
        driving = stack.enter_context(self._open(task.driving_video))
        frames, rate = task.frames, task.frame_rate
        if frames is None or rate is None:
            probe_reader = VideoReader(
                driving, size=size, fit=video.fit, max_frames=task.max_frames
            )
            frames, rate = len(probe_reader), probe_reader.frame_rate
        if frames == 0:
            raise RowError(
                f"{task.driving_video}: no frames to render (max_frames={task.max_frames})"
            )
        part = task.part
        total = frames if part is None else part.end - part.start  # the frames this task outputs
        # 2. The portrait: framed, fused into a fresh stream (or the saved one restored; a
        #    part's stream as the whole row's would be at the part's start).
        photo = self._load_photo(task.portrait)
        portrait, framing, compose = self._frame_portrait(task, photo)
        stream = self._start_stream(task, portrait, ledger, record, frames, stack)
        timeline.fused_at = time.time()
        # 3. The driving chunks from the stream's next frame on (cached pose/motion or frames);
        #    a part reads the window's 12 pending frames past its end, so its last frames see the
        #    frames after them.
        lookahead = self.animator.schedule.pending_frames
        stop = frames if part is None else min(frames, part.end + lookahead)
        writes_cache = part is None and not stream.ended
        driving_chunks = self._driving_chunks(
            task, driving, stream.frames_in, stop, frames, stack,
            cache_to=scratch / "conditioning.bin" if writes_cache else None,
        )  # fmt: skip
        # 4. The row's threads: decode ahead, identity/motion samples.
        source = None
        if not stream.ended:
            source = ReadAhead(driving_chunks.chunks, name=f"decode-{task.row_id[:20]}")
            stack.callback(source.close)
        signals = self._signal_recorder(task, stream, frames, rate)
        if signals is not None:
            stack.callback(signals.close)
        # 5. The segment sink, last: nothing after it may raise, or its thread would wait
        #    forever for frames.
        sink = SegmentSink(
            ledger, task, scratch, video, rate, size,
            first_index=len(record.segments),
            first_frame=max(0, stream.frames_out - (part.start if part else 0)),
            worker=self.worker_name, compose=compose,
        )  # fmt: skip
        timeline.prepared_at = time.time()
        return _PreparedRow(
            task, scratch, ledger, record, stream, total, sink, source, driving_chunks.writer,
            cached=driving_chunks.cached, timeline=timeline, framing=framing,
            framer=driving_chunks.framer, signals=signals,
        )  # fmt: skip

    def _driving_chunks(
        self,
        task: RowTask,
        driving: Any,
        start: int,
        stop: int,
        total: int,
        stack: ExitStack,
        *,
        cache_to: Path | None = None,
    ) -> _DrivingChunks:
        """The row's driving chunks of frames ``[start, stop)`` (``total``: the row's frames):
        the clip's cached pose and motion when the cache holds them all; else frames, cut
        around the tracked face or whole, with a writer (to ``cache_to``) that fills the cache
        when this row reads the clip from its start."""
        cached = self._cached_conditioning(task, total, stack)
        if cached is not None:
            return _DrivingChunks(cached.chunks(start, stop), cached=True)
        framer = None
        if task.framing.driving == "face":
            framer = self._driving_framer(task, driving, start, stack, stop=stop)
            chunks: Any = framer.chunks(4)
        else:  # the whole frame, as the reference's online path takes it
            reader = VideoReader(
                driving, size=self.animator.resolution, fit=self.video.fit,
                max_frames=stop, start_frame=start,
            )  # fmt: skip
            chunks = (chunk.frames for chunk in reader.chunks(4))
        writer = None
        if task.conditioning_uri and start == 0 and cache_to is not None:
            writer = ConditioningWriter(cache_to, {"video": task.driving_video})
        return _DrivingChunks(chunks, cached=False, writer=writer, framer=framer)

    def _observations(self, task: RowTask, total: int, stack: ExitStack) -> ObservationSource:
        """The row's driving observations (pose and motion) of frames ``[start, stop)``, in
        4-frame chunks: what a part's start reads before its window (`PartStarter`), on the
        thread that starts parts (``part_prep``). From the clip's conditioning cache when it
        holds them (opened once), else from the video: only the frames asked for are converted
        and cut (the keyframe scan's: a chunk's first alone; the faces are still tracked over
        every sample)."""
        cached = self._cached_conditioning(task, total, stack)

        def source(start: int, stop: int, firsts: bool):
            if cached is not None:
                for item in cached.chunks(start, stop):
                    yield (
                        Observation(item.pose.index(slice(0, 1)), item.motion[:1])
                        if firsts
                        else item
                    )
                return
            driving = stack.enter_context(self._open(task.driving_video))
            step = 4 if firsts else 1  # frames read per frame converted (a chunk's first alone)
            if task.framing.driving == "face":
                framer = self._driving_framer(task, driving, start, stack, stop=stop, step=step)
                chunks: Any = framer.chunks(4 // step)
            else:
                reader = VideoReader(
                    driving, size=self.animator.resolution, fit=self.video.fit,
                    max_frames=stop, start_frame=start,
                )  # fmt: skip
                chunks = (
                    (frame[None] for _, frame in reader.sample(4))
                    if firsts
                    else (chunk.frames for chunk in reader.chunks(4))
                )
            # the scan's first frames a block per call of the small networks (their face boxes
            # are read back once per call); whole chunks one per call, as a stream alone on its
            # worker observes them (the same numbers)
            per_call = SCAN_BLOCK if firsts else 1
            batch: list[Any] = []
            for chunk in chunks:
                batch.append(chunk)
                if len(batch) == per_call:
                    yield from self.animator.observe(batch)
                    batch = []
            if batch:
                yield from self.animator.observe(batch)

        return source

    def _signal_recorder(
        self, task: RowTask, stream: StreamState, total: int, rate: Any
    ) -> SignalRecorder | None:
        """The row's identity/motion samples from this attempt's frames on (docs/signals.md; a
        part: the row's samples that fall in it, ``total`` being the row's frames); the
        portrait's embedding is the one the stream is conditioned on, the encoder the model's
        own, run on the GPU preparation thread (never the denoising thread's work)."""
        every = task.signals_every_seconds
        if every <= 0:
            return None
        animator = self.animator
        if self._embed is None:
            self._embed = clip_embedder(animator, self.gpu_prep)
        # with keep_warmup the output starts with the warm-up: driving frame d is output d + warmup
        warmup = animator.schedule.pending_frames if animator.config.keep_warmup else 0
        # a part's stream starts in its overlap, whose frames are never output
        first = max(stream.frames_out, stream.emit_from)
        return SignalRecorder(
            self._embed, stream.clip_embeds, frames=total + warmup, rate=rate,
            every_seconds=every, model=encoder_name(animator.models.image_encoder.config),
            first_output=first + warmup if first else 0,
            first_driving=stream.frames_in, warmup=warmup, name=f"signals-{task.row_id[:20]}",
            end=task.part.end + warmup if task.part is not None else None,
        )  # fmt: skip

    def _frame_portrait(
        self, task: RowTask, photo: np.ndarray
    ) -> tuple[np.ndarray, dict[str, Any], PasteBack | CoverCanvas | None]:
        """The square the model animates (at the photo's resolution), what was found and cut,
        and the paste-back onto the output canvas (None: the square is the output)."""
        framing = task.framing
        canvas = parse_canvas(self.video.canvas)
        if framing.portrait != "face":  # the whole photo made square; no photo to paste into
            square = square_picture(photo, framing.portrait)
            info: dict[str, Any] = {"portrait": framing.portrait}
            if canvas == "crop":
                return square, info, None
            cover = CoverCanvas(square.shape[0], canvas)
            return square, {**info, "canvas": [cover.width, cover.height]}, cover
        face = self._portrait_face(task, photo, framing)
        square = face_square(
            face, framing.scale, framing.center_y, (photo.shape[1], photo.shape[0])
        )
        info = {
            "portrait": "face",
            "portrait_uri": task.portrait,
            "portrait_size": [photo.shape[1], photo.shape[0]],
            "face": face.as_list(),
            "square": square.as_list(),
            "driving": framing.driving,
        }
        compose = None
        if canvas != "crop":
            compose = PasteBack(photo, square, canvas, framing.feather)
            info["canvas"] = [compose.width, compose.height]
        return cut_square(photo, square), info, compose

    def _portrait_face(self, task: RowTask, photo: np.ndarray, framing: FramingConfig) -> FaceBox:
        if task.portrait_face is not None:  # validation found it already
            return FaceBox(*task.portrait_face)
        faces = self.portrait_detector.detect(photo)
        if len(faces) <= framing.face_index:
            raise RowError(no_face_message(task.portrait, len(faces), framing.face_index))
        return faces[framing.face_index]

    def _driving_framer(
        self,
        task: RowTask,
        driving: Any,
        start: int,
        stack: ExitStack,
        *,
        stop: int | None = None,
        step: int = 1,
    ) -> DrivingFramer:
        """The row's driving frames from ``start`` on (every ``step``-th: the others are decoded,
        not converted), cut around the tracked face. The track reads the video a second time, a
        little ahead, from enough samples before ``start`` that a resumed row gets the boxes the
        uninterrupted one had."""
        framing, size, fit = task.framing, self.animator.resolution, self.video.fit
        every = framing.detect_every
        track_source = stack.enter_context(self._open(task.driving_video))
        radius = FaceTrack.window_radius(framing.smoothing)
        first_sample = max(0, start // every - radius - 1)
        track_reader = VideoReader(
            track_source, max_frames=task.max_frames, start_frame=first_sample * every
        )
        track = FaceTrack(
            sample_detections(track_reader.sample(every), self.driving_detector, every),
            every=every, sigma=framing.smoothing, face_index=framing.face_index,
            first_sample=first_sample,
        )  # fmt: skip
        reader = VideoReader(
            driving, max_frames=task.max_frames if stop is None else stop, start_frame=start
        )

        def whole_frame(frame: np.ndarray) -> np.ndarray:
            square = square_picture(frame, fit)
            return cut_square(square, Square(0, 0, square.shape[0]), size)

        return DrivingFramer(
            reader.sample(step), track, size=size, scale=framing.scale,
            center_y=framing.center_y, whole_frame=whole_frame,
        )  # fmt: skip

    def _cached_conditioning(
        self, task: RowTask, total: int, stack: ExitStack
    ) -> ConditioningReader | None:
        """The driving video's cached pose/motion, if some row already computed all we need."""
        uri = task.conditioning_uri
        if not uri or not self.storage.exists(uri):
            return None
        source = stack.enter_context(self.storage.open(uri))
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
        self,
        task: RowTask,
        portrait: np.ndarray,
        ledger: Ledger,
        record: RowLedger,
        frames: int,
        stack: ExitStack,
    ) -> StreamState:
        """A fresh stream (a part's: as the whole row's stream would be at the part's start), or
        the one saved with the last committed segment."""
        part = task.part
        offset = part.start if part is not None else 0
        if not record.segments:
            stream = self._on_gpu_prep(
                self.animator.fuse_reference, portrait, seed=task.seed, stream_id=task.row_id
            )
            if part is None:
                return stream
            starter = PartStarter(self.animator, part.overlap)
            source = self._observations(task, frames, stack)
            # a part from the row's start scans nothing: it need not queue behind other starts
            runs_on = self.gpu_prep if starter.from_start(part.start) else self.part_prep
            return _run_on(runs_on, starter.start, stream, source, part.start)
        saved = deserialize_state(ledger.read_state(record.segments[-1]))
        stream = self._on_gpu_prep(self.animator.restore, portrait, saved)
        stream.emit_from = offset
        if stream.frames_out != record.frames_committed + offset:
            raise RowError(
                f"row {task.row_id}: saved state is at frame {stream.frames_out} but its segment ends at "
                f"{record.frames_committed + offset}; delete {ledger.row_uri(task.row_key)} to start the row over"
            )
        logger.info(
            "row %s: resuming at frame %d from segment %d",
            task.row_id,
            stream.frames_out,
            len(record.segments),
        )
        return stream

    def _on_gpu_prep(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return _run_on(self.gpu_prep, fn, *args, **kwargs)

    # ------------------------------------------------------------------ 2. stream

    def _stream(self, row: _PreparedRow, ticket: SlotTicket) -> None:
        """Hold a stream slot (in ``ticket``'s turn) from the row's first denoising call until
        its last frame is out."""
        task, stream, sink = row.task, row.stream, row.sink
        with self.slots.hold(ticket) as slot:
            row.streaming = time.monotonic()
            row.timeline.slot, row.timeline.streaming_at = slot, time.time()
            self.events(
                RowStarted(task.row_id, row.total, worker=self.worker_name, attempt=task.attempt)
            )
            self.batcher.register(stream)
            try:
                last_report = time.monotonic()
                part = task.part
                for item in row.source or ():
                    frames = self.batcher.advance(stream, item)
                    sink.put(frames, stream)
                    if row.signals is not None:  # reads the frames, on a thread of its own
                        row.signals.add(item, frames)
                    if row.writer is not None and stream.last_observation is not None:
                        row.writer.add(stream.last_observation)
                    if time.monotonic() - last_report >= self.progress_interval_s:
                        self._report_progress(row)
                        last_report = time.monotonic()
                    if part is not None and not part.last and stream.frames_out >= part.end:
                        return  # a part before the last: its frames are out (no flush)
                while not stream.done:  # the input ended: flush the window
                    frames = self.batcher.advance(stream, None)
                    sink.put(frames, stream)
                    if row.signals is not None:
                        row.signals.add(None, frames)
            finally:
                self.batcher.unregister(stream)
                row.timeline.released_at = time.time()
                self.events(RowReleased(task.row_id, worker=self.worker_name, attempt=task.attempt))

    def _framing_costs(self, row: _PreparedRow) -> None:
        """What framing found and cost this attempt (CPU seconds on the row's own threads)."""
        if row.framer is not None:
            row.framing["driving_frames_without_face"] = row.framer.frames_without_face
            row.framing["track_seconds"] = round(row.framer.seconds, 2)
        if row.sink.compose is not None:
            row.framing["compose_seconds"] = round(row.sink.compose_seconds, 2)
        row.framing["encode_seconds"] = round(row.sink.encode_seconds, 2)

    def _report_progress(self, row: _PreparedRow) -> None:
        elapsed = time.monotonic() - row.streaming
        done = row.stream.frames_out - (row.task.part.start if row.task.part else 0)
        self.events(RowProgress(row.task.row_id, max(0, done), row.total, elapsed))

    # ------------------------------------------------------------------ 3. finish

    def _finish(self, row: _PreparedRow) -> tuple[int, bool, str]:
        """Join the segments, mux the audio and commit the row (the slot is free already)."""
        task, ledger, scratch, stream = row.task, row.ledger, row.scratch, row.stream
        if row.writer is not None:
            self.storage.put(row.writer.close(), task.conditioning_uri)
        self._report_progress(row)
        silent = scratch / "video.mp4"
        segments = self._segment_files(row)
        if len(segments) == 1:  # nothing to join: no ffmpeg run needed
            shutil.copyfile(segments[0], silent)
        else:
            concat_segments(segments, silent)
        if task.part is not None:  # silent: the audio is muxed over the joined parts
            return self._commit_part(row, silent)
        final, has_audio = self._mux(task, silent, scratch)
        meta = {
            **task.meta,
            "row_id": task.row_id,
            "frames": stream.frames_out,
            "has_audio": has_audio,
            "worker": self.worker_name,
            "attempt": task.attempt,
            "resumed_from_frame": row.record.frames_committed,
            "conditioning": "cached" if row.cached else "computed",
            "framing": row.framing,
            # how this output was made, for the job's story on later runs (summary, report)
            "render_started_at": row.timeline.streaming_at,
            "render_seconds": round(time.time() - (row.timeline.streaming_at or time.time()), 3),
        }
        _, marker = ledger.commit_row(task.row_key, str(final), meta)
        return stream.frames_out, has_audio, marker["video"]

    def _commit_part(self, row: _PreparedRow, video: Path) -> tuple[int, bool, str]:
        """Commit a part's video under its own key (no public copy: the joined row is the
        output)."""
        task, part = row.task, row.task.part
        assert part is not None
        frames = row.stream.frames_out - part.start
        if frames != part.end - part.start:
            raise RowError(
                f"{task.driving_video}: {part.label} of row {part.row_id} rendered {frames} frames "
                f"where {part.end - part.start} were expected (the video has fewer frames than "
                "its probe said); set cluster.split_frames=0 to render this row unsplit"
            )
        meta = {
            "row_id": task.row_id, "part": part.index, "parts": part.count,
            "start": part.start, "end": part.end, "overlap": part.overlap, "frames": frames,
            "worker": self.worker_name, "attempt": task.attempt,
            "resumed_from_frame": part.start + row.record.frames_committed,
            "render_started_at": row.timeline.streaming_at,
            "render_seconds": round(time.time() - (row.timeline.streaming_at or time.time()), 3),
        }  # fmt: skip
        _, marker = row.ledger.commit_row(task.row_key, str(video), meta, public=False)
        return frames, False, marker["video"]

    def _joined(
        self, task: RowTask, ledger: Ledger, scratch: Path, verdict: dict[str, Any]
    ) -> dict[str, Any]:
        """A committed part's verdict; when every part of its row is committed, the parts are
        joined into the row's video first (whichever part commits last does it; should two
        finish at once, the row's conditional commit keeps one)."""
        part = task.part
        assert part is not None
        try:
            commit = self._join_parts(task, ledger, scratch)
        except Exception:
            commit = ledger.commit_marker(part.row_key)  # another part's worker joined them first
            if commit is None:
                raise
        if commit is None:  # other parts are still rendering
            return {**verdict, "output": None}
        return {
            **verdict, "output": commit["video"], "has_audio": bool(commit.get("has_audio")),
            "joined": True,
        }  # fmt: skip

    def _join_parts(self, task: RowTask, ledger: Ledger, scratch: Path) -> dict[str, Any] | None:
        """Join the committed parts (stream copy, no re-encode), mux the row's audio over the
        whole and commit the row; None while a part is not committed yet."""
        part = task.part
        assert part is not None
        joined = ledger.commit_marker(part.row_key)
        if joined is not None:
            return joined
        commits = [ledger.commit_marker(key) for key in part.keys]
        if any(commit is None for commit in commits):
            return None
        paths = []
        for index, commit in enumerate(commits):
            local = self.storage.local_path(commit["video"])
            if local is None:
                local = str(scratch / f"part-{index:03d}.mp4")
                self.storage.download(commit["video"], local)
            paths.append(local)
        silent = scratch / "joined.mp4"
        concat_segments(paths, silent)
        final, has_audio = self._mux(task, silent, scratch)
        started = [c["render_started_at"] for c in commits if c.get("render_started_at")]
        meta = {
            **task.meta, "row_id": part.row_id, "frames": part.frames, "has_audio": has_audio,
            "worker": self.worker_name, "attempt": task.attempt, "resumed_from_frame": 0,
            "parts": [_part_entry(commit) for commit in commits],
            "render_started_at": min(started) if started else None,
            "render_seconds": round(time.time() - min(started), 3) if started else None,
        }  # fmt: skip
        _, marker = ledger.commit_row(part.row_key, str(final), meta)
        logger.info("row %s: %d parts joined and committed", part.row_id, part.count)
        return marker

    def _segment_files(self, row: _PreparedRow) -> list[str]:
        """Local paths of every segment: earlier attempts' (downloaded if remote), then this one's."""
        paths = []
        for segment in row.record.segments:
            local = self.storage.local_path(segment.video_uri)
            if local is None:
                local = str(row.scratch / f"previous-{segment.index:06d}.mp4")
                self.storage.download(segment.video_uri, local)
            paths.append(local)
        return paths + row.sink.paths

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

    # ------------------------------------------------------------------ outcomes and I/O helpers

    def _committed_earlier(
        self, task: RowTask, ledger: Ledger, commit: dict[str, Any], scratch: Path
    ) -> dict[str, Any]:
        """The verdict of an attempt that committed the row already (its public copy repaired)."""
        if not ledger.verify_commit(commit):
            ledger.repair_public(commit, str(scratch / "repair.mp4"))
        ledger.tidy(task.row_key, commit)
        return {
            "status": "done",
            "frames": int(commit.get("frames", 0)),
            "output": commit["video"],
            "has_audio": bool(commit.get("has_audio")),
        }

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

    def _open(self, uri: str):
        """A context manager yielding a path (local) or a seekable stream (remote)."""
        local = self.storage.local_path(uri)
        if local is not None and not os.path.isfile(local):
            raise RowError(f"{uri}: file not found")
        return self.storage.open_input(uri)

    def _load_photo(self, uri: str) -> np.ndarray:
        with self._open(uri) as source:
            return load_image(source)


def _run_on(executor: Executor | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on ``executor``'s thread (None: this thread), waited for."""
    if executor is None:
        return fn(*args, **kwargs)
    return executor.submit(_named(fn), *args, **kwargs).result()


def _named(fn: Any) -> Any:
    """``fn`` in a ``prep:<name>`` profiler range: traces name the GPU preparation thread's work
    (scripts/trace_summary.py)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        with record_function(f"prep:{getattr(fn, '__name__', 'call')}"):
            return fn(*args, **kwargs)

    return run


def _part_entry(commit: dict[str, Any]) -> dict[str, Any]:
    """What the row's commit keeps of one part (who rendered which frames, how fast)."""
    keys = ("part", "start", "end", "overlap", "frames", "worker", "attempt")
    keys += ("resumed_from_frame", "render_started_at")
    return {key: commit.get(key) for key in keys} | {"seconds": commit.get("render_seconds")}
