"""``python -m pipeline.report <job folder>``: (re)build the report of a job."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from ..config import StorageConfig
from ..storage import Storage, StorageError
from ._build import write_report
from ._summary import ReportError

logger = logging.getLogger(__package__)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.report <job folder>``: (re)build the report of a job."""
    parser = argparse.ArgumentParser(description="Write <job folder>/report.html.")
    parser.add_argument("job_folder", help="local folder or s3:// URI holding summary.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        write_report(args.job_folder, Storage(StorageConfig()))
    except (ReportError, StorageError) as err:
        logger.error("%s", err)
        return 1
    return 0
