"""docs/configuration.md stays generated from the schema; every preset composes; the CLI explains.

A new option without `python scripts/gen_config_docs.py`, a field without a comment, a preset
that no longer fits the schema, or a group missing from ``--help`` fails here.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline import config as schema
from scripts import gen_config_docs as gen

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
DOCS = REPO / "docs" / "configuration.md"
PRESETS = sorted((path.parent.name, path.stem) for path in CONF.glob("*/*.yaml"))
#: What a preset needs on top to compose (values the preset leaves required, ``???``).
REQUIRED_EXTRA = {
    ("storage", "s3"): ["storage.output_root=s3://b/p"],
    ("preset", "cluster"): ["storage.output_root=s3://b/p"],  # it picks storage=s3
}
PRESET_FILES = {
    (preset.group, preset.name): preset
    for presets in gen.load_presets(CONF).values()
    for preset in presets
}


def config_classes() -> list[type]:
    """Every dataclass defined in pipeline/config.py (found independently of the generator)."""
    return [
        value
        for value in vars(schema).values()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and value.__module__ == schema.__name__
    ]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


# --------------------------------------------------------------------------------------------
# The generated file
# --------------------------------------------------------------------------------------------


def test_committed_docs_match_the_generator() -> None:
    expected = gen.render_docs()
    committed = DOCS.read_text() if DOCS.exists() else ""
    if committed != expected:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    expected.splitlines(keepends=True),
                    "docs/configuration.md (committed)",
                    "docs/configuration.md (generated now)",
                )
            )[:60]
        )
        pytest.fail(
            "docs/configuration.md is out of date: run `python scripts/gen_config_docs.py` and "
            f"commit the result.\n{diff}"
        )


def test_check_mode_of_the_script_agrees() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_config_docs.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("cls", config_classes(), ids=lambda cls: cls.__name__)
def test_every_field_has_a_comment(cls: type) -> None:
    """Each field's trailing comment is its documentation; a nested section's is its docstring."""
    assert (cls.__doc__ or "").strip(), f"{cls.__name__} needs a docstring (the section intro)"
    comments = gen.field_comments(cls)
    for field in dataclasses.fields(cls):
        factory = field.default_factory
        if isinstance(factory, type) and dataclasses.is_dataclass(factory):
            assert (factory.__doc__ or "").strip(), f"{factory.__name__} needs a docstring"
            continue
        assert comments.get(field.name), (
            f"pipeline/config.py: {cls.__name__}.{field.name} has no `# comment`; add one "
            "(it is the option's description in docs/configuration.md)"
        )


def test_every_option_and_preset_is_in_the_docs() -> None:
    docs = DOCS.read_text()
    defaults = OmegaConf.to_container(OmegaConf.structured(schema.RenderConfig))
    assert isinstance(defaults, dict)
    for key, _ in gen.flatten(defaults):
        assert f"`{key}`" in docs, key
    for field in dataclasses.fields(schema.HubRepo):
        assert f"`model.hub[].{field.name}`" in docs
    for group, option in PRESETS:
        assert f"#### `{group}={option}`" in docs


def test_field_comments_are_read_wherever_a_formatter_puts_them(tmp_path: Path) -> None:
    source = textwrap.dedent(
        '''
        from dataclasses import dataclass, field

        @dataclass
        class Sample:
            """A sample."""

            plain: int = 1  # on the line
            wrapped: float = (
                2.0  # inside the parentheses
            )
            factory: list[str] = field(
                default_factory=list
            )  # after them
            bare: str = "x"
        '''
    )
    path = tmp_path / "sample_config.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sample_config", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sample_config"] = module
    try:
        spec.loader.exec_module(module)
        comments = gen.field_comments(module.Sample)
    finally:
        del sys.modules["sample_config"]
    assert comments == {
        "plain": "on the line",
        "wrapped": "inside the parentheses",
        "factory": "after them",
        "bare": "",
    }


def test_yaml_key_comments() -> None:
    text = textwrap.dedent(
        """\
        # header
        kind: bench   # what runs
        bench:
          frames: 200  # timed frames
          url: "http://x#y"
        hub:
          - repo_id: a  # not a key of the group
            revision: b  # neither
        after: 1  # back at the top
        """
    )
    assert gen.yaml_key_comments(text) == {
        "kind": "what runs",
        "bench.frames": "timed frames",
        "after": "back at the top",
    }


# --------------------------------------------------------------------------------------------
# Presets and the command line
# --------------------------------------------------------------------------------------------


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    schema.register_configs()
    with initialize_config_dir(config_dir=str(CONF.absolute()), version_base=None):
        return hydra_compose("config", overrides=list(overrides))


def select(cfg, key: str):
    return OmegaConf.select(cfg, key.replace("[", ".").replace("]", ""))


@pytest.mark.parametrize(("group", "option"), PRESETS, ids=[f"{g}={o}" for g, o in PRESETS])
def test_every_preset_composes(group: str, option: str) -> None:
    """Every value a preset sets (group presets under their group, ``_global_`` ones from the
    root) and every group option it picks arrives in the composed config."""
    extra = REQUIRED_EXTRA.get((group, option), [])
    cfg = compose(f"{group}={option}", "manifest=x.csv", *extra)
    settings = OmegaConf.to_object(cfg)  # typed: every value fits the schema
    assert isinstance(settings, schema.RenderConfig)
    preset = PRESET_FILES[(group, option)]
    for key, value in preset.values.items():
        full = preset.full_key(key)
        overridden = any(extra_override.startswith(f"{full}=") for extra_override in extra)
        if value != "???" and not overridden:
            assert select(cfg, full) == value, (group, option, full)
    for picked_group, picked in preset.picks.items():
        for key, value in PRESET_FILES[(picked_group, picked)].values.items():
            full = f"{picked_group}.{key}"
            if full not in map(preset.full_key, preset.values) and value != "???":
                assert select(cfg, full) == value, (group, option, picked_group, full)


def test_the_command_line_wins_over_a_use_case_preset() -> None:
    """What docs/configuration.md says of the ``preset`` group: the command line still wins."""
    social = compose("preset=social", "manifest=x.csv")
    assert (social.model.streams_per_worker, social.video.preset) == ("auto", "veryfast")
    cfg = compose("preset=social", "video=h264", "model.streams_per_worker=1", "manifest=x.csv")
    assert (cfg.model.streams_per_worker, cfg.video.crf) == ("1", 18)
    cfg = compose("preset=cluster", "cluster=local", "manifest=x.csv")
    # cluster=local won; storage=s3 (the preset's) stayed: its bucket is required (???)
    assert cfg.cluster.address is None and OmegaConf.is_missing(cfg.storage, "output_root")


def test_the_s3_preset_requires_an_output_root() -> None:
    """storage=s3 without storage.output_root stops with a message naming the option and an
    example of its value."""
    from jobs import ConfigError
    from jobs._common import typed

    with pytest.raises(
        ConfigError,
        match=r"storage\.output_root is required .*storage\.output_root=s3://<bucket>/<prefix>",
    ):
        typed(compose("storage=s3", "manifest=x.csv"))
    assert (
        typed(
            compose("storage=s3", "manifest=x.csv", "storage.output_root=s3://b/p")
        ).storage.output_root
        == "s3://b/p"
    )


def test_help_lists_every_config_group_and_option() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for group in sorted({group for group, _ in PRESETS}):
        line = next((line for line in lines if line.startswith(f"{group}: ")), None)
        assert line is not None, f"--help does not list the group {group!r}"
        options = {option for g, option in PRESETS if g == group}
        assert set(line.split(": ", 1)[1].split(", ")) == options


def test_a_bad_override_fails_naming_the_key() -> None:
    result = run_cli("job=render", "model.dtyp=fp16")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "model.dtyp" in output and "not in 'ModelConfig'" in output, output
