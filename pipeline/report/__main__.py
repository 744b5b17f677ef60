"""``python -m pipeline.report <job folder>``: (re)build the report of a job."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
