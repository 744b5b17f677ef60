"""One module per job; each exposes ``run(cfg) -> exit code``."""

from __future__ import annotations

import importlib
import logging
from typing import get_args

from omegaconf import DictConfig

from pipeline.config import JobKind

logger = logging.getLogger(__name__)

JOBS: tuple[str, ...] = get_args(JobKind)


def run_job(cfg: DictConfig) -> int:
    """Dispatch to ``jobs.<cfg.job.kind>.run``; a configuration mistake is one clear line, exit 2."""
    kind = cfg.job.kind
    if kind not in JOBS:
        logger.error(
            "job.kind=%r is not a job; choose one of %s (e.g. job=render)", kind, ", ".join(JOBS)
        )
        return 2
    module = importlib.import_module(f"jobs.{kind}")
    from pipeline.cluster import ClusterJoinError  # noqa: PLC0415 - light; after logging is set up

    try:
        return int(module.run(cfg))
    except (ConfigError, ClusterJoinError) as err:  # the job could not start: what to do, exit 2
        logger.error("%s", err)
        return 2


class ConfigError(ValueError):
    """A setting that cannot work; the message names the option and what to do."""
