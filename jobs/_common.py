"""What several jobs share: the typed config, the job's name and output folder, the config tree."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from omegaconf import DictConfig, OmegaConf
from rich.tree import Tree

from pipeline.config import RenderConfig, config_problems, missing_problems
from pipeline.logs import CONSOLE
from pipeline.storage import join

from . import ConfigError

logger = logging.getLogger(__name__)


def typed(cfg: DictConfig) -> RenderConfig:
    """The composed config as the :class:`RenderConfig` dataclass tree, checked.

    Raises:
        ConfigError: listing every setting that cannot work, or every required one not given.
    """
    problems = missing_problems(cfg)  # before to_object, which stops at the first
    if not problems:
        settings: RenderConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
        problems = config_problems(settings)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return settings


def require_manifest(settings: RenderConfig) -> str:
    if not settings.manifest:
        raise ConfigError(
            f"job={settings.job.kind} needs a manifest: add manifest=path/to/rows.csv "
            "(see manifests/example.csv for the columns)"
        )
    return settings.manifest


def job_name(settings: RenderConfig) -> str:
    """``job.name``, else the manifest's file stem: a rerun finds the same output folder."""
    if settings.job.name:
        return settings.job.name
    if settings.manifest:
        return PurePosixPath(settings.manifest.replace("\\", "/")).stem or "job"
    return settings.job.kind


def output_folder(settings: RenderConfig) -> str:
    return join(settings.storage.output_root, job_name(settings))


def announce_config(cfg: DictConfig, settings: RenderConfig) -> None:
    """Say where the job saves its composed config (one line); print the whole tree only with
    ``job.verbose=true``, so the job's own output is not pushed off the screen."""
    where = join(output_folder(settings), "config.yaml")
    if settings.job.verbose:
        CONSOLE.print(config_tree(cfg))
        logger.info("composed config (above) saved as %s", where)
    else:
        logger.info("composed config saved as %s (job.verbose=true prints it here)", where)


def config_tree(cfg: DictConfig) -> Tree:
    """The resolved config as a rich tree (printed at the start of a job)."""
    tree = Tree("[bold]config[/bold]")

    def add(node: Tree, value: object, key: str) -> None:
        if isinstance(value, dict):
            branch = node.add(f"[bold cyan]{key}[/bold cyan]")
            for k, v in value.items():
                add(branch, v, str(k))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            branch = node.add(f"[bold cyan]{key}[/bold cyan]")
            for i, item in enumerate(value):
                add(branch, item, f"[{i}]")
        else:
            node.add(f"{key}: [green]{value!r}[/green]")

    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    for key, value in container.items():
        add(tree, value, str(key))
    return tree


def config_yaml(cfg: DictConfig) -> bytes:
    return OmegaConf.to_yaml(cfg, resolve=True).encode()


def config_choices() -> dict[str, str]:
    """The config groups chosen for this run (``preset``, ``model``, ``video``...), as Hydra
    composed them; empty when the config was composed without Hydra's runtime (tests)."""
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {
        str(k): str(v) for k, v in choices.items() if v is not None and not k.startswith("hydra")
    }
