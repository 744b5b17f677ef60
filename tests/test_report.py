"""report.html: files, escaping, links, frame picking, S3 folders, and a real headless browser.

The synthetic job's frames carry their index as a grey level (16 + 6 * index), so a test can
tell which output frame landed in which contact-sheet cell without trusting the decoder under
test. The browser test drives Debian's chromium over the DevTools protocol (a pipe, no extra
package): console messages, exceptions and failed loads are collected, and the images, the
videos' metadata, the seek-on-click script and a screenshot are checked.
"""

from __future__ import annotations

import base64
import functools
import html.parser
import io
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline import report
from pipeline.config import S3Config, StorageConfig
from pipeline.media import VideoEncoder
from pipeline.report import (
    ReportError,
    _previews,  # where outputs and portraits are decoded (the decode tests count it)
    asset_stem,
    build_report,
    format_timestamp,
    pick_frame_indices,
    write_report,
)
from pipeline.storage import Storage
from pipeline.timeline import fps_over_time

NASTY_ID = "<script>alert(1)</script>"
NASTY_ERROR = (
    "Traceback (most recent call last):\n"
    '  File "worker.py", line 7, in render\n'
    "ValueError: bad <b>input</b> & \"quotes\" 'too'\n"
    "</pre><script>alert(2)</script><img src=x onerror=alert(3)>"
)
QUARANTINED_ID = "q&a 'row'"
OK_FRAMES, OK_SIZE = 30, (96, 64)  # (width, height): not square, smaller than a thumbnail
TAKE_FRAMES = 16


def grey(index: int) -> int:
    """The grey level frame `index` of a synthetic video is painted with."""
    return 16 + 6 * index


def make_video(path: Path, num_frames: int, width: int, height: int) -> Path:
    """An H.264 video whose frame k is uniformly grey(k), with a coloured bar that moves."""
    with VideoEncoder(
        path, frame_rate=Fraction(25), width=width, height=height, crf=8, preset="ultrafast"
    ) as encoder:
        for index in range(num_frames):
            frame = np.full((height, width, 3), grey(index), np.uint8)
            frame[: height // 8, : max(1, index * width // num_frames)] = (230, 60, 40)
            encoder.add_frames(frame)
    return path


def summary_row(row_id: str, status: str, **fields: Any) -> dict[str, Any]:
    row = {"row_id": row_id, "status": status, "frames": 0, "seconds": 0.0, "fps": 0.0}
    row |= {"error": None, "output": None, "attempts": 1, "worker": "cpu-worker-0"}
    return row | fields


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """A finished job folder: one done row, one failed (no output), one quarantined (output)."""
    folder = tmp_path / "out" / "synthetic"
    make_video(folder / "ok.mp4", OK_FRAMES, *OK_SIZE)
    make_video(folder / "clips" / "take 1.mp4", TAKE_FRAMES, 64, 64)
    # the done row's inputs: a portrait with its face found and the driving clip it followed
    make_video(folder / "inputs" / "driving.mp4", OK_FRAMES, *OK_SIZE)
    Image.new("RGB", (240, 160), (200, 170, 150)).save(folder / "inputs" / "portrait.png")
    inputs = {
        "portrait": str(folder / "inputs" / "portrait.png"),
        "driving_video": str(folder / "inputs" / "driving.mp4"),
        "audio": None,
    }
    framing = {"face": [80, 30, 60, 70], "square": [60, 10, 110], "portrait": "face"}
    rows = [
        summary_row(
            "ok",
            "done",
            frames=30,
            seconds=1.5,
            fps=20.0,
            output=str(folder / "ok.mp4"),
            inputs=inputs,
            framing=framing | {"portrait_uri": inputs["portrait"]},
        ),
        summary_row(NASTY_ID, "failed", seconds=0.2, error=NASTY_ERROR, attempts=3),
        summary_row(
            QUARANTINED_ID,
            "quarantined",
            frames=16,
            error="the worker died twice on this row",
            output=str(folder / "clips" / "take 1.mp4"),
            attempts=2,
        ),
    ]
    totals = {"rows": 3, "done": 1, "failed": 1, "skipped": 0, "quarantined": 1, "frames": 46}
    rates = {"row_seconds": 1.7, "fps": 27.1, "span_seconds": 1.2, "aggregate_fps": 38.3}
    summary = {"job": "synthetic", "totals": totals | rates}
    (folder / "summary.json").write_text(json.dumps(summary | {"rows": rows}))
    status = {"job": "synthetic", "state": "finished", "updated_at": "2026-01-02T03:04:05+00:00"}
    status |= {"elapsed_seconds": 65.0, "rows": {"total": 3}}
    (folder / "status.json").write_text(json.dumps(status))
    return folder


@pytest.fixture
def storage() -> Storage:
    return Storage(StorageConfig())


class Tags(html.parser.HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parse(page: str) -> Tags:
    parser = Tags()
    parser.feed(page)
    return parser


DATA = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.DOTALL)


def page_data(page: str) -> dict[str, Any]:
    """The JSON the page's script lays the rows out from."""
    (found,) = DATA.findall(page)
    return json.loads(found)


def page_rows(page: str) -> list[dict[str, Any]]:
    """The page's rows, in the order it shows them by default."""
    return page_data(page)["rows"]


def row_links(row: dict[str, Any]) -> list[str]:
    """The files a row's card links: output, poster, sheet, portrait and driving clip."""
    output, portrait, driving = row["output"] or {}, row["portrait"] or {}, row["driving"] or {}
    found = [output.get(k) for k in ("src", "poster", "sheet")]
    found += [portrait.get("thumb"), portrait.get("src"), driving.get("src")]
    return [link for link in found if link]


def local_links(page: str) -> list[str]:
    """src/poster/href values of the page (its tags and its rows' data) that point to files
    (not data:, anchors or http)."""
    links = [link for row in page_rows(page) for link in row_links(row)]
    for _, attrs in parse(page).tags:
        for name in ("src", "poster", "href"):
            value = attrs.get(name)
            if value and not value.startswith(("data:", "#", "http:", "https:")):
                links.append(value)
    return links


def output_videos(page: str) -> list[dict[str, Any]]:
    """The output video of every row that has one, in display order."""
    return [row["output"] for row in page_rows(page) if row["output"] and row["output"]["src"]]


# --------------------------------------------------------------------------------------------
# The page and its files
# --------------------------------------------------------------------------------------------


def test_report_files_exist_and_every_link_resolves(job: Path, storage: Storage) -> None:
    uri = write_report(str(job), storage)
    assert uri == str(job / "report.html")
    page = (job / "report.html").read_text()
    for name in ("ok-poster.jpg", "ok-sheet.jpg"):
        assert (job / "report" / name).read_bytes()[:2] == b"\xff\xd8"  # JPEG
    stem = asset_stem(QUARANTINED_ID)
    assert stem != QUARANTINED_ID and (job / "report" / f"{stem}-sheet.jpg").is_file()
    links = local_links(page)
    assert links, page
    for link in links:
        assert not link.startswith("/") and "://" not in link, link  # relative to the page
        assert (job / urllib.parse.unquote(link)).is_file(), link
    videos = output_videos(page)
    assert [v["src"] for v in videos] == ["clips/take%201.mp4", "ok.mp4"]  # problems first
    (player,) = [v for v in parse(page).find("video") if v.get("class") == "output"]
    assert "controls" in player and player["preload"] == "metadata"  # the card's output player
    assert videos[1]["poster"] == "report/ok-poster.jpg"
    assert (videos[1]["width"], videos[1]["height"]) == (96, 64)
    ok = next(row for row in page_rows(page) if row["id"] == "ok")
    assert ok["driving"] == {
        "src": "inputs/driving.mp4",
        "thumb": None,
        "framed": False,
        "note": None,
    }
    assert ok["portrait"]["src"] == "inputs/portrait.png" and ok["portrait"]["framed"]
    assert ok["portrait"]["thumb"] == "report/ok-portrait.jpg"


def test_page_is_self_contained(job: Path, storage: Storage) -> None:
    page = build_report(str(job), storage)
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    scripts = parse(page).find("script")  # inline only: the rows' data and the code
    assert [s.get("type") for s in scripts] == ["application/json", None]
    assert all("src" not in s for s in scripts)
    assert page.count("<script") == 2 and page.count("<style>") == 1
    assert '<link rel="stylesheet"' not in page


def test_row_text_is_escaped(job: Path, storage: Storage) -> None:
    page = build_report(str(job), storage)
    assert NASTY_ID not in page and "alert(2)</script>" not in page and "<img src=x" not in page
    # in the rows' JSON, "<", ">", "&" and "'" are escapes: nothing can close the script element
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in page
    assert "q\\u0026a \\u0027row\\u0027" in page
    (data,) = DATA.findall(page)
    assert "<" not in data and ">" not in data and "&" not in data
    rows = {row["id"]: row for row in page_rows(page)}
    assert NASTY_ID in rows and rows[NASTY_ID]["error"] == NASTY_ERROR  # in full, as text
    assert QUARANTINED_ID in rows
    assert [a.get("src") for a in parse(page).find("img") if "alert" in str(a)] == []
    # the script puts every text in with textContent (the browser test checks the cards)
    script = (Path(report.__file__).parents[1] / "templates" / "report.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script


def test_header_shows_totals_and_when_it_ran(job: Path, storage: Storage) -> None:
    text = " ".join(" ".join(parse(build_report(str(job), storage)).text).split())
    assert "synthetic" in text and "finished" in text
    assert "Ran 2026-01-02 03:03:00 UTC → 03:04:05 UTC" in text
    assert "1:05 wall time" in text and "46 frames" in text
    assert "38.3 frames/s" in text  # the job's aggregate rate, not the mean per row (27.1)
    for count, status in ((1, "done"), (1, "failed"), (0, "skipped"), (1, "quarantined")):
        assert f"{count} {status}" in text


def test_failed_row_without_output_shows_the_error_instead_of_media(
    job: Path, storage: Storage
) -> None:
    page = build_report(str(job), storage)
    rows = page_rows(page)
    failed = next(row for row in rows if row["status"] == "failed")
    # no output, no inputs: the card shows the error where the media would be (the browser
    # test checks the card: a "No output" box, no video and no image)
    assert failed["output"] is None and failed["portrait"] is None and failed["driving"] is None
    assert failed["failure"] and failed["error"] == NASTY_ERROR
    assert rows.index(failed) == 0  # failures come first
    template = page.split('<template id="card">')[1].split("</template>")[0]
    assert '<div class="media-error" data-f="media-error"><b>No output</b>' in template


def test_running_job_says_so(job: Path, storage: Storage) -> None:
    (job / "status.json").write_text(json.dumps({"state": "running", "rows": {"total": 5}}))
    page = build_report(str(job), storage)
    assert "This job is still running: 2 of 5 rows have no result yet" in page


def test_missing_summary_is_a_clear_error(tmp_path: Path, storage: Storage) -> None:
    with pytest.raises(ReportError, match=r"summary\.json does not exist: the job has not"):
        build_report(str(tmp_path), storage)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"summary\.json is not valid JSON"):
        build_report(str(tmp_path), storage)


def test_missing_or_unreadable_output_is_reported_not_raised(job: Path, storage: Storage) -> None:
    summary = json.loads((job / "summary.json").read_text())
    (job / "bad.mp4").write_bytes(b"not a video at all")
    summary["rows"] += [
        summary_row("gone", "done", output=str(job / "gone.mp4")),
        summary_row("bad", "done", output=str(job / "bad.mp4")),
    ]
    page = build_report(str(job), storage, summary=summary)
    assert "does not exist (moved or deleted?)" in page
    rows = {row["id"]: row for row in page_rows(page)}
    assert rows["gone"]["output"] is None and "(moved or deleted?)" in rows["gone"]["problem"]
    assert rows["bad"]["problem"].startswith("no preview:")
    assert rows["bad"]["output"]["src"] == "bad.mp4"


def test_command_line_rebuilds_a_report(job: Path, tmp_path: Path) -> None:
    assert report.main([str(job)]) == 0 and (job / "report.html").is_file()
    assert report.main([str(tmp_path / "nothing-here")]) == 1


# --------------------------------------------------------------------------------------------
# The job: its state, its outputs as they stand, its history and provenance
# --------------------------------------------------------------------------------------------


def badge(page: str) -> tuple[str, str]:
    """(label, tone) of the header's badge."""
    match = re.search(r'<span class="badge tone-(\w+)" id="job-state">([^<]*)</span>', page)
    assert match, "no badge"
    return match[2], match[1]


@pytest.mark.parametrize(
    ("state", "statuses", "expected"),
    [
        ("finished", ["done", "done"], ("finished", "ok")),
        ("finished", ["done", "failed"], ("finished with failures", "bad")),
        ("finished", ["done", "quarantined"], ("finished with failures", "bad")),
        ("failed", ["failed"], ("failed", "bad")),
        ("interrupted", ["done", "interrupted"], ("interrupted", "warn")),
        ("running", ["done"], ("running", "live")),
    ],
)
def test_a_job_with_failures_never_looks_green(
    tmp_path: Path, storage: Storage, state: str, statuses: list[str], expected: tuple[str, str]
) -> None:
    rows = [summary_row(f"r{i}", status) for i, status in enumerate(statuses)]
    totals = {status: statuses.count(status) for status in set(statuses)}
    (tmp_path / "status.json").write_text(json.dumps({"state": state}))
    page = build_report(str(tmp_path), storage, summary={"totals": totals, "rows": rows})
    assert badge(page) == expected


def test_badge_counts_failures_from_the_totals_too(tmp_path: Path, storage: Storage) -> None:
    """A summary whose rows list was cut short still says the job had failures."""
    summary = {"totals": {"done": 3, "failed": 1}, "rows": [summary_row("a", "done")]}
    assert badge(build_report(str(tmp_path), storage, summary=summary))[1] == "bad"


def contract_summary(job: Path) -> dict[str, Any]:
    """The fixture job's summary with the fields the render job adds: this run, the run
    history, the outputs as they stand, provenance and throughput samples."""
    summary = json.loads((job / "summary.json").read_text())
    summary["run"] = {
        "id": "20261203T120102Z-4821",
        "started_at": "2026-12-03T12:01:02Z",
        "finished_at": "2026-12-03T12:03:12Z",
        "state": "finished",
        "wall_seconds": 130.0,
    }
    summary["runs"] = [
        {"id": "20261202T090000Z-1111", "started_at": "2026-12-02T09:00:00Z",
         "finished_at": "2026-12-02T09:40:00Z", "state": "interrupted", "done": 40,
         "failed": 0, "skipped": 0, "quarantined": 0, "interrupted": 60, "frames": 3600,
         "aggregate_fps": 1.5},
        {"id": "20261203T120102Z-4821", "started_at": "2026-12-03T12:01:02Z",
         "finished_at": "2026-12-03T12:03:12Z", "state": "finished", "done": 1, "failed": 1,
         "skipped": 0, "quarantined": 1, "interrupted": 0, "frames": 46, "aggregate_fps": 38.3},
    ]  # fmt: skip
    summary["outputs"] = {
        "rows": 3, "committed": 2, "frames": 46, "render_seconds": 1.7, "fps": 27.06,
    }  # fmt: skip
    summary["provenance"] = {
        "model": "personalive",
        "architecture": "full",
        "dtype": "bfloat16",
        "resolution": 512,
        "weights_revision": "org/PersonaLive@0123abcd",
        "random_init": False,
        "preset": "social",
        "video": {"codec": "libx264", "crf": 18, "preset": "medium", "pix_fmt": "yuv420p",
                  "canvas": "1080x1920"},
        "versions": {"portrait_render": "0.1.0", "torch": "2.13.0"},
        "host": "gpu-node-7",
        "command": "python run.py job=render manifest=m.csv preset=social <b>",
    }  # fmt: skip
    summary["throughput"] = [{"t": 2.0 * k, "frames": 12 * k} for k in range(12)]
    for row in summary["rows"]:
        row["conditioning"] = "cached"
    return summary


def test_provenance_run_history_and_outputs_are_shown(job: Path, storage: Storage) -> None:
    page = build_report(str(job), storage, summary=contract_summary(job))
    text = " ".join(" ".join(parse(page).text).split())
    # the outputs as they stand beside this run's own counts
    assert "The job's outputs as they stand" in text and "2 / 3 rows with a video" in text
    assert "27.1 frames/s rendering them" in text and "This run" in text
    # when this run ran comes from summary["run"]
    assert "Ran 2026-12-03 12:01:02 UTC → 12:03:12 UTC" in text and "2:10 wall time" in text
    # provenance
    for fact in ("weights org/PersonaLive@0123abcd", "model personalive", "preset social",
                 "codec libx264 · crf 18", "host gpu-node-7", "driving conditioning 3 cached"):  # fmt: skip
        assert fact in text, fact
    assert "python run.py job=render manifest=m.csv preset=social <b>" in text  # as text
    assert "preset=social <b>" not in page
    # the run history, this run marked
    runs = page.split('<table class="runs">')[1].split("</table>")[0]
    assert runs.count("<tr") == 3 and 'class="current"' in runs and "this run" in runs
    assert "20261202T090000Z-1111" in runs and "interrupted" in runs and "40:00" in runs
    # fps over time, from the samples
    assert '<svg class="chart"' in page and "Sampled while rendering." in text


def test_random_weights_are_called_out(job: Path, storage: Storage) -> None:
    summary = contract_summary(job)
    summary["provenance"] |= {"random_init": True, "weights_revision": "random-tiny-seed0"}
    page = build_report(str(job), storage, summary=summary)
    assert "randomly initialised weights" in page and "random-tiny-seed0" in page


def test_an_old_summary_without_the_new_fields_still_renders(
    tmp_path: Path, storage: Storage
) -> None:
    summary = {"rows": [summary_row("a", "done"), {"row_id": "b"}, "not a row"]}
    page = build_report(str(tmp_path), storage, summary=summary)
    assert badge(page) == ("finished", "ok")
    assert [row["id"] for row in page_rows(page)] == ["a", "b"]
    assert "Provenance" not in page and '<svg class="chart"' not in page


def test_fps_over_time_from_samples_or_from_the_rows() -> None:
    sampled = fps_over_time({"throughput": [{"t": 2.0 * k, "frames": 50 * k} for k in range(8)]})
    assert sampled is not None and sampled.source == "sampled"
    assert all(fps == pytest.approx(25.0) for _, fps in sampled.points[1:])
    assert sampled.mean[-1] == (14.0, pytest.approx(25.0))
    # no samples: two rows of 100 frames, each over 10 s, one after the other from t=0
    rows = [
        {"frames": 100, "started_at": 1000.0, "seconds": 10.0},
        {"frames": 100, "started_at": 1010.0, "seconds": 10.0},
        {"frames": 0, "started_at": 1005.0, "seconds": 3.0},  # rendered nothing: ignored
    ]
    derived = fps_over_time({"rows": rows, "startup": {"started_at": 1000.0}})
    assert derived is not None and derived.source == "rows"
    assert all(fps == pytest.approx(10.0) for _, fps in derived.points)
    assert derived.mean[-1][1] == pytest.approx(10.0)
    assert fps_over_time({"rows": [summary_row("a", "skipped")]}) is None


# --------------------------------------------------------------------------------------------
# Rows: extra columns, who rendered them, their inputs, their signals
# --------------------------------------------------------------------------------------------


def test_extra_columns_rendered_and_signals_travel_as_text(job: Path, storage: Storage) -> None:
    summary = json.loads((job / "summary.json").read_text())
    ok = next(row for row in summary["rows"] if row["row_id"] == "ok")
    ok["extra"] = {"campaign": "spring </script><script>alert(4)</script>", "caption": "a & b"}
    ok["rendered"] = {"run": "run-1", "at": "2026-12-02T09:30:00Z", "seconds": 1.5, "fps": 20.0,
                      "frames": 30, "worker": "gpu-worker-0", "started_at": 1.0}  # fmt: skip
    ok["signals"] = {"times": [0.2, 0.6, 1.0], "identity": [0.95, 0.91, float("nan")],
                     "motion": [0.02, 0.03, 0.01], "driving_motion": [0.03, 0.03, 0.02],
                     "every_seconds": 0.4, "model": "clip"}  # fmt: skip
    page = build_report(str(job), storage, summary=summary)
    assert "alert(4)</script>" not in page and "</script><script>" not in page
    row = next(row for row in page_rows(page) if row["id"] == "ok")
    assert row["extra"] == ok["extra"]
    assert row["rendered"]["run"] == "run-1" and row["rendered"]["at"] == "2026-12-02 09:30:00 UTC"
    assert row["signals"]["identity"] == [0.95, 0.91, None]  # not-a-number is no JSON number
    assert row["signals"]["times"] == [0.2, 0.6, 1.0]
    assert page_data(page)["signalsNote"] == report.SIGNALS_NOTE
    assert "does not judge lip sync" in report.SIGNALS_NOTE


def test_inputs_the_page_cannot_reach_get_a_note(job: Path, storage: Storage) -> None:
    summary = json.loads((job / "summary.json").read_text())
    ok = next(row for row in summary["rows"] if row["row_id"] == "ok")
    ok["inputs"]["driving_video"] = "s3://media/driving/take 1.mp4"
    quarantined = next(row for row in summary["rows"] if row["status"] == "quarantined")
    quarantined["inputs"] = {"driving_video": str(job / "gone.mp4"), "portrait": None}
    rows = {row["id"]: row for row in page_rows(build_report(str(job), storage, summary=summary))}
    assert rows["ok"]["driving"]["src"] is None
    assert (
        "on S3 (s3://media/driving/take 1.mp4), out of this page's reach"
        in (rows["ok"]["driving"]["note"])
    )
    assert rows["ok"]["portrait"]["src"] == "inputs/portrait.png"  # the local portrait still is
    assert "does not exist any more" in rows[QUARANTINED_ID]["driving"]["note"]


def test_inputs_outside_the_job_folder_are_linked_relative_to_the_page(
    tmp_path: Path, storage: Storage
) -> None:
    media = tmp_path / "manifests" / "media"
    make_video(media / "drive clip.mp4", 4, 32, 32)
    job = tmp_path / "outputs" / "job"
    job.mkdir(parents=True)
    inputs = {"driving_video": str(media / "drive clip.mp4"), "portrait": None}
    summary = {"rows": [summary_row("a", "done", inputs=inputs)]}
    (row,) = page_rows(build_report(str(job), storage, summary=summary))
    assert row["driving"]["src"] == "../../manifests/media/drive%20clip.mp4"


# --------------------------------------------------------------------------------------------
# Rebuilding: unchanged outputs are not decoded again
# --------------------------------------------------------------------------------------------


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the report decodes: 'video' per VideoReader opened, 'image' per portrait read."""
    opened: list[str] = []
    reader, load_image = _previews.VideoReader, _previews.load_image

    def counting_reader(*args: Any, **kwargs: Any) -> Any:
        opened.append("video")
        return reader(*args, **kwargs)

    def counting_image(*args: Any, **kwargs: Any) -> Any:
        opened.append("image")
        return load_image(*args, **kwargs)

    monkeypatch.setattr(_previews, "VideoReader", counting_reader)
    monkeypatch.setattr(_previews, "load_image", counting_image)
    return opened


def test_rebuilding_an_unchanged_job_decodes_nothing(
    job: Path, storage: Storage, decodes: list[str]
) -> None:
    first = write_report(str(job), storage)
    assert sorted(decodes) == ["image", "video", "video"]
    assets = {path.name: path.stat().st_mtime_ns for path in (job / "report").iterdir()}
    assert "assets.json" in assets and "ok-sheet.jpg" in assets
    page = (job / "report.html").read_text()
    decodes.clear()

    assert write_report(str(job), storage) == first
    assert decodes == []  # no video decoded, no portrait read
    assert {p.name: p.stat().st_mtime_ns for p in (job / "report").iterdir()} == assets
    strip = functools.partial(re.sub, r"Built [^<]* by", "Built")
    assert strip((job / "report.html").read_text()) == strip(page)  # the same page

    # a re-rendered output (new content, same name) is decoded again; the rest is not
    make_video(job / "ok.mp4", 12, *OK_SIZE)
    decodes.clear()
    rebuilt = build_report(str(job), storage)
    assert decodes == ["video"]
    ok = next(row for row in page_rows(rebuilt) if row["id"] == "ok")
    assert ok["output"]["times"] == pytest.approx([i / 25 for i in pick_frame_indices(12)])
    assert (job / "report" / "ok-sheet.jpg").stat().st_mtime_ns != assets["ok-sheet.jpg"]


def test_a_lost_picture_or_a_new_face_box_is_made_again(
    job: Path, storage: Storage, decodes: list[str]
) -> None:
    write_report(str(job), storage)
    (job / "report" / "ok-poster.jpg").unlink()
    summary = json.loads((job / "summary.json").read_text())
    ok = next(row for row in summary["rows"] if row["row_id"] == "ok")
    ok["framing"]["face"] = [10, 10, 50, 50]
    decodes.clear()
    write_report(str(job), storage, summary=summary)
    assert sorted(decodes) == ["image", "video"]
    assert (job / "report" / "ok-poster.jpg").is_file()


def test_rows_sharing_an_output_share_its_pictures(
    tmp_path: Path, storage: Storage, decodes: list[str]
) -> None:
    make_video(tmp_path / "same.mp4", 10, 32, 32)
    rows = [summary_row(f"r{i}", "done", output=str(tmp_path / "same.mp4")) for i in range(5)]
    page = build_report(str(tmp_path), storage, summary={"rows": rows})
    assert decodes == ["video"]
    assert {row["output"]["sheet"] for row in page_rows(page)} == {"report/r0-sheet.jpg"}


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_frames", "count", "expected"),
    [
        (0, 8, []),
        (1, 8, [0]),
        (3, 8, [0, 1, 2]),
        (8, 8, list(range(8))),
        (30, 8, [1, 5, 9, 13, 16, 20, 24, 28]),
        (800, 4, [100, 300, 500, 700]),
    ],
)
def test_pick_frame_indices(num_frames: int, count: int, expected: list[int]) -> None:
    assert pick_frame_indices(num_frames, count) == expected


@pytest.mark.parametrize(
    ("seconds", "digits", "text"),
    [(0.0, 1, "0:00.0"), (3.24, 1, "0:03.2"), (59.96, 1, "1:00.0"), (3723.4, 1, "1:02:03.4")]
    + [(0.04, 2, "0:00.04")],
)
def test_format_timestamp(seconds: float, digits: int, text: str) -> None:
    assert format_timestamp(seconds, digits) == text


def sheet_levels(path: Path, columns: int, rows: int) -> list[int]:
    """Mean grey of the top-right quarter of each contact-sheet cell (away from the label)."""
    sheet = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    height, width = sheet.shape[0] // rows, sheet.shape[1] // columns
    levels = []
    for row in range(rows):
        for column in range(columns):
            top, left = row * height, column * width
            cell = sheet[top + height // 4 : top + height // 2, left + width // 2 : left + width]
            levels.append(round(cell.mean()))
    return levels


@pytest.mark.parametrize("mode", ["decode once", "seek per frame"])
def test_contact_sheet_holds_evenly_spaced_frames(
    job: Path, storage: Storage, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    if mode == "seek per frame":
        monkeypatch.setattr(_previews, "DECODE_ALL_MAX_FRAMES", 0)
    page = build_report(str(job), storage)
    sheet = Image.open(job / "report" / "ok-sheet.jpg")
    assert sheet.size == (4 * OK_SIZE[0], 2 * OK_SIZE[1])  # 8 frames, 4 a row, not upscaled
    expected = [grey(index) for index in pick_frame_indices(OK_FRAMES)]
    levels = sheet_levels(job / "report" / "ok-sheet.jpg", columns=4, rows=2)
    assert np.allclose(levels, expected, atol=4), (levels, expected)
    poster = np.asarray(Image.open(job / "report" / "ok-poster.jpg").convert("L"))
    assert abs(float(poster[OK_SIZE[1] // 2 :].mean()) - grey(16)) <= 4  # the middle pick
    ok = next(row for row in page_rows(page) if row["id"] == "ok")
    times = [index / 25 for index in pick_frame_indices(OK_FRAMES)]
    assert ok["output"]["times"] == pytest.approx(times, abs=1e-3)  # each cell seeks there


def test_thumbnails_are_at_most_320_wide(tmp_path: Path, storage: Storage) -> None:
    make_video(tmp_path / "big.mp4", 10, 640, 360)
    summary = {"job": "big", "rows": [summary_row("big", "done", output="big.mp4")]}
    build_report(str(tmp_path), storage, summary=summary)  # output found by name in the folder
    assert Image.open(tmp_path / "report" / "big-poster.jpg").size == (320, 180)
    assert Image.open(tmp_path / "report" / "big-sheet.jpg").size == (4 * 320, 2 * 180)


# --------------------------------------------------------------------------------------------
# S3 job folders
# --------------------------------------------------------------------------------------------


def test_report_of_an_s3_job_folder(
    job: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    boto3 = pytest.importorskip("boto3")
    try:
        from tests.s3_server import MotoServer, isolate_aws_env
    except ModuleNotFoundError:
        from s3_server import MotoServer, isolate_aws_env
    isolate_aws_env(monkeypatch, tmp_path)
    with MotoServer() as server:
        client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
        bucket = f"reports-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        folder = f"s3://{bucket}/jobs/synthetic"
        summary = json.loads((job / "summary.json").read_text())
        for row in summary["rows"]:
            if row["output"]:
                relative = Path(row["output"]).relative_to(job).as_posix()
                client.upload_file(row["output"], bucket, f"jobs/synthetic/{relative}")
                row["output"] = f"{folder}/{relative}"
        storage = Storage(StorageConfig(s3=S3Config(endpoint_url=server.endpoint_url)))
        assert write_report(folder, storage, summary=summary) == f"{folder}/report.html"
        keys = {item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]}
        page = client.get_object(Bucket=bucket, Key="jobs/synthetic/report.html")["Body"].read()
    assert {"jobs/synthetic/report/ok-poster.jpg", "jobs/synthetic/report/ok-sheet.jpg"} <= keys
    videos = output_videos(page.decode())
    assert [v["src"] for v in videos] == ["clips/take%201.mp4", "ok.mp4"]


# --------------------------------------------------------------------------------------------
# A real browser
# --------------------------------------------------------------------------------------------

CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None
)


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves a folder with byte ranges (videos seek only then, as on any real server); records
    (path, status) of every request instead of logging it."""

    requests: list[tuple[str, int]]

    def send_head(self):  # noqa: ANN201 - the base class's signature
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if not match or not path.is_file():
            return super().send_head()
        data = path.read_bytes()
        start, end = int(match[1]), int(match[2] or len(data) - 1)
        body = data[start : min(end, len(data) - 1) + 1]
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.requests.append((urllib.parse.unquote(self.path), int(code)))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base signature
        """Silence the default stderr logging."""


@pytest.fixture
def served(job: Path, storage: Storage) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """(report URL, request log) of the job folder served on 127.0.0.1 on a free port."""
    write_report(str(job), storage)
    requests: list[tuple[str, int]] = []
    handler = type("Handler", (QuietHandler,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=job))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/report.html", requests
    finally:
        server.shutdown()
        server.server_close()


class Browser:
    """Headless chromium over ``--remote-debugging-pipe``: CDP messages on fds 3 (in) and 4 (out).

    Collects console messages of level error/warning, uncaught exceptions and log entries
    (failed loads) of the page in `problems`.
    """

    def __init__(self, executable: str, profile: Path, *, width: int, height: int) -> None:
        to_browser, self._commands = os.pipe()
        self._events, from_browser = os.pipe()

        def wire_fds() -> None:  # in the child: the pipe ends chromium expects as fds 3 and 4
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic"]
            + ["--no-first-run", "--disable-background-networking", "--disable-component-update"]
            + ["--disable-sync", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}"]
            + ["--remote-debugging-pipe", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=wire_fds,  # noqa: PLW1509 - fds must land on 3 and 4 before exec
        )
        os.close(to_browser)
        os.close(from_browser)
        self.width, self.height = width, height
        self.problems: list[str] = []
        self._messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._next_id = 0
        self._session: str | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._events, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._messages.put(json.loads(message))

    def _note(self, message: dict[str, Any]) -> None:
        params, method = message.get("params", {}), message.get("method")
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning"):
            self.problems.append(f"console.{params['type']}: {params['args']}")
        elif method == "Runtime.exceptionThrown":
            self.problems.append(f"exception: {params['exceptionDetails']}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            self.problems.append(f"log: {params['entry']}")

    def _next(self, deadline: float) -> dict[str, Any]:
        try:
            message = self._messages.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError("chromium did not answer in time") from None
        self._note(message)
        return message

    def send(self, method: str, timeout: float = 20.0, **params: Any) -> dict[str, Any]:
        """Send a command (to the page once attached) and return its result."""
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self._session and not method.startswith(("Target.", "Browser.")):
            command["sessionId"] = self._session
        os.write(self._commands, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def wait_for(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline)
            if message.get("method") == event:
                return message.get("params", {})

    def open(self, url: str, *, first_script: str | None = None) -> None:
        """Open `url` in a new page and wait for its load event; `first_script` runs in the page
        before any of its own scripts."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        if first_script is not None:
            self.send("Page.addScriptToEvaluateOnNewDocument", source=first_script)
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (promises awaited)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5.0)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self._commands)


#: Waits for every image to decode and every video's metadata, then describes them.
PAGE_STATE = """
(async () => {
  await Promise.all([...document.images].map((img) => img.decode().catch(() => null)));
  await Promise.all([...document.querySelectorAll("video")].map((video) =>
    video.readyState >= 1 ? null : new Promise((done) => {
      video.addEventListener("loadedmetadata", done, {once: true});
      video.addEventListener("error", done, {once: true});
      setTimeout(done, 8000);
    })));
  document.querySelector(".card[data-status=done]").scrollIntoView();  // the row list pages
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  const box = (el) => { const r = el.getBoundingClientRect();
    return [r.left, r.top, r.width, r.height]; };
  return {
    images: [...document.images].map((img) => [img.getAttribute("src"), img.naturalWidth]),
    videos: [...document.querySelectorAll("video")].map((video) =>
      [video.getAttribute("src"), video.readyState, video.duration, video.error && video.error.code]),
    sheet: box(document.querySelector(".card[data-status=done] .sheet img")),
    cards: document.querySelectorAll(".card").length,
    title: document.title,
  };
})()
"""

SEEK_BY_CLICK = """
(() => {
  const card = document.querySelector(".card[data-status=done]");
  card.querySelectorAll(".cells button")[5].click();
  return card.querySelector("video.output").currentTime;
})()
"""

CARDS = """
(() => [...document.querySelectorAll(".card")].map((card) => ({
  status: card.dataset.status,
  id: card.querySelector("h2").textContent,
  text: card.textContent,
  noOutput: [...card.querySelectorAll(".media-error > b")].map((b) => b.textContent),
  videos: [...card.querySelectorAll("video")].map((v) => v.className),
  images: card.querySelectorAll("img").length,
  injected: card.querySelectorAll("script, b b, pre b, pre img, img[src=x]").length,
})))()
"""

FILTER_BY_CLICK = """
(() => {
  document.querySelector('.tile[data-filter="failed"]').click();
  return [...document.querySelectorAll(".card")].filter((card) => !card.hidden)
    .map((card) => card.dataset.status);
})()
"""


@pytest.mark.slow  # a headless browser
def test_report_in_headless_chromium(
    served: tuple[str, list[tuple[str, int]]], tmp_path: Path
) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)")
    url, requests = served
    browser = Browser(CHROMIUM, tmp_path / "profile", width=1280, height=1400)
    try:
        browser.open(url)
        state = browser.evaluate(PAGE_STATE)
        png = browser.screenshot()
        cards = browser.evaluate(CARDS)
        seek_time = browser.evaluate(SEEK_BY_CLICK)
        visible = browser.evaluate(FILTER_BY_CLICK)
    finally:
        browser.close()
    (tmp_path / "report.png").write_bytes(png)

    assert browser.problems == []  # no console error or warning, no exception, no failed load
    assert all(code in (200, 206, 304) for _, code in requests), requests
    requested = {path for path, _ in requests}
    assert {"/report.html", "/report/ok-poster.jpg", "/report/ok-sheet.jpg"} <= requested
    assert state["title"] == "synthetic · portrait-render report" and state["cards"] == 3
    assert state["images"] and all(width > 0 for _, width in state["images"]), state["images"]
    for src, ready, duration, error in state["videos"]:  # the browser can play the outputs
        assert error is None and ready >= 1 and duration > 0, (src, ready, duration, error)
    assert seek_time == pytest.approx(pick_frame_indices(OK_FRAMES)[5] / 25, abs=1e-3)
    assert visible == ["failed"]
    # every text of a row shown in full, as text: nothing parsed as HTML
    failed, quarantined, done = cards
    assert failed["id"] == NASTY_ID and NASTY_ERROR in failed["text"]
    assert quarantined["id"] == QUARANTINED_ID and all(card["injected"] == 0 for card in cards)
    # the failed row without output: its error where the media would be, no video, no image
    assert failed["noOutput"] == ["No output"] and failed["videos"] == [] and failed["images"] == 0
    # the done row: portrait, driving clip and output side by side, then the contact sheet
    assert done["videos"] == ["driving", "output"] and done["images"] == 2

    screenshot = Image.open(io.BytesIO(png)).convert("RGB")
    assert screenshot.size == (1280, 1400)
    assert len(screenshot.getcolors(1 << 24) or ()) > 200  # not blank
    left, top, width, height = state["sheet"]
    assert width > 200 and height > 50 and top + height < 1400  # the grid laid out, in view
    sheet = np.asarray(screenshot.crop((left, top, left + width, top + height)), np.float64)
    columns = np.array_split(sheet, 4, axis=1)
    assert sheet.std() > 10 and columns[0].mean() < columns[-1].mean()  # the frames, in order
