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
    asset_stem,
    build_report,
    format_timestamp,
    pick_frame_indices,
    write_report,
)
from pipeline.storage import Storage

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
    rows = [
        summary_row("ok", "done", frames=30, seconds=1.5, fps=20.0, output=str(folder / "ok.mp4")),
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


def local_links(page: str) -> list[str]:
    """src/poster/href values of the page that point to files (not data:, anchors or http)."""
    links = []
    for _, attrs in parse(page).tags:
        for name in ("src", "poster", "href"):
            value = attrs.get(name)
            if value and not value.startswith(("data:", "#", "http:", "https:")):
                links.append(value)
    return links


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
    videos = parse(page).find("video")
    assert [v["src"] for v in videos] == ["clips/take%201.mp4", "ok.mp4"]  # problems first
    assert all("controls" in v and v["preload"] == "metadata" for v in videos)
    assert videos[1]["poster"] == "report/ok-poster.jpg"
    assert (videos[1]["width"], videos[1]["height"]) == ("96", "64")


def test_page_is_self_contained(job: Path, storage: Storage) -> None:
    page = build_report(str(job), storage)
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert page.count("<script") == 1 and page.count("<style>") == 1  # inline only
    assert '<link rel="stylesheet"' not in page


def test_row_text_is_escaped(job: Path, storage: Storage) -> None:
    page = build_report(str(job), storage)
    assert NASTY_ID not in page and "alert(2)</script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "q&amp;a &#x27;row&#x27;" in page
    text = "".join(parse(page).text)
    assert NASTY_ID in text and NASTY_ERROR in text  # shown in full, as text
    assert [a.get("src") for a in parse(page).find("img") if "alert" in str(a)] == []


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
    cards = page.split("<article")[1:]
    failed = next(card for card in cards if 'data-status="failed"' in card)
    assert '<div class="media-error"><b>No output</b>' in failed
    assert "<video" not in failed and "<img" not in failed
    assert cards.index(failed) == 0  # failures come first


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
    assert "no preview:" in page and 'src="bad.mp4"' in page


def test_command_line_rebuilds_a_report(job: Path, tmp_path: Path) -> None:
    assert report.main([str(job)]) == 0 and (job / "report.html").is_file()
    assert report.main([str(tmp_path / "nothing-here")]) == 1


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
        monkeypatch.setattr(report, "DECODE_ALL_MAX_FRAMES", 0)
    page = build_report(str(job), storage)
    sheet = Image.open(job / "report" / "ok-sheet.jpg")
    assert sheet.size == (4 * OK_SIZE[0], 2 * OK_SIZE[1])  # 8 frames, 4 a row, not upscaled
    expected = [grey(index) for index in pick_frame_indices(OK_FRAMES)]
    levels = sheet_levels(job / "report" / "ok-sheet.jpg", columns=4, rows=2)
    assert np.allclose(levels, expected, atol=4), (levels, expected)
    poster = np.asarray(Image.open(job / "report" / "ok-poster.jpg").convert("L"))
    assert abs(float(poster[OK_SIZE[1] // 2 :].mean()) - grey(16)) <= 4  # the middle pick
    times = [f'data-t="{index / 25:.3f}"' for index in pick_frame_indices(OK_FRAMES)]
    assert all(t in page for t in times)


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
    videos = parse(page.decode()).find("video")
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

    def open(self, url: str) -> None:
        """Open `url` in a new page and wait for its load event."""
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
  return card.querySelector("video").currentTime;
})()
"""

FILTER_BY_CLICK = """
(() => {
  document.querySelector('.tile[data-filter="failed"]').click();
  return [...document.querySelectorAll(".card")].filter((card) => !card.hidden)
    .map((card) => card.dataset.status);
})()
"""


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

    screenshot = Image.open(io.BytesIO(png)).convert("RGB")
    assert screenshot.size == (1280, 1400)
    assert len(screenshot.getcolors(1 << 24) or ()) > 200  # not blank
    left, top, width, height = state["sheet"]
    assert width > 200 and height > 50 and top + height < 1400  # the grid laid out, in view
    sheet = np.asarray(screenshot.crop((left, top, left + width, top + height)), np.float64)
    columns = np.array_split(sheet, 4, axis=1)
    assert sheet.std() > 10 and columns[0].mean() < columns[-1].mean()  # the frames, in order
