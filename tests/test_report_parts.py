"""report.html of a job with a row split over workers and a worker pool that changed mid-job: the
split row's card lists its parts, the workers' timeline draws a bar per part on the lane of the
worker that rendered it, and the Workers panel tells who joined late and who left early.

The job folder is real: H.264 outputs (`media_factory.pattern_video`), ``summary.json`` and
``status.json`` written to disk. The split row's parts cover its frames as
`pipeline.split_rows.part_spans` cuts them, and the ``workers`` history is what
`pipeline.progress.WorkerRoster` records from the pool's events.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from media_factory import pattern_video
from PIL import Image
from test_report import CHROMIUM, Browser, page_rows, parse, summary_row
from test_report_browser import search, serve_report, shown_ids

from pipeline.config import StorageConfig
from pipeline.progress import WorkerJoined, WorkerLeft, WorkerReady, WorkerRoster
from pipeline.report import build_report, write_report
from pipeline.split_rows import part_spans
from pipeline.storage import Storage
from pipeline.timeline import bars, fps_over_time, slot_idle_seconds, timeline_svg
from scripts.timeline_png import timeline_page

START = 1_800_000_000.0  # the job's start (Unix time): every time below is START + seconds
TALK_FRAMES, SPLIT_FRAMES = 90, 40  # → 3 parts: [0, 32), [32, 64), [64, 90)
SHORT_FRAMES = 20
PART_WORKERS = ("gpu-worker-0", "gpu-worker-1", "gpu-worker-2")
# each part's stream on its worker, in seconds after the start (the third worker joined late)
PART_STREAMS = ((10.0, 14.0), (10.5, 14.5), (40.0, 43.0))
LEFT_REASON = "its node 10.0.0.8 left the cluster"


def timeline(streaming: float, released: float, slot: int = 0) -> dict[str, Any]:
    """A row's (or part's) timeline as workers record it: Unix times, ms precision."""
    seconds = {
        "accepted_at": streaming - 1.0,
        "prepared_at": streaming - 0.5,
        "streaming_at": streaming,
        "first_frame_at": streaming + 0.5,
        "first_commit_at": streaming + 1.0,
        "released_at": released,
        "finished_at": released + 0.4,
    }
    return {key: round(START + value, 3) for key, value in seconds.items()} | {"slot": slot}


def split_row(output: Path) -> dict[str, Any]:
    """The "talk" row as `pipeline.split_rows` gives it back: done, its parts on three workers,
    its worker a comma-joined list and its timeline spanning its parts."""
    parts = []
    for index, ((start, end), worker, (streaming, released)) in enumerate(
        zip(part_spans(TALK_FRAMES, SPLIT_FRAMES), PART_WORKERS, PART_STREAMS)
    ):
        frames, seconds = end - start, released - streaming + 1.4
        parts.append(
            {"part": index, "start": start, "end": end, "overlap": 8, "status": "done",
             "frames": frames, "worker": worker, "seconds": seconds,
             "fps": round(frames / seconds, 2), "timeline": timeline(streaming, released)}
        )  # fmt: skip
    spans = [part["timeline"] for part in parts]
    whole = {key: min(t[key] for t in spans) for key in spans[0] if key.endswith("_at")}
    whole |= {"released_at": max(t["released_at"] for t in spans), "slot": 0}
    whole["finished_at"] = max(t["finished_at"] for t in spans)
    return summary_row(
        "talk",
        "done",
        frames=TALK_FRAMES,
        seconds=round(whole["finished_at"] - whole["accepted_at"], 2),
        fps=2.7,
        output=str(output),
        worker=", ".join(PART_WORKERS),
        started_at=whole["accepted_at"],
        timeline=whole,
        parts=parts,
    )


def worker_history() -> list[dict[str, Any]]:
    """The pool over the job: two workers from the start, the second leaving at 30 s when its
    node went; a third joining at 25 s on a node that joined the cluster."""
    roster = WorkerRoster()
    events = [
        WorkerJoined("gpu-worker-0", "a1b2c3d4e5f6" * 4, "10.0.0.7", START + 2.0),
        WorkerJoined("gpu-worker-1", "f6e5d4c3b2a1" * 4, "10.0.0.8", START + 2.0),
        WorkerReady("gpu-worker-0", START + 8.0),
        WorkerReady("gpu-worker-1", START + 8.5),
        WorkerJoined("gpu-worker-2", "0123456789ab" * 4, "10.0.0.9", START + 25.0, False),
        WorkerLeft("gpu-worker-1", LEFT_REASON, START + 30.0),
        WorkerReady("gpu-worker-2", START + 36.0, False),
    ]
    for event in events:
        roster.handle(event)
    return roster.entries()


@pytest.fixture
def storage() -> Storage:
    return Storage(StorageConfig())


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """A finished job folder: "talk" split in three parts, "short" rendered whole on
    gpu-worker-0's second slot, and the pool's history."""
    folder = tmp_path / "out" / "elastic"
    folder.mkdir(parents=True)
    pattern_video(folder / "talk.mp4", frames=TALK_FRAMES)
    pattern_video(folder / "short.mp4", frames=SHORT_FRAMES)
    short = summary_row(
        "short", "done", frames=SHORT_FRAMES, seconds=2.5, fps=8.0,
        output=str(folder / "short.mp4"), started_at=START + 11.0, worker="gpu-worker-0",
        timeline=timeline(12.0, 13.5, slot=1),
    )  # fmt: skip
    finished = START + 45.0
    summary = {
        "job": "elastic",
        "totals": {"rows": 2, "done": 2, "frames": TALK_FRAMES + SHORT_FRAMES},
        "run": {"id": "run-1", "started_at": START, "finished_at": finished,
                "state": "finished", "wall_seconds": 45.0},
        "startup": {"started_at": START, "workers_ready_seconds": 8.5,
                    "first_frame_seconds": 10.5, "first_commit_seconds": 11.0},
        "workers": worker_history(),
        "rows": [split_row(folder / "talk.mp4"), short],
    }  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    status = {"job": "elastic", "state": "finished", "rows": {"total": 2}}
    status |= {"updated_at": finished, "elapsed_seconds": 45.0, "workers": summary["workers"]}
    (folder / "status.json").write_text(json.dumps(status))
    return folder


def page_text(page: str) -> str:
    return " ".join(" ".join(parse(page).text).split())


# --------------------------------------------------------------------------------------------
# The split row's card
# --------------------------------------------------------------------------------------------


def test_a_split_rows_card_lists_its_parts(job: Path, storage: Storage) -> None:
    page = build_report(str(job), storage)
    rows = {row["id"]: row for row in page_rows(page)}
    talk, short = rows["talk"], rows["short"]
    assert talk["parts"]["caption"] == (
        "rendered in 3 parts on 3 workers (gpu-worker-0, gpu-worker-1, gpu-worker-2)"
    )
    assert [
        (p["part"], p["frames"], p["worker"], p["seconds"], p["fps"], p["status"])
        for p in talk["parts"]["items"]
    ] == [
        ("1/3", "0–31", "gpu-worker-0", 5.4, 5.93, "done"),
        ("2/3", "32–63", "gpu-worker-1", 5.4, 5.93, "done"),
        ("3/3", "64–89", "gpu-worker-2", 4.4, 5.91, "done"),
    ]
    assert talk["meta"].startswith("workers gpu-worker-0, gpu-worker-1, gpu-worker-2 · 64×48")
    # a row rendered whole is shown as before
    assert short["parts"] is None and short["meta"].startswith("worker gpu-worker-0 · 64×48")
    # the card's template has the table the script fills (texts in with textContent)
    assert 'data-f="parts-body"' in page and "function parts(part, split)" in page
    assert "row.parts ? row.parts.caption" in page  # searchable: "3 parts", a part's worker


def test_parts_in_odd_summaries_do_not_break_the_card(tmp_path: Path, storage: Storage) -> None:
    """Parts without numbers, ranges or workers, and parts that are not objects, still render."""
    rows = [
        summary_row("odd", "failed", error="part 2/2: boom",
                    parts=[{"status": "done", "worker": "w<b>"}, {"status": "weird"}, "x"]),
        summary_row("empty", "done", parts=[]),
    ]  # fmt: skip
    page = build_report(str(tmp_path), storage, summary={"rows": rows})
    odd, empty = page_rows(page)
    assert odd["parts"]["caption"] == "rendered in 2 parts on one worker (w<b>)"
    assert [(p["part"], p["frames"], p["status"], p["label"]) for p in odd["parts"]["items"]] == [
        ("1/2", "–", "done", "done"),
        ("2/2", "–", "unknown", "weird"),
    ]
    assert empty["parts"] is None and "w<b>" not in page.split('id="report-data"')[0]


# --------------------------------------------------------------------------------------------
# The workers' timeline
# --------------------------------------------------------------------------------------------


def test_each_part_is_its_own_bar_on_the_lane_of_its_worker(job: Path) -> None:
    summary = json.loads((job / "summary.json").read_text())
    found = bars(summary)
    assert [
        (b.label, b.worker, b.slot, b.streaming, b.released, b.frames, b.start, b.end)
        for b in found
    ] == [
        ("talk 1/3", "gpu-worker-0", 0, 10.0, 14.0, 32, 0, 32),
        ("short", "gpu-worker-0", 1, 12.0, 13.5, SHORT_FRAMES, None, None),
        ("talk 2/3", "gpu-worker-1", 0, 10.5, 14.5, 32, 32, 64),
        ("talk 3/3", "gpu-worker-2", 0, 40.0, 43.0, 26, 64, 90),
    ]
    assert all(b.row_id == "talk" and b.parts == 3 for b in found if b.part is not None)
    assert set(slot_idle_seconds(found)) == {
        ("gpu-worker-0", 0), ("gpu-worker-0", 1), ("gpu-worker-1", 0), ("gpu-worker-2", 0)
    }  # fmt: skip
    # the picture: four lanes, one per worker slot; none for the row's comma-joined workers
    picture = timeline_svg(summary)
    lanes = [a for tag, a in parse(picture).tags if tag == "text" and a.get("class") == "lane"]
    assert len(lanes) == 4 and "gpu-worker-0, gpu-worker-1" not in picture
    assert "gpu-worker-2 · slot 0" in picture
    assert picture.count('<g class="bar') == 4
    for part, frames in (("1/3", "0–31"), ("2/3", "32–63"), ("3/3", "64–89")):
        assert f'data-row="talk" data-part="{part}"' in picture
        assert f"<title>talk {part} (done, " in picture and f"the row's {frames})" in picture
        assert 'class="part-label"' in picture and f">talk {part}</text>" in picture
    # the whole row is drawn exactly as before: no part attribute or label
    short = picture.split("<title>short (done, 20 frames): accepted")[1].split("</g>")[0]
    assert "part-label" not in short
    assert "<title>short (done, 20 frames): accepted 11.0 s, prepared 11.5 s" in picture


def test_a_split_row_without_part_timelines_is_one_bar_as_before() -> None:
    whole = timeline(1.0, 5.0)
    row = {"row_id": "r", "worker": "w0, w1", "status": "failed", "frames": 0,
           "timeline": whole, "parts": [{"part": 0, "status": "failed", "timeline": None}]}  # fmt: skip
    (bar,) = bars({"rows": [row], "startup": {"started_at": START}})
    assert (bar.label, bar.worker, bar.streaming, bar.part) == ("r", "w0, w1", 1.0, None)


def test_a_long_row_id_is_cut_to_fit_its_part_bar() -> None:
    parts = [
        {"part": i, "status": "done", "frames": 8, "worker": f"w{i}", "timeline": timeline(*span)}
        for i, span in enumerate(((0.0, 5.0), (0.0, 60.0)))
    ]
    row = {"row_id": "a-very-long-row-identifier-indeed", "status": "done", "parts": parts}
    picture = timeline_svg({"rows": [row], "startup": {"started_at": START}})
    labels = [text for text in parse(picture).text if "/2" in text]
    # the long bar holds the whole label; the short one keeps the part, the id cut short
    assert "a-very-long-row-identifier-indeed 2/2" in labels
    (short,) = [label for label in labels if label.endswith("1/2")]
    assert short.startswith("a-very") and "…" in short and len(short) < 20


def test_fps_over_time_from_the_rows_takes_each_parts_own_span() -> None:
    """Without throughput samples: two parts at once, then a gap, then the third — the curve
    falls to 0 in the gap instead of spreading the row's frames over its whole span."""
    parts = [
        {"part": i, "status": "done", "frames": 30, "timeline": timeline(*span)}
        for i, span in enumerate(((0.0, 3.0), (0.0, 3.0), (6.0, 9.0)))
    ]
    times = timeline(0.0, 9.0)
    row = {"row_id": "r", "status": "done", "frames": 90, "timeline": times, "parts": parts}
    series = fps_over_time({"rows": [row], "startup": {"started_at": START}})
    assert series is not None and series.source == "rows"
    rate = dict(series.points)
    assert max(rate.values()) == pytest.approx(2 * 30 / 2.5, rel=0.05)  # both parts at once
    assert rate[4.25] == 0.0  # between the parts
    assert series.mean[-1][1] == pytest.approx(90 / series.mean[-1][0], rel=1e-3)


# --------------------------------------------------------------------------------------------
# The Workers panel
# --------------------------------------------------------------------------------------------


def workers_table(page: str) -> dict[str, str]:
    """Each worker's line of the Workers panel, as its text."""
    table = page.split('<section class="panel workers" id="workers">')[1].split("</section>")[0]
    lines = table.split("<tr data-worker=")[1:]
    return {
        line.split('"')[1]: " ".join(" ".join(parse("<tr " + line).text).split()) for line in lines
    }


def test_the_workers_panel_tells_who_joined_late_and_who_left(job: Path, storage: Storage) -> None:
    page = build_report(str(job), storage)
    text = page_text(page)
    assert "Workers" in text
    assert (
        "3 workers: 2 from the start, 1 joined while the job ran; 1 left before the job ended."
        in text
    )
    # the panel comes before provenance and after the timeline
    assert page.index("Rows on the workers over time") < page.index('id="workers"')
    lines = workers_table(page)
    assert list(lines) == ["gpu-worker-0", "gpu-worker-1", "gpu-worker-2"]
    first, gone, late = lines.values()
    assert first == (
        "gpu-worker-0 10.0.0.7 · a1b2c3d4 08:00:02 (+0:02) 08:00:08 (+0:08) – – 1 row, 1 part"
    )
    assert gone.startswith("gpu-worker-1 left early 10.0.0.8 · f6e5d4c3")
    assert f"08:00:30 (+0:30) {LEFT_REASON} 1 part" in gone and "joined later" not in gone
    assert late.startswith("gpu-worker-2 joined later 10.0.0.9")
    assert "08:00:25 (+0:25) 08:00:36 (+0:36) – – 1 part" in late
    # the whole node id and each full time are there as tooltips
    assert 'title="' + "f6e5d4c3b2a1" * 4 + '"' in page
    assert '<time title="2027-01-15 08:00:30 UTC">08:00:30 (+0:30)</time>' in page


def test_no_workers_panel_without_a_workers_history(job: Path, storage: Storage) -> None:
    summary = json.loads((job / "summary.json").read_text())
    for workers in (None, [], "not a list"):
        page = build_report(str(job), storage, summary=summary | {"workers": workers})
        assert 'id="workers"' not in page and "joined later" not in page


# --------------------------------------------------------------------------------------------
# In a real browser
# --------------------------------------------------------------------------------------------


@pytest.fixture
def served(job: Path, storage: Storage) -> Iterator[str]:
    write_report(str(job), storage)
    yield from serve_report(job)


PARTS_TABLE = """[...document.querySelectorAll(".card")].map((card) => {
  const parts = card.querySelector(".parts");
  return [card.querySelector("h2").textContent, parts && [
    parts.querySelector("p").textContent,
    ...[...parts.querySelectorAll("tbody tr")].map((tr) =>
      [...tr.children].map((td) => td.textContent).join(" | "))]];
})"""


@pytest.mark.slow  # a headless browser
def test_the_parts_table_in_headless_chromium(served: str, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)")
    browser = Browser(CHROMIUM, tmp_path / "profile", width=1280, height=1400)
    try:
        browser.open(served)
        cards = dict(browser.evaluate(PARTS_TABLE))
        search(browser, "3 parts")
        by_parts = shown_ids(browser)
        search(browser, "gpu-worker-2")
        by_worker = shown_ids(browser)
    finally:
        browser.close()
    assert browser.problems == []
    assert cards["short"] is None
    assert cards["talk"] == [
        "rendered in 3 parts on 3 workers (gpu-worker-0, gpu-worker-1, gpu-worker-2)",
        "1/3 | 0–31 | gpu-worker-0 | 5.4 s | 5.9 fps | done",
        "2/3 | 32–63 | gpu-worker-1 | 5.4 s | 5.9 fps | done",
        "3/3 | 64–89 | gpu-worker-2 | 4.4 s | 5.9 fps | done",
    ]
    assert by_parts == ["talk"] and by_worker == ["talk"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_the_timeline_picture_for_the_docs_is_the_reports_own(
    job: Path, storage: Storage, tmp_path: Path
) -> None:
    """scripts/timeline_png.py: the report's timeline cut out and drawn to a PNG, bars and all."""
    page = build_report(str(job), storage)
    alone, width, height = timeline_page(page)
    assert alone.count("<svg") == 1 and alone.count('<g class="bar') == 4
    (job / "report.html").write_text(page)
    png = tmp_path / "timeline.png"
    subprocess.run(
        [sys.executable, "-m", "scripts.timeline_png", str(job / "report.html"), str(png)],
        check=True, cwd=Path(__file__).resolve().parents[1], timeout=120,
    )  # fmt: skip
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert pixels.shape[1] == 1000 and pixels.shape[0] == round(1000 * height / width) + 40
    blue = (pixels[..., 2] - pixels[..., 0] > 80).mean()  # the bars are drawn in blue
    assert 0.01 < blue < 0.5, blue
