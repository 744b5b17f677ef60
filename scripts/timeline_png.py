"""The timeline picture of a job's report.html as a PNG (for docs/benchmarks.md): the rows as
bars on the workers' stream slots, cut out of the report with the report's own style and drawn
by headless Chromium.

    python -m scripts.timeline_png report.html docs/img/timeline.png [--width 1000]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

STYLE = Path(__file__).resolve().parents[1] / "pipeline/templates/report.css"


def timeline_page(report_html: str) -> tuple[str, float, float]:
    """A page holding only the report's timeline picture, and the picture's width and height."""
    box = report_html.index("timeline-box")
    start = report_html.index("<svg", box)
    svg = report_html[start : report_html.index("</svg>", start) + len("</svg>")]
    size = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg)
    if size is None:
        raise ValueError("the report's timeline has no viewBox")
    page = (
        f"<html><head><style>{STYLE.read_text()} body{{margin:0;background:#fff}}</style></head>"
        f'<body><section class="panel timeline-box">{svg}</section></body></html>'
    )
    return page, float(size[1]), float(size[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1000)
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    page, width, height = timeline_page(args.report.read_text())
    with tempfile.TemporaryDirectory() as folder:
        html = Path(folder) / "timeline.html"
        html.write_text(page)
        window = f"{args.width},{round(args.width * height / width) + 40}"
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={window}", f"--screenshot={args.png.resolve()}", html.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
