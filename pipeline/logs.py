"""Logging set-up: rich on a terminal, plain structured lines elsewhere; results on stdout.

Two consoles split what a job prints: `CONSOLE` (stderr) carries logs and progress, `OUT`
(stdout) the results a user or a script reads: job=validate's verdict, the final summary table,
the paths of summary.json and report.html. ``python run.py ... > result.txt`` keeps the results
and still shows the progress.
"""

from __future__ import annotations

import logging
import os
import sys

from rich.console import Console, RenderableType
from rich.logging import RichHandler

# one console for logs and progress bars, so log lines print above the bars instead of through them
CONSOLE = Console(stderr=True, soft_wrap=True)  # soft wrap: long paths stay on one (greppable) line
# results: tables fit the terminal (COLUMNS when set, else 80 columns when not a terminal)
OUT = Console(soft_wrap=False)


def show(*renderables: RenderableType, soft_wrap: bool = False) -> None:
    """Print results on stdout (`OUT`). Piped or redirected, lines lose the padding rich adds to
    fill the width, so a file of results greps and diffs cleanly; `soft_wrap`: long lines
    (paths) stay whole instead of wrapping."""
    if OUT.is_terminal:
        OUT.print(*renderables, soft_wrap=soft_wrap)
        return
    with OUT.capture() as captured:
        OUT.print(*renderables, soft_wrap=soft_wrap)
    OUT.file.write("\n".join(line.rstrip() for line in captured.get().split("\n")))
    OUT.file.flush()


_NOISY = (
    "ray",
    "urllib3",
    "botocore",
    "boto3",
    "s3transfer",
    "diffusers",
    "transformers",
    "filelock",
    "PIL",
)


def configure_logging(progress_mode: str = "auto", level: int | str | None = None) -> None:
    """Route logs to stderr: through rich on a terminal, as ``time level logger: message`` otherwise."""
    level = level or os.environ.get("PORTRAIT_RENDER_LOG_LEVEL", "INFO")
    use_rich = progress_mode == "rich" or (progress_mode == "auto" and CONSOLE.is_terminal)
    handler: logging.Handler
    if use_rich:
        handler = RichHandler(console=CONSOLE, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
