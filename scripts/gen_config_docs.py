"""Generate ``docs/configuration.md`` from the config schema and the presets, so it cannot drift.

Sources:

- ``pipeline/config.py``: every dataclass reachable from `RenderConfig` becomes a section; its
  docstring is the intro; each field's name, type and default come from the dataclass and its
  description from the field's trailing ``#`` comment (read with `ast` and `tokenize`).
- ``conf/``: every config group (a sub-folder) with its presets, what each one sets (and the
  schema default it replaces), the preset's header comment and the inline ``#`` comments of its
  keys; the group's default option from the ``defaults`` list of ``conf/config.yaml``. A preset
  marked ``# @package _global_`` (the ``preset/`` group) sets keys from the root, and the group
  options its own ``defaults`` list picks (``override /video: draft``) are listed too.

Usage::

    python scripts/gen_config_docs.py           # rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check   # exit 1 if it is out of date

``tests/test_config_docs.py`` fails when the committed file differs from what this script writes.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import logging
import re
import sys
import textwrap
import tokenize
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from omegaconf import OmegaConf  # noqa: E402

from pipeline import config as schema  # noqa: E402

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DOCS_PATH = REPO / "docs" / "configuration.md"
CONF_DIR = REPO / "conf"
ROOT = schema.RenderConfig
MISSING = "???"


# --------------------------------------------------------------------------------------------
# The schema: dataclasses, their fields and the fields' comments
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One field of a config dataclass, as documented."""

    name: str
    type: str  # the annotation as written in pipeline/config.py
    default: Any  # a value, MISSING, or a dataclass type for a nested section
    description: str  # the field's trailing comment ("" when it has none)


@dataclass(frozen=True)
class Section:
    """One config dataclass at its place in the tree (``model.animator``, ``model.hub[]``)."""

    path: str  # dotted config path; "" for the root
    cls: type
    intro: str  # the dataclass docstring
    options: tuple[Option, ...]

    @property
    def anchor(self) -> str:
        return "options-" + (re.sub(r"[^a-z0-9]+", "-", self.path.lower()).strip("-") or "root")

    @property
    def title(self) -> str:
        return f"`{self.path}`" if self.path else "Top level"


def field_comments(cls: type) -> dict[str, str]:
    """{field name: its ``#`` comment} of a dataclass, read from its source.

    The comment of a field is every comment on the lines its statement spans (formatters move a
    long field's comment inside the parentheses around its default, or after them).
    """
    source, first_line = inspect.getsourcelines(cls)
    text = textwrap.dedent("".join(source))
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    node = ast.parse(text).body[0]
    assert isinstance(node, ast.ClassDef), cls
    found: dict[str, str] = {}
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            lines = range(statement.lineno, (statement.end_lineno or statement.lineno) + 1)
            parts = [comments[line] for line in lines if line in comments]
            found[statement.target.id] = " ".join(parts)
    return found


def _element_dataclass(type_text: str) -> type | None:
    """``HubRepo`` for ``list[HubRepo]``: the config dataclass a list field holds, if any."""
    match = re.fullmatch(r"list\[(\w+)\]", type_text.replace(" ", ""))
    candidate = getattr(schema, match[1], None) if match else None
    return candidate if dataclasses.is_dataclass(candidate) else None


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        factory = field.default_factory
        return factory if dataclasses.is_dataclass(factory) else factory()
    return MISSING


def _nested_doc(field: dataclasses.Field[Any]) -> str:
    """A nested section's field is described by the first line of its dataclass docstring."""
    default = _default(field)
    if isinstance(default, type) and default.__doc__:
        return inspect.cleandoc(default.__doc__).splitlines()[0]
    return ""


def sections(cls: type = ROOT, path: str = "") -> Iterator[Section]:
    """The section of `cls` at `path`, then those of its nested dataclasses (depth first)."""
    comments = field_comments(cls)
    options = tuple(
        Option(f.name, str(f.type), _default(f), comments.get(f.name) or _nested_doc(f))
        for f in dataclasses.fields(cls)
    )
    yield Section(path, cls, inspect.cleandoc(cls.__doc__ or ""), options)
    for option in options:
        child_path = f"{path}.{option.name}" if path else option.name
        if isinstance(option.default, type):
            yield from sections(option.default, child_path)
        elif (element := _element_dataclass(option.type)) is not None:
            yield from sections(element, f"{child_path}[]")


def schema_defaults() -> dict[str, Any]:
    """{dotted key: default} of the whole tree (as OmegaConf composes it; ``???`` kept)."""
    tree = OmegaConf.to_container(OmegaConf.structured(ROOT), resolve=False)
    assert isinstance(tree, dict)
    return dict(flatten(tree))


# --------------------------------------------------------------------------------------------
# The presets in conf/
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """One option of a config group: ``conf/<group>/<name>.yaml``."""

    group: str
    name: str
    description: str  # the file's leading comment
    values: dict[str, Any]  # {dotted key under the group (or from the root when global): value}
    comments: dict[str, str]  # {dotted key, as in `values`: inline comment}
    is_global: bool = False  # ``# @package _global_``: keys are full paths from the root
    picks: dict[str, str] = dataclasses.field(default_factory=dict)  # {group: option} it selects

    def full_key(self, key: str) -> str:
        """The dotted path from the root of one of `values`' keys."""
        return key if self.is_global else f"{self.group}.{key}"


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value) pairs; list items of dicts as ``key[i].sub``; empty containers kept."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
        for index, item in enumerate(value):
            yield from flatten(item, f"{prefix}[{index}]")
    else:
        yield prefix, value


def header_comment(text: str) -> str:
    """The ``#`` lines at the top of a YAML file as one paragraph; indented lines (commands) as code."""
    parts = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:]
        if body.strip().startswith("@package"):  # a Hydra directive, not prose
            continue
        if body.startswith("   ") and body.strip():  # "#   python run.py ...": an example
            parts.append(f"`{body.strip()}`")
        elif body.strip():
            parts.append(body.strip())
    return " ".join(parts)


def yaml_key_comments(text: str) -> dict[str, str]:
    """{dotted key: trailing ``# comment``} of a block-style YAML file (list items skipped)."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    list_indent: int | None = None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if list_indent is not None and indent > list_indent:
            continue
        list_indent = None
        if line.lstrip().startswith("- "):
            list_indent = indent
            continue
        match = re.match(r"\s*([A-Za-z_][\w-]*):(.*)$", line)
        if not match:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match[1]))
        comment = re.search(r"(?:^|\s)#\s?(.*)$", match[2])
        if comment and comment[1].strip():
            found[".".join(key for _, key in stack)] = comment[1].strip()
    return found


def load_presets(conf_dir: Path = CONF_DIR) -> dict[str, list[Preset]]:
    """{group: its presets, by name} for every sub-folder of `conf_dir`."""
    groups: dict[str, list[Preset]] = {}
    for folder in sorted(path for path in conf_dir.iterdir() if path.is_dir()):
        presets = []
        for path in sorted(folder.glob("*.yaml")):
            text = path.read_text()
            tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
            assert isinstance(tree, dict), path
            values = {k: v for k, v in tree.items() if k != "defaults"}
            presets.append(
                Preset(
                    folder.name,
                    path.stem,
                    header_comment(text),
                    dict(flatten(values)) if values else {},  # a preset that only picks options
                    yaml_key_comments(text),
                    is_global=bool(re.match(r"#\s*@package\s+_global_\b", text)),
                    picks=group_picks(tree.get("defaults", [])),
                )
            )
        if presets:
            groups[folder.name] = presets
    return groups


def group_picks(defaults: list[Any]) -> dict[str, str]:
    """{group: option} a preset selects in its own ``defaults`` list (``override /video: draft``)."""
    picks: dict[str, str] = {}
    for entry in defaults:
        if isinstance(entry, dict):
            for key, value in entry.items():
                group = str(key).removeprefix("override ").strip().lstrip("/")
                if group != "_self_" and isinstance(value, str):
                    picks[group] = value
    return picks


def group_defaults(conf_dir: Path = CONF_DIR) -> dict[str, str]:
    """{group: default option} from the ``defaults`` list of ``conf/config.yaml``."""
    root = OmegaConf.to_container(OmegaConf.load(conf_dir / "config.yaml"), resolve=False)
    assert isinstance(root, dict)
    chosen: dict[str, str] = {}
    for entry in root.get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                if not str(key).startswith("override ") and isinstance(value, str):
                    chosen[str(key)] = value
    return chosen


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
    element = _element_dataclass(option.type)
    if element is not None and f"{path}[]" in by_path:
        child = by_path[f"{path}[]"]
        cell += f"; items: see [{child.title}](#{child.anchor})"
    return cell


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
                f"| {code(path)} | {code(option.type)} | "
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
python run.py --help                                   # groups, options and their defaults
```

- Options are typed: `model.resolution=abc` or a misspelt key (`model.dtyp=fp16`) stops
  with an error naming the key, before anything runs.
- A value shown as **required** (`???`) has no default: give it on the command line.
- Quote values with spaces or shell characters: `'job.name=my run'`.
- Credentials are never options: S3 access comes from the standard AWS chain (environment,
  profile, instance role).
- The resolved config is printed at the start of a job and saved as
  `<output_root>/<job name>/config.yaml`.
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
