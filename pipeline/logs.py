"""Logging set-up: rich on a terminal, plain structured lines elsewhere."""

from __future__ import annotations

import logging
import os
import sys

from rich.console import Console
from rich.logging import RichHandler

# one console for logs and progress bars, so log lines print above the bars instead of through them
CONSOLE = Console(stderr=True, soft_wrap=True)  # soft wrap: long paths stay on one (greppable) line

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
