"""Framing in real jobs (tiny model, embedded Ray): a photo with the face off-centre is animated
around its face and pasted back at the photo's resolution, the audio in sync; a photo without a
face gets a verdict in job=validate and a failed row, never a video; a row can opt out."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from job_helpers import run_in_process, tiny_render_overrides, write_manifest
from media_factory import click_audio, click_time
from PIL import Image

from pipeline.media import VideoReader, probe

cv2 = pytest.importorskip("cv2")
skimage_data = pytest.importorskip("skimage.data")

REPO = Path(__file__).resolve().parents[1]
FRAMES = 36


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A 640x480 photo with the astronaut's face left of centre, a blank photo, a 320x180
    driving clip of the same face drifting (10 % of the frame's width), a click at 0.8 s."""
    from pipeline.media import VideoEncoder

    folder = tmp_path_factory.mktemp("framing-inputs")
    astronaut = skimage_data.astronaut()
    photo = np.empty((480, 640, 3), np.uint8)
    photo[:] = np.linspace(30, 220, 640, dtype=np.uint8)[None, :, None]
    photo[:, :, 1] = np.linspace(200, 40, 480, dtype=np.uint8)[:, None]
    small = cv2.resize(astronaut, (400, 400), interpolation=cv2.INTER_AREA)
    photo[60:460, 20:420] = small
    Image.fromarray(photo).save(folder / "photo.png")
    Image.fromarray(np.full((300, 400, 3), 180, np.uint8)).save(folder / "blank.png")
    face_scale = 32 / 100  # the face (~100 px in the 512 original) 32 px wide: 10 % of 320
    with VideoEncoder(
        folder / "drive.mp4", frame_rate=Fraction(25), width=320, height=180, crf=16,
        preset="ultrafast",
    ) as encoder:  # fmt: skip
        for t in range(FRAMES):
            zoom = face_scale * (1 + 0.1 * np.sin(t / 8))
            matrix = np.array([[zoom, 0, 60 + 2 * t - 224 * zoom], [0, zoom, 80 - 114 * zoom]])
            encoder.add_frames(
                cv2.warpAffine(astronaut, matrix, (320, 180), borderValue=(90, 110, 130))
            )
    click_audio(folder / "click.wav", click_at=0.8, duration=FRAMES / 25)
    return {
        "photo": folder / "photo.png", "blank": folder / "blank.png",
        "drive": folder / "drive.mp4", "click": folder / "click.wav",
    }  # fmt: skip


def _run(inputs, tmp_path: Path, weights: Path, rows: list[dict], *extra: str) -> tuple[int, dict]:
    manifest = write_manifest(tmp_path / "framed.csv", rows)
    code = run_in_process(tiny_render_overrides(manifest, tmp_path / "out", weights, *extra))
    summary = json.loads((tmp_path / "out/framed/summary.json").read_text())
    return code, {row["row_id"]: row for row in summary["rows"]}


@pytest.mark.slow
def test_pasted_back_at_the_photos_resolution_untouched_away_from_the_face(
    ray_local, tiny_weights, inputs, tmp_path: Path
) -> None:
    rows = [{"id": "framed", "portrait": str(inputs["photo"]), "driving_video": str(inputs["drive"]),
             "audio": str(inputs["click"])}]  # fmt: skip
    code, results = _run(
        inputs, tmp_path, tiny_weights, rows, "video=lossless", "video.canvas=portrait"
    )
    assert code == 0, results
    row = results["framed"]
    framing = row["framing"]
    assert framing["canvas"] == [640, 480] and framing["driving_frames_without_face"] == 0
    x, y, side = framing["square"]
    fx, fy, fw, _ = framing["face"]
    assert 20 + 400 * 0.3 < fx + fw / 2 < 20 + 400 * 0.55  # her face, left of the photo's centre
    info = probe(row["output"])
    assert (info.video.width, info.video.height) == (640, 480)
    assert info.video.num_frames == FRAMES and info.video.frame_rate == 25
    # audio in sync: the click at 0.8 s is at 0.8 s (±1 frame)
    assert abs(click_time(Path(row["output"])) - 0.8) <= 1 / 25
    photo = np.asarray(Image.open(inputs["photo"]).convert("RGB"))
    outside = np.ones((480, 640), bool)
    outside[max(0, y) : y + side, max(0, x) : x + side] = False
    frames = np.stack(list(VideoReader(row["output"])))
    assert frames.shape == (FRAMES, 480, 640, 3)
    for frame in frames:  # lossless output: the photo's own pixels, exactly
        assert np.array_equal(frame[outside], photo[outside])
    # the report shows the portrait with the face and the square drawn on it
    page = (tmp_path / "out/framed/report.html").read_text()
    assert "-portrait.jpg" in page
    (thumb,) = (tmp_path / "out/framed/report").glob("*-portrait.jpg")
    drawn = np.asarray(Image.open(thumb).convert("RGB")).astype(int)
    factor = drawn.shape[1] / 640
    edge = drawn[
        round((fy + fw / 2) * factor), max(0, round(fx * factor) - 1) : round(fx * factor) + 2
    ]
    assert (edge[:, 1] - edge[:, 0]).max() > 60  # the green line of the face box
    inside = frames[:, y + side // 4 : y + 3 * side // 4, x + side // 4 : x + 3 * side // 4]
    assert np.abs(inside.astype(int) - photo[y + side // 4 : y + 3 * side // 4, x + side // 4 : x + 3 * side // 4]).mean() > 5  # fmt: skip


@pytest.mark.slow
def test_canvas_of_a_social_format_and_a_row_that_opts_out(
    ray_local, tiny_weights, inputs, tmp_path: Path
) -> None:
    rows = [
        {"id": "story", "portrait": str(inputs["photo"]), "driving_video": str(inputs["drive"]), "framing": ""},
        {"id": "centre", "portrait": str(inputs["blank"]), "driving_video": str(inputs["drive"]), "framing": "crop"},
    ]  # fmt: skip
    code, results = _run(inputs, tmp_path, tiny_weights, rows, "video.canvas=180x320")
    assert code == 0, results
    story = probe(results["story"]["output"]).video
    assert (story.width, story.height, story.num_frames) == (180, 320, FRAMES)
    centre = probe(results["centre"]["output"]).video  # no face looked for: the square, covering
    assert (centre.width, centre.height, centre.num_frames) == (180, 320, FRAMES)
    assert results["centre"]["framing"]["portrait"] == "crop"
    assert results["centre"]["framing"]["canvas"] == [180, 320]


@pytest.mark.slow
def test_a_portrait_without_a_face_gets_a_verdict_not_a_video(
    ray_local, tiny_weights, inputs, tmp_path: Path, capsys, monkeypatch
) -> None:
    from pipeline.logs import CONSOLE

    monkeypatch.setattr(CONSOLE, "width", 400)  # the problem table on one line per row
    rows = [
        {"id": "good", "portrait": str(inputs["photo"]), "driving_video": str(inputs["drive"])},
        {"id": "faceless", "portrait": str(inputs["blank"]), "driving_video": str(inputs["drive"])},
    ]
    manifest = write_manifest(tmp_path / "framed.csv", rows)
    from hydra import compose, initialize_config_dir

    from jobs.validate import run as validate
    from pipeline.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        assert validate(compose("config", overrides=["job=validate", f"manifest={manifest}"])) == 1
    captured = capsys.readouterr()
    shown = " ".join((captured.out + captured.err).split())
    assert "no face found in the portrait" in shown and "framing.portrait=crop" in shown
    assert "blank.png" in shown  # the file (the table names rows by number)
    # the good row's face box, as the table prints it (x,y,w,h)
    assert re.search(r"good .*\b\d+,\d+,\d+,\d+\b", shown), shown
    code, results = _run(inputs, tmp_path, tiny_weights, rows)
    assert code == 1
    assert results["good"]["status"] == "done"
    assert results["faceless"]["status"] == "failed" and not results["faceless"]["output"]
    assert "no face found" in results["faceless"]["error"]
