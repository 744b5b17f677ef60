"""The config schema as documentation reads it: every option with its type, default and
description, every config group with its presets. One reader for ``docs/configuration.md``
(``scripts/gen_config_docs.py``) and ``python run.py --help`` (`pipeline.cli_help`), so the two
cannot tell different stories.

Sources:

- ``pipeline/config.py``: every dataclass reachable from `RenderConfig` becomes a `Section`; its
  docstring is the intro; each field's name, type and default come from the dataclass, its
  allowed values from its ``Annotated[str, Literal[...]]`` type (`schema.allowed_values`) and its
  description from the field's trailing ``#`` comment (read with `ast` and `tokenize`).
- ``conf/``: every config group (a sub-folder) with its presets (`Preset`): what each one sets,
  the preset's header comment and the inline ``#`` comments of its keys; the group's default
  option from the ``defaults`` list of ``conf/config.yaml``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline import config as schema

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
ROOT = schema.RenderConfig
MISSING = "???"


# --------------------------------------------------------------------------------------------
# The schema: dataclasses, their fields and the fields' comments
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One field of a config dataclass, as documented."""

    name: str
    type: str  # the annotation as written in pipeline/config.py; "str" for a fixed set of values
    default: Any  # a value, MISSING, or a dataclass type for a nested section
    description: str  # the field's trailing comment ("" when it has none)
    choices: tuple[str, ...] = ()  # the allowed values, when the type has a fixed set


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


def element_dataclass(type_text: str) -> type | None:
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
    choices = schema.allowed_values(cls)
    options = tuple(
        Option(
            f.name,
            "str" if f.name in choices else str(f.type),
            _default(f),
            comments.get(f.name) or _nested_doc(f),
            choices.get(f.name, ()),
        )
        for f in dataclasses.fields(cls)
    )
    yield Section(path, cls, inspect.cleandoc(cls.__doc__ or ""), options)
    for option in options:
        child_path = f"{path}.{option.name}" if path else option.name
        if isinstance(option.default, type):
            yield from sections(option.default, child_path)
        elif (element := element_dataclass(option.type)) is not None:
            yield from sections(element, f"{child_path}[]")


def option_choices() -> dict[str, tuple[str, ...]]:
    """{dotted key: allowed values} of every option whose type has a fixed set."""
    return {
        f"{section.path}.{option.name}" if section.path else option.name: option.choices
        for section in sections()
        for option in section.options
        if option.choices
    }


#: allowed values of the options that have a fixed set, from their types
CHOICES: Mapping[str, tuple[str, ...]] = option_choices()


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
