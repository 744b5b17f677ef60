"""pipeline.media: probe, reader, image loading, encoder, concat and mux.

Media are made in tmp_path by `media_factory` with the ffmpeg binary and PyAV, so expected
values come from an independent source.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import (
    FFMPEG,
    click_audio,
    click_time,
    decode_audio,
    decode_video,
    ffmpeg,
    frame_number,
    number_image,
    numbered_video,
    pattern_video,
    video_with_click,
)
from PIL import Image

from pipeline.media import (
    FrameChunk,
    MediaError,
    VideoEncoder,
    VideoReader,
    concat_segments,
    load_image,
    mux_audio,
    probe,
)

RATES = [Fraction(25), Fraction(30), Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60)]


def encode(path: Path, frames: np.ndarray, rate: Fraction = Fraction(25), **options) -> Path:
    height, width = frames.shape[1:3]
    with VideoEncoder(path, frame_rate=rate, width=width, height=height, **options) as encoder:
        encoder.add_frames(frames)
    return path


def numbered_frames(count: int) -> np.ndarray:
    return np.stack([number_image(i) for i in range(count)])


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared read-only inputs."""
    folder = tmp_path_factory.mktemp("media")
    pattern_video(folder / "gop.mp4", frames=47, rate="30000/1001", gop=12, preset="medium")
    pattern_video(
        folder / "av.mp4",
        frames=50,
        size="96x64",
        audio="sine=frequency=440:sample_rate=44100:duration=2",
    )
    ffmpeg("-i", folder / "gop.mp4", "-c", "copy", folder / "gop.mkv")
    ffmpeg("-i", folder / "gop.mp4", "-c", "copy", folder / "gop.ts")
    ffmpeg("-display_rotation", "90", "-i", folder / "av.mp4", "-c", "copy", folder / "rot.mp4")
    return folder


# --- probe -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES, ids=str)
def test_exact_frame_rate_round_trip(tmp_path: Path, rate: Fraction) -> None:
    path = encode(tmp_path / "out.mp4", numbered_frames(23), rate)

    with av.open(str(path)) as container:  # what the container says, read independently
        assert container.streams.video[0].average_rate == rate
    video = probe(path).video
    assert video is not None
    assert video.frame_rate == rate and isinstance(video.frame_rate, Fraction)
    assert (video.num_frames, video.num_frames_exact) == (23, True)
    assert abs(video.duration_seconds - float(23 / rate)) < float(1 / rate)
    reader = VideoReader(path)
    frames = list(reader)
    assert reader.frame_rate == rate
    assert [frame_number(f) for f in frames] == list(range(23))


def test_probe_streams(media: Path) -> None:
    info = probe(media / "av.mp4")
    assert info.format_name.startswith("mov,mp4")
    video, audio = info.video, info.audio
    assert video is not None and audio is not None
    assert (video.codec, video.pix_fmt, video.width, video.height) == ("h264", "yuv420p", 96, 64)
    assert (video.rotation, video.is_variable_frame_rate, video.start_seconds) == (0, False, 0.0)
    assert (video.frame_rate, video.num_frames) == (25, 50)
    assert (audio.codec, audio.sample_rate, audio.channels, audio.layout) == (
        "aac",
        44100,
        1,
        "mono",
    )
    assert audio.duration_seconds == pytest.approx(2.0, abs=0.05)
    assert info.audio_streams == (audio,)


def test_probe_file_objects(media: Path) -> None:
    expected = probe(media / "av.mp4")
    with open(media / "av.mp4", "rb") as handle:
        assert probe(handle).video == expected.video
    assert probe(io.BytesIO((media / "av.mp4").read_bytes())).audio == expected.audio


def test_probe_estimates_frames_without_a_count(media: Path) -> None:
    video = probe(media / "gop.mkv").video
    assert video is not None
    assert video.frame_rate == Fraction(30000, 1001)
    assert (video.num_frames, video.num_frames_exact) == (47, False)
    assert len(list(VideoReader(media / "gop.mkv"))) == 47


# --- VideoReader ---------------------------------------------------------------------------------


def test_chunks_cover_every_frame_with_timestamps(media: Path) -> None:
    reader = VideoReader(media / "gop.mp4")
    chunks = list(reader.chunks(10))

    assert [len(c) for c in chunks] == [10, 10, 10, 10, 7]
    assert [c.start_index for c in chunks] == [0, 10, 20, 30, 40]
    assert all(isinstance(c, FrameChunk) and c.frames.dtype == np.uint8 for c in chunks)
    pts = np.concatenate([c.pts_seconds for c in chunks])
    np.testing.assert_allclose(pts, np.arange(47) * 1001 / 30000)
    np.testing.assert_array_equal(
        np.concatenate([c.frames for c in chunks]), np.stack(list(reader))
    )
    assert (reader.num_frames, len(reader), reader.width, reader.height) == (47, 47, 64, 48)


@pytest.mark.parametrize("name", ["gop.mp4", "gop.mkv", "gop.ts"])
def test_start_frame_equals_slice_of_full_read(media: Path, name: str) -> None:
    full = np.stack(list(VideoReader(media / name)))
    for start in (1, 13, 30, 46):
        reader = VideoReader(media / name, start_frame=start)
        chunks = list(reader.chunks(8))
        assert chunks[0].start_index == start and len(reader) == 47 - start
        np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]), full[start:])


def test_max_frames_and_start_frame_bounds(media: Path) -> None:
    reader = VideoReader(media / "gop.mp4", max_frames=20, start_frame=5)
    assert (reader.num_frames, len(reader), len(list(reader))) == (20, 15, 15)
    with pytest.raises(
        ValueError, match=r"start_frame = 48 must be between 0 and num_frames \(47\)"
    ):
        VideoReader(media / "gop.mp4", start_frame=48)
    with pytest.raises(ValueError, match=r"Invalid fit \('zoom'\)\. Supported values are crop"):
        VideoReader(media / "gop.mp4", fit="zoom")  # type: ignore[arg-type]


def test_variable_frame_rate_becomes_constant(tmp_path: Path) -> None:
    steps_ms = [40, 40, 20, 20, 20, 60, 100, 40, 30, 50] * 4  # irregular, 1.68 s in all
    pts = np.concatenate([[0], np.cumsum(steps_ms)[:-1]]).tolist()
    path = numbered_video(tmp_path / "vfr.mp4", pts=pts, time_base=Fraction(1, 1000))

    video = probe(path).video
    assert video is not None and video.is_variable_frame_rate
    rate = video.frame_rate
    frames = list(VideoReader(path))
    assert len(frames) == round(video.duration_seconds * rate)
    # Output k shows the last input frame at or before (k + 1/2) / rate.
    seconds = np.array(pts) / 1000
    expected = [
        int(np.searchsorted(seconds, (k + 0.5) / float(rate), side="right")) - 1
        for k in range(len(frames))
    ]
    assert [frame_number(f) for f in frames] == expected
    assert expected != list(range(len(frames)))  # some frames were repeated or dropped


def test_rotation_metadata_gives_upright_frames(media: Path) -> None:
    video = probe(media / "rot.mp4").video
    assert video is not None
    assert (video.rotation, video.width, video.height) == (90, 64, 96)

    frames = np.stack(list(VideoReader(media / "rot.mp4")))
    stored = np.stack(list(VideoReader(media / "av.mp4")))
    assert frames.shape == (50, 96, 64, 3)  # portrait
    np.testing.assert_array_equal(frames, np.rot90(stored, k=1, axes=(1, 2)))
    # ffmpeg's own autorotation agrees
    raw = subprocess.run(
        [FFMPEG, "-v", "error", "-i", media / "rot.mp4", "-frames:v", "1", "-f", "rawvideo",
         "-pix_fmt", "rgb24", "pipe:"], capture_output=True, check=True
    ).stdout  # fmt: skip
    reference = np.frombuffer(raw, np.uint8).reshape(96, 64, 3)
    assert np.abs(frames[0].astype(int) - reference).mean() < 2


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_fit_modes(media: Path, fit: str) -> None:
    frames = next(VideoReader(media / "av.mp4", size=32, fit=fit).chunks(4)).frames  # 96x64 in
    assert frames.shape == (4, 32, 32, 3)
    black_rows = (frames[0].max(axis=(1, 2)) < 20).sum()
    if fit == "pad":  # 96x64 -> 32x21 inside 32x32: bars of 5 and 6 rows
        assert black_rows == 11 and frames[0, 6:26].mean() > 40
    else:
        assert black_rows == 0


def test_non_square_pixels_give_display_size(tmp_path: Path) -> None:
    path = tmp_path / "anamorphic.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "3", "-vf", "setsar=2", path)
    video = probe(path).video
    assert video is not None and (video.width, video.height) == (128, 48)
    assert np.stack(list(VideoReader(path))).shape == (3, 48, 128, 3)


def test_rotated_fit_is_square_and_upright(media: Path) -> None:
    frame = next(iter(VideoReader(media / "rot.mp4", size=32, fit="pad")))
    assert frame.shape == (32, 32, 3)
    black_columns = (frame.max(axis=(0, 2)) < 20).sum()
    assert black_columns >= 10  # a portrait frame is padded left and right


# --- load_image ----------------------------------------------------------------------------------


def _gradient(height: int = 40, width: int = 60) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4, y * 6, np.full_like(x, 128)], axis=-1).astype(np.uint8)


def test_load_image_rgb_and_fit(tmp_path: Path) -> None:
    Image.fromarray(_gradient()).save(tmp_path / "rgb.png")
    image = load_image(tmp_path / "rgb.png")
    np.testing.assert_array_equal(image, _gradient())
    for fit in ("crop", "pad", "stretch"):
        assert load_image(tmp_path / "rgb.png", size=24, fit=fit).shape == (24, 24, 3)
    padded = load_image(tmp_path / "rgb.png", size=30, fit="pad")
    assert padded[:4].max() < 10 and padded[-4:].max() < 10
    with open(tmp_path / "rgb.png", "rb") as handle:
        np.testing.assert_array_equal(load_image(handle), _gradient())


def test_load_image_converts_modes(tmp_path: Path) -> None:
    rgb = _gradient()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    Image.fromarray(rgb[..., 1]).save(tmp_path / "gray.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:10, :, 3] = 0  # transparent band
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.png")

    for name in ("cmyk.jpg", "gray.png", "gray16.png", "rgba.png", "pal.png"):
        image = load_image(tmp_path / name)
        assert (image.shape, image.dtype) == ((40, 60, 3), np.uint8), name
    assert np.abs(load_image(tmp_path / "cmyk.jpg").astype(int) - rgb).mean() < 6
    for name in ("gray.png", "gray16.png"):
        np.testing.assert_array_equal(load_image(tmp_path / name), np.dstack([rgb[..., 1]] * 3))
    composited = load_image(tmp_path / "rgba.png")
    assert (composited[:10] == 255).all()  # transparent is white
    np.testing.assert_array_equal(composited[10:], rgb[10:])
    assert np.abs(load_image(tmp_path / "pal.png").astype(int) - rgb).mean() < 12


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored picture must be turned 90 degrees clockwise for display
    Image.fromarray(_gradient()).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "rotated.jpg")
    assert image.shape == (60, 40, 3)
    expected = np.rot90(_gradient(), k=-1)
    assert np.abs(image.astype(int) - expected).mean() < 4


def test_load_image_errors(tmp_path: Path, media: Path) -> None:
    with pytest.raises(MediaError, match=r"av\.mp4 is not an image PIL can read; give a PNG"):
        load_image(media / "av.mp4")
    Image.fromarray(_gradient(400, 400)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.png could not be decoded as an image .*truncated"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(MediaError, match=r"missing\.png: no such file"):
        load_image(tmp_path / "missing.png")


# --- VideoEncoder --------------------------------------------------------------------------------


def test_encoder_writes_beside_then_renames(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "video.mp4"
    encoder = VideoEncoder(
        dest, frame_rate=Fraction(30000, 1001), width=64, height=48, preset="ultrafast"
    )  # ultrafast: no lookahead, so packets (and the file) appear at once
    encoder.add_frames(numbered_frames(5))
    encoder.add_frames(number_image(5))  # a single (H, W, 3) frame
    assert not dest.exists()
    assert [p.name.startswith(".video.partial-") for p in dest.parent.iterdir()] == [True]
    assert encoder.close() == 6
    assert [p.name for p in dest.parent.iterdir()] == ["video.mp4"]
    assert [frame_number(f) for f in VideoReader(dest)] == list(range(6))


def test_encoder_exception_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "video.mp4"
    with pytest.raises(KeyError), VideoEncoder(dest, frame_rate=25, width=64, height=48) as encoder:
        encoder.add_frames(numbered_frames(3))
        raise KeyError("worker died")
    assert list(tmp_path.iterdir()) == []


def test_encoder_colours_round_trip(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128), (250, 200, 150)]
    frames = np.stack([np.full((48, 64, 3), c, np.uint8) for c in colours])
    decoded, _ = decode_video(encode(tmp_path / "c.mp4", frames))
    assert np.abs(decoded.astype(int) - frames).max() <= 4


def test_encoder_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"yuv420p needs an even width and height, got 63x48"):
        VideoEncoder(tmp_path / "a.mp4", frame_rate=25, width=63, height=48)
    with pytest.raises(TypeError, match=r"frame_rate = 29\.97 must be an int or a Fraction"):
        VideoEncoder(tmp_path / "a.mp4", frame_rate=29.97, width=64, height=48)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unsupported output suffix '\.avi'"):
        VideoEncoder(tmp_path / "a.avi", frame_rate=25, width=64, height=48)
    with VideoEncoder(tmp_path / "b.mp4", frame_rate=25, width=64, height=48) as encoder:
        with pytest.raises(
            ValueError, match=r"frames must be uint8 \(k, 48, 64, 3\) RGB, got float32"
        ):
            encoder.add_frames(np.zeros((2, 48, 64, 3), np.float32))
        encoder.add_frames(numbered_frames(1))
    with pytest.raises(ValueError, match=r"c\.mp4: no frames were added; nothing was written"):
        VideoEncoder(tmp_path / "c.mp4", frame_rate=25, width=64, height=48).close()
    assert not (tmp_path / "c.mp4").exists()
    odd = encode(tmp_path / "odd.mp4", np.zeros((2, 47, 63, 3), np.uint8), pix_fmt="yuv444p")
    assert probe(odd).video.width == 63  # type: ignore[union-attr]


# --- concat and mux --------------------------------------------------------------------------------


def test_concat_segments_keeps_every_frame(tmp_path: Path) -> None:
    rate = Fraction(30000, 1001)
    sizes = [31, 40, 17]
    frames = numbered_frames(sum(sizes))
    bounds = np.cumsum([0, *sizes])
    segments = [
        encode(tmp_path / f"seg {i}'s.mp4", frames[a:b], rate)
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    ]
    assert concat_segments(segments, tmp_path / "all.mp4") == 88

    video = probe(tmp_path / "all.mp4").video
    assert video is not None
    assert (video.num_frames, video.frame_rate) == (88, rate)
    decoded, pts = decode_video(tmp_path / "all.mp4")
    assert [frame_number(f) for f in decoded] == list(range(88))
    assert set(np.diff(pts)) == {int(1 / rate / video.time_base)}  # continuous timestamps
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_concat_rejects_mismatched_segments(tmp_path: Path) -> None:
    a = encode(tmp_path / "a.mp4", numbered_frames(3))
    b = encode(tmp_path / "b.mp4", numbered_frames(3), Fraction(30))
    with pytest.raises(MediaError, match=r"b\.mp4: segment differs from .*a\.mp4"):
        concat_segments([a, b], tmp_path / "all.mp4")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s, 25 fps silent video, as the renderer writes it."""
    path = tmp_path_factory.mktemp("rendered") / "render.mp4"
    return encode(path, np.zeros((75, 48, 64, 3), np.uint8), preset="ultrafast")


@pytest.mark.parametrize(
    ("suffix", "video_offset", "audio_offset", "expected"),
    [
        (".mp4", 0.0, 0.0, 1.0),
        (".mp4", 0.0, 0.5, 1.5),
        (".mp4", 0.4, 0.0, 0.6),
        (".ts", 0.0, 0.5, 1.5),  # MPEG-TS: every stream starts at 1.4 s or later
    ],
    ids=["aligned", "audio-starts-late", "video-starts-late", "mpegts-audio-starts-late"],
)
def test_mux_aligns_driving_audio_to_first_frame(
    tmp_path: Path,
    rendered: Path,
    suffix: str,
    video_offset: float,
    audio_offset: float,
    expected: float,
) -> None:
    driving = video_with_click(
        (tmp_path / "driving").with_suffix(suffix),
        duration=3,
        click_at=1.0,
        video_offset=video_offset,
        audio_offset=audio_offset,
    )
    result = mux_audio(rendered, tmp_path / "out.mp4", audio_source=driving)

    assert result.has_audio and result.reason is None
    assert click_time(tmp_path / "out.mp4") == pytest.approx(expected, abs=1 / 25)


def test_mux_separate_audio_file_and_offset(tmp_path: Path, rendered: Path) -> None:
    audio = click_audio(tmp_path / "speech.wav", click_at=0.7, duration=2)
    mux_audio(rendered, tmp_path / "out.mp4", audio_source=audio)
    assert click_time(tmp_path / "out.mp4") == pytest.approx(0.7, abs=1 / 25)
    mux_audio(rendered, tmp_path / "late.mp4", audio_source=audio, offset_seconds=0.48)
    assert click_time(tmp_path / "late.mp4") == pytest.approx(1.18, abs=1 / 25)


@pytest.mark.parametrize("audio_seconds", [1.2, 5.0], ids=["short-padded", "long-trimmed"])
def test_mux_video_policy_matches_video_duration(
    tmp_path: Path, rendered: Path, audio_seconds: float
) -> None:
    audio = click_audio(tmp_path / "a.wav", click_at=0.5, duration=audio_seconds)
    result = mux_audio(rendered, tmp_path / "out.mp4", audio_source=audio, length_policy="video")

    info = probe(tmp_path / "out.mp4")
    assert info.video is not None and info.audio is not None
    assert info.video.num_frames == 75 and result.duration_seconds == 3.0
    assert info.audio.duration_seconds == pytest.approx(3.0, abs=1 / 25)
    samples, _, _ = decode_audio(tmp_path / "out.mp4")
    assert np.abs(samples[:, int(1.4 * 48000) :]).max() < 0.01  # padding is silence


def test_mux_shortest_policy_cuts_both(tmp_path: Path, rendered: Path) -> None:
    audio = click_audio(tmp_path / "a.wav", click_at=0.5, duration=1.6)
    mux_audio(rendered, tmp_path / "out.mp4", audio_source=audio, length_policy="shortest")

    info = probe(tmp_path / "out.mp4")
    assert info.video is not None and info.audio is not None
    assert info.audio.duration_seconds == pytest.approx(1.6, abs=1 / 25)
    assert 40 <= info.video.num_frames <= 43  # 1.6 s = 40 frames; a copied stream cuts at packets


@pytest.mark.parametrize(
    ("layout", "sample_rate"), [("mono", 8000), ("5.1", 48000), ("stereo", 44100)]
)
def test_mux_accepts_any_layout_and_rate(
    tmp_path: Path, rendered: Path, layout: str, sample_rate: int
) -> None:
    audio = click_audio(
        tmp_path / "a.wav", click_at=0.3, duration=2, layout=layout, sample_rate=sample_rate
    )
    mux_audio(rendered, tmp_path / "out.mp4", audio_source=audio)

    out = probe(tmp_path / "out.mp4").audio
    assert out is not None
    assert (out.codec, out.sample_rate, out.channels) == ("aac", 48000, 2)
    assert click_time(tmp_path / "out.mp4") == pytest.approx(0.3, abs=1 / 25)


def test_mux_without_audio(tmp_path: Path, rendered: Path, media: Path) -> None:
    silent = mux_audio(rendered, tmp_path / "a.mp4", audio_source=media / "gop.mp4")
    assert not silent.has_audio
    assert silent.reason is not None and "gop.mp4 has no audio stream" in silent.reason
    info = probe(tmp_path / "a.mp4")
    assert info.audio is None and info.video is not None and info.video.num_frames == 75
    assert not mux_audio(rendered, tmp_path / "b.mp4", audio_source=None).has_audio


def test_mux_errors(tmp_path: Path, rendered: Path, media: Path) -> None:
    with pytest.raises(MediaError, match=r"audio stream a:3 does not exist \(the file has 1"):
        mux_audio(rendered, tmp_path / "a.mp4", audio_source=media / "av.mp4", audio_stream=3)
    with pytest.raises(MediaError, match=r"muxing audio into .*a\.mp4: ffmpeg exited with status"):
        mux_audio(rendered, tmp_path / "a.mp4", audio_source=media / "av.mp4", audio_codec="nope")
    with pytest.raises(ValueError, match=r"Invalid length_policy \('longest'\)"):
        mux_audio(rendered, tmp_path / "a.mp4", audio_source=None, length_policy="longest")  # type: ignore[arg-type]
    assert not (tmp_path / "a.mp4").exists() and list(tmp_path.iterdir()) == []


# --- errors a user can act on ----------------------------------------------------------------------


def test_non_video_inputs(tmp_path: Path, media: Path) -> None:
    click_audio(tmp_path / "song.wav", click_at=0.1, duration=0.5)
    (tmp_path / "notes.txt").write_text("hello, not a video\n")
    Image.fromarray(_gradient()).save(tmp_path / "photo.png")

    with pytest.raises(
        MediaError, match=r"song\.wav is not a video file \(no video stream found; only 1 audio"
    ):
        VideoReader(tmp_path / "song.wav")
    with pytest.raises(MediaError, match=r"notes\.txt could not be read as a media file"):
        probe(tmp_path / "notes.txt")
    with pytest.raises(MediaError, match=r"photo\.png is a still image .*not a video; give an MP4"):
        VideoReader(tmp_path / "photo.png")
    with pytest.raises(MediaError, match=r"nothere\.mp4: no such file"):
        probe(tmp_path / "nothere.mp4")


def test_truncated_videos(tmp_path: Path, media: Path) -> None:
    data = (media / "av.mp4").read_bytes()  # 'moov' index at the end
    (tmp_path / "no_moov.mp4").write_bytes(data[: len(data) // 2])
    ffmpeg("-i", media / "av.mp4", "-c", "copy", "-movflags", "+faststart", tmp_path / "fast.mp4")
    fast = (tmp_path / "fast.mp4").read_bytes()  # index first, then the data
    (tmp_path / "cut.mp4").write_bytes(fast[: len(fast) // 2])

    with pytest.raises(MediaError, match=r"no_moov\.mp4 could not be read .*truncated .*'moov'"):
        VideoReader(tmp_path / "no_moov.mp4")
    with pytest.raises(
        MediaError, match=r"cut\.mp4 is truncated: its index places .* data up to byte"
    ):
        VideoReader(tmp_path / "cut.mp4")
    with pytest.raises(MediaError, match=r"<BytesIO stream> is truncated"):
        probe(io.BytesIO(fast[: len(fast) // 2]))


def test_zero_frame_videos(tmp_path: Path, media: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "0", tmp_path / "empty.mp4")
    ffmpeg(
        "-ss", "30", "-i", media / "gop.mp4", "-c", "copy", tmp_path / "hidden.mp4"
    )  # edit list hides every frame
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "0", tmp_path / "empty.mkv")

    with pytest.raises(
        MediaError, match=r"empty\.mp4 is not a video file .*empty or zero-frame file"
    ):
        VideoReader(tmp_path / "empty.mp4")
    with pytest.raises(
        MediaError, match=r"hidden\.mp4: video stream #0 \(h264\) has no decodable frame"
    ):
        VideoReader(tmp_path / "hidden.mp4")
    with pytest.raises(MediaError, match=r"empty\.mkv ends before any media data"):
        VideoReader(tmp_path / "empty.mkv")


# --- memory ----------------------------------------------------------------------------------------

_RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import psutil
    from pipeline.media import VideoReader

    process = psutil.Process()
    reader = VideoReader(sys.argv[1], size=512, max_frames=int(sys.argv[2]))
    chunks = reader.chunks(4)
    next(chunks)  # decoder, scaler and buffers warmed up
    base = peak = process.memory_info().rss
    for chunk in chunks:
        peak = max(peak, process.memory_info().rss)
    print(json.dumps({"growth": peak - base, "last": chunk.start_index + len(chunk)}))
    """
)


def test_reader_memory_is_flat(tmp_path: Path) -> None:
    clip = pattern_video(tmp_path / "long.mp4", frames=1200, rate="30", size="256x256")

    def growth(frames: int) -> int:
        result = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, str(clip), str(frames)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        )
        report = json.loads(result.stdout)
        assert report["last"] == frames
        return report["growth"]

    short, long = growth(150), growth(1200)
    assert long <= short * 1.1 + 4 * 2**20, (
        f"RSS grew {short / 2**20:.1f} MB for 150 frames, {long / 2**20:.1f} MB for 1200"
    )
