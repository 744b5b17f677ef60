"""portrait-render entry point: ``python run.py job=<render|validate|fetch_weights|bench> ...``.

Thin on purpose: Hydra composes and type-checks the config (``conf/`` against
``pipeline.config.RenderConfig``), then ``jobs.<kind>.run(cfg)`` does the work and returns the
exit code. ``python run.py --help`` lists the config groups and every option with its
description (`pipeline.cli_help`).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from pipeline.cli_help import register_help_resolver
from pipeline.config import register_configs
from pipeline.logs import configure_logging

register_configs()
register_help_resolver()  # --help: every option and its description, from the schema


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    configure_logging(cfg.job.progress)
    from jobs import run_job  # noqa: PLC0415 - imported after logging is set up

    # Hydra drops the task's return value: exit here so the job's exit code reaches the shell
    sys.exit(run_job(cfg))


if __name__ == "__main__":
    main()
