"""Tests for pipeline.manifest: real CSV files in tmp_path, every message matched."""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path

import pytest
from rich.console import Console

import pipeline.manifest as manifest_module
from pipeline.manifest import (
    Manifest,
    ManifestError,
    ManifestProblem,
    check_manifest,
    derive_ids,
    load_manifest,
    parse_manifest,
    raise_if_problems,
)

FIX_PATH = "check the path (relative paths are relative to the manifest's folder)"


def write_manifest(folder: Path, text: str, *, name: str = "m.csv", newline: str = "\n") -> Path:
    """Write `text` (with "\\n" line ends replaced by `newline`) as UTF-8 bytes."""
    path = folder / name
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def touch(folder: Path, *names: str) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.fixture()
def media(tmp_path: Path) -> Path:
    """tmp_path with a portrait, two clips and an audio file."""
    touch(tmp_path, "alice.png", "bob.png", "clip.mp4", "talk.mp4", "voice.wav")
    return tmp_path


def problems_of(path: Path, **kwargs: object) -> list[ManifestProblem]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path, **kwargs)  # type: ignore[arg-type]
    return list(info.value.problems)


# ------------------------------------------------------------------------------------------
# Happy paths and CSV dialect
# ------------------------------------------------------------------------------------------


def test_valid_manifest_gives_typed_rows(media: Path) -> None:
    path = write_manifest(
        media,
        "portrait,driving_video,audio,output,max_frames,seed,id\n"
        "alice.png,clip.mp4,voice.wav,alice_talk,250,7,a1\n"
        "bob.png,talk.mp4,,,,,\n",
    )
    manifest = load_manifest(path)
    assert isinstance(manifest, Manifest)
    assert len(manifest) == 2
    assert manifest.uri == str(path)
    assert manifest.columns == (
        "portrait",
        "driving_video",
        "audio",
        "output",
        "max_frames",
        "seed",
        "id",
    )
    first, second = list(manifest)
    assert (first.index, first.line, first.number, first.id) == (0, 2, 1, "a1")
    assert first.portrait == str(media / "alice.png")
    assert first.driving_video == str(media / "clip.mp4")
    assert first.audio == str(media / "voice.wav")
    assert (first.output, first.max_frames, first.seed, first.source) == (
        "alice_talk",
        250,
        7,
        str(path),
    )
    assert (second.audio, second.output, second.max_frames, second.seed) == (None, None, None, None)
    assert re.fullmatch(r"row-[0-9a-f]{12}", second.id)
    assert manifest.by_id("a1") is first
    with pytest.raises(KeyError, match="no row with id 'nope' in manifest"):
        manifest.by_id("nope")


def test_bom_crlf_blank_lines_and_case_insensitive_headers(media: Path) -> None:
    path = media / "m.csv"
    text = (
        "\n\n Portrait ,DRIVING_VIDEO ,Seed\n\nalice.png,clip.mp4,1\n , ,\nbob.png,talk.mp4,2\n\n"
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    manifest = load_manifest(path)
    assert manifest.columns == ("portrait", "driving_video", "seed")
    assert [(row.number, row.line, row.seed) for row in manifest] == [(1, 5, 1), (2, 7, 2)]
    assert manifest.rows[1].portrait == str(media / "bob.png")


def test_quoted_commas_and_multiline_values_keep_line_numbers(media: Path) -> None:
    touch(media, "smith, john.png")
    path = write_manifest(
        media,
        'portrait,driving_video,output\n"smith, john.png", "clip.mp4","two\nlines"\nbob.png,nope.mp4,b\n',
    )
    problems = problems_of(path)
    assert [(p.row, p.line, p.column) for p in problems] == [
        (1, 2, "output"),
        (2, 4, "driving_video"),  # line 4: the quoted value of row 1 spans lines 2-3
    ]
    assert problems[0].message.startswith(
        "output contains a control or invisible character (U+000A)"
    )
    manifest, _ = check_manifest(path)
    assert manifest.rows == ()  # both rows have problems


def test_quoted_comma_path_resolves(media: Path) -> None:
    touch(media, "smith, john.png")
    path = write_manifest(media, 'portrait,driving_video\n"smith, john.png",clip.mp4\n')
    assert load_manifest(path).rows[0].portrait == str(media / "smith, john.png")


# ------------------------------------------------------------------------------------------
# Header problems
# ------------------------------------------------------------------------------------------


def test_misspelled_column_suggests_the_right_name(media: Path) -> None:
    path = write_manifest(media, "potrait,driving_video\nalice.png,clip.mp4\n")
    with pytest.raises(
        ManifestError, match=r"unknown column 'potrait' — did you mean 'portrait'\?"
    ):
        load_manifest(path)
    unknown, missing = problems_of(path)
    assert unknown == ManifestProblem(
        row=None,
        column="potrait",
        value="potrait",
        message="unknown column 'potrait' — did you mean 'portrait'?",
        fix="rename it to 'portrait'",
        line=1,
    )
    assert (
        missing.message == "the header has no 'portrait' column (found: 'potrait', 'driving_video')"
    )
    assert missing.fix == (
        "the first non-empty line must be the header: "
        "portrait,driving_video[,id,audio,output,max_frames,seed,framing]"
    )


def test_unknown_column_without_close_match_lists_allowed(media: Path) -> None:
    path = write_manifest(media, "portrait,driving_video,colour\nalice.png,clip.mp4,red\n")
    (problem,) = problems_of(path, strict=True)
    assert problem.message == "unknown column 'colour'"
    assert problem.fix == (
        "remove or rename it (allowed columns: portrait, driving_video, id, audio, output, "
        "max_frames, seed, framing)"
    )


def test_missing_required_columns_is_one_problem_naming_them(media: Path) -> None:
    path = write_manifest(media, "id,seed\na,1\n")
    (problem,) = problems_of(path)
    assert (problem.row, problem.line, problem.column) == (None, 1, None)
    assert (
        problem.message
        == "the header has no 'portrait' and 'driving_video' columns (found: 'id', 'seed')"
    )


def test_semicolon_separated_file_gets_a_hint(media: Path) -> None:
    path = write_manifest(media, "portrait;driving_video\nalice.png;clip.mp4\n")
    with pytest.raises(ManifestError, match="seems to use ';', tab or '|' between values"):
        load_manifest(path)


def test_duplicate_and_unnamed_columns(media: Path) -> None:
    path = write_manifest(
        media, "portrait,,driving_video,PORTRAIT,\nalice.png,x,clip.mp4,bob.png,\n"
    )
    unnamed, duplicate = problems_of(path)
    assert unnamed.message == "column 2 has values but no name in the header"
    assert duplicate.message == "column 'portrait' appears twice in the header (columns 1 and 4)"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the manifest is empty"),
        (b"\r\n \r\n,,\n", "the manifest is empty"),
        (b"\xef\xbb\xbf", "the manifest is empty"),
        (b"portrait,driving_video\n", "the manifest has a header but no data rows"),
        (b"portrait,driving_video\n\n,\n", "the manifest has a header but no data rows"),
    ],
)
def test_empty_manifest_is_a_problem(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(content)
    with pytest.raises(
        ManifestError, match=f"^manifest {re.escape(str(path))} has 1 problem "
    ) as info:
        load_manifest(path)
    (problem,) = info.value.problems
    assert problem.message == message


def test_unreadable_manifests(tmp_path: Path) -> None:
    with pytest.raises(
        ManifestError, match="manifest not found at .*nope.csv — fix: check the manifest path"
    ):
        load_manifest(tmp_path / "nope.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"portrait,driving_video\nal\xefce.png,clip.mp4\n")
    with pytest.raises(
        ManifestError, match=r"line 2: the file is not valid UTF-8 text .*CSV UTF-8"
    ):
        load_manifest(bad)
    unclosed = tmp_path / "quote.csv"
    unclosed.write_bytes(b'portrait,driving_video\na.png,b.mp4\n\n"c.png,d.mp4\n')
    with pytest.raises(ManifestError, match=r"line 4: a quoted value is never closed"):
        load_manifest(unclosed)
    with pytest.raises(ValueError, match="needs read_bytes= .* for s3:// manifests"):
        load_manifest("s3://bucket/m.csv")


# ------------------------------------------------------------------------------------------
# Cell problems
# ------------------------------------------------------------------------------------------


def test_blank_required_cells(media: Path) -> None:
    path = write_manifest(media, "portrait,driving_video\n,clip.mp4\nalice.png,  \n")
    problems = problems_of(path)
    assert [(p.row, p.line, p.column, p.value, p.message) for p in problems] == [
        (1, 2, "portrait", "", "portrait is blank"),
        (2, 3, "driving_video", "", "driving_video is blank"),
    ]
    assert str(problems[0]) == (
        "row 1 (line 2), column 'portrait', value '': portrait is blank — "
        "fix: fill in the portrait path or URI"
    )


def test_extra_cells_from_an_unquoted_comma(media: Path) -> None:
    path = write_manifest(media, "portrait,driving_video\nsmith, john.png,clip.mp4\n")
    messages = [p.message for p in problems_of(path)]
    assert "the row has 3 values but the header names 2 columns" in messages


@pytest.mark.parametrize("value", ["0", "-3", "2.5", "ten", "1e3", "٣"])
def test_bad_max_frames(media: Path, value: str) -> None:
    path = write_manifest(media, f"portrait,driving_video,max_frames\nalice.png,clip.mp4,{value}\n")
    (problem,) = problems_of(path)
    assert (problem.row, problem.column, problem.value) == (1, "max_frames", value)
    assert problem.message == "max_frames must be a positive whole number"


@pytest.mark.parametrize("value", ["-1", "9223372036854775808", "abc", "1.0"])
def test_bad_seed(media: Path, value: str) -> None:
    path = write_manifest(media, f"portrait,driving_video,seed\nalice.png,clip.mp4,{value}\n")
    with pytest.raises(
        ManifestError,
        match=re.escape(
            f"row 1 (line 2), column 'seed', value '{value}': seed must be a whole number from 0 "
            "to 9223372036854775807 (2**63 - 1)"
        ),
    ):
        load_manifest(path)


def test_seed_and_max_frames_bounds_accepted(media: Path) -> None:
    path = write_manifest(
        media, "portrait,driving_video,seed,max_frames\nalice.png,clip.mp4,9223372036854775807,+1\n"
    )
    row = load_manifest(path).rows[0]
    assert (row.seed, row.max_frames) == (2**63 - 1, 1)


UNSAFE_NAMES = [
    ("../escape", "contains a path separator '/'"),
    ("/abs/name", "contains a path separator '/'"),
    ("a\\b", "contains a path separator '\\\\'"),
    ("..", "contains '..'"),
    ("a..b", "contains '..'"),
    ("a\u2215b", "contains DIVISION SLASH (U+2215), which looks like a path separator"),
    ("a\uff0fb", "contains FULLWIDTH SOLIDUS (U+FF0F), which looks like a path separator"),
    ("a\u2025b", "contains '..'"),  # TWO DOT LEADER becomes '..' under NFKC
    ("a\x00b", "contains a control or invisible character (U+0000)"),
    ("\u202eevil", "contains a control or invisible character (U+202E)"),
    ("C:evil", "looks like an absolute (drive-letter) path"),
    ("x" * 101, "is 101 characters long (at most 100 allowed)"),
    ("\U0001f600" * 60, "is longer than 200 bytes in UTF-8"),
]


@pytest.mark.parametrize("column", ["output", "id"])
@pytest.mark.parametrize(("value", "reason"), UNSAFE_NAMES)
def test_unsafe_output_and_id(media: Path, column: str, value: str, reason: str) -> None:
    path = media / "m.csv"
    path.write_bytes(f"portrait,driving_video,{column}\nalice.png,clip.mp4,{value}\n".encode())
    (problem,) = problems_of(path)
    assert (problem.row, problem.line, problem.column, problem.value) == (1, 2, column, value)
    assert problem.message == f"{column} {reason}; it must be a plain file name (no folders)"
    assert problem.fix.startswith("use a name such as 'alice_talk' (at most 100 characters")


def test_safe_names_are_nfkc_normalised(media: Path) -> None:
    path = write_manifest(
        media, "portrait,driving_video,id,output\nalice.png,clip.mp4,ａｌｉｃｅ,Talk ﬁ 1\n"
    )
    row = load_manifest(path).rows[0]
    assert (row.id, row.output) == ("alice", "Talk fi 1")


def test_duplicate_ids_give_every_row_a_problem_listing_all_rows(media: Path) -> None:
    path = write_manifest(
        media,
        "portrait,driving_video,id\nalice.png,clip.mp4,a\nbob.png,clip.mp4,b\n"
        "bob.png,talk.mp4,A\n\nalice.png,talk.mp4,a\n",
    )
    problems = problems_of(path)
    assert [(p.row, p.line, p.column, p.value) for p in problems] == [
        (1, 2, "id", "a"),
        (3, 4, "id", "A"),
        (4, 6, "id", "a"),
    ]
    for problem in problems:
        assert problem.message == (
            "id is used by rows 1, 3 and 4 (lines 2, 4 and 6); ids must be unique (ignoring case)"
        )
    manifest, _ = check_manifest(path)
    assert [row.id for row in manifest] == ["b"]


def test_duplicate_outputs_are_reported(media: Path) -> None:
    path = write_manifest(
        media, "portrait,driving_video,output\nalice.png,clip.mp4,x\nbob.png,clip.mp4,X\n"
    )
    with pytest.raises(
        ManifestError, match=r"output name is used by rows 1 and 2 \(lines 2 and 3\)"
    ):
        load_manifest(path)


# ------------------------------------------------------------------------------------------
# Paths
# ------------------------------------------------------------------------------------------


def test_relative_absolute_and_home_paths(media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = media / "home"
    touch(home, "me.png")
    touch(media, "sub/clip2.mp4")
    monkeypatch.setenv("HOME", str(home))
    (media / "manifests").mkdir()
    path = write_manifest(
        media,
        "portrait,driving_video,audio\n"
        f"~/me.png,../sub/clip2.mp4,{media / 'voice.wav'}\n"
        "../alice.png,./../clip.mp4,\n",
        name="manifests/m.csv",
    )
    first, second = load_manifest(path).rows
    assert first.portrait == str(home / "me.png")
    assert first.driving_video == str(media / "sub" / "clip2.mp4")
    assert first.audio == str(media / "voice.wav")
    assert (second.portrait, second.driving_video) == (
        str(media / "alice.png"),
        str(media / "clip.mp4"),
    )


def test_missing_files_name_row_column_and_resolved_path(media: Path) -> None:
    (media / "folder.png").mkdir()
    path = write_manifest(
        media, "portrait,driving_video\nalice.png,clip.mov\nfolder.png,clip.mp4\n"
    )
    missing, folder = problems_of(path)
    assert str(missing) == (
        f"row 1 (line 2), column 'driving_video', value 'clip.mov': file not found at "
        f"{media / 'clip.mov'} — fix: {FIX_PATH}"
    )
    assert folder.message == f"{media / 'folder.png'} is a folder, not a file"
    assert load_manifest(path, check_exists=False).rows[0].driving_video == str(media / "clip.mov")


def test_unsupported_scheme_and_unknown_user(media: Path) -> None:
    path = write_manifest(
        media, "portrait,driving_video\nhttps://x.org/a.png,~nosuchuser_xyz/clip.mp4\n"
    )
    scheme, user = problems_of(path)
    assert (
        scheme.message
        == "portrait uses the unsupported scheme 'https':// (allowed: local paths, s3:// and az://)"
    )
    assert user.message == "driving_video starts with '~nosuchuser_xyz', which names no known user"


def test_s3_manifest_resolves_relative_paths_against_its_prefix() -> None:
    data = (
        b"portrait,driving_video,audio\n"
        b"faces/a.png,../clips/b.mp4,s3://other/v.wav\n"
        b"a.png,missing.mp4,\n"
        b"../../../x.png,S3://bucket/\n"
    )
    seen: list[str] = []

    def exists(uri: str) -> bool:
        seen.append(uri)
        return "missing" not in uri

    manifest, problems = parse_manifest(data, uri="s3://bucket/dir/sub/m.csv", exists=exists)
    (row,) = manifest.rows
    assert (row.portrait, row.driving_video, row.audio) == (
        "s3://bucket/dir/sub/faces/a.png",
        "s3://bucket/dir/clips/b.mp4",
        "s3://other/v.wav",
    )
    assert [(p.row, p.column, p.message) for p in problems] == [
        (2, "driving_video", "object not found at s3://bucket/dir/sub/missing.mp4"),
        (3, "portrait", "portrait climbs above the top of bucket 'bucket'"),
        (
            3,
            "driving_video",
            "driving_video is not a full S3 object URI (expected s3://bucket/key/of/file)",
        ),
    ]
    assert sorted(seen) == sorted(set(seen))  # each URI checked once


def test_s3_manifest_through_read_bytes_and_failing_exists() -> None:
    def read_bytes(uri: str) -> bytes:
        assert uri == "s3://bucket/m.csv"
        return b"portrait,driving_video\na.png,b.mp4\n"

    def exists(uri: str) -> bool:
        raise TimeoutError("endpoint timed out")

    manifest = load_manifest("s3://bucket/m.csv", read_bytes=read_bytes)  # no exists: not checked
    assert manifest.rows[0].portrait == "s3://bucket/a.png"
    with pytest.raises(
        ManifestError,
        match=r"could not check whether s3://bucket/a.png exists \(TimeoutError: endpoint timed out\)",
    ):
        load_manifest("s3://bucket/m.csv", read_bytes=read_bytes, exists=exists)


def test_allowed_roots_reject_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "inputs"
    outside = tmp_path / "outside"
    touch(root, "ok.png", "clip.mp4")
    touch(outside, "secret.png")
    os.symlink(outside / "secret.png", root / "link.png")
    path = write_manifest(
        root,
        f"portrait,driving_video\nok.png,clip.mp4\nlink.png,clip.mp4\n{outside / 'secret.png'},clip.mp4\n",
    )
    problems = problems_of(path, allowed_input_roots=[str(root)])
    assert [(p.row, p.column) for p in problems] == [(2, "portrait"), (3, "portrait")]
    assert problems[0].message == f"{root / 'link.png'} is outside the allowed input roots [{root}]"
    assert str(problems[1]) == (
        f"row 3 (line 4), column 'portrait', value '{outside / 'secret.png'}': "
        f"{outside / 'secret.png'} is outside the allowed input roots [{root}] — fix: move the file "
        "under one of them or add its folder to storage.allowed_input_roots"
    )
    manifest, _ = check_manifest(path, allowed_input_roots=[str(root)])
    assert [row.number for row in manifest] == [1]
    assert len(load_manifest(path, allowed_input_roots=[str(root), str(outside)])) == 3


def test_allowed_roots_outside_files_are_not_probed(tmp_path: Path) -> None:
    root = tmp_path / "inputs"
    touch(root, "clip.mp4")
    path = write_manifest(root, "portrait,driving_video\n/nonexistent/x.png,clip.mp4\n")
    (problem,) = problems_of(path, allowed_input_roots=[str(root)])
    assert problem.message.startswith("/nonexistent/x.png is outside the allowed input roots")


def test_s3_roots_restrict_s3_inputs() -> None:
    data = b"portrait,driving_video\ns3://ok/a.png,s3://evil/b.mp4\n"
    _, problems = parse_manifest(data, uri="s3://ok/m.csv", allowed_input_roots=["s3://ok"])
    assert [(p.column, p.message) for p in problems] == [
        ("driving_video", "s3://evil/b.mp4 is outside the allowed input roots [s3://ok/]")
    ]


# ------------------------------------------------------------------------------------------
# Ids
# ------------------------------------------------------------------------------------------


ROWS = ["alice.png,clip.mp4", "bob.png,clip.mp4", "alice.png,talk.mp4", "alice.png,clip.mp4"]


def ids_by_content(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row in load_manifest(path):
        found.setdefault(f"{row.portrait}|{row.driving_video}", []).append(row.id)
    return found


def test_derived_ids_are_stable_and_order_independent(media: Path) -> None:
    forward = write_manifest(
        media, "portrait,driving_video\n" + "\n".join(ROWS) + "\n", name="a.csv"
    )
    backward = write_manifest(
        media, "portrait,driving_video\n" + "\n".join(ROWS[::-1]) + "\n", name="b.csv"
    )
    ids = [row.id for row in load_manifest(forward)]
    assert ids == [row.id for row in load_manifest(forward)]  # same manifest twice
    assert len(set(ids)) == 4  # identical rows 1 and 4 get distinct ids
    assert all(re.fullmatch(r"row-[0-9a-f]{12}", row_id) for row_id in ids)
    assert ids_by_content(forward) == ids_by_content(backward)


def test_derived_id_changes_with_what_the_row_asks_for(media: Path) -> None:
    one = write_manifest(media, "portrait,driving_video,seed\nalice.png,clip.mp4,1\n", name="a.csv")
    two = write_manifest(media, "portrait,driving_video,seed\nalice.png,clip.mp4,2\n", name="b.csv")
    assert load_manifest(one).rows[0].id != load_manifest(two).rows[0].id


def test_derive_ids_identical_rows_and_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = derive_ids(["same", "same"])
    assert first != second
    assert derive_ids(["same", "same"]) == [first, second]

    class Constant:
        def hexdigest(self) -> str:
            return "ab" * 32

    monkeypatch.setattr(manifest_module.hashlib, "sha256", lambda data: Constant())
    assert derive_ids(["x", "y", "z"]) == [
        "row-abababababab",
        "row-abababababab-2",
        "row-abababababab-3",
    ]


def test_derived_id_colliding_with_given_id(media: Path) -> None:
    plain = write_manifest(media, "portrait,driving_video\nalice.png,clip.mp4\n", name="a.csv")
    derived = load_manifest(plain).rows[0].id
    path = write_manifest(
        media,
        f"portrait,driving_video,id\nalice.png,clip.mp4,\nbob.png,clip.mp4,{derived}\n",
        name="a.csv",
    )
    (problem,) = problems_of(path)
    assert problem.message == f"the id derived for this row, {derived!r}, is given to another row"


# ------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------


def test_many_problems_across_many_rows_are_all_reported(media: Path) -> None:
    lines = [f"missing{i}.png,clip.mp4,{-i - 1}" for i in range(150)]
    path = write_manifest(media, "portrait,driving_video,seed,colour\n" + "\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path, strict=True)
    error = info.value
    assert len(error.problems) == 1 + 150 * 2
    assert [p.row for p in error.problems[1:3]] == [1, 1]
    assert {p.row for p in error.problems if p.row} == set(range(1, 151))
    text = str(error)
    assert text.startswith(
        f"manifest {path} has 301 problems (row N = N-th data row below the header"
    )
    assert text.endswith("  … and 101 more (see ManifestError.problems)")
    full = error.report()
    assert len(full.splitlines()) == 302
    assert (
        f"row 150 (line 151), column 'portrait', value 'missing149.png': file not found at {media / 'missing149.png'}"
        in full
    )


def test_problems_table_renders_values_verbatim(media: Path) -> None:
    path = write_manifest(media, "portrait,driving_video\n[bold]x[/bold].png,clip.mp4\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(info.value.problems_table())
    rendered = buffer.getvalue()
    assert "'[bold]x[/bold].png'" in rendered
    assert "file not found at" in rendered and "Manifest problems:" in rendered


def test_later_steps_add_problems_per_row(media: Path) -> None:
    path = write_manifest(media, "portrait,driving_video\nalice.png,clip.mp4\nbob.png,nope.mp4\n")
    manifest, problems = check_manifest(path)
    (row,) = manifest.rows
    probe = ManifestProblem.for_row(
        row, "portrait", "alice.png", "not an image (0 bytes of PNG)", "re-export it"
    )
    raise_if_problems([])  # nothing to raise
    with pytest.raises(ManifestError, match="has 2 problems") as info:
        raise_if_problems([probe, *problems], uri=manifest.uri)
    assert [(p.row, p.line) for p in info.value.problems] == [(1, 2), (2, 3)]
    assert str(info.value.problems[0]).startswith(
        "row 1 (line 2), column 'portrait', value 'alice.png': not an image"
    )


def test_manifest_error_survives_pickling(media: Path) -> None:
    path = write_manifest(media, "portrait,driving_video\nnope.png,clip.mp4\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.problems, copy.uri, str(copy)) == (info.value.problems, str(path), str(info.value))


# ------------------------------------------------------------------------------------------
# Extra columns: carried, not rejected
# ------------------------------------------------------------------------------------------


def test_extra_columns_are_kept_per_row_and_do_not_change_ids(
    media: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plain = load_manifest(write_manifest(media, "portrait,driving_video\nalice.png,clip.mp4\n"))
    path = write_manifest(
        media,
        "portrait,driving_video,Campaign,caption\n"
        'alice.png,clip.mp4,spring-24,"Hello, <world>"\nbob.png,clip.mp4,,\n',
    )
    with caplog.at_level("WARNING"):
        manifest = load_manifest(path)
    assert manifest.extra_columns == ("Campaign", "caption")
    assert [row.extra for row in manifest.rows] == [
        {"Campaign": "spring-24", "caption": "Hello, <world>"},
        {"Campaign": "", "caption": ""},
    ]
    assert manifest.rows[0].id == plain.rows[0].id  # a caption column re-renders nothing
    assert manifest.warnings == () and not caplog.records


def test_extra_column_like_a_known_one_is_kept_with_a_warning(
    media: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_manifest(media, "portrait,driving_video,sead\nalice.png,clip.mp4,7\n")
    with caplog.at_level("WARNING"):
        manifest = load_manifest(path)
    assert manifest.rows[0].seed is None and manifest.rows[0].extra == {"sead": "7"}
    (warning,) = manifest.warnings
    assert "column 'sead' (line 1) is not one the pipeline reads: did you mean 'seed'?" in warning
    assert "job.strict_manifest=true" in warning
    assert warning in caplog.text
    (problem,) = problems_of(path, strict=True)
    assert problem.message == "unknown column 'sead' — did you mean 'seed'?"


def test_extra_column_named_twice_is_a_problem(media: Path) -> None:
    path = write_manifest(media, "portrait,driving_video,note,Note\nalice.png,clip.mp4,a,b\n")
    (problem,) = problems_of(path)
    assert problem.message == "column 'note' appears twice in the header (columns 3 and 4)"


# ------------------------------------------------------------------------------------------
# Inputs a remote manifest may name
# ------------------------------------------------------------------------------------------


def _remote_manifest(text: str, **kwargs: object) -> tuple[object, list[ManifestProblem]]:
    from pipeline.manifest import check_manifest

    return check_manifest(
        "s3://bucket/jobs/m.csv",
        read_bytes=lambda uri: text.encode(),
        exists=lambda uri: True,
        **kwargs,  # type: ignore[arg-type]
    )


def test_remote_manifest_may_not_name_local_files() -> None:
    manifest, problems = _remote_manifest(
        "id,portrait,driving_video\nspy,/etc/passwd,clip.mp4\nok,faces/a.png,clip.mp4\n"
    )
    (problem,) = problems
    assert (problem.row_id, problem.column, problem.value) == ("spy", "portrait", "/etc/passwd")
    assert problem.message == (
        "names the local file /etc/passwd, but a manifest read from s3:// may name only remote "
        "inputs (s3://...) and local files under storage.allowed_input_roots"
    )
    assert "storage.allowed_input_roots" in problem.fix
    assert [row.portrait for row in manifest.rows] == ["s3://bucket/jobs/faces/a.png"]


def test_remote_manifest_may_name_local_files_under_allowed_roots(media: Path) -> None:
    touch(media, "alice.png")
    inside, outside = media / "alice.png", "/etc/passwd"
    manifest, problems = _remote_manifest(
        f"id,portrait,driving_video\nin,{inside},clip.mp4\nout,{outside},clip.mp4\n",
        allowed_input_roots=[str(media)],
    )
    assert [row.id for row in manifest.rows] == ["in"]
    (problem,) = problems
    assert problem.row_id == "out" and "outside the allowed input roots" in problem.message


def test_local_manifest_keeps_its_freedom_without_roots(media: Path) -> None:
    touch(media, "clip.mp4")
    manifest = load_manifest(
        write_manifest(media, "portrait,driving_video\n/etc/hostname,clip.mp4\n")
    )
    assert manifest.rows[0].portrait == "/etc/hostname"


def test_problems_of_rejected_rows_carry_their_ids(media: Path) -> None:
    touch(media, "clip.mp4")
    path = write_manifest(
        media,
        "id,portrait,driving_video,seed\nnamed,missing.png,clip.mp4,\n,missing.png,clip.mp4,-1\n",
    )
    problems = problems_of(path)
    assert [p.row_id for p in problems if p.row == 1] == ["named"]
    second = {p.row_id for p in problems if p.row == 2}  # missing file and negative seed
    assert len([p for p in problems if p.row == 2]) == 2 and len(second) == 1
    assert second.pop().startswith("row-")  # its derived id, as a valid row would get
