"""Identity and motion signals of a row (pipeline/worker/_signals.py, docs/signals.md).

* the pure functions on real arrays: which frames are sampled, frame-to-frame change, cosine
  similarity;
* the model's own image encoder (the tiny random one): the portrait scores ~1 against its own
  conditioning embedding, noise lower;
* the recorder fed chunk by chunk as a row feeds it: lengths, times, bounds, resumed rows,
  rows without driving pixels, determinism;
* real rows through the RowRenderer: signals of the right length and bounds, and the output frames
  bit-identical with signals on and off; a resumed row's signals start where it resumed.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RESOLUTION
from media_factory import pattern_video
from PIL import Image

from pipeline.animate import StreamingAnimator
from pipeline.config import ModelConfig, StorageConfig, VideoConfig
from pipeline.media import VideoReader, load_image
from pipeline.storage import Storage
from pipeline.worker import RowRenderer, RowTask, build_animator
from pipeline.worker._signals import (
    SignalRecorder,
    clip_embedder,
    cosine_similarity,
    encoder_name,
    frame_change,
    sample_indices,
)

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "manifests/media/portrait_a.png"
SIZE = TINY_RESOLUTION
RATE = Fraction(25)


def square_portrait(size: int | None = None) -> np.ndarray:
    """The bundled portrait photo, centre-cropped square (optionally resized)."""
    photo = load_image(str(PORTRAIT))
    side = min(photo.shape[:2])
    top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
    square = np.ascontiguousarray(photo[top : top + side, left : left + side])
    if size is None:
        return square
    return np.asarray(Image.fromarray(square).resize((size, size), Image.LANCZOS))


def moving_frames(count: int, first: int = 0) -> np.ndarray:
    """A bright square sliding one pixel per frame over a dark background."""
    frames = np.full((count, SIZE, SIZE, 3), 30, np.uint8)
    for i in range(count):
        x = (first + i) % (SIZE - 16)
        frames[i, 24:40, x : x + 16] = 220
    return frames


def noise_frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def animator(tiny_models) -> StreamingAnimator:
    return StreamingAnimator(tiny_models, resolution=SIZE)


@pytest.fixture(scope="module")
def reference(animator) -> torch.Tensor:
    """The portrait's conditioning embedding, as a row's stream holds it."""
    return animator.fuse_reference(square_portrait(), seed=0).clip_embeds


def record(
    animator: StreamingAnimator,
    reference: torch.Tensor,
    output: np.ndarray,
    driving: np.ndarray | None,
    *,
    every: float = 1.0,
    first_output: int = 0,
    first_driving: int = 0,
    chunk: int = 4,
) -> dict | None:
    """Feed a recorder as a row does: per call, the driving chunk and the output frames."""
    recorder = SignalRecorder(
        clip_embedder(animator), reference, frames=first_output + len(output), rate=RATE,
        every_seconds=every, model=encoder_name(animator.models.image_encoder.config),
        first_output=first_output, first_driving=first_driving,
    )  # fmt: skip
    try:
        for start in range(0, len(output), chunk):
            drive = None if driving is None else driving[start : start + chunk]
            recorder.add(drive, torch.from_numpy(output[start : start + chunk]))
        return recorder.finish()
    finally:
        recorder.close()


# ------------------------------------------------------------------------------------------
# The pure functions
# ------------------------------------------------------------------------------------------


def test_one_sample_in_the_middle_of_each_stretch_of_every_seconds() -> None:
    assert sample_indices(50, RATE, 1.0) == [12, 37]  # 2 s at 25 fps
    assert sample_indices(70, RATE, 1.0) == [12, 37, 62]  # 2.8 s: the last stretch's middle is in
    assert sample_indices(60, RATE, 1.0) == [12, 37]  # 2.4 s: it is not
    assert sample_indices(250, Fraction(30000, 1001), 2.0) == [29, 89, 149, 209]
    assert sample_indices(50, RATE, 0.5) == [6, 18, 31, 43]
    for frames in (40, 125, 1000, 3001):  # the series is duration / every_seconds long
        for every in (0.5, 1.0, 3.0):
            duration = frames / 25
            assert len(sample_indices(frames, RATE, every)) == max(1, round(duration / every))
    assert sample_indices(10, RATE, 1.0) == [5]  # shorter than half a stretch: one sample
    assert sample_indices(10, RATE, 0.01) == list(range(1, 10))  # never frame 0, never twice
    assert sample_indices(100, RATE, 0.0) == [] and sample_indices(1, RATE, 1.0) == []


def test_frame_change_is_the_mean_absolute_change_from_0_to_1() -> None:
    frames = moving_frames(2)
    black, white = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    assert frame_change(frames[0], frames[0]) == 0.0
    assert frame_change(black, white) == 1.0 == frame_change(white, black)
    half = black.copy()
    half[:4] = 255
    assert frame_change(black, half) == pytest.approx(0.5)
    # the sliding square: 2 columns of 16 pixels change by 190 of 255, in all 3 channels
    expected = 2 * 16 * 3 * 190 / 255 / frames[0].size
    assert frame_change(frames[0], frames[1]) == pytest.approx(expected)
    assert frame_change(black / 255.0, half / 255.0) == pytest.approx(0.5)  # float frames: 0..1
    with pytest.raises(ValueError, match="shape"):
        frame_change(black, np.zeros((4, 4, 3), np.uint8))


def test_cosine_similarity_is_bounded_and_ignores_length() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=16)
    other = rng.normal(size=16)
    orthogonal = other - other @ reference / (reference @ reference) * reference
    rows = np.stack([3 * reference, -reference, orthogonal, np.zeros(16), other])
    similarity = cosine_similarity(rows, reference)
    assert similarity[:4] == pytest.approx([1.0, -1.0, 0.0, 0.0], abs=1e-12)
    assert -1 <= similarity[4] <= 1
    assert cosine_similarity(rows.astype(np.float16), reference) == pytest.approx(
        similarity, abs=2e-3
    )
    with pytest.raises(ValueError, match="reference"):
        cosine_similarity(rows, reference[:8])


# ------------------------------------------------------------------------------------------
# The model's image encoder
# ------------------------------------------------------------------------------------------


def test_the_portrait_scores_about_1_against_its_own_embedding_and_noise_lower(
    animator, reference
) -> None:
    """The embedding of output frames is made as the portrait's conditioning embedding is: the
    portrait at the output's size scores ~1, noise lower (random tiny weights: only the code
    path is real, not the numbers)."""
    embed = clip_embedder(animator)
    images = np.stack([square_portrait(SIZE), noise_frames(1)[0]])
    embeddings = embed(images)
    assert embeddings.shape == (2, animator.models.image_encoder.config.projection_dim)
    itself, noise = cosine_similarity(embeddings, reference.cpu().numpy())
    assert itself > 0.99
    assert noise < itself - 1e-4  # random weights: everything looks alike, but less
    assert np.array_equal(embed(images), embeddings)  # deterministic
    assert encoder_name(animator.models.image_encoder.config).startswith("CLIP vision encoder")


# ------------------------------------------------------------------------------------------
# The recorder
# ------------------------------------------------------------------------------------------


def test_a_still_portrait_keeps_its_identity_and_does_not_move(animator, reference) -> None:
    """Output = the portrait itself in every frame, driven by a moving square: identity ~1, no
    output motion, the driver's motion measured; one sample per second at the stretch's middle
    (frame 12 starts a 4-frame call: the frame before it came in the call before)."""
    output = np.repeat(square_portrait(SIZE)[None], 70, axis=0)
    signals = record(animator, reference, output, moving_frames(70))
    assert signals is not None
    assert signals["times"] == [0.48, 1.48, 2.48]
    assert all(value > 0.99 for value in signals["identity"])
    assert signals["motion"] == [0.0, 0.0, 0.0]
    expected = frame_change(*moving_frames(2))
    assert signals["driving_motion"] == pytest.approx([expected] * 3, abs=1e-4)
    assert signals["every_seconds"] == 1.0 and signals["from_seconds"] == 0.0
    assert signals["model"] == encoder_name(animator.models.image_encoder.config)


def test_noise_scores_lower_and_moves(animator, reference) -> None:
    still = record(animator, reference, np.repeat(square_portrait(SIZE)[None], 50, 0), None)
    noise = record(animator, reference, noise_frames(50), None)
    assert still is not None and noise is not None
    assert len(noise["identity"]) == 2
    assert all(-1 <= n < s for n, s in zip(noise["identity"], still["identity"], strict=True))
    # two independent uniform noise frames differ by a third of the range on average
    assert noise["motion"] == pytest.approx([1 / 3, 1 / 3], abs=0.01)
    # no driving pixels (cached pose/motion, or the flush): no driving motion, said as None
    assert noise["driving_motion"] == [None, None]


def test_a_long_row_keeps_numbers_only_and_is_deterministic(animator, reference) -> None:
    """40 s of output at 0.5 s: 80 samples, every value bounded; the same frames give the same
    numbers."""
    output = np.concatenate([moving_frames(500), noise_frames(500, seed=1)])
    first = record(animator, reference, output, moving_frames(1000), every=0.5)
    again = record(animator, reference, output, moving_frames(1000), every=0.5)
    assert first == again and first is not None
    assert len(first["times"]) == 80 == len(first["identity"]) == len(first["motion"])
    assert first["times"] == sorted(first["times"]) and first["times"][-1] < 40
    assert all(-1 <= value <= 1 for value in first["identity"])
    assert all(0 <= value <= 1 for value in first["motion"] + first["driving_motion"])
    # the motion series sees the change from a sliding square to noise
    assert max(first["motion"][:40]) < 0.2 < min(first["motion"][40:])


def test_a_resumed_row_has_signals_only_from_where_it_resumed(animator, reference) -> None:
    """A row resumed at frame 40 (its first 40 frames were committed by an attempt that did not
    finish): its samples start after frame 40, and from_seconds says where; the driving frames
    it is handed start later still (the animator had taken frames ahead)."""
    output = np.repeat(square_portrait(SIZE)[None], 35, axis=0)
    signals = record(
        animator, reference, output, moving_frames(35, first=48), first_output=40,
        first_driving=48,
    )  # fmt: skip
    assert signals is not None
    assert signals["from_seconds"] == 1.6
    assert signals["times"] == [2.48]  # frame 62 (frame 37 is before the resume point)
    assert signals["driving_motion"] == pytest.approx([frame_change(*moving_frames(2))], abs=1e-4)


def test_a_failing_encoder_leaves_the_row_without_signals(animator, reference) -> None:
    def broken(images: np.ndarray) -> np.ndarray:
        raise RuntimeError("encoder gone")

    recorder = SignalRecorder(
        broken, reference, frames=50, rate=RATE, every_seconds=1.0, model="broken"
    )
    for start in range(0, 50, 4):
        recorder.add(None, torch.from_numpy(noise_frames(4, seed=start)))
    assert recorder.finish() is None


# ------------------------------------------------------------------------------------------
# Real rows through the RowRenderer
# ------------------------------------------------------------------------------------------


def render(renderer: RowRenderer, clip: Path, job: Path, every: float):
    task = RowTask(
        "row", str(PORTRAIT), str(clip), None, str(job), "row-k", None, 0,
        signals_every_seconds=every,
    )  # fmt: skip
    return renderer.render(task)


@pytest.fixture(scope="module")
def tiny_model_config(tiny_weights) -> ModelConfig:
    return ModelConfig(
        architecture="tiny", weights_dir=str(tiny_weights), dtype="fp32", device="cpu",
        resolution=SIZE,
    )  # fmt: skip


def test_a_rows_signals_leave_its_frames_unchanged(tiny_model_config, tmp_path: Path) -> None:
    clip = pattern_video(tmp_path / "c.mp4", frames=70, rate="25", size="96x72")
    renderer = RowRenderer(
        build_animator(tiny_model_config), Storage(StorageConfig()),
        VideoConfig(preset="ultrafast", audio="none"), tmp_path,
    )  # fmt: skip
    with_signals = render(renderer, clip, tmp_path / "on", 1.0)
    without = render(renderer, clip, tmp_path / "off", 0.0)
    assert (with_signals.status, without.status) == ("done", "done"), with_signals.error
    assert without.signals is None
    signals = with_signals.signals
    assert signals is not None
    assert signals["times"] == [0.48, 1.48, 2.48]  # 2.8 s of output, one sample a second
    for name in ("identity", "motion", "driving_motion"):
        assert len(signals[name]) == 3
    assert all(-1 <= value <= 1 for value in signals["identity"])
    assert all(0 <= value <= 1 for value in signals["motion"] + signals["driving_motion"])
    assert signals["driving_motion"][0] > 0  # testsrc2 moves
    frames_on = np.stack(list(VideoReader(with_signals.output)))
    frames_off = np.stack(list(VideoReader(without.output)))
    assert frames_on.shape[0] == 70 and np.array_equal(frames_on, frames_off)


def test_a_resumed_rows_signals_start_where_it_resumed(
    tiny_model_config, tmp_path: Path, monkeypatch
) -> None:
    """The first attempt dies at its 13th denoising call, having put out 36 frames (two
    16-frame segments and the partial one committed as it failed); the second resumes at frame
    36 and samples only what it renders."""
    clip = pattern_video(tmp_path / "c.mp4", frames=100, rate="25", size="96x72")
    video = VideoConfig(
        preset="ultrafast", audio="none", segment_seconds=0.64, first_segment_seconds=0.64
    )
    (tmp_path / "scratch").mkdir()
    animator = build_animator(tiny_model_config)
    real_advance, calls = animator.advance, []

    def dies_mid_row(*args, **kwargs):
        calls.append(1)
        if len(calls) > 12:
            raise RuntimeError("the worker died")
        return real_advance(*args, **kwargs)

    monkeypatch.setattr(animator, "advance", dies_mid_row)
    storage = Storage(StorageConfig())
    first = render(RowRenderer(animator, storage, video, tmp_path / "scratch"), clip, tmp_path, 1.0)
    assert first.status == "failed" and first.signals is None
    monkeypatch.setattr(animator, "advance", real_advance)
    second = render(
        RowRenderer(animator, storage, video, tmp_path / "scratch"), clip, tmp_path, 1.0
    )
    assert second.status == "done" and second.frames == 100, second.error
    signals = second.signals
    assert signals is not None
    assert signals["from_seconds"] == 1.44
    assert signals["times"] == [1.48, 2.48, 3.48]  # not 0.48: rendered by the first attempt
    assert all(value is not None for value in signals["identity"] + signals["motion"])
