"""Framing on real pictures: the face found in a photograph wherever it sits, followed through a
moving driving video, and the animated square pasted back into the photo on the canvas.

The photograph is scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
skimage_data = pytest.importorskip("skimage.data")

from pipeline.config import parse_canvas  # noqa: E402
from pipeline.framing import (  # noqa: E402
    FaceBox,
    FaceDetector,
    FaceTrack,
    PasteBack,
    cut_square,
    face_square,
    feather_mask,
    sample_detections,
)
from pipeline.media import VideoEncoder, VideoReader  # noqa: E402

SCALE, CENTER_Y = 2.5, 0.45


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _relative_face(face: FaceBox, photo: np.ndarray) -> np.ndarray:
    """The face's box inside the square framing chooses, as fractions of the square's side."""
    square = face_square(face, SCALE, CENTER_Y, (photo.shape[1], photo.shape[0]))
    return np.array(
        [(face.x - square.x) / square.side, (face.y - square.y) / square.side,
         face.width / square.side, face.height / square.side]
    )  # fmt: skip


def test_face_found_in_the_photograph(astronaut, detector) -> None:
    (face,) = detector.detect(astronaut)
    # her face: between the hairline and the chin, left of the flag
    assert 150 < face.center[0] < 260 and 80 < face.center[1] < 150, face
    assert 80 < face.width < 130, face


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_crop_is_the_same_wherever_the_photo_sits_in_a_large_canvas(
    astronaut, detector, seed: int
) -> None:
    """Placed at a random offset and scale inside 3000x2000, the chosen square frames the face
    as the square chosen from the original does: the face box within 5 % of the square."""
    rng = np.random.default_rng(seed)
    (original,) = detector.detect(astronaut)
    expected = _relative_face(original, astronaut)
    scale = rng.uniform(0.5, 3.5)
    photo = cv2.resize(
        astronaut, None, fx=scale, fy=scale,
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
    )  # fmt: skip
    canvas = np.full((2000, 3000, 3), rng.integers(0, 255, 3), dtype=np.uint8)
    top = rng.integers(0, 2000 - photo.shape[0] + 1)
    left = rng.integers(0, 3000 - photo.shape[1] + 1)
    canvas[top : top + photo.shape[0], left : left + photo.shape[1]] = photo
    faces = detector.detect(canvas)
    assert faces, f"no face at scale {scale:.2f}"
    found = _relative_face(faces[0], canvas)
    assert np.abs(found - expected).max() < 0.05, (scale, found, expected)
    # and the square cut from the canvas shows what the original's square shows
    square = face_square(faces[0], SCALE, CENTER_Y, (3000, 2000))
    ours = cut_square(canvas, square, 128).astype(float)
    theirs = cut_square(astronaut, face_square(original, SCALE, CENTER_Y, (512, 512)), 128).astype(
        float
    )
    assert np.abs(ours - theirs).mean() < 12


def test_no_face_in_blank_or_text_or_a_cat(detector) -> None:
    blank = np.full((600, 800, 3), 200, np.uint8)
    text = blank.copy()
    cv2.putText(
        text, "Quarterly results 2026", (40, 300), cv2.FONT_HERSHEY_SIMPLEX, 2, (0, 0, 0), 4
    )
    for picture in (blank, text, skimage_data.chelsea(), skimage_data.coffee()):
        assert detector.detect(picture) == []


def test_several_faces_largest_first(astronaut, detector) -> None:
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    group = np.full((700, 1200, 3), 128, np.uint8)
    group[100:612, 80:592] = astronaut
    group[300:556, 800:1056] = small
    faces = detector.detect(group)
    assert len(faces) == 2
    assert faces[0].width > 1.6 * faces[1].width
    assert faces[0].center[0] < 600 < faces[1].center[0]


def test_square_stays_inside_a_tight_headshot(astronaut, detector) -> None:
    """A photo framed tighter than the rule gets the largest square that fits, on the face."""
    (face,) = detector.detect(astronaut)
    tight = astronaut[40:220, 140:320]  # 180x180 around the face
    (inner,) = detector.detect(tight)
    square = face_square(inner, SCALE, CENTER_Y, (180, 180))
    assert (square.x, square.y, square.side) == (0, 0, 180)
    loose = face_square(face, SCALE, CENTER_Y, (512, 512))
    assert loose.side == round(face.width * SCALE) and 0 <= loose.x and 0 <= loose.y


# -------------------------------------------------------------------------------- driving


def _moving_photo_video(path: Path, astronaut: np.ndarray, detector: FaceDetector, frames: int,
                        hide: range = range(0)) -> list[FaceBox]:  # fmt: skip
    """A 960x540 clip of the photo drifting right and swaying, zooming in and out, the face
    about 10 % of the frame's width; frames in ``hide`` have the face covered. Returns the
    face's true box in every frame."""
    (face,) = detector.detect(astronaut)
    cx, cy = face.center
    truth = []
    with VideoEncoder(
        path, frame_rate=Fraction(25), width=960, height=540, crf=16, preset="ultrafast"
    ) as encoder:
        for t in range(frames):
            zoom = 0.96 * (1 + 0.15 * np.sin(t / frames * 2 * np.pi))
            fx, fy = 150 + 500 * t / frames, 150 + 30 * np.sin(t / 16)
            shift = (fx - cx * zoom, fy - cy * zoom)
            matrix = np.array([[zoom, 0, shift[0]], [0, zoom, shift[1]]])
            frame = cv2.warpAffine(astronaut, matrix, (960, 540), borderValue=(90, 110, 130))
            box = face.scaled(zoom, *shift)
            if t in hide:  # a hand in front of the face
                frame[
                    round(box.y) : round(box.y + box.height),
                    round(box.x) : round(box.x + box.width),
                ] = 40
            encoder.add_frames(frame)
            truth.append(box)
    return truth


def test_sampled_frames_are_the_frames_a_full_read_gives(tmp_path, astronaut, detector) -> None:
    _moving_photo_video(tmp_path / "drift.mp4", astronaut, detector, 22)
    everything = list(VideoReader(tmp_path / "drift.mp4"))
    sampled = list(VideoReader(tmp_path / "drift.mp4", start_frame=5).sample(4))
    assert [k for k, _ in sampled] == [8, 12, 16, 20]
    for k, frame in sampled:
        assert np.array_equal(frame, everything[k])


def _track(path: Path, start_sample: int = 0) -> FaceTrack:
    reader = VideoReader(path, start_frame=start_sample * 4)
    detections = sample_detections(
        reader.sample(4), FaceDetector(coarse_side=400, coarse_step=1.1), 4
    )
    return FaceTrack(detections, every=4, sigma=1.0, first_sample=start_sample)


def test_track_follows_a_moving_face_without_jitter(tmp_path, astronaut, detector) -> None:
    truth = _moving_photo_video(tmp_path / "drift.mp4", astronaut, detector, 64)
    track = _track(tmp_path / "drift.mp4")
    boxes = [track.box(i) for i in range(64)]
    assert all(box is not None for box in boxes)
    error = np.array(
        [[(b.center[0] - g.center[0]) / g.width, (b.center[1] - g.center[1]) / g.width,
          b.width / g.width - 1] for b, g in zip(boxes, truth)]
    )  # fmt: skip
    assert np.abs(error).max() < 0.05, np.abs(error).max(axis=0)
    # jitter: how much the box moves from frame to frame beyond what the face did
    assert np.abs(np.diff(error, axis=0)).max() < 0.01, np.abs(np.diff(error, axis=0)).max(axis=0)


def test_track_goes_on_through_lost_frames_and_resumes_equal(tmp_path, astronaut, detector) -> None:
    truth = _moving_photo_video(
        tmp_path / "covered.mp4", astronaut, detector, 64, hide=range(24, 33)
    )
    whole = _track(tmp_path / "covered.mp4")
    boxes = [whole.box(i) for i in range(64)]
    assert all(box is not None for box in boxes), "the track lost the face"
    worst = max(abs(b.center[0] - g.center[0]) / g.width for b, g in zip(boxes, truth))
    assert worst < 0.1
    # a row resumed at frame 40 reads from enough samples before it: the same boxes
    radius = FaceTrack.window_radius(1.0)
    resumed = _track(tmp_path / "covered.mp4", start_sample=max(0, 40 // 4 - radius - 1))
    for i in range(40, 64):
        assert resumed.box(i) == boxes[i]


# -------------------------------------------------------------------------------- paste back


def test_paste_back_leaves_the_photo_untouched_outside_the_mask(astronaut, detector) -> None:
    photo = np.full((900, 1400, 3), 60, np.uint8)
    photo[200:712, 300:812] = astronaut
    photo[:, :, 2] = np.arange(1400, dtype=np.uint8)[None, :] // 6  # something to notice
    (face,) = detector.detect(photo)
    square = face_square(face, SCALE, CENTER_Y, (1400, 900))
    rng = np.random.default_rng(0)
    animated = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    for canvas, size in (("portrait", (1400, 900)), ((1080, 1920), (1080, 1920)), ((640, 360), (640, 360))):  # fmt: skip
        paste = PasteBack(photo, square, canvas, 0.12)
        out = paste(animated)
        assert out.shape == (3, size[1], size[0], 3)
        covered = np.zeros(out.shape[1:3], bool)
        top, bottom, left, right = paste._canvas_box  # noqa: SLF001 - the mask's footprint
        covered[top:bottom, left:right] = paste.mask[..., 0] > 0
        for frame in out:
            assert np.array_equal(frame[~covered], paste.background[~covered])
        if canvas == "portrait":
            assert np.array_equal(paste.background, photo)


def test_paste_back_matches_colour_at_the_seam(astronaut, detector) -> None:
    (face,) = detector.detect(astronaut)
    square = face_square(face, SCALE, CENTER_Y, (512, 512))
    paste = PasteBack(astronaut, square, "portrait", 0.12)
    own = cut_square(astronaut, square, 128)
    brighter = np.clip(own.astype(int) + (30, -20, 10), 0, 255).astype(np.uint8)[None]
    out = paste(brighter)[0].astype(float)
    top, bottom, left, right = paste._canvas_box  # noqa: SLF001
    band = paste._band  # noqa: SLF001
    seam = out[top:bottom, left:right][band] - astronaut[top:bottom, left:right][band]
    assert np.abs(seam.mean(axis=0)).max() < 2.0  # the shift is gone at the seam


def test_feather_mask_and_canvas_values() -> None:
    mask = feather_mask(100, 0.1)
    assert mask[50, 50] == 1.0 and mask[0, 50] < 0.05 and mask[50, 99] < 0.05
    assert parse_canvas("1080x1920") == (1080, 1920) and parse_canvas("portrait") == "portrait"
    for bad in ("1081x1920", "wide", "10x10"):
        with pytest.raises(ValueError, match="video.canvas"):
            parse_canvas(bad)
