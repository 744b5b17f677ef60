"""Which settings re-render a row: declared once for every option, so none can be forgotten.

A row's key hashes every setting that changes its pixels or sound (`pipeline.row_plan`): a new
option the table does not declare fails here, before it can make a rerun reuse outputs rendered
with another value; and the keys of outputs rendered before stay what they were.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.config import RenderConfig
from pipeline.ledger import content_hash
from pipeline.row_plan import NO, OPTION_EFFECTS, PIXELS, effect_of, option_paths, pixel_settings


def test_every_option_of_the_schema_declares_whether_it_changes_pixels() -> None:
    undeclared = [path for path in option_paths(RenderConfig()) if effect_of(path) is None]
    assert not undeclared, (
        f"options without a declared effect on the output: {undeclared}; add each to "
        "pipeline/row_plan.py OPTION_EFFECTS (PIXELS if it changes frames or sound, "
        "SINCE_DEFAULT if it does and outputs rendered before it existed must keep their keys, "
        "NO otherwise)"
    )


def test_every_declared_option_exists() -> None:
    paths = option_paths(RenderConfig())
    stale = [key for key in OPTION_EFFECTS if not any(p == key or p.startswith(key + ".") for p in paths)]  # fmt: skip
    assert not stale


def test_keys_of_earlier_outputs_stay_the_same() -> None:
    """The hash of today's defaults and of the tiny model's settings, as outputs rendered before
    the table existed were keyed: a rerun of an old job must still find them."""
    settings = RenderConfig()
    assert content_hash(pixel_settings(settings)) == "e92745920c"
    tiny = replace(
        settings, model=replace(settings.model, name="tiny", architecture="tiny", resolution=64)
    )
    assert content_hash(pixel_settings(tiny)) == "609596f98d"


@pytest.mark.parametrize(
    ("section", "name", "value", "changes"),
    [
        ("video", "crf", 20, True),
        ("video", "segment_seconds", 3.0, False),
        ("model", "dtype", "bf16", True),
        ("model", "attention", "eager", False),
        ("model", "fp8", "unet-linear", True),
        ("framing", "feather", 0.2, True),
        ("cluster", "cpu_workers", 5, False),
    ],
)
def test_a_setting_re_renders_a_row_exactly_when_it_changes_pixels(
    section: str, name: str, value: object, changes: bool
) -> None:
    settings = RenderConfig()
    changed = replace(settings, **{section: replace(getattr(settings, section), **{name: value})})
    before, after = content_hash(pixel_settings(settings)), content_hash(pixel_settings(changed))
    assert (before != after) is changes
    assert effect_of(f"{section}.{name}") in ((PIXELS, "pixels-when-set") if changes else (NO,))
