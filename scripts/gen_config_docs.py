"""Generate ``docs/configuration.md`` from the config schema and the presets, so it cannot drift.

The schema and the presets are read by `pipeline.config_schema` (shared with
``python run.py --help``): the dataclasses of ``pipeline/config.py`` with their fields' trailing
``#`` comments, and every preset of ``conf/`` with its header comment and key comments. A preset
marked ``# @package _global_`` (the ``preset/`` group) sets keys from the root, and the group
options its own ``defaults`` list picks (``override /video: draft``) are listed too.

Usage::

    python scripts/gen_config_docs.py           # rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check   # exit 1 if it is out of date

``tests/test_config_docs.py`` fails when the committed file differs from what this script writes.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from pipeline.config_schema import (  # noqa: E402 - the schema reader, shared with --help
    CONF_DIR,
    MISSING,
    Option,
    Preset,
    Section,
    element_dataclass,
    field_comments,
    flatten,
    group_defaults,
    group_picks,
    header_comment,
    load_presets,
    schema_defaults,
    sections,
    yaml_key_comments,
)

__all__ = [  # the reader's names stay importable from here (tests, older scripts)
    "field_comments",
    "flatten",
    "group_picks",
    "header_comment",
    "load_presets",
    "yaml_key_comments",
]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DOCS_PATH = REPO / "docs" / "configuration.md"


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def text_cell(text: str) -> str:
    """Prose for a table cell: ``|`` escaped; ``<``/``>`` escaped outside `code` spans."""
    parts = re.split(r"(`[^`]*`)", text)
    escaped = [
        part if part.startswith("`") else part.replace("<", "&lt;").replace(">", "&gt;")
        for part in parts
    ]
    return "".join(escaped).replace("|", "\\|")


def code(text: str) -> str:
    """`text` as a code span that is safe in a table cell."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text.replace('|', chr(92) + '|')}{fence}"


def yaml_value(value: Any) -> str:
    """A value as it is written on the command line (lists and dicts in flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and value.strip() == value else f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_cell(option: Option, path: str, by_path: Mapping[str, Section]) -> str:
    if isinstance(option.default, type):
        child = by_path[path]
        return f"see [{child.title}](#{child.anchor})"
    if option.default == MISSING:
        return "**required** (`???`)"
    cell = code(yaml_value(option.default))
    element = element_dataclass(option.type)
    if element is not None and f"{path}[]" in by_path:
        child = by_path[f"{path}[]"]
        cell += f"; items: see [{child.title}](#{child.anchor})"
    return cell


def type_cell(option: Option) -> str:
    """The option's type; for a fixed set of values, the values (from its ``Literal``)."""
    if option.choices:
        return "one of " + ", ".join(code(choice) for choice in option.choices)
    return code(option.type)


def options_markdown(all_sections: list[Section]) -> list[str]:
    """One table per section: option, type, default, description."""
    by_path = {section.path: section for section in all_sections}
    lines = ["## Options", ""]
    lines += [
        "Every option of the schema (`pipeline/config.py`), by section. Set one on the command",
        "line with `key=value` (e.g. `model.dtype=fp16`).",
        "",
    ]
    for section in all_sections:
        lines += [f'<a id="{section.anchor}"></a>', ""]
        lines += [f"### {section.title} ({section.cls.__name__})", ""]
        if section.intro:
            lines += [section.intro, ""]
        lines += ["| option | type | default | description |", "|---|---|---|---|"]
        for option in section.options:
            path = f"{section.path}.{option.name}" if section.path else option.name
            lines.append(
                f"| {code(path)} | {type_cell(option)} | "
                f"{default_cell(option, path, by_path)} | {text_cell(option.description)} |"
            )
        lines.append("")
    return lines


def preset_markdown(
    preset: Preset,
    defaults: Mapping[str, Any],
    is_default: bool,
    chosen: Mapping[str, str] | None = None,
) -> list[str]:
    """A preset: what it is for, how to pick it, the groups it picks and each value it sets with
    the default it replaces (`chosen`: the default option of each group)."""
    marker = " (default)" if is_default else ""
    lines = [f"#### `{preset.group}={preset.name}`{marker}", ""]
    if preset.description:
        lines += [preset.description, ""]
    lines += [f"File: `conf/{preset.group}/{preset.name}.yaml`.", ""]
    if preset.picks:
        chosen = chosen or {}
        picks = ", ".join(
            f"`{group}={option}`"
            + (f" (instead of `{group}={chosen[group]}`)" if group in chosen else "")
            for group, option in preset.picks.items()
        )
        lines += [f"Picks {picks}; a group chosen on the command line still wins.", ""]
    if not preset.values:
        if preset.picks:
            return lines
        return lines + ["Sets nothing: the schema defaults apply.", ""]
    lines += ["| option | value | schema default | note |", "|---|---|---|---|"]
    for key, value in preset.values.items():
        full = preset.full_key(key)
        default = defaults.get(full, "")
        default_text = code(yaml_value(default)) if full in defaults else "–"
        if full in defaults and default == MISSING:
            default_text = "**required**"
        comment = preset.comments.get(key, "")
        lines.append(
            f"| {code(full)} | {code(yaml_value(value))} | {default_text} | {text_cell(comment)} |"
        )
    return lines + [""]


def groups_markdown(
    groups: Mapping[str, list[Preset]], chosen: Mapping[str, str], defaults: Mapping[str, Any]
) -> list[str]:
    """Per config group: its presets in a table, then what each one sets."""
    lines = ["## Config groups and presets", ""]
    lines += [
        "Each group is a folder of `conf/`; pick one preset per group with `group=option`. A",
        "preset only overrides schema defaults (listed with the default each value replaces).",
        "",
    ]
    for group, presets in groups.items():
        lines += [f"### `{group}`", ""]
        if any(preset.is_global for preset in presets):
            lines += [
                "A use case's settings across groups (`# @package _global_`): pick at most one",
                f"with `{group}=<name>`; a group or `key=value` given on the command line still",
                "wins over what it sets.",
                "",
            ]
        lines += ["| preset | what it is for |", "|---|---|"]
        for preset in presets:
            marker = " (default)" if chosen.get(group) == preset.name else ""
            lines.append(f"| `{group}={preset.name}`{marker} | {text_cell(preset.description)} |")
        lines.append("")
        for preset in presets:
            lines += preset_markdown(preset, defaults, chosen.get(group) == preset.name, chosen)
    return lines


COMMAND_LINE = """\
## On the command line

`python run.py` composes the config from `conf/config.yaml` (one preset per group, the
defaults below) checked against the schema in `pipeline/config.py`, then applies the command
line from left to right:

<!-- doc-test: compose-only -->
```bash
python run.py job=render manifest=manifests/example.csv model=tiny  # pick presets (group=option)
python run.py job=render manifest=rows.csv preset=social             # a use case (conf/preset/)
python run.py job=render manifest=rows.csv model.dtype=fp16          # set one option (key=value)
python run.py job=render manifest=rows.csv cluster.num_workers=null  # null: the option's "unset"
python run.py job=render manifest=rows.csv 'storage.allowed_input_roots=[/data,/mnt/in]'  # a list
python run.py job=render manifest=rows.csv storage=s3 storage.output_root=s3://bucket/renders
python run.py job=render manifest=rows.csv --cfg job   # print the composed config, run nothing
python run.py --help                                   # groups and options, each described
```

- Options are typed: `model.resolution=abc` or a misspelt key (`model.dtyp=fp16`) stops
  with an error naming the key, before anything runs.
- A value shown as **required** (`???`) has no default: give it on the command line.
- Quote values with spaces or shell characters: `'job.name=my run'`.
- Credentials are never options: S3 access comes from the standard AWS chain (environment,
  profile, instance role).
- The resolved config is saved as `<output_root>/<job name>/config.yaml`; a job says where in
  one line (`job.verbose=true` prints it in full at the start).
"""


def render_docs(conf_dir: Path = CONF_DIR) -> str:
    """The whole of docs/configuration.md."""
    all_sections = list(sections())
    chosen = group_defaults(conf_dir)
    lines = [
        "# Configuration",
        "",
        "<!-- Generated by scripts/gen_config_docs.py from pipeline/config.py and conf/.",
        "     Do not edit by hand: change the schema or a preset, then run",
        "     `python scripts/gen_config_docs.py`. tests/test_config_docs.py checks it. -->",
        "",
        "Every option of portrait-render, with its type, default and meaning, and every preset",
        "with what it sets. Defaults: "
        + ", ".join(f"`{group}={option}`" for group, option in chosen.items())
        + ".",
        "",
        "- [On the command line](#on-the-command-line)",
        "- [Config groups and presets](#config-groups-and-presets)",
        "- [Options](#options): " + ", ".join(f"[{s.title}](#{s.anchor})" for s in all_sections),
        "",
        COMMAND_LINE,
    ]
    lines += groups_markdown(load_presets(conf_dir), chosen, schema_defaults())
    lines += options_markdown(all_sections)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    parser.add_argument("--output", type=Path, default=DOCS_PATH, help="where to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    text = render_docs()
    current = args.output.read_text() if args.output.exists() else None
    if args.check:
        if current != text:
            logger.error("%s is out of date: run python scripts/gen_config_docs.py", args.output)
            return 1
        return 0
    if current != text:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        logger.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
