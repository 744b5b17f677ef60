"""Identity and motion signals of a row: a few numbers per second of its output video.

Every ``every_seconds`` of output, the middle frame of that stretch is sampled with the frame just
before it, and so are the driving frames the model saw at the same times:

* **identity**: cosine similarity of the CLIP image embedding of the sampled output frame (the
  animated square, before any paste-back onto a canvas) to the portrait's embedding, the one the
  model is conditioned on; both from the model's own, already loaded image encoder;
* **motion**: mean absolute change from the frame before to the sampled frame (pixels in 0..1);
* **driving_motion**: the same for the driving frames (the squares the model saw, cut around the
  face when ``framing.driving=face``); None where no driving pixels were decoded (the row's
  pose/motion came from the conditioning cache) or the sample has no driving frame.

What the numbers mean and do not mean: docs/signals.md. The functions are pure (arrays in,
numbers out); :class:`SignalRecorder` feeds them from a row's frames on a thread of its own.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch.profiler import record_function

from ..animate import HostCopy

logger = logging.getLogger(__name__)

#: sampled output frames embedded per image-encoder call: one call per this many seconds of a
#: row's video (at the default 1 s), so kernel launches cost little and identity arrives late
#: by at most this many samples
EMBED_BATCH = 8

Embed = Callable[[np.ndarray], np.ndarray]  # uint8 images (n, H, W, 3) → embeddings (n, d)


# ------------------------------------------------------------------------------------------
# Pure functions
# ------------------------------------------------------------------------------------------


def sample_indices(frames: int, rate: Fraction | float, every_seconds: float) -> list[int]:
    """The frames sampled in a video of ``frames`` frames at ``rate``: the middle frame of each
    ``every_seconds`` stretch whose middle lies inside the video (``round(duration /
    every_seconds)`` samples, a half rounded down), at least one; never frame 0, which has no
    frame before it. Empty when ``every_seconds`` is 0 (off) or the video has fewer than 2 frames."""
    if every_seconds <= 0 or frames < 2:
        return []
    step = float(rate) * every_seconds  # frames per stretch
    indices: list[int] = []
    k = 0
    while (middle := (k + 0.5) * step) < frames:
        index = max(1, int(middle))
        if not indices or index > indices[-1]:  # stretches shorter than a frame share it
            indices.append(index)
        k += 1
    return indices or [frames // 2]


def frame_change(before: np.ndarray, after: np.ndarray) -> float:
    """Mean absolute change per pixel and channel from ``before`` to ``after``: 0 (identical) to
    1 (black to white everywhere). uint8 frames count 255 as 1; float frames are taken as 0..1."""
    if before.shape != after.shape:
        raise ValueError(f"frames differ in shape: {before.shape} and {after.shape}")
    if before.dtype == np.uint8 and after.dtype == np.uint8:
        return float(np.abs(after.astype(np.int16) - before).mean()) / 255.0
    return float(np.abs(after.astype(np.float32) - before.astype(np.float32)).mean())


def cosine_similarity(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``embeddings`` ``(n, d)`` to ``reference`` ``(d,)``,
    in [-1, 1] (0 for a zero vector, which points nowhere)."""
    rows = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if rows.shape[1] != ref.shape[0]:
        raise ValueError(f"embeddings of {rows.shape[1]} values against a reference of {ref.size}")
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(ref)
    dots = rows @ ref
    similarity = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return np.clip(similarity, -1.0, 1.0)


def as_uint8(frames: np.ndarray) -> np.ndarray:
    """Frames as uint8 RGB (float frames in 0..1 scaled, as the encoder would)."""
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


def encoder_name(config: Any) -> str:
    """A name for the image encoder from its config (the published one is CLIP ViT-L/14)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    patch, size = config.patch_size, config.image_size
    if (hidden, layers, patch, size) == (1024, 24, 14, 224):
        return "CLIP ViT-L/14 image encoder (PersonaLive's)"
    return f"CLIP vision encoder ({layers} layers, width {hidden}, patch {patch}, {size} px)"


def clip_embedder(animator: Any, executor: Executor | None = None) -> Embed:
    """Embed uint8 images with ``animator``'s loaded image encoder (no other weights). The
    resizing runs on the caller's thread; the encoder on ``executor`` when given (the worker's GPU
    preparation thread, whose GPU libraries are set up already), else on the caller's thread too.
    The caller waits, never the denoising thread. The embeddings come back through pinned memory
    (a plain copy to the host would hold every thread's GPU work until the queue drained)."""

    def on_device(inputs: torch.Tensor) -> HostCopy:
        with record_function("prep:signals"):  # named in traces (scripts/trace_summary.py)
            return HostCopy(animator.embed_images(inputs))

    def embed(images: np.ndarray) -> np.ndarray:
        inputs = animator.clip_inputs(images)
        copy = executor.submit(on_device, inputs).result() if executor else on_device(inputs)
        return copy.result().float().numpy()

    return embed


# ------------------------------------------------------------------------------------------
# A row's recorder
# ------------------------------------------------------------------------------------------


@dataclass
class _Sample:
    index: int  # output frame
    driving: int  # the driving frame it came from (negative: a warm-up frame)
    seen: bool = False  # the output frame arrived
    identity: float | None = None
    motion: float | None = None
    driving_motion: float | None = None


_FINISH = object()  # embed what waits, then end
_STOP = object()  # end at once (the row failed)


class SignalRecorder:
    """Identity and motion samples of one row's output, computed beside the rendering.

    The row's thread calls :meth:`add` after each denoising call with the driving chunk it handed
    in and the frames that came out: it only picks the few frames sampled (a slice, copied to the
    host behind a CUDA event) and queues them. The recorder's own thread waits for the copies,
    measures motion and embeds the sampled output frames in batches of :data:`EMBED_BATCH` with
    ``embed``. It keeps numbers, one pending frame before each sample, and at most one batch of
    frames: memory is flat however long the video.

    Args:
        embed: uint8 images ``(n, H, W, 3)`` → embeddings ``(n, d)`` (:func:`clip_embedder`).
        reference: the portrait's embedding (``StreamState.clip_embeds``; any device).
        frames: output frames of the whole video (the warm-up included when it is emitted).
        rate: output frame rate.
        every_seconds: one sample per this many seconds of output.
        model: the image encoder's name (recorded with the numbers).
        first_output: this attempt's first output frame (a resumed row starts after its
            committed segments: only later samples are recorded).
        first_driving: the first driving frame this attempt is handed.
        warmup: output frames before driving frame 0 (the animator's emitted warm-up).
        end: no sample at or past this output frame (a part of a split row: where the next
            part takes over); None: the whole video.
    """

    def __init__(
        self,
        embed: Embed,
        reference: torch.Tensor,
        *,
        frames: int,
        rate: Fraction,
        every_seconds: float,
        model: str,
        first_output: int = 0,
        first_driving: int = 0,
        warmup: int = 0,
        name: str = "signals",
        end: int | None = None,
    ) -> None:
        self.embed, self.rate, self.every_seconds, self.model = embed, rate, every_seconds, model
        self.first_output = first_output
        self._reference = HostCopy(reference.detach().reshape(-1))  # resolved on the thread
        # a sample needs the frame before it from this attempt too
        samples = [
            _Sample(index, index - warmup)
            for index in sample_indices(frames, rate, every_seconds)
            if index - 1 >= first_output and (end is None or index < end)
        ]
        self._samples = samples
        self._by_output = {s.index: s for s in samples}
        self._by_driving = {s.driving: s for s in samples if s.driving >= 1}
        self._wanted_output = {i for s in samples for i in (s.index - 1, s.index)}
        self._wanted_driving = {i for d in self._by_driving for i in (d - 1, d)}
        self._output_count, self._driving_count = first_output, first_driving
        self._before: dict[str, tuple[int, np.ndarray]] = {}  # the frame before a sample, per side
        self._batch: list[tuple[_Sample, np.ndarray]] = []  # sampled output frames to embed
        self._queue: queue.Queue = queue.Queue()  # a few small items per second of video
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- the row's thread

    def add(self, driving: Any, output: torch.Tensor | np.ndarray) -> None:
        """One denoising call's driving chunk (uint8 frames; anything else, e.g. cached
        observations or None at the flush, has no pixels) and its output frames."""
        if isinstance(driving, np.ndarray) and len(driving):
            self._pick("driving", self._driving_count, driving, self._wanted_driving)
        if driving is not None:
            self._driving_count += len(driving)
        count = int(output.shape[0])
        self._pick("output", self._output_count, output, self._wanted_output)
        self._output_count += count

    def _pick(self, side: str, first: int, frames: Any, wanted: set[int]) -> None:
        picked = [i for i in range(first, first + len(frames)) if i in wanted]
        if not picked:
            return
        lo, hi = picked[0] - first, picked[-1] - first + 1  # a slice: a view, no gather kernel
        if isinstance(frames, torch.Tensor):
            part: Any = HostCopy(frames[lo:hi])
        else:
            part = np.array(frames[lo:hi])  # a copy: the chunk may be reused
        self._queue.put((side, first + lo, part))

    def finish(self) -> dict[str, Any] | None:
        """Embed what waits, stop the thread and return the row's signals (the summary's
        ``signals`` field); None when computing them failed (logged: a row never fails over
        its signals)."""
        self._queue.put(_FINISH)
        self._thread.join()
        if self.error is not None:
            logger.warning(
                "signals not computed: %s: %s", type(self.error).__name__, self.error,
                exc_info=self.error,
            )  # fmt: skip
            return None
        seen = [s for s in self._samples if s.seen]
        rate = float(self.rate)
        return {
            "times": [round(s.index / rate, 3) for s in seen],
            "identity": [_rounded(s.identity) for s in seen],
            "motion": [_rounded(s.motion) for s in seen],
            "driving_motion": [_rounded(s.driving_motion) for s in seen],
            "every_seconds": self.every_seconds,
            "model": self.model,
            # 0 for a whole row; later for a row resumed from a committed segment, whose earlier
            # part was rendered (and sampled) by an attempt that did not finish
            "from_seconds": round(self.first_output / rate, 3),
        }

    def close(self) -> None:
        """Stop the thread without finishing (the row failed); safe to call after finish."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=30)

    # ---------------------------------------------------------------- the recorder's thread

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if self.error is None:  # after an error: drain; finish() reports the first one
                try:
                    self._handle(item)
                except BaseException as err:  # noqa: BLE001 - reported by finish()
                    self.error = err
            if item is _FINISH:
                return

    def _handle(self, item: Any) -> None:
        if item is _FINISH:
            self._embed_batch()
            return
        side, first, part = item
        frames = part.result().numpy() if isinstance(part, HostCopy) else part
        for offset, frame in enumerate(frames):
            self._frame(side, first + offset, frame)

    def _frame(self, side: str, index: int, frame: np.ndarray) -> None:
        samples = self._by_output if side == "output" else self._by_driving
        sample = samples.get(index)
        if sample is not None:
            before = self._before.pop(side, None)
            change = None
            if before is not None and before[0] == index - 1:
                change = frame_change(before[1], frame)
            if side == "driving":
                sample.driving_motion = change
            else:
                sample.seen, sample.motion = True, change
                # a copy: the pinned buffer it came in goes back to the allocator now
                self._batch.append((sample, np.array(as_uint8(frame))))
                if len(self._batch) >= EMBED_BATCH:
                    self._embed_batch()
        if index + 1 in samples:
            self._before[side] = (index, frame)

    def _embed_batch(self) -> None:
        if not self._batch:
            return
        samples: Sequence[_Sample] = [sample for sample, _ in self._batch]
        embeddings = self.embed(np.stack([frame for _, frame in self._batch]))
        self._batch = []
        reference = self._reference.result().float().numpy()
        for sample, value in zip(samples, cosine_similarity(embeddings, reference), strict=True):
            sample.identity = float(value)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
