"""Starting a stream part-way through a driving video, in the state the whole stream would have.

A long row can be cut into parts that render at once on different workers. A frame depends on
the 16-frame window it was denoised in, on the noise drawn for its chunks and on the history
keyframes in the stream's bank. A part that starts at frame ``F`` rebuilds each:

* **noise, exactly**: the stream's generator is replayed to the draw of the part's first chunk,
  so every chunk gets the numbers the uninterrupted stream draws for it;
* **keyframes, by their decisions exactly, by their latents approximately**: whether a frame
  becomes a keyframe depends only on driving motion (its distance to the motions already in the
  bank), so the decisions are replayed from the video's start, without denoising, until the bank
  is full or the part begins (the motion of each chunk's first frame, many per call of the
  networks: it differs from the stream's by float rounding, so only a distance within ~1e-6 of
  the threshold could be decided otherwise). The distances of a block of calls are computed on
  the device and read back at once (:data:`SCAN_BLOCK`): the worker's GPU runs one queue, and
  each read waits for the batched call queued before it, so one read per call made a part
  deep into a video wait minutes (110 s for 375 calls on an H200). A keyframe's latent is the
  clean latent of its frame, which depends on everything rendered before it: it is rendered
  from a short window of ``overlap`` frames before its frame, with the keyframes before it in
  the bank;
* **the window, approximately**: the stream starts ``overlap`` frames before ``F``; its three
  pending chunks hold the real driving frames before that, with the portrait's latent noised to
  their levels by their own noise (as the warm-up does with the portrait's pose). The overlap's
  frames are denoised but not decoded; docs/cluster.md shows how fast the difference to the
  uninterrupted frames dies away with the overlap's length.

A part whose window would begin within the stream's first chunks starts from the beginning
instead, and is then the uninterrupted stream itself: part 0 of a split row is reference-equal.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace

import torch

from ..config import AnimatorConfig
from ..models import HeadPose, drive_pose, posed_keypoints
from ._animator import Observation, StreamingAnimator
from ._state import Chunk, StreamState

ObservationSource = Callable[[int, int, bool], Iterator[Observation]]
"""Observations of driving frames ``[start, stop)`` (both multiples of 4 but a video's end):
``source(start, stop, False)`` every frame (in chunks of 4), ``source(start, stop, True)`` only
the first frame of each 4-frame chunk (what the keyframe decisions read: a quarter of the
pose/motion work, and the frames between need no converting or cutting). A source reads no
frame past ``stop``: a part's start pays only for the frames it uses."""

logger = logging.getLogger(__name__)

_NOISE_BLOCK = 256  # chunks' noise replayed per draw (bounded memory, few calls)
#: keyframe decisions whose distances are read from the device at once (one wait per block and
#: per keyframe taken, instead of one per call)
SCAN_BLOCK = 64


@dataclass(frozen=True)
class PlannedKeyframe:
    """A history keyframe as the uninterrupted stream adds it.

    Attributes:
        call: the denoising call whose oldest frame it is (it joins the bank at ``call + 1``).
        motion: ``(1, T, C)`` that frame's motion tokens.
        latent: ``(1, 4, h, w)`` its clean latent, rendered from a short window.
    """

    call: int
    motion: torch.Tensor
    latent: torch.Tensor


def skip_noise(animator: StreamingAnimator, stream: StreamState, chunks: int) -> None:
    """Advance ``stream``'s generator past ``chunks`` chunks' noise without using it.

    Torch's CPU generator consumes one number per element for a normal draw of 16 or more
    elements, so one draw of many chunks' worth equals that many chunk draws in a row
    (`tests/test_split_rows.py` checks it).
    """
    per_chunk = animator.schedule.chunk_frames * 4 * animator.latent_size**2
    while chunks > 0:
        block = min(chunks, _NOISE_BLOCK)
        torch.randn(block * per_chunk, generator=stream.generator)
        chunks -= block


class _Frames:
    """Per-frame observations kept while reading forward (a bounded window of them)."""

    def __init__(self, keep: int, step: int = 1, first: int = 0) -> None:
        self.frames: deque[tuple[int, HeadPose, torch.Tensor]] = deque(maxlen=keep)
        self.next = first  # index of the next frame to arrive
        self.step = step  # frames between two kept ones (4: each chunk's first frame)

    def add(self, observation: Observation) -> None:
        for j in range(len(observation)):
            self.frames.append(
                (self.next, observation.pose.index(slice(j, j + 1)), observation.motion[j : j + 1])
            )
            self.next += self.step

    def motion(self, index: int) -> torch.Tensor:
        """``(T, C)``: the motion of frame ``index``, which must still be kept."""
        for entry in self.frames:
            if entry[0] == index:
                return entry[2][0]
        raise RuntimeError(f"frame {index} is no longer kept")

    def span(self, start: int, stop: int) -> Observation:
        """Frames ``[start, stop)``, which must still be kept."""
        kept = [entry for entry in self.frames if start <= entry[0] < stop]
        if len(kept) != stop - start:
            raise RuntimeError(f"frames {start}..{stop} are no longer kept")
        return Observation(
            HeadPose.cat([p for _, p, _ in kept]), torch.cat([m for _, _, m in kept])
        )


class PartStarter:
    """Build the stream a part of a split row starts from (see the module's docstring).

    Args:
        animator: the worker's animator.
        overlap: driving frames rendered before the part's first output frame and discarded
            (rounded up to whole chunks); also the window each keyframe's latent is rendered in.
    """

    def __init__(self, animator: StreamingAnimator, overlap: int) -> None:
        self.animator = animator
        chunk = animator.schedule.chunk_frames
        self.overlap_chunks = -(-max(0, overlap) // chunk)
        # where the last start's time went (logged; scripts/profile_part_start.py prints it)
        self.timings: dict[str, float] = {}

    def _first_call(self, first_frame: int) -> int:
        """The call at which a part from ``first_frame`` starts its stream (its overlap first)."""
        return first_frame // self.animator.schedule.chunk_frames - self.overlap_chunks

    def from_start(self, first_frame: int) -> bool:
        """Whether a part from ``first_frame`` is the whole stream from its start (its window
        would begin within the stream's first chunks): :meth:`start` then scans nothing."""
        schedule = self.animator.schedule
        return self._first_call(first_frame) <= schedule.pending_frames // schedule.chunk_frames

    def start(
        self, base: StreamState, observations: ObservationSource, first_frame: int
    ) -> StreamState:
        """A stream whose first decoded frame is ``first_frame`` (a multiple of 4).

        Args:
            base: a fresh stream of the row's portrait and seed (`fuse_reference`); not changed.
            observations: the row's driving observations from a frame on.
            first_frame: the part's first output frame.

        Returns:
            The stream; feed it the driving chunks from ``stream.frames_in`` on.
        """
        chunk = self.animator.schedule.chunk_frames
        if first_frame % chunk:
            raise ValueError(f"a part must start on a chunk boundary; got frame {first_frame}")
        at = self._first_call(first_frame)
        if self.from_start(first_frame):
            stream = _fresh(base)
            stream.emit_from = first_frame
            return stream
        first, keyframes = self.plan_keyframes(base, observations, before_call=at)
        started = time.perf_counter()
        with closing(observations(chunk * (at - 3), chunk * at, False)) as context:
            window = _take(context, 3 * chunk)
        stream = self._stream_at(base, at, window, first, keyframes)
        stream.emit_from = first_frame
        self.timings["window_seconds"] = time.perf_counter() - started
        logger.info(
            "part at frame %d started in %.1f s: keyframe scan of %d chunks %.1f s (%d reads of "
            "its distances from the device), %d keyframe window(s) %.1f s, its own window %.1f s",
            first_frame, sum(v for k, v in self.timings.items() if k.endswith("_seconds")),
            self.timings["scanned_chunks"], self.timings["scan_seconds"],
            self.timings["scan_reads"], len(keyframes),
            self.timings["keyframes_seconds"], self.timings["window_seconds"],
        )  # fmt: skip
        return stream

    # ------------------------------------------------------------------ keyframes

    def plan_keyframes(
        self, base: StreamState, observations: ObservationSource, *, before_call: int
    ) -> tuple[HeadPose, list[PlannedKeyframe]]:
        """Frame 0's pose and the keyframes the whole stream adds from calls before
        ``before_call``, each with its latent rendered from a short window.

        Reads the first frame of each chunk from frame 0 until the bank is full
        (``max_keyframes``) or the calls reach ``before_call``: with lively driving motion the
        bank fills early and only the video's first seconds are read. Each keyframe's window is
        read again, every frame of it, to render its latent.
        """
        chunk = self.animator.schedule.chunk_frames
        started = time.perf_counter()
        scan = _KeyframeScan(self.animator.config, base, before_call)
        firsts = _Frames(keep=SCAN_BLOCK + 16, step=chunk)  # a block and the window behind it
        # the last call decided is before_call - 1; its candidate is its window's oldest frame
        stop = chunk * (before_call - 3)
        with closing(observations(0, stop, True)) as source:
            for observation in source:
                firsts.add(observation)
                if (firsts.next // chunk) % SCAN_BLOCK == 0:
                    scan.decide(firsts)
                    if scan.over:
                        break
            scan.decide(firsts)  # the calls of the last, partial block
        if scan.first is None:
            raise ValueError("the driving video has no frames")
        self.timings = {
            "scanned_chunks": firsts.next // chunk,
            "scan_reads": scan.reads,
            "scan_seconds": time.perf_counter() - started,
        }
        started = time.perf_counter()
        keyframes: list[PlannedKeyframe] = []
        for call, motion in zip(scan.calls, scan.motions):
            latent = self._render_keyframe(base, observations, scan.first, keyframes, call)
            keyframes.append(PlannedKeyframe(call, motion, latent))
        self.timings["keyframes_seconds"] = time.perf_counter() - started
        return scan.first, keyframes

    def _render_keyframe(
        self,
        base: StreamState,
        observations: ObservationSource,
        first: HeadPose,
        earlier: list[PlannedKeyframe],
        call: int,
    ) -> torch.Tensor:
        """The clean latent of the oldest frame of call ``call``'s window, rendered from
        ``overlap`` frames before that frame with the earlier keyframes in the bank."""
        animator, chunk = self.animator, self.animator.schedule.chunk_frames
        start = call - 3 - self.overlap_chunks  # the short stream's first new chunk
        if start <= 3:
            start = 0
        read_from = chunk * max(0, start - 3)
        count = chunk * (call + 1) - read_from  # up to the chunk that call takes in
        frames = _Frames(keep=count, first=read_from)
        with closing(observations(read_from, read_from + count, False)) as source:
            frames.add(_take(source, count))
        if start == 0:
            stream = _fresh(base)
        else:
            window = frames.span(chunk * (start - 3), chunk * start)
            settled = [k for k in earlier if k.call < start]
            stream = self._stream_at(base, start, window, first, settled)
        stream.forced_keyframes = {k.call: (k.motion, k.latent) for k in earlier if k.call >= start}
        stream.emit_from = 1 << 62  # nothing decoded
        for index in range(start, call + 1):
            stream.capture_x0 = index == call
            animator.advance([stream], [frames.span(chunk * index, chunk * (index + 1))])
        assert stream.captured_x0 is not None
        return stream.captured_x0

    # ------------------------------------------------------------------ the window

    def _stream_at(
        self,
        base: StreamState,
        at: int,
        window: Observation,
        first: HeadPose,
        keyframes: list[PlannedKeyframe],
    ) -> StreamState:
        """A stream whose next call takes chunk ``at``: its pending chunks ``at-3..at-1`` hold
        the driving frames of ``window`` (12) at levels 0/333/666, noised with their own noise;
        ``keyframes`` (all decided before call ``at``) are in its bank."""
        animator, schedule = self.animator, self.animator.schedule
        chunk, pending = schedule.chunk_frames, schedule.pending_frames
        stream = _fresh(base)
        skip_noise(animator, stream, at - 3)
        noise = torch.cat([animator._noise(stream.generator, chunk) for _ in range(3)])
        device = stream.reference_latent.device
        timesteps = schedule.window_timesteps(device)[:pending]
        stream.latents = schedule.add_noise(
            stream.reference_latent.expand(pending, -1, -1, -1), noise, timesteps
        )
        stream.first_pose = first
        keypoints = posed_keypoints(
            drive_pose(stream.reference_pose, first, window.pose, animator.config.translation_scale)
        )
        for j in range(pending):
            stream.history.append((chunk * (at - 3) + j, keypoints[j], window.motion[j]))
        for i in range(3):
            part = slice(i * chunk, (i + 1) * chunk)
            entry = Chunk(
                start=chunk * (at - 3 + i), real=chunk,
                keypoints=keypoints[part], motion=window.motion[part],
            )  # fmt: skip
            entry.pose_features = animator._pose_features(entry.keypoints)
            stream.chunks.append(entry)
        stream.frames_in, stream.frames_out, stream.calls = chunk * at, chunk * (at - 3), at
        for keyframe in keyframes:
            stream.motion_bank = torch.cat([stream.motion_bank, keyframe.motion])
            animator._add_keyframe(stream, keyframe.latent)
        return stream


class _KeyframeScan:
    """The whole stream's keyframe decisions, replayed from driving motion alone (the same
    arithmetic as ``StreamingAnimator._keyframe_distance``, call by call)."""

    def __init__(self, config: AnimatorConfig, base: StreamState, before_call: int) -> None:
        self.config, self.before_call = config, before_call
        self.bank = [base.reference_motion]  # motions in the bank: the portrait's, keyframes'
        self.reference_motion = base.reference_motion
        self.next_call = config.keyframe_min_chunks
        self.calls: list[int] = []  # calls whose candidate joined the bank
        self.motions: list[torch.Tensor] = []  # their motions
        self.first: HeadPose | None = None
        self._first_motion: torch.Tensor | None = None
        self.reads = 0  # times the scan waited for the device (each behind a batched call)

    @property
    def over(self) -> bool:
        full = len(self.calls) >= self.config.max_keyframes
        return full or self.next_call >= self.before_call

    def decide(self, frames: _Frames) -> None:
        """Decide every call whose candidate frame has arrived: their distances to the bank
        computed on the device and read back together; after a keyframe the bank has changed,
        so the calls after it are measured again against it."""
        if self.first is None and frames.frames:
            _, pose, motion = frames.frames[0]
            self.first, self._first_motion = pose, motion
        while not self.over:
            calls = []  # the oldest frame of a call's window is its candidate
            for call in range(self.next_call, self.before_call):
                if 4 * (call - 3) >= frames.next:
                    break
                calls.append(call)
            if not calls:
                return
            candidates = [self._candidate(frames, 4 * (call - 3)) for call in calls]
            bank = torch.cat(self.bank).float().flatten(1)
            distances = torch.stack(  # each as the stream computes its own (same shapes)
                [(bank - c.float().flatten()).pow(2).sum(dim=1).sqrt().min() for c in candidates]
            )
            distances = _to_host(distances)  # the one wait for the device
            self.reads += 1
            for call, candidate, distance in zip(calls, candidates, distances):
                self.next_call = call + 1
                if distance > self.config.keyframe_threshold:
                    self.calls.append(call)
                    self.motions.append(candidate[None])
                    self.bank.append(candidate[None])
                    break

    def _candidate(self, frames: _Frames, frame: int) -> torch.Tensor:
        """The motion of ``frame`` (a warm-up frame's is the portrait's blended into frame 0's,
        as ``StreamingAnimator._enter_warmup`` blends it)."""
        if frame >= 0:
            return frames.motion(frame)
        motion = self._first_motion
        weights = torch.linspace(0, 1, 13, dtype=motion.dtype, device=motion.device)[:-1]
        weight = weights[12 + frame]
        return ((1 - weight) * self.reference_motion + weight * motion)[0]


def _to_host(values: torch.Tensor) -> list[float]:
    """Device values as host floats: waits for everything queued before them."""
    return values.tolist()


def _take(source: Iterable[Observation], frames: int) -> Observation:
    """The first ``frames`` frames of ``source`` as one observation."""
    kept = _Frames(keep=frames)
    for observation in source:
        kept.add(observation)
        if kept.next >= frames:
            break
    if kept.next < frames:
        raise ValueError(f"the driving video ended before frame {frames}")
    return kept.span(0, frames)


def _fresh(base: StreamState) -> StreamState:
    """A copy of a stream that has made no call yet (its tensors shared: a call replaces them)."""
    generator = torch.Generator(device=base.generator.device)
    generator.set_state(base.generator.get_state())
    return replace(
        base,
        generator=generator,
        chunks=deque(),
        history=deque(maxlen=base.history.maxlen),
        keyframe_latents=[],
        motion_bank=base.motion_bank.clone(),
        bank=None,
    )
