"""The streaming animator on the tiny model: chunks, determinism, batching, resume, flat memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import TINY_RESOLUTION

from pipeline.animate import StreamingAnimator, deserialize_state, serialize_state
from pipeline.config import AnimatorConfig

SIZE = TINY_RESOLUTION


def portrait(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (9, 9, 3)).astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(base).resize((96, 96), Image.BICUBIC))


def driving(frames: int, seed: int = 1) -> np.ndarray:
    """Smoothly changing frames (a moving blob), like a video."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    colours = rng.uniform(0, 255, (3,))
    out = np.empty((frames, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(frames):
        cx, cy = 0.5 + 0.25 * np.sin(i / 5), 0.5 + 0.2 * np.cos(i / 7)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.03)
        out[i] = (blob[..., None] * colours + (1 - blob[..., None]) * 40).astype(np.uint8)
    return out


def animate(
    animator: StreamingAnimator, frames: np.ndarray, *, seed: int = 3, image: int = 0
) -> torch.Tensor:
    stream = animator.fuse_reference(portrait(image), seed=seed)
    outputs = []
    whole = len(frames) - len(frames) % 4
    for start in range(0, whole, 4):
        outputs.append(animator.push(stream, frames[start : start + 4]))
    outputs.append(animator.finish(stream, frames[whole:]))
    return torch.cat(outputs)


@pytest.fixture(scope="module")
def animator(tiny_models) -> StreamingAnimator:
    return StreamingAnimator(tiny_models, AnimatorConfig(keyframe_threshold=0.5), resolution=SIZE)


@pytest.mark.slow
def test_four_frames_in_four_frames_out_after_the_warm_up(animator) -> None:
    stream = animator.fuse_reference(portrait(0), seed=1)
    frames = driving(24)
    counts = [animator.push(stream, frames[i : i + 4]).shape[0] for i in range(0, 24, 4)]
    assert counts == [0, 0, 0, 4, 4, 4]  # a frame leaves three calls after it arrives
    tail = animator.finish(stream)
    assert tail.shape == (12, SIZE, SIZE, 3) and tail.dtype == torch.uint8
    assert stream.done and stream.frames_out == 24 and stream.calls == 9


def test_keep_warmup_emits_the_transition_first(tiny_models) -> None:
    animator = StreamingAnimator(
        tiny_models, AnimatorConfig(keep_warmup=True, output_dtype="float"), resolution=SIZE
    )
    stream = animator.fuse_reference(portrait(0), seed=1)
    first = animator.push(stream, driving(4))
    assert first.shape == (4, SIZE, SIZE, 3) and first.dtype == torch.float32
    assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0


@pytest.mark.parametrize(
    "count", [1, 3, 5, *(pytest.param(n, marks=pytest.mark.slow) for n in (13, 18))]
)
def test_every_driving_frame_gets_exactly_one_output_frame(animator, count: int) -> None:
    out = animate(animator, driving(count))
    assert out.shape == (count, SIZE, SIZE, 3)


@pytest.mark.slow
def test_same_seed_same_frames_other_seed_other_frames(animator) -> None:
    frames = driving(14)
    first = animate(animator, frames, seed=7)
    again = animate(animator, frames, seed=7)
    other = animate(animator, frames, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.slow
def test_history_keyframes_are_capped(tiny_models) -> None:
    animator = StreamingAnimator(
        tiny_models, AnimatorConfig(keyframe_threshold=0.0), resolution=SIZE
    )
    stream = animator.fuse_reference(portrait(0), seed=1)
    frames = driving(80)
    lengths = []
    for start in range(0, 80, 4):
        animator.push(stream, frames[start : start + 4])
        lengths.append(stream.bank_kv()[0][0].shape[2])
    assert stream.num_keyframes == 3
    assert stream.motion_bank.shape[0] == 4  # the portrait + 3 keyframes: no unbounded growth
    assert lengths[12] == lengths[-1] == 4 * lengths[0]  # portrait + 3 keyframes, then constant


@pytest.mark.slow
def test_batched_streams_equal_single_streams(tiny_models) -> None:
    """Three portraits, different seeds and lengths and keyframe counts, handed in in a different
    order at every call: one batched call per step, each stream's frames as if alone, and inside
    the call the streams run longest bank first whatever order they came in (so a CUDA graph
    serves a mix of keyframe counts, not one ordering of it)."""
    config = AnimatorConfig(keyframe_threshold=0.0, output_dtype="float")  # 3, 2 and 0 keyframes
    animator = StreamingAnimator(tiny_models, config, resolution=SIZE)
    inputs = [(driving(42, seed=1), 5, 0), (driving(31, seed=2), 6, 1), (driving(9, seed=3), 7, 2)]
    singles = [animate(animator, frames, seed=seed, image=image) for frames, seed, image in inputs]
    banks_seen: list[list[int]] = []
    real_batch_banks = animator._batch_banks

    def spy(banks):
        banks_seen.append([bank[0][0].shape[2] for bank in banks])
        return real_batch_banks(banks)

    animator._batch_banks = spy
    streams = [animator.fuse_reference(portrait(image), seed=seed) for _, seed, image in inputs]
    outputs: list[list[torch.Tensor]] = [[] for _ in inputs]
    positions = [0] * len(inputs)
    calls = 0
    joins = [0, 3, 5]  # the later rows join a running batch: banks of different lengths meet
    while not all(s.done for s in streams):
        active = [i for i, s in enumerate(streams) if not s.done and joins[i] <= calls]
        if calls % 2:
            active.reverse()  # the fewest keyframes first: the call reorders them
        calls += 1
        chunks = []
        for i in active:
            frames = inputs[i][0]
            chunk = frames[positions[i] : positions[i] + 4]
            positions[i] += len(chunk)
            chunks.append(chunk if len(chunk) else None)
        for i, out in zip(active, animator.advance([streams[i] for i in active], chunks)):
            outputs[i].append(out)
    keyframes = [s.num_keyframes for s in streams]
    assert len(set(keyframes)) > 1, f"want streams with different keyframe counts, got {keyframes}"
    assert any(len(set(lengths)) > 1 for lengths in banks_seen), banks_seen
    assert all(lengths == sorted(lengths, reverse=True) for lengths in banks_seen), banks_seen
    for single, pieces in zip(singles, outputs):
        batched = torch.cat(pieces)
        assert batched.shape == single.shape
        assert (batched - single).abs().max() < 1e-5  # fp32 rounding only (measured: 7e-7)


@pytest.mark.parametrize(
    "stop_after_calls",
    [0, *(pytest.param(n, marks=pytest.mark.slow) for n in (2, 12, 15))],  # 0: the quick suite's
)
def test_save_and_restore_gives_the_uninterrupted_frames(animator, stop_after_calls: int) -> None:
    frames = driving(50)
    reference = animate(animator, frames, seed=11, image=4)
    stream = animator.fuse_reference(portrait(4), seed=11)
    produced = []
    position = 0
    for _ in range(stop_after_calls):
        chunk = frames[position : position + 4]
        position += len(chunk)
        produced.append(animator.advance([stream], [chunk if len(chunk) else None])[0])
    saved = serialize_state(stream.state_dict())
    del stream
    resumed = animator.restore(portrait(4), deserialize_state(saved))
    while not resumed.done:
        chunk = frames[position : position + 4]
        position += len(chunk)
        produced.append(animator.advance([resumed], [chunk if len(chunk) else None])[0])
    assert torch.equal(torch.cat(produced), reference)


@pytest.mark.slow
def test_restore_keeps_a_keyframe_decided_after_the_save(tiny_models) -> None:
    """A state saved while a keyframe candidate is still undecided (it is read at the next call,
    so the host never waits for the GPU) resumes to the uninterrupted frames and keyframes."""
    animator = StreamingAnimator(
        tiny_models, AnimatorConfig(keyframe_threshold=0.0), resolution=SIZE
    )
    frames = driving(60)
    reference_stream = animator.fuse_reference(portrait(2), seed=3)
    reference = torch.cat(
        [animator.push(reference_stream, frames[i : i + 4]) for i in range(0, 60, 4)]
        + [animator.finish(reference_stream)]
    )
    stream = animator.fuse_reference(portrait(2), seed=3)
    produced = [animator.push(stream, frames[i : i + 4]) for i in range(0, 40, 4)]
    assert stream.pending_keyframe is not None and stream.num_keyframes == 0
    saved = serialize_state(stream.state_dict())
    resumed = animator.restore(portrait(2), deserialize_state(saved))
    produced += [animator.push(resumed, frames[i : i + 4]) for i in range(40, 60, 4)]
    produced.append(animator.finish(resumed))
    assert resumed.num_keyframes == reference_stream.num_keyframes == 3
    assert torch.equal(torch.cat(produced), reference)


def test_restore_refuses_another_portrait(animator) -> None:
    stream = animator.fuse_reference(portrait(0), seed=1)
    animator.push(stream, driving(4))
    with pytest.raises(ValueError, match="portrait differs"):
        animator.restore(portrait(1), stream.state_dict())


def test_bad_inputs_are_explained(animator) -> None:
    stream = animator.fuse_reference(portrait(0), seed=1)
    with pytest.raises(
        ValueError,
        match=r"push\(\) takes 4 frames, got 3; give the last, shorter chunk to finish\(\)",
    ):
        animator.push(stream, driving(3))
    with pytest.raises(ValueError, match=r"driving chunk must be \(1\.\.4, 64, 64, 3\) uint8"):
        animator.push(stream, np.zeros((4, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="ended before any driving frame"):
        animator.finish(stream)
    with pytest.raises(ValueError, match="portrait must be square"):
        animator.fuse_reference(np.zeros((64, 80, 3), dtype=np.uint8), seed=0)


MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from pipeline.models import load_personalive
    from pipeline.animate import StreamingAnimator
    from pipeline.config import AnimatorConfig
    weights, frames = sys.argv[1], int(sys.argv[2])
    animator = StreamingAnimator(load_personalive(weights, "fp32", "cpu", architecture="tiny"),
                                 AnimatorConfig(keyframe_threshold=0.0), resolution=64)
    stream = animator.fuse_reference(np.full((64, 64, 3), 128, np.uint8), seed=0)
    rng = np.random.default_rng(0)
    out = 0
    for _ in range(frames // 4):
        out += animator.push(stream, rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)).shape[0]
    out += animator.finish(stream).shape[0]
    print(json.dumps({"frames": out, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    """
)


@pytest.mark.slow
def test_memory_stays_flat_over_a_long_stream(tiny_weights) -> None:
    """Peak RSS animating 400 frames is within 10 % of animating 100 (separate processes)."""
    peaks = {}
    for frames in (100, 400):
        result = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(tiny_weights), str(frames)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["frames"] == frames
        peaks[frames] = report["peak_kb"]
    assert peaks[400] <= peaks[100] * 1.10, peaks


def test_a_rehearsal_makes_each_stream_counts_calls_and_leaves_the_rows_unchanged(
    tiny_models,
) -> None:
    """A worker with CUDA graphs makes its first calls on synthetic rows before the first real
    row (``model.graphs_at_start``): the batched call for 1..S streams, each past the warm-up to
    two calls that emit frames, and the signals' embeddings of 1..n images. It keeps no state:
    rows rendered afterwards equal those of an animator that never rehearsed."""
    from pipeline.animate import rehearse

    animator = StreamingAnimator(tiny_models, AnimatorConfig(), resolution=SIZE)
    fresh = StreamingAnimator(tiny_models, AnimatorConfig(), resolution=SIZE)
    calls: list[tuple[int, int]] = []  # (streams, frames emitted)
    embedded: list[int] = []
    advance, embed = animator.advance, animator.embed_images

    def counted_advance(streams, frames):
        outputs = advance(streams, frames)
        calls.append((len(streams), sum(int(o.shape[0]) for o in outputs)))
        return outputs

    def counted_embed(inputs):
        embedded.append(int(inputs.shape[0]))
        return embed(inputs)

    animator.advance, animator.embed_images = counted_advance, counted_embed
    assert rehearse(animator, 3, embed_batch=5) > 0
    # per stream count: 3 warm-up calls, then 2 calls of 4 frames a stream (the decoder's two)
    assert calls == [(n, e) for n in (1, 2, 3) for e in (0, 0, 0, 4 * n, 4 * n)]
    assert embedded == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    del animator.advance, animator.embed_images
    frames = driving(22)
    assert torch.equal(animate(animator, frames, seed=5), animate(fresh, frames, seed=5))
