"""Every row gets a clear verdict: a suite of bad (and odd but fine) inputs (issue 5).

Every file is made here, in a temporary folder: images with PIL, videos and audio with the ffmpeg
binary and PyAV (`media_factory`), corrupt files by cutting or writing bytes. Nothing binary is
committed. All cases sit in ONE manifest next to good rows, validated once: each rejected row must
have exactly its problem (column, message and fix matched), each accepted row must be ready with
what it will be converted from. Manifest-level problems (header, empty file, encoding) get their
own small manifests, since they stop the whole manifest. The end-to-end test renders a manifest of
bad rows plus one good row through ``jobs.render.run``.

docs/reliability.md lists every case with its verdict and the test that shows it.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import time
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from media_factory import click_audio, ffmpeg, numbered_video, pattern_video
from PIL import Image

import pipeline.validate as validate_module
from pipeline.config import StorageConfig
from pipeline.manifest import ManifestProblem
from pipeline.media import VideoReader, load_image, probe
from pipeline.storage import Storage
from pipeline.validate import Validation, validate_manifest

SIDE = 64  # every generated portrait and video is this small: the suite must stay fast
TALK_RATE = Fraction(30000, 1001)

PORTRAIT_FIX = r"give a PNG, JPEG or WebP photo of a face"
VIDEO_FIX = r"give an MP4/MOV/MKV/WebM video of a face"
AUDIO_FIX = r"give a WAV/MP3/AAC/M4A/FLAC/Ogg file, or leave the cell empty"
MISSING_FIX = r"check the path \(relative paths are relative to the manifest's folder\)"


# --------------------------------------------------------------------------------------------
# Generated media
# --------------------------------------------------------------------------------------------


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height but holds a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def first_half(source: Path, dest: Path) -> Path:
    data = source.read_bytes()
    dest.write_bytes(data[: len(data) // 2])
    return dest


def make_images(folder: Path) -> None:
    rgb = Image.fromarray(noise(SIDE, SIDE))
    rgb.save(folder / "good.png")
    shutil.copy(folder / "good.png", folder / "good, copy.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    rgb.convert("L").save(folder / "gray.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    Image.fromarray(noise(SIDE, SIDE)[..., 0].astype(np.uint16) * 257).save(folder / "gray16.png")
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={SIDE}x{SIDE}", "-frames:v", "1",
           "-pix_fmt", "rgb48be", folder / "rgb48.png")  # fmt: skip
    rgb.convert("P").save(folder / "palette.png")
    sideways = Image.fromarray(noise(SIDE, 96))  # stored 96 wide, 64 high
    exif = sideways.getexif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    sideways.save(folder / "exif_rotated.jpg", exif=exif)
    Image.fromarray(noise(48, 32)).save(folder / "tiny.png")
    png_header_only(folder / "strip.png", 100_000, 10)
    png_header_only(folder / "bomb.png", 9_000, 9_000)  # 81 MP: ours, below PIL's warning
    png_header_only(folder / "huge.png", 100_000, 100_000)  # beyond PIL's own limit
    (folder / "not_image.png").write_text("portrait goes here\n")
    (folder / "error_page.jpg").write_text("<!DOCTYPE html>\n<html><body>404</body></html>\n")
    (folder / "empty.png").write_bytes(b"")
    Image.fromarray(noise(128, 128)).save(folder / "full.jpg", quality=95)
    first_half(folder / "full.jpg", folder / "truncated.jpg")
    Image.fromarray(noise(128, 128)).save(folder / "full.png")
    first_half(folder / "full.png", folder / "truncated.png")


def make_videos(folder: Path) -> None:
    pattern_video(folder / "good.mp4", frames=10, size=f"{SIDE}x{SIDE}")
    pattern_video(folder / "talk.mp4", frames=10, rate="30000/1001", size=f"{SIDE}x{SIDE}",
                  audio="sine=frequency=440:sample_rate=44100")  # fmt: skip
    (folder / "not_video.mp4").write_text("this is not a video\n")
    (folder / "empty.mp4").write_bytes(b"")
    first_half(folder / "talk.mp4", folder / "no_moov.mp4")  # the 'moov' index is at the end
    ffmpeg("-i", folder / "talk.mp4", "-c", "copy", "-movflags", "+faststart",
           folder / "faststart.mp4")  # fmt: skip
    first_half(folder / "faststart.mp4", folder / "cut_after_index.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "0", folder / "zero.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "0", folder / "zero.mkv")
    ffmpeg("-ss", "30", "-i", folder / "good.mp4", "-c", "copy", folder / "hidden.mp4")  # an
    # edit list that starts after the last frame: every frame is hidden
    numbered_video(folder / "vfr.mp4", pts=[0, 40, 80, 100, 200, 240, 300, 320, 400, 440],
                   time_base=Fraction(1, 1000))  # fmt: skip
    pattern_video(folder / "wide.mp4", frames=10, size="96x64")
    ffmpeg("-display_rotation", "90", "-i", folder / "wide.mp4", "-c", "copy",
           folder / "rotated.mp4")  # fmt: skip
    encode = ["-frames:v", "10", "-preset", "ultrafast"]
    source = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25"]
    ffmpeg(*source, "-vf", "scale=65:49", *encode, "-c:v", "libx264", "-pix_fmt", "yuv444p",
           folder / "odd_size.mp4")  # fmt: skip
    ffmpeg(*source, *encode, "-c:v", "libx265", "-x265-params", "log-level=error",
           "-tag:v", "hvc1", folder / "hevc.mp4")  # fmt: skip
    ffmpeg(*source, "-frames:v", "10", "-c:v", "libvpx-vp9", "-deadline", "realtime",
           "-cpu-used", "8", folder / "vp9.webm")  # fmt: skip


def make_audio(folder: Path) -> None:
    click_audio(folder / "mono_8k.wav", click_at=0.1, duration=0.5, sample_rate=8000)
    click_audio(folder / "surround_48k.m4a", click_at=0.1, duration=0.5, sample_rate=48000,
                layout="5.1")  # fmt: skip
    sine = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=0.5"]
    ffmpeg(*sine, "-ac", "2", "-c:a", "libmp3lame", folder / "stereo_44k.mp3")
    ffmpeg(*sine, "-ar", "22050", "-c:a", "flac", folder / "mono_22k.flac")
    ffmpeg(*sine, "-ac", "2", "-ar", "32000", "-c:a", "libvorbis", folder / "stereo_32k.ogg")
    ffmpeg(*sine, "-c:a", "aac", folder / "audio_only.m4a")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVE" + bytes(range(128, 256)))
    (folder / "garbage.mp3").write_bytes(bytes(range(128, 256)) * 4)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    make_images(folder)
    make_videos(folder)
    make_audio(folder)
    return folder


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Case:
    """One manifest row: its cells (file names in the inputs folder) and its expected verdict."""

    name: str
    portrait: str = "good.png"
    driving_video: str = "good.mp4"
    audio: str = ""
    max_frames: str = ""
    id: str | None = None  # default: `name`

    def cells(self) -> list[str]:
        return [
            self.id or self.name,
            self.portrait,
            self.driving_video,
            self.audio,
            self.max_frames,
        ]


@dataclass(frozen=True, kw_only=True)
class Rejected(Case):
    """The row fails with exactly one problem in `column`, matching `message` and `fix`."""

    column: str
    message: str
    fix: str
    csv_level: bool = False  # found by the CSV checks: the row has no id in the summary


@dataclass(frozen=True, kw_only=True)
class Accepted(Case):
    """The row is ready; what probing found, and the notes (regexes, in order) on conversions."""

    frames: int = 10
    frame_rate: Fraction = Fraction(25)
    portrait_size: tuple[int, int] = (SIDE, SIDE)
    has_audio: bool = False
    notes: tuple[str, ...] = field(default=())


REJECTED = [
    # --- CSV-level problems of single rows (pipeline.manifest)
    Rejected(name="blank-cell", driving_video="", column="driving_video",
             message=r"^driving_video is blank$", fix=r"^fill in the driving_video path or URI$",
             csv_level=True),
    Rejected(name="missing-file", portrait="nowhere.png", column="portrait",
             message=r"^file not found at .*nowhere\.png$", fix=MISSING_FIX, csv_level=True),
    # --- portraits
    Rejected(name="image-not-an-image", portrait="not_image.png", column="portrait",
             message=r"^portrait is a text file, not an image$", fix=PORTRAIT_FIX),
    Rejected(name="image-html-error-page", portrait="error_page.jpg", column="portrait",
             message=r"^portrait is an HTML/XML page \(often an error page saved in place of "
                     r"the file\), not an image$",
             fix=PORTRAIT_FIX),
    Rejected(name="image-empty-file", portrait="empty.png", column="portrait",
             message=r"^portrait is an empty file \(0 bytes\)$", fix=PORTRAIT_FIX),
    Rejected(name="image-truncated-jpeg", portrait="truncated.jpg", column="portrait",
             message=r"^portrait image data is truncated or corrupt \(image file is truncated",
             fix=r"^export the image again or copy the complete file; " + PORTRAIT_FIX),
    Rejected(name="image-truncated-png", portrait="truncated.png", column="portrait",
             message=r"^portrait image data is truncated or corrupt \(",
             fix=r"^export the image again or copy the complete file"),
    Rejected(name="image-tiny", portrait="tiny.png", column="portrait",
             message=r"^portrait is 32x48 pixels; its shorter side must be at least 64 pixels$",
             fix=r"^use a portrait at least 64x64 \(512x512 or more is best\)$"),
    Rejected(name="image-absurd-strip", portrait="strip.png", column="portrait",
             message=r"^portrait is 100000x10 pixels; its shorter side must be at least 64",
             fix=r"^use a portrait at least 64x64"),
    Rejected(name="image-over-80-megapixels", portrait="bomb.png", column="portrait",
             message=r"^portrait declares 9000x9000 pixels \(81 megapixels\), over the "
                     r"80-megapixel limit; it was not decoded \(a guard against decompression "
                     r"bombs\)$",
             fix=r"^downscale it, e.g. to 2048x2048 \(the model works at 512x512\)$"),
    Rejected(name="image-over-pil-limit", portrait="huge.png", column="portrait",
             message=r"^portrait declares 10,000,000,000 pixels \(10,000 megapixels\), over the "
                     r"80-megapixel limit; it was not decoded",
             fix=r"^downscale it"),
    Rejected(name="image-is-a-video", portrait="good.mp4", column="portrait",
             message=r"^portrait is an MP4/MOV file, not a still image$",
             fix=PORTRAIT_FIX + r"; to use a frame of the video: ffmpeg -i good\.mp4 "
                 r"-frames:v 1 portrait\.png$"),
    # --- driving videos
    Rejected(name="video-not-a-video", driving_video="not_video.mp4", column="driving_video",
             message=r"^driving video is a text file, not a video$", fix=r"^" + VIDEO_FIX + "$"),
    Rejected(name="video-empty-file", driving_video="empty.mp4", column="driving_video",
             message=r"^driving video is an empty file \(0 bytes\)$", fix=VIDEO_FIX),
    Rejected(name="video-is-an-image", driving_video="good.png", column="driving_video",
             message=r"^driving video is a PNG image, not a video$", fix=VIDEO_FIX),
    Rejected(name="video-truncated-no-moov", driving_video="no_moov.mp4", column="driving_video",
             message=r"^driving video is an MP4/MOV file cut short: it has no 'moov' index",
             fix=r"^give the complete file: copy or upload it again"),
    Rejected(name="video-truncated-after-index", driving_video="cut_after_index.mp4",
             column="driving_video",
             message=r"^driving video is cut short: the file has [\d,]+ bytes but its index says "
                     r"its data runs to byte [\d,]+ \(the upload or copy stopped early\)$",
             fix=r"^give the complete file: copy or upload it again$"),
    Rejected(name="video-zero-frames-mp4", driving_video="zero.mp4", column="driving_video",
             message=r"^driving video has no stream at all: it is an empty or zero-frame file$",
             fix=VIDEO_FIX + ", with at least one frame$"),
    Rejected(name="video-zero-frames-mkv", driving_video="zero.mkv", column="driving_video",
             message=r"^driving video ends before any media data: it is empty, has zero frames, "
                     r"or was cut short$",
             fix=VIDEO_FIX + ", with at least one frame$"),
    Rejected(name="video-zero-frames-edit-list", driving_video="hidden.mp4",
             column="driving_video",
             message=r"^driving video cannot be decoded: video stream #0 \(h264\) has no "
                     r"decodable frame \(a zero-frame or corrupt video\)",
             fix=VIDEO_FIX + r" that plays from start to end"),
    Rejected(name="video-audio-only", driving_video="audio_only.m4a", column="driving_video",
             message=r"^driving video has no video stream, only audio \(aac, 44100 Hz, mono\)$",
             fix=VIDEO_FIX + "; to use this sound, put the file in the audio column$"),
    # --- audio files
    Rejected(name="audio-empty-file", audio="empty.wav", column="audio",
             message=r"^audio file is an empty file \(0 bytes\)$", fix=AUDIO_FIX),
    Rejected(name="audio-corrupt-wav", audio="corrupt.wav", column="audio",
             message=r"^audio file is a WAV audio file that cannot be decoded \(Invalid data "
                     r"found when processing input\): it is corrupt or cut short$",
             fix=AUDIO_FIX),
    Rejected(name="audio-garbage", audio="garbage.mp3", column="audio",
             message=r"^audio file is unrecognised binary data, not audio$", fix=AUDIO_FIX),
    Rejected(name="audio-is-a-silent-video", audio="good.mp4", column="audio",
             message=r"^audio file has no audio stream: it is a video without sound "
                     r"\(h264 64x64, 10 frames\)$",
             fix=AUDIO_FIX),
    Rejected(name="audio-is-an-image", audio="good.png", column="audio",
             message=r"^audio file is a PNG image, not audio$", fix=AUDIO_FIX),
]  # fmt: skip

ACCEPTED = [
    Accepted(name="good"),
    Accepted(name="good-with-sound", driving_video="talk.mp4", frame_rate=TALK_RATE,
             has_audio=True),
    Accepted(name="csv-quoted-comma", portrait="good, copy.png"),
    Accepted(name="image-cmyk", portrait="cmyk.jpg",
             notes=(r"^portrait: JPEG CMYK image converted to 8-bit RGB$",)),
    Accepted(name="image-grayscale", portrait="gray.png",
             notes=(r"^portrait: PNG L image converted to 8-bit RGB$",)),
    Accepted(name="image-rgba", portrait="rgba.png",
             notes=(r"^portrait: PNG RGBA image converted to 8-bit RGB$",
                    r"^portrait: transparent areas composited on white$")),
    Accepted(name="image-16-bit-gray", portrait="gray16.png",
             notes=(r"^portrait: PNG I;16 image converted to 8-bit RGB$",)),
    Accepted(name="image-16-bit-rgb", portrait="rgb48.png"),  # PIL reads it as 8-bit RGB
    Accepted(name="image-palette", portrait="palette.png",
             notes=(r"^portrait: PNG P image converted to 8-bit RGB$",)),
    Accepted(name="image-exif-rotated", portrait="exif_rotated.jpg", portrait_size=(64, 96),
             notes=(r"^portrait: EXIF orientation 6, turned upright$",)),
    Accepted(name="video-variable-frame-rate", driving_video="vfr.mp4",
             frame_rate=Fraction(125, 6),
             notes=(r"^driving video: variable frame rate, resampled to its average 20\.833 fps$",)),
    Accepted(name="video-rotation-metadata", driving_video="rotated.mp4",
             notes=(r"^driving video: rotation metadata 90°, frames turned upright$",)),
    Accepted(name="video-odd-size", driving_video="odd_size.mp4",
             notes=(r"^driving video: odd size 65x49, frames resized to the model's square size$",)),
    Accepted(name="video-hevc", driving_video="hevc.mp4"),
    Accepted(name="video-vp9", driving_video="vp9.webm"),
    Accepted(name="video-longer-than-max-frames", max_frames="4", frames=4,
             notes=(r"^driving video: 10 frames, longer than max_frames=4: the first 4 are "
                    r"rendered$",)),
    Accepted(name="audio-mono-8k-wav", audio="mono_8k.wav", has_audio=True),
    Accepted(name="audio-stereo-44k-mp3", audio="stereo_44k.mp3", has_audio=True),
    Accepted(name="audio-5.1-48k-aac", audio="surround_48k.m4a", has_audio=True),
    Accepted(name="audio-mono-22k-flac", audio="mono_22k.flac", has_audio=True),
    Accepted(name="audio-stereo-32k-ogg", audio="stereo_32k.ogg", has_audio=True),
    Accepted(name="audio-from-a-video-with-sound", audio="talk.mp4", has_audio=True),
]  # fmt: skip

# Two rows with the same id, last: pipeline.manifest reports the clash on the first one.
DUPLICATES: list[Case] = [
    Rejected(name="duplicate-id", id="twin", column="id",
             message=r"^id is used by rows (\d+) and (\d+) \(lines \d+ and \d+\); ids must be "
                     r"unique \(ignoring case\)$",
             fix=r"^give each row its own id, or leave the id cells empty to derive them$",
             csv_level=True),
    Case(name="duplicate-id-second", id="twin"),
]  # fmt: skip

CASES: list[Case] = [*ACCEPTED[:2], *REJECTED, *ACCEPTED[2:], *DUPLICATES]
HEADER = "id,portrait,driving_video,audio,max_frames"


def csv_cell(value: str) -> str:
    return f'"{value}"' if "," in value or '"' in value else value


def write_manifest(path: Path, cases: list[Case]) -> Path:
    """The cases as a CSV: UTF-8 with a BOM and CRLF line ends (as Excel writes it)."""
    lines = [HEADER] + [",".join(csv_cell(cell) for cell in case.cells()) for case in cases]
    path.write_bytes("\ufeff".encode() + "\r\n".join(lines).encode() + b"\r\n")
    return path


def local_storage() -> Storage:
    return Storage(StorageConfig())


@pytest.fixture(scope="module")
def validation(inputs: Path) -> Validation:
    """All cases in one manifest, validated once."""
    return validate_manifest(str(write_manifest(inputs / "all.csv", CASES)), local_storage())


def row_number(case: Case) -> int:
    return CASES.index(case) + 1


def problems_of(validation: Validation, case: Case) -> list[ManifestProblem]:
    return [p for p in validation.problems if p.row == row_number(case)]


def assert_matches(pattern: str, text: str) -> None:
    __tracebackhide__ = True
    assert re.search(pattern, text), f"{text!r} does not match {pattern!r}"


# --------------------------------------------------------------------------------------------
# Verdicts, one manifest
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [*REJECTED, DUPLICATES[0]], ids=lambda case: case.name)
def test_rejected_input(validation: Validation, inputs: Path, case: Rejected) -> None:
    problems = problems_of(validation, case)
    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert problem.column == case.column
    assert problem.line == row_number(case) + 1  # the header is line 1
    assert_matches(case.message, problem.message)
    assert_matches(case.fix, problem.fix)
    written = getattr(case, case.column) if case.column != "id" else case.id
    if case.csv_level:
        assert problem.value == written  # as written in the CSV
    else:
        assert problem.value == str(inputs / written)  # the resolved file that was probed
    assert str(problem).startswith(
        f"row {row_number(case)} (line {row_number(case) + 1}), column '{case.column}', value "
    )
    assert not any(media.row.number == row_number(case) for media in validation.ready)


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda case: case.name)
def test_accepted_input(validation: Validation, case: Accepted) -> None:
    assert problems_of(validation, case) == []
    media = next(m for m in validation.ready if m.row.id == case.name)
    assert media.frames == case.frames
    assert media.frame_rate == case.frame_rate
    assert media.duration_seconds == pytest.approx(float(case.frames / case.frame_rate))
    assert media.portrait_size == case.portrait_size
    assert media.has_audio == case.has_audio
    assert len(media.notes) == len(case.notes), media.notes
    for pattern, note in zip(case.notes, media.notes, strict=True):
        assert_matches(pattern, note)


def test_every_problem_names_row_column_value_and_fix(validation: Validation) -> None:
    assert not validation.structural
    assert len(validation.problems) == len(REJECTED) + 2  # both rows sharing an id get a problem
    for problem in validation.problems:
        assert problem.row is not None and problem.line is not None
        assert problem.column in ("id", "portrait", "driving_video", "audio")
        assert problem.value is not None and problem.message and problem.fix
    assert [p.row for p in validation.problems] == sorted(p.row for p in validation.problems)


def test_only_good_rows_are_ready(validation: Validation) -> None:
    assert [media.row.id for media in validation.ready] == [case.name for case in ACCEPTED]


def test_every_duplicate_row_gets_its_own_verdict_naming_both_rows(validation: Validation) -> None:
    first, second = DUPLICATES
    for row in (first, second):
        (problem,) = problems_of(validation, row)
        assert f"rows {row_number(first)} and {row_number(second)}" in problem.message
    assert not any(media.row.id == "twin" for media in validation.ready)


# --------------------------------------------------------------------------------------------
# Manifest-level verdicts (the whole manifest is unusable)
# --------------------------------------------------------------------------------------------

BAD_MANIFESTS = {
    "missing-column": (
        b"portrait,audio\ngood.png,\n",
        r"^the header has no 'driving_video' column \(found: 'portrait', 'audio'\)$",
        r"^the first non-empty line must be the header: portrait,driving_video\[,id,audio,",
    ),
    "unknown-column": (
        b"portrait,driving_video,sead\ngood.png,good.mp4,1\n",
        r"^unknown column 'sead' — did you mean 'seed'\?$",
        r"^rename it to 'seed'$",
    ),
    "empty-manifest": (
        b"",
        r"^the manifest is empty$",
        r"^write the header on the first line \(portrait,driving_video",
    ),
    "header-only": (
        b"\xef\xbb\xbfportrait,driving_video\r\n",
        r"^the manifest has a header but no data rows$",
        r"^add one row per portrait/driving-video pair below the header$",
    ),
    "not-utf8": (
        "portrait,driving_video\nportr\u00e4t.png,good.mp4\n".encode("latin-1"),
        r"^the file is not valid UTF-8 text \(byte \d+: invalid continuation byte\)$",
        r"^save the manifest as 'CSV UTF-8'",
    ),
}


@pytest.mark.parametrize("name", BAD_MANIFESTS)
def test_manifest_level_verdict(inputs: Path, tmp_path: Path, name: str) -> None:
    content, message, fix = BAD_MANIFESTS[name]
    for media in ("good.png", "good.mp4"):
        shutil.copy(inputs / media, tmp_path / media)
    (tmp_path / "m.csv").write_bytes(content)
    # strict: an unknown column is a problem (by default it is kept as an extra column)
    validation = validate_manifest(str(tmp_path / "m.csv"), local_storage(), strict=True)
    assert validation.structural  # the job stops before rendering anything
    (problem,) = validation.problems
    assert problem.row is None
    assert_matches(message, problem.message)
    assert_matches(fix, problem.fix)


def test_missing_manifest_is_one_problem(tmp_path: Path) -> None:
    validation = validate_manifest(str(tmp_path / "nowhere.csv"), local_storage())
    assert validation.manifest is None and validation.structural
    (problem,) = validation.problems
    assert_matches(r"^manifest not found at .*nowhere\.csv$", problem.message)


# --------------------------------------------------------------------------------------------
# Accepted means renderable: the odd inputs decode to the model's square frames
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["vfr.mp4", "rotated.mp4", "odd_size.mp4", "hevc.mp4", "vp9.webm", "talk.mp4"]
)
def test_accepted_videos_decode_to_square_frames(inputs: Path, name: str) -> None:
    reader = VideoReader(inputs / name, size=SIDE)
    frames = [frame.shape for frame in reader]
    assert len(frames) == reader.num_frames == 10
    assert set(frames) == {(SIDE, SIDE, 3)}


@pytest.mark.parametrize(
    "name",
    ["cmyk.jpg", "gray.png", "rgba.png", "gray16.png", "rgb48.png", "palette.png",
     "exif_rotated.jpg", "good, copy.png"],
)  # fmt: skip
def test_accepted_portraits_load_as_rgb(inputs: Path, name: str) -> None:
    image = load_image(inputs / name)
    assert image.dtype == np.uint8 and image.shape[2] == 3
    if name == "exif_rotated.jpg":
        assert image.shape[:2] == (96, 64)  # upright: taller than wide


def test_oversized_portrait_is_refused_without_decoding(
    inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(validate_module, "load_image", no_decoding)
    path = write_manifest(inputs / "bomb.csv", [Case(name="bomb", portrait="bomb.png")])
    validation = validate_manifest(str(path), local_storage(), max_portrait_pixels=10_000_000)
    (problem,) = validation.problems
    assert_matches(r"over the 10-megapixel limit; it was not decoded", problem.message)


def test_s3_inputs_get_the_same_verdicts(
    inputs: Path, validation: Validation, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Probing streams from S3 (ranged reads) gives the verdicts probing local files gives."""
    pytest.importorskip("moto")
    import boto3  # noqa: PLC0415
    from s3_server import MotoServer, isolate_aws_env  # noqa: PLC0415

    from pipeline.config import S3Config  # noqa: PLC0415

    isolate_aws_env(monkeypatch, tmp_path)
    cases = [c for c in CASES if c not in DUPLICATES and not getattr(c, "csv_level", False)]
    with MotoServer() as server:
        client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
        client.create_bucket(Bucket="inputs")
        names = {getattr(c, column) for c in cases for column in ("portrait", "driving_video")}
        names |= {c.audio for c in cases if c.audio}
        for name in names:
            client.upload_file(str(inputs / name), "inputs", f"job/{name}")
        manifest = write_manifest(tmp_path / "s3.csv", cases)
        client.upload_file(str(manifest), "inputs", "job/s3.csv")
        storage = Storage(StorageConfig(s3=S3Config(endpoint_url=server.endpoint_url,
                                                    region="us-east-1", max_attempts=1)))  # fmt: skip
        remote = validate_manifest("s3://inputs/job/s3.csv", storage)

    def verdicts(found: Validation, numbers: dict[int, str]) -> dict[str, object]:
        ready = {
            media.row.id: (media.frames, media.has_audio, media.notes) for media in found.ready
        }
        failed = {
            numbers[p.row]: (p.column, p.message, p.fix) for p in found.problems if p.row in numbers
        }
        return {"ready": ready, "failed": failed}

    local_numbers = {row_number(case): case.name for case in cases}
    remote_numbers = {position: case.name for position, case in enumerate(cases, start=1)}
    assert verdicts(remote, remote_numbers) == verdicts(validation, local_numbers)
    assert [p.value for p in remote.problems][:1] == ["s3://inputs/job/not_image.png"]


# --------------------------------------------------------------------------------------------
# Scale
# --------------------------------------------------------------------------------------------


def test_two_hundred_rows_validate_in_seconds(
    inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    portraits = ["good.png", "cmyk.jpg", "gray.png", "truncated.jpg"]
    videos = ["good.mp4", "talk.mp4", "vfr.mp4", "no_moov.mp4"]
    cases = [
        Case(name=f"r{i:03d}", portrait=portraits[i % 4], driving_video=videos[(i // 4) % 4],
             audio="mono_8k.wav" if i % 2 else "")
        for i in range(200)
    ]  # fmt: skip
    probed: list[str] = []
    real_probe = validate_module.probe

    def counting_probe(source):  # type: ignore[no-untyped-def]
        probed.append(str(source))
        return real_probe(source)

    monkeypatch.setattr(validate_module, "probe", counting_probe)
    path = write_manifest(inputs / "many.csv", cases)
    started = time.monotonic()
    validation = validate_manifest(str(path), local_storage())
    seconds = time.monotonic() - started

    assert seconds < 5, f"200 rows took {seconds:.1f} s"
    assert len(probed) == 4 + 1  # each distinct video and audio file once
    bad = {i for i in range(200) if i % 4 == 3 or (i // 4) % 4 == 3}
    assert {m.row.number - 1 for m in validation.ready} == set(range(200)) - bad
    assert len(validation.failed_rows()) == len(bad)


# --------------------------------------------------------------------------------------------
# End to end: bad rows fail with their reason, the good row renders
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_render_fails_bad_rows_and_renders_the_good_one(
    inputs: Path, tmp_path: Path, tiny_weights: Path, ray_local
) -> None:
    from hydra import compose, initialize_config_dir  # noqa: PLC0415

    from jobs.render import run  # noqa: PLC0415
    from pipeline.config import register_configs  # noqa: PLC0415

    good = ACCEPTED[1]  # talk.mp4: 10 frames at 30000/1001 fps, with sound
    cases: list[Case] = [good, *REJECTED]
    manifest = write_manifest(inputs / "e2e.csv", cases)
    register_configs()
    overrides = [
        "job=render",
        f"manifest={manifest}",
        "model=tiny",
        f"model.weights_dir={tiny_weights}",
        "model.resolution=64",
        f"storage.output_root={tmp_path}",
        "job.progress=plain",
        "cluster.cpu_workers=1",
        "framing.portrait=crop",  # the good portrait is noise: this test is about the verdicts
    ]
    with initialize_config_dir(config_dir=str(Path("conf").absolute()), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)

    assert run(cfg) == 1

    summary = json.loads((tmp_path / "e2e" / "summary.json").read_text())
    rows = {row["row_id"]: row for row in summary["rows"]}
    assert summary["totals"]["rows"] == len(cases)
    assert summary["totals"]["failed"] == len(REJECTED)
    for case in cases[1:]:
        assert isinstance(case, Rejected)
        row = rows[case.name]  # rows the CSV checks reject keep their id too
        assert row["status"] == "failed"
        assert row["error"].startswith("invalid input: ")
        assert case.column in row["error"] and "fix: " in row["error"]
        assert_matches(case.message.lstrip("^").rstrip("$"), row["error"])
    done = rows[good.name]
    assert done["status"] == "done" and done["frames"] == 10
    info = probe(done["output"])
    driving = probe(inputs / good.driving_video)
    assert info.video is not None and driving.video is not None
    assert info.video.num_frames == driving.video.num_frames == 10
    assert info.video.frame_rate == driving.video.frame_rate == TALK_RATE
    assert (info.video.width, info.video.height) == (64, 64)
    assert info.audio is not None
