"""A worker's calls made once on synthetic rows before its first real row, so that their CUDA
graphs (``model.cuda_graphs``) are captured while the worker starts rather than inside the job.

:class:`~pipeline.models._cuda_graphs.GraphedCall` captures a signature the second time it sees
it, and the host records a graph about as slowly as it launches the call, with the GPU waiting:
on the H200 the first calls of a real render captured 12 graphs in 9 s, ~9 % of its span
(docs/benchmarks.md). Which signatures a worker needs follows from its stream count S: the
batched call for 1..S streams (the UNet, the observation of their pixels and the decoder of
their frames), a chunk's observation, a portrait's encoding and a row's signal embeddings.
Banks with history keyframes come later in a row (from ``keyframe_min_chunks`` calls on) and in
too many mixes to rehearse; they are still captured when first seen twice.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ._animator import StreamingAnimator

logger = logging.getLogger(__name__)

# a graphed call runs eagerly the first time it sees a signature and captures it the second;
# the first frames leave the window after the schedule's warm-up calls, so the decoder sees its
# first signature in the call after those and its second in the one after that
_SIGHTS = 2


@torch.no_grad()
def rehearse(animator: StreamingAnimator, streams: int, *, embed_batch: int = 0) -> float:
    """Make every call a worker of ``streams`` stream slots makes in a row's first calls, each
    signature twice, on synthetic rows (a still portrait driving itself, so no history keyframe
    joins), and the embeddings of 1..``embed_batch`` images (a row's signals); returns the
    seconds it took. Nothing is kept but the graphs (and the libraries' warm
    state); the rows rendered afterwards are unchanged."""
    started = time.monotonic()
    captures = animator.models.graph_captures()
    size = animator.resolution
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    portrait = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], ramp[::-1, None]), -1)
    chunk = np.repeat(portrait[None], animator.schedule.chunk_frames, axis=0)  # driving itself
    for images in range(1, embed_batch + 1):
        inputs = animator.clip_inputs(np.repeat(portrait[None], images, axis=0))
        for _ in range(_SIGHTS):
            animator.embed_images(inputs)
    schedule = animator.schedule
    calls = schedule.pending_frames // schedule.chunk_frames + _SIGHTS  # the warm-up emits none
    for count in range(1, streams + 1):
        states = [
            animator.fuse_reference(portrait, seed=i, stream_id=f"rehearsal-{count}-{i}")
            for i in range(count)
        ]
        for _ in range(calls):
            animator.advance(states, [chunk] * count)
    if animator.models.device.type == "cuda":
        torch.cuda.synchronize(animator.models.device)
    seconds = time.monotonic() - started
    logger.info(
        "rehearsed 1..%d streams in %.1f s: %d CUDA graph(s) captured",
        streams,
        seconds,
        animator.models.graph_captures() - captures,
    )
    return seconds
