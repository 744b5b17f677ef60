"""``python run.py --help``: every option with its one-line description, from the schema.

The text is built from the same source as ``docs/configuration.md`` (`pipeline.config_schema`:
the dataclasses' field comments and the presets of ``conf/``), so the two cannot drift. Hydra
prints ``hydra.help.template``; ``conf/config.yaml`` sets it to ``${portrait_render_help:}``, the
resolver `register_help_resolver` installs, which renders this module's text for the config the
command line composed: ``python run.py model=tiny --help`` shows the tiny model's values.

Layout: example commands, the config groups with each preset's one-line purpose, then the
options section by section, one line each: ``key=value``, the allowed values when the schema has
a fixed set, and the description (cut at a clause boundary to fit the terminal; the full text is
in docs/configuration.md). The weight-hub list is collapsed to a line.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from pipeline.config_schema import (
    CHOICES,
    MISSING,
    Preset,
    Section,
    group_defaults,
    load_presets,
    sections,
)

RESOLVER = "portrait_render_help"
MIN_WIDTH, MAX_WIDTH, DEFAULT_WIDTH = 80, 120, 100
KEY_COLUMN = 34  # width of the "key=value" column (longer ones push the description right)

HEADER = """\
portrait-render: animate portrait photos with driving videos (PersonaLive), in batch.

Usage: python run.py job=<job> [manifest=<csv>] [group=option ...] [key=value ...]

Examples:
  python run.py job=validate manifest=manifests/example.csv            # check rows, no GPU
  python run.py job=render manifest=manifests/example.csv model=tiny   # quick CPU render
  python run.py job=render manifest=rows.csv preset=social             # a use case's settings
  python run.py job=render manifest=rows.csv model.dtype=fp16 job.max_frames=100
  python run.py job=fetch_weights                                       # download the weights
  python run.py job=render manifest=rows.csv --cfg job   # print the composed config, run nothing
  python run.py model=tiny --help                        # this help, with model=tiny's values"""

FOOTER = """\
Results go to stdout, logs and progress to stderr. Every option in full, with every preset's
values: docs/configuration.md."""

# collapsed to one line: a list of repositories
_COLLAPSED = {"model.hub"}


def terminal_width() -> int:
    """The width to fit: the terminal's (or COLUMNS), kept between 80 and 120 columns."""
    columns = shutil.get_terminal_size(fallback=(DEFAULT_WIDTH, 24)).columns
    return max(MIN_WIDTH, min(MAX_WIDTH, columns))


def shorten(text: str, width: int) -> str:
    """`text` in at most `width` characters: whole when it fits, else cut at the last clause
    boundary (``; `` ``: `` `` (`` ``, ``) or word that fits, with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    room = text[: width - 1]
    for boundary in ("; ", ": ", " (", ", "):
        cut = room.rfind(boundary)
        if cut >= width * 2 // 3:  # a clause, unless that drops a third of the room
            return text[:cut].rstrip(" ,;:") + " …"
    cut = room.rfind(" ")
    return (text[:cut] if cut > 0 else room).rstrip(" ,;:") + "…"


def value_text(value: Any) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and value.strip() == value and " " not in value else f"'{value}'"
    if isinstance(value, list):
        return "[" + ",".join(value_text(item) for item in value) + "]"
    return str(value)


def _current(cfg: DictConfig | None, path: str, default: Any) -> Any:
    """The composed value at `path` (the schema default without a composed config)."""
    if cfg is None:
        return default
    try:
        value = OmegaConf.select(cfg, path, throw_on_missing=True)
    except MissingMandatoryValue:
        return MISSING
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def option_line(key: str, value: Any, description: str, width: int) -> str:
    """``  key=value [a|b|c]  description`` in `width` columns."""
    choices = CHOICES.get(key)
    left = f"  {key}={value_text(value)}"
    if choices:
        left += f" [{'|'.join(choices)}]"
    left = left.ljust(KEY_COLUMN) + "  "
    return left + shorten(description, max(24, width - len(left)))


def _collapsed(key: str, value: Any, description: str, width: int) -> str:
    count = len(value or [])  # model.hub, the only collapsed option
    left = f"  {key}=[{count} repositor{'y' if count == 1 else 'ies'}]".ljust(KEY_COLUMN) + "  "
    description += " (repo_id, revision, local_dir each; listed in docs/configuration.md)"
    return left + shorten(description, max(24, width - len(left)))


def options_lines(all_sections: Iterable[Section], cfg: DictConfig | None, width: int) -> list[str]:
    """Each section's title and intro line, then one line per option."""
    lines: list[str] = []
    for section in all_sections:
        if section.path.endswith("[]"):  # list items (model.hub[]): collapsed into their list
            continue
        leaves = [option for option in section.options if not isinstance(option.default, type)]
        if not leaves:
            continue
        title = section.path or "top level"
        intro = section.intro.splitlines()[0] if section.intro else ""
        lines += ["", shorten(f"{title}: {intro}" if intro else title, width)]
        for option in leaves:
            key = f"{section.path}.{option.name}" if section.path else option.name
            value = _current(cfg, key, option.default)
            if key in _COLLAPSED:
                lines.append(_collapsed(key, value, option.description, width))
            else:
                lines.append(option_line(key, value, option.description, width))
    return lines


def groups_lines(
    groups: Mapping[str, list[Preset]], chosen: Mapping[str, str], picked: Mapping[str, str],
    width: int,
) -> list[str]:  # fmt: skip
    """Per group: ``group: a, b, c`` (all its options), then one line per preset with what it is
    for; ``*`` marks the option this command line picked (else the default)."""
    lines: list[str] = []
    for group, presets in groups.items():
        lines.append(f"{group}: {', '.join(preset.name for preset in presets)}")
        current = picked.get(group, chosen.get(group))
        name_width = max(len(preset.name) for preset in presets) + 1
        for preset in presets:
            mark = "*" if preset.name == current else " "
            left = f"  {mark}{preset.name.ljust(name_width)} "
            lines.append(left + shorten(preset.description or "-", width - len(left)))
    return lines


def _picked(cfg: DictConfig | None) -> dict[str, str]:
    """{group: option} the command line chose (Hydra's runtime choices, when composed)."""
    if cfg is None:
        return {}
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    if choices is None:
        return {}
    return {str(k): str(v) for k, v in choices.items() if v is not None and v != "None"}


def help_text(cfg: DictConfig | None = None, width: int | None = None) -> str:
    """The whole help: examples, groups and options (values as `cfg` composes them)."""
    width = width or terminal_width()
    chosen = group_defaults()
    lines = [HEADER, ""]
    lines.append("Config groups (pick one option of each with group=option; * = in use):")
    lines += groups_lines(load_presets(), chosen, _picked(cfg), width)
    lines += ["", "Options (key=value; shown with the value in use, [allowed values]):"]
    lines += options_lines(sections(), cfg, width)
    lines += ["", FOOTER]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _resolve_help(*, _root_: DictConfig) -> str:
    # Hydra renders the template with string.Template: a literal "$" must be written "$$"
    return help_text(_root_).replace("$", "$$")


def register_help_resolver() -> None:
    """Install the ``${portrait_render_help:}`` resolver (``hydra.help.template`` uses it)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve_help)
