"""CSV manifest -> validated rows with stable ids.

A manifest is a CSV file (local path or ``s3://`` URI) with one row per portrait/driving-video
pair::

    portrait,driving_video,audio,output,seed
    people/alice.png,clips/talk.mp4,,alice_talk,7

`load_manifest` reads it with pandas, checks every row and either returns a `Manifest` or raises
one `ManifestError` that lists *every* problem of *every* row, each naming the row, the column,
the value and how to fix it. `check_manifest` does the same checks but returns the valid rows
together with the problems, so later validation steps (media probing) can add their own problems
and report everything at once through `raise_if_problems`.

Columns the pipeline does not read (campaign, caption, platform...) are kept as text in each
row's `extra` and travel to summary.json and the report; one that looks like a misspelling of a
known column is kept too, with a warning naming the column it resembles (``strict=True`` makes
every unknown column a problem instead, as ``job.strict_manifest=true`` does).

Cells are stripped of surrounding whitespace; rows whose cells are all empty are skipped.
Numbering: ``row N`` is the N-th non-empty data row below the header (what a user counts in a
spreadsheet, blank lines not counted); ``line L`` is the line number in the file (header = line 1
unless blank lines precede it).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import logging
import os
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from .storage import (
    FORBIDDEN_CATEGORIES,
    SEPARATOR_LOOKALIKES,
    has_scheme,
    inside_roots,
    is_remote,
    normalise,
    resolve,
    scheme_of,
    split_roots,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("portrait", "driving_video")
OPTIONAL_COLUMNS: tuple[str, ...] = ("id", "audio", "output", "max_frames", "seed", "framing")
#: values of the `framing` column: how this row's portrait becomes the animated square
#: (blank: the job's framing.portrait)
FRAMING_VALUES: tuple[str, ...] = ("face", "crop", "pad", "stretch")
KNOWN_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
PATH_COLUMNS: tuple[str, ...] = ("portrait", "driving_video", "audio")

MAX_NAME_CHARS = 100  # longest allowed `id` / `output` stem, in characters
MAX_NAME_BYTES = 200  # ... and in UTF-8 bytes (file names are limited to 255 bytes)
SEED_LIMIT = 2**63  # seeds lie in [0, SEED_LIMIT)
EXISTS_THREADS = 16  # concurrent remote existence checks
REPORT_LIMIT = 200  # problems shown by str(ManifestError); all stay in `.problems`

_DRIVE = re.compile(r"^[A-Za-z]:")
_INTEGER = re.compile(r"\+?[0-9]+")
_HEADER_HINT = "portrait,driving_video[,id,audio,output,max_frames,seed,framing]"

ReadBytes = Callable[[str], bytes]
Exists = Callable[[str], bool]


# --------------------------------------------------------------------------------------------
# Problems and the error that carries them
# --------------------------------------------------------------------------------------------


def _show(value: str, limit: int = 120) -> str:
    """Quote `value` for messages: non-printable characters escaped, long values shortened."""
    shown = "".join(
        ch if ch.isprintable() else (f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        for ch in value
    )
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return f"'{shown}'"


@dataclass(frozen=True)
class ManifestProblem:
    """One thing wrong with a manifest.

    Args:
        row: 1-based data row (row 1 = first data row below the header), None for file-level
            problems (header, encoding, empty file).
        column: normalised column name (e.g. ``"driving_video"``) or None.
        value: the offending cell value as written, or None.
        message: what is wrong, e.g. ``"file not found at /data/clip.mov"``.
        fix: what the user should do about it.
        line: line number in the CSV file (1-based), when known.
        row_id: the row's id (given in the `id` column or derived), when the row has one: a
            row that fails keeps its id in every report, so results join on it.
    """

    row: int | None
    column: str | None
    value: str | None
    message: str
    fix: str
    line: int | None = None
    row_id: str | None = None

    @classmethod
    def for_row(
        cls, row: ManifestRow, column: str | None, value: str | None, message: str, fix: str
    ) -> ManifestProblem:
        """A problem about a validated `row` (for later steps such as media probing)."""
        return cls(
            row=row.number,
            column=column,
            value=value,
            message=message,
            fix=fix,
            line=row.line,
            row_id=row.id,
        )

    def location(self) -> str:
        """``row 3 (line 4), column 'driving_video', value 'clip.mov'`` (parts that are known)."""
        parts: list[str] = []
        if self.row is not None:
            parts.append(f"row {self.row}" + (f" (line {self.line})" if self.line else ""))
        elif self.line is not None:
            parts.append(f"line {self.line}")
        else:
            parts.append("manifest")
        if self.column is not None:
            parts.append(f"column {_show(self.column)}")
        if self.value is not None:
            parts.append(f"value {_show(self.value)}")
        return ", ".join(parts)

    def __str__(self) -> str:
        return f"{self.location()}: {self.message} — fix: {self.fix}"


def _sort_key(problem: ManifestProblem) -> tuple[int, int, int]:
    """File order: file-level problems first, then by row and by column (known column order)."""
    column = KNOWN_COLUMNS.index(problem.column) if problem.column in KNOWN_COLUMNS else -1
    return (problem.row or 0, problem.line or 0, column)


class ManifestError(ValueError):
    """A manifest has one or more problems; `problems` lists all of them, in file order."""

    def __init__(self, problems: Iterable[ManifestProblem], *, uri: str | None = None) -> None:
        self.problems: tuple[ManifestProblem, ...] = tuple(sorted(problems, key=_sort_key))
        self.uri = uri
        super().__init__(self.report(limit=REPORT_LIMIT))

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the problems (not from the message), so the error survives pickling
        # (Ray sends exceptions between processes).
        return (_rebuild_error, (self.problems, self.uri))

    def report(self, *, limit: int | None = None) -> str:
        """A readable multi-line report, one line per problem (the first `limit` of them)."""
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        where = f"manifest {self.uri}" if self.uri else "manifest"
        lines = [
            f"{where} has {count} {noun} "
            "(row N = N-th data row below the header; line = line number in the file):"
        ]
        shown = self.problems if limit is None else self.problems[:limit]
        lines.extend(
            f"  {problem.row_id}: {problem}" if problem.row_id else f"  {problem}"
            for problem in shown
        )
        if len(shown) < count:
            lines.append(f"  … and {count - len(shown)} more (see ManifestError.problems)")
        return "\n".join(lines)

    def problems_table(self) -> RenderableType:
        """Every problem for the console, compact enough for an 80-column terminal.

        One block per problem: a heading that says where (the row's id, row and line, column),
        then the value, the problem and its fix indented beneath it, wrapped to the terminal::

            b_cut  row 2, line 3 · column driving_video
               value    'media/cut.mp4'
               problem  driving video is cut short: ...
               fix      give the complete file: copy or upload it again
        """
        from rich.console import Group
        from rich.padding import Padding
        from rich.table import Table
        from rich.text import Text

        count = len(self.problems)
        rows = {problem.row for problem in self.problems if problem.row is not None}
        title = Text(f"Manifest problems: {self.uri or '<manifest>'}", style="bold red")
        title.append(
            f" ({count} problem{'s' if count != 1 else ''}"
            + (f" in {len(rows)} row{'s' if len(rows) != 1 else ''})" if rows else ")"),
            style="default",
        )
        blocks: list[RenderableType] = [title]
        for problem in self.problems:
            heading = Text()  # Text, not markup: user values are shown verbatim
            if problem.row_id:
                heading.append(problem.row_id, style="bold")
                heading.append("  ")
            if problem.row is not None:
                where = f"row {problem.row}" + (f", line {problem.line}" if problem.line else "")
            else:
                where = "manifest" + (f", line {problem.line}" if problem.line else "")
            heading.append(where, style="bold" if not problem.row_id else "dim")
            if problem.column is not None:
                heading.append(" · column ", style="dim")
                heading.append(problem.column, style="cyan")
            details = Table.grid(padding=(0, 2))
            details.add_column(style="dim", no_wrap=True)
            details.add_column(overflow="fold")
            if problem.value is not None:
                details.add_row("value", Text(_show(problem.value)))
            details.add_row("problem", Text(problem.message))
            details.add_row("fix", Text(problem.fix, style="green"))
            blocks += [heading, Padding(details, (0, 0, 0, 3))]
        return Group(*blocks)


def _rebuild_error(problems: tuple[ManifestProblem, ...], uri: str | None) -> ManifestError:
    return ManifestError(problems, uri=uri)


def raise_if_problems(problems: Iterable[ManifestProblem], *, uri: str | None = None) -> None:
    """Raise one `ManifestError` listing `problems`, if there are any."""
    problems = list(problems)
    if problems:
        raise ManifestError(problems, uri=uri)


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestRow:
    """One validated manifest row.

    Paths are resolved: local paths are absolute and normalised (symlinks kept as written),
    remote inputs are ``s3://bucket/key`` URIs.
    """

    index: int  # 0-based position among the data rows
    line: int  # line number of the row in the CSV file (1-based)
    id: str  # unique, file-name-safe row id (given, or derived: "row-<12 hex>")
    portrait: str
    driving_video: str
    audio: str | None = None
    output: str | None = None  # requested output stem (NFKC-normalised); None: renderer decides
    max_frames: int | None = None  # cap on frames for this row; None: the job's default
    seed: int | None = None  # None: the job's default seed
    framing: str | None = None  # face | crop | pad | stretch; None: the job's framing.portrait
    source: str = ""  # URI of the manifest the row came from
    # the row's cells in columns the pipeline does not read (header name as written -> text);
    # not part of the row's id or key: adding a caption column re-renders nothing
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def number(self) -> int:
        """1-based row number as users count it (``row 3`` = third data row)."""
        return self.index + 1


@dataclass(frozen=True)
class Manifest:
    """Validated rows of one manifest file."""

    uri: str
    rows: tuple[ManifestRow, ...]
    columns: tuple[str, ...]  # normalised names of the columns present, in file order
    extra_columns: tuple[str, ...] = ()  # columns kept as text for the results (as written)
    warnings: tuple[str, ...] = ()  # e.g. an extra column that looks like a misspelling

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)

    def by_id(self, row_id: str) -> ManifestRow:
        """The row with id `row_id` (KeyError naming the manifest when there is none)."""
        for row in self.rows:
            if row.id == row_id:
                return row
        raise KeyError(f"no row with id {row_id!r} in manifest {self.uri}")


# --------------------------------------------------------------------------------------------
# Reading and parsing
# --------------------------------------------------------------------------------------------


def _read_local(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _read(uri: str, read_bytes: ReadBytes | None) -> bytes:
    """The manifest's bytes; a missing/unreadable file is a `ManifestError`."""
    if read_bytes is None:
        if is_remote(uri):
            raise ValueError(
                f"cannot read {uri}: load_manifest needs read_bytes= (the storage layer's reader) "
                "for s3:// manifests"
            )
        read_bytes = _read_local
    try:
        return read_bytes(uri)
    except FileNotFoundError as err:
        problem = ManifestProblem(
            None, None, uri, f"manifest not found at {uri}", "check the manifest path or URI"
        )
        raise ManifestError([problem], uri=uri) from err
    except PermissionError as err:
        problem = ManifestProblem(
            None, None, uri, f"cannot read the manifest: {err.strerror}", PERMISSION_FIX
        )
        raise ManifestError([problem], uri=uri) from err
    except OSError as err:
        problem = ManifestProblem(
            None,
            None,
            uri,
            f"cannot read the manifest: {err}",
            "check the path and its permissions",
        )
        raise ManifestError([problem], uri=uri) from err


def _decode(data: bytes) -> tuple[str, ManifestProblem | None]:
    """Text of the CSV (UTF-8 with or without BOM; UTF-16 with BOM) or a problem."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding), None
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        problem = ManifestProblem(
            None,
            None,
            None,
            f"the file is not valid {'UTF-16' if encoding == 'utf-16' else 'UTF-8'} text "
            f"(byte {err.start}: {err.reason})",
            "save the manifest as 'CSV UTF-8' (in Excel: Save As > CSV UTF-8)",
            line=line,
        )
        return "", problem


@dataclass(frozen=True)
class _Record:
    """One CSV record: its line number and its (stripped) cells."""

    line: int
    cells: tuple[str, ...]

    @property
    def blank(self) -> bool:
        return not any(self.cells)


def _unterminated_quote_line(text: str) -> int:
    """Line of the opening quote that is never closed (standard CSV quoting)."""
    opening = 0
    inside = False
    for position, char in enumerate(text):
        if char == '"':
            inside = not inside
            if inside:
                opening = position
    return text.count("\n", 0, opening) + 1


def _max_width(text: str) -> int:
    """The widest record's field count, so pandas accepts ragged rows (we report them instead).

    Raises:
        csv.Error: a field longer than the csv module's limit (131072 characters).
    """
    rows = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    return max((len(row) for row in rows), default=0)


def _parse_records(text: str) -> tuple[list[_Record], ManifestProblem | None]:
    """Split CSV text into records with line numbers, using pandas for the parsing."""
    try:
        width = max(_max_width(text), 1)
    except csv.Error as err:
        problem = ManifestProblem(
            None,
            None,
            None,
            f"the file is not valid CSV: {err}",
            "check the file is a CSV manifest",
        )
        return [], problem
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            header=None,
            names=list(range(width)),
            dtype=str,
            na_filter=False,
            keep_default_na=False,
            skip_blank_lines=False,
            skipinitialspace=True,
            index_col=False,
            engine="c",
        )
    except pd.errors.ParserError as err:
        line = _unterminated_quote_line(text) if "EOF inside string" in str(err) else None
        message = (
            'a quoted value is never closed (the " opened here runs to the end of the file)'
            if line is not None
            else f"the file is not valid CSV: {err}"
        )
        problem = ManifestProblem(
            None, None, None, message, 'close the quote, or write a literal quote as ""', line=line
        )
        return [], problem
    records: list[_Record] = []
    line = 1
    for values in frame.itertuples(index=False, name=None):
        cells = tuple(str(value) for value in values)
        records.append(_Record(line=line, cells=tuple(cell.strip() for cell in cells)))
        line += 1 + sum(cell.count("\n") for cell in cells)
    return records, None


# --------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------


def _normalise_header(name: str) -> str:
    return unicodedata.normalize("NFKC", name).strip().strip("\ufeff").strip().lower()


def _header_width(header: _Record) -> int:
    """Number of columns the header names (up to its last non-empty cell)."""
    return max((i + 1 for i, cell in enumerate(header.cells) if cell), default=0)


@dataclass
class _Header:
    """What the header names: known columns and extra ones (to cell positions), and what is
    wrong with it."""

    positions: dict[str, int] = field(default_factory=dict)  # known column -> position
    extras: dict[str, int] = field(default_factory=dict)  # extra column (as written) -> position
    problems: list[ManifestProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _header_problems(
    header: _Record, records: Sequence[_Record], *, strict: bool = False
) -> _Header:
    """Map column names to cell positions; report duplicate and missing columns, and unknown
    ones (kept as extra columns unless ``strict``; a likely misspelling is warned about)."""
    found = _Header()
    positions, problems = found.positions, found.problems
    seen: dict[str, int] = {}  # every normalised name -> its first position (duplicates)
    line = header.line
    for position, raw in enumerate(header.cells[: _header_width(header)]):
        name = _normalise_header(raw)
        if not name:
            if any(record.cells[position] for record in records):
                problems.append(
                    ManifestProblem(
                        None,
                        None,
                        None,
                        f"column {position + 1} has values but no name in the header",
                        f"name the column (allowed: {', '.join(KNOWN_COLUMNS)}) or delete it",
                        line=line,
                    )
                )
        elif name in seen:
            problems.append(
                ManifestProblem(
                    None,
                    name,
                    raw,
                    f"column {name!r} appears twice in the header "
                    f"(columns {seen[name] + 1} and {position + 1})",
                    "keep one of the two columns",
                    line=line,
                )
            )
        elif name in KNOWN_COLUMNS:
            positions[name] = seen[name] = position
        elif strict or _looks_like_another_separator(name) or _misspells_required(name, header):
            seen[name] = position
            problems.append(_unknown_column(name, raw, line))
        else:
            seen[name] = position
            found.extras[raw.strip().strip("\ufeff").strip()] = position
            close = difflib.get_close_matches(name, KNOWN_COLUMNS, n=1, cutoff=0.6)
            if close and close[0] not in _header_names(header):
                found.warnings.append(
                    f"column {raw.strip()!r} (line {line}) is not one the pipeline reads: did "
                    f"you mean {close[0]!r}? It is kept as an extra column and carried to the "
                    f"results; rename it to {close[0]!r} if it was meant as that "
                    "(job.strict_manifest=true rejects unknown columns)"
                )
    missing = [name for name in REQUIRED_COLUMNS if name not in positions]
    if missing:
        names = " and ".join(repr(name) for name in missing)
        named = ", ".join(repr(cell) for cell in header.cells if cell)
        problems.append(
            ManifestProblem(
                None,
                None,
                None,
                f"the header has no {names} column{'s' if len(missing) > 1 else ''} (found: {named})",
                f"the first non-empty line must be the header: {_HEADER_HINT}",
                line=line,
            )
        )
    return found


def _header_names(header: _Record) -> set[str]:
    return {_normalise_header(cell) for cell in header.cells}


def _misspells_required(name: str, header: _Record) -> bool:
    """An unknown name close to a required column the header lacks: the manifest cannot work
    without that column, so the near miss is the problem to report (not an extra column)."""
    missing = [column for column in REQUIRED_COLUMNS if column not in _header_names(header)]
    return bool(difflib.get_close_matches(name, missing, n=1, cutoff=0.6))


def _looks_like_another_separator(name: str) -> bool:
    """A header cell holding several names joined by ';', tab or '|' (not comma-separated)."""
    return len(name) > 1 and any(sep in name for sep in (";", "\t", "|"))


def _unknown_column(name: str, raw: str, line: int) -> ManifestProblem:
    """Problem for a column name we don't know, with a spelling suggestion when close."""
    if _looks_like_another_separator(name):
        return ManifestProblem(
            None,
            name,
            raw,
            f"unknown column {name!r} — the file seems to use ';', tab or '|' between values",
            "save the manifest as comma-separated CSV",
            line=line,
        )
    close = difflib.get_close_matches(name, KNOWN_COLUMNS, n=1, cutoff=0.6)
    hint = f" — did you mean {close[0]!r}?" if close else ""
    fix = (
        f"rename it to {close[0]!r}"
        if close
        else f"remove or rename it (allowed columns: {', '.join(KNOWN_COLUMNS)})"
    )
    return ManifestProblem(None, name, raw, f"unknown column {name!r}{hint}", fix, line=line)


# --------------------------------------------------------------------------------------------
# Cell checks
# --------------------------------------------------------------------------------------------


def _name_problem(value: str) -> tuple[str, str | None]:
    """NFKC-normalise a file-name stem; return it and what is wrong with it (None if safe)."""
    for char in value:
        if char in SEPARATOR_LOOKALIKES:
            return value, (
                f"contains {unicodedata.name(char, 'a character')} (U+{ord(char):04X}), "
                "which looks like a path separator"
            )
    normal = unicodedata.normalize("NFKC", value)
    for char in normal:
        if unicodedata.category(char) in FORBIDDEN_CATEGORIES:
            return normal, f"contains a control or invisible character (U+{ord(char):04X})"
        if char in "/\\":
            return normal, f"contains a path separator {char!r}"
        if char in SEPARATOR_LOOKALIKES:
            return normal, f"contains U+{ord(char):04X}, which looks like a path separator"
    if normal in (".", "..") or ".." in normal:
        return normal, "contains '..'"
    if _DRIVE.match(normal):
        return normal, "looks like an absolute (drive-letter) path"
    if len(normal) > MAX_NAME_CHARS:
        return normal, f"is {len(normal)} characters long (at most {MAX_NAME_CHARS} allowed)"
    if len(normal.encode("utf-8")) > MAX_NAME_BYTES:
        return normal, f"is longer than {MAX_NAME_BYTES} bytes in UTF-8"
    if normal != normal.strip():
        return normal, "starts or ends with whitespace after Unicode normalisation"
    return normal, None


def _parse_int(text: str, *, minimum: int, limit: int) -> int | None:
    """`text` as an int in [minimum, limit), or None."""
    if not _INTEGER.fullmatch(text) or len(text) > 30:
        return None
    number = int(text)
    return number if minimum <= number < limit else None


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PathCheck:
    """Where a path cell points, for the existence / allowed-roots checks."""

    row: int  # 0-based
    line: int
    column: str
    value: str  # as written
    resolved: str


PATH_FIX = "check the path (relative paths are relative to the manifest's folder)"
PERMISSION_FIX = (
    "a file permissions problem: let the job's user read the file and enter its folders "
    "(e.g. chmod o+r on the file, o+x on the folders), or run the job as a user who can"
)
#: (what is wrong, what to do), or None when the input can be used
Missing = tuple[str, str] | None


def _local_missing(path: str) -> Missing:
    """Why the local input `path` can't be used, and the fix for that cause."""
    try:
        os.stat(path)
    except PermissionError:
        return f"{path} cannot be reached: a folder on its way does not let this user in", (
            PERMISSION_FIX
        )
    except OSError:
        return f"file not found at {path}", PATH_FIX
    if os.path.isdir(path):
        return f"{path} is a folder, not a file", "name a file inside it"
    if not os.access(path, os.R_OK):
        return f"file at {path} is not readable by this user (permission denied)", PERMISSION_FIX
    return None


def _remote_missing(uri: str, exists: Exists) -> Missing:
    """Why the remote input `uri` can't be used, and the fix the store's error gives for that
    cause (credentials, permissions, endpoint), or None when `exists` says it is there."""
    try:
        found = exists(uri)
    # The injected checker talks to a remote store; any failure it raises becomes a
    # problem on this row instead of aborting the whole report.
    except Exception as err:  # noqa: BLE001
        fix = getattr(err, "fix", "")  # a StorageError knows what to do about its cause
        if fix:
            return getattr(err, "problem", str(err)), fix
        message = f"could not check whether {uri} exists ({type(err).__name__}: {err})"
        return message, "check the URI, and that the store is reachable with the job's settings"
    return None if found else (f"object not found at {uri}", PATH_FIX)


def _path_problems(
    checks: Sequence[_PathCheck],
    *,
    allowed_input_roots: Sequence[str | os.PathLike[str]],
    exists: Exists | None,
    check_exists: bool,
    manifest_uri: str = "",
) -> list[ManifestProblem]:
    """Allowed-root and existence problems for resolved path cells (each URI checked once).

    A manifest read from a remote URI may name remote inputs, and local files only under
    ``allowed_input_roots``: whoever can write to the bucket must not make the job read this
    machine's files (``/etc/passwd``, credentials). A local manifest may name any file unless
    roots are set.
    """
    local_roots, remote_roots = split_roots(allowed_input_roots)
    roots_text = ", ".join([*local_roots, *remote_roots])
    remote_manifest = has_scheme(manifest_uri)
    problems: list[ManifestProblem] = []
    to_check: list[_PathCheck] = []
    for check in checks:
        inside = (
            inside_roots(check.resolved, local_roots, remote_roots) if allowed_input_roots else None
        )
        if remote_manifest and not local_roots and not has_scheme(check.resolved):
            problems.append(
                ManifestProblem(
                    check.row + 1,
                    check.column,
                    check.value,
                    f"names the local file {check.resolved}, but a manifest read from "
                    f"{scheme_of(manifest_uri)}:// may name only remote inputs (s3://...) "
                    "and local files under storage.allowed_input_roots",
                    "upload the file and name its s3:// URI, or add its local folder to "
                    "storage.allowed_input_roots",
                    line=check.line,
                )
            )
        elif inside is False:
            problems.append(
                ManifestProblem(
                    check.row + 1,
                    check.column,
                    check.value,
                    f"{check.resolved} is outside the allowed input roots [{roots_text}]",
                    "move the file under one of them or add its folder to storage.allowed_input_roots",
                    line=check.line,
                )
            )
        elif check_exists:
            to_check.append(check)
    reasons = _missing_reasons({c.resolved for c in to_check}, exists)
    for check in to_check:
        reason = reasons.get(check.resolved)
        if reason is not None:
            message, fix = reason
            problems.append(
                ManifestProblem(
                    check.row + 1, check.column, check.value, message, fix, line=check.line
                )
            )
    return problems


def _missing_reasons(uris: set[str], exists: Exists | None) -> dict[str, Missing]:
    """Existence of each URI: local ones with os, remote ones with `exists` (concurrently)."""
    reasons: dict[str, Missing] = {}
    remote = sorted(uri for uri in uris if is_remote(uri))
    for uri in uris:
        if not is_remote(uri):
            reasons[uri] = _local_missing(uri)
    if remote and exists is None:
        logger.debug("no exists= checker given: %d s3:// inputs not checked", len(remote))
    elif remote and exists is not None:
        with ThreadPoolExecutor(max_workers=min(EXISTS_THREADS, len(remote))) as pool:
            for uri, reason in zip(
                remote, pool.map(lambda u: _remote_missing(u, exists), remote), strict=True
            ):
                reasons[uri] = reason
    return reasons


# --------------------------------------------------------------------------------------------
# Row validation
# --------------------------------------------------------------------------------------------


@dataclass
class _Draft:
    """A row being validated: raw cells in, typed values and problems out."""

    index: int
    line: int
    raw: dict[str, str]  # column -> stripped cell ("" when blank or the column is absent)
    extra: dict[str, str] = field(default_factory=dict)  # extra column (as written) -> cell
    paths: dict[str, str] = field(default_factory=dict)  # column -> resolved URI
    id: str | None = None
    output: str | None = None
    max_frames: int | None = None
    seed: int | None = None
    framing: str | None = None
    problems: list[ManifestProblem] = field(default_factory=list)
    rejected: bool = False  # excluded from the valid rows by a problem reported on another row

    def problem(self, column: str | None, value: str | None, message: str, fix: str) -> None:
        self.problems.append(
            ManifestProblem(self.index + 1, column, value, message, fix, line=self.line)
        )

    @property
    def valid(self) -> bool:
        return not self.problems and not self.rejected


def _check_width(draft: _Draft, record: _Record, width: int) -> None:
    """Cells to the right of the last named column (usually an unquoted comma in a value)."""
    extra = [cell for cell in record.cells[width:] if cell]
    if extra:
        used = max(i for i, cell in enumerate(record.cells) if cell) + 1
        draft.problem(
            None,
            extra[0],
            f"the row has {used} values but the header names {width} columns",
            'put values that contain commas in double quotes ("a,b.png") or remove the extra cells',
        )


def _check_paths(draft: _Draft, manifest_uri: str) -> list[_PathCheck]:
    """Resolve the path cells of one row; return them for the roots / existence checks."""
    checks: list[_PathCheck] = []
    for column in PATH_COLUMNS:
        if column not in draft.raw:
            continue
        value = draft.raw[column]
        if not value:
            if column in REQUIRED_COLUMNS:
                draft.problem(
                    column, value, f"{column} is blank", f"fill in the {column} path or URI"
                )
            continue
        resolved, reason = resolve(value, manifest_uri)
        if reason:
            draft.problem(column, value, f"{column} {reason}", "use a local path or an s3:// URI")
            continue
        draft.paths[column] = resolved
        checks.append(_PathCheck(draft.index, draft.line, column, value, resolved))
    return checks


def _check_numbers(draft: _Draft) -> None:
    """`max_frames` (positive int) and `seed` (int in [0, 2**63))."""
    text = draft.raw.get("max_frames", "")
    if text:
        draft.max_frames = _parse_int(text, minimum=1, limit=SEED_LIMIT)
        if draft.max_frames is None:
            draft.problem(
                "max_frames",
                text,
                "max_frames must be a positive whole number",
                "write a number such as 250, or leave the cell empty for the job's default",
            )
    text = draft.raw.get("seed", "")
    if text:
        draft.seed = _parse_int(text, minimum=0, limit=SEED_LIMIT)
        if draft.seed is None:
            draft.problem(
                "seed",
                text,
                f"seed must be a whole number from 0 to {SEED_LIMIT - 1} (2**63 - 1)",
                "write a number such as 42, or leave the cell empty for the job's default",
            )


def _check_framing(draft: _Draft) -> None:
    """`framing`: one of FRAMING_VALUES (any case), or blank."""
    text = draft.raw.get("framing", "")
    if not text:
        return
    if text.lower() in FRAMING_VALUES:
        draft.framing = text.lower()
        return
    draft.problem(
        "framing",
        text,
        f"framing must be one of {', '.join(FRAMING_VALUES)}",
        "write face (find the face), crop, pad or stretch (the whole photo made square), or "
        "leave the cell empty for the job's framing.portrait",
    )


def _check_names(draft: _Draft) -> None:
    """`output` and `id`: file-name-safe stems, NFKC-normalised."""
    for column in ("output", "id"):
        text = draft.raw.get(column, "")
        if not text:
            continue
        normal, reason = _name_problem(text)
        setattr(draft, column, normal)
        if reason:
            draft.problem(
                column,
                text,
                f"{column} {reason}; it must be a plain file name (no folders)",
                f"use a name such as 'alice_talk' (at most {MAX_NAME_CHARS} characters, "
                "no '/', '\\', '..' or control characters)",
            )


def _report_shared(drafts: Sequence[_Draft], column: str, what: str, fix: str) -> None:
    """A problem on every row of a group sharing a value of `column` (ignoring case).

    Each names all the rows involved, so every row of the group gets its own verdict.
    """
    groups: dict[str, list[_Draft]] = defaultdict(list)
    for draft in drafts:
        value = getattr(draft, column)
        if draft.raw.get(column) and value:
            groups[value.casefold()].append(draft)
    for sharing in groups.values():
        if len(sharing) < 2:
            continue
        rows = _join_numbers([d.index + 1 for d in sharing])
        lines = _join_numbers([d.line for d in sharing])
        for draft in sharing:
            draft.problem(
                column,
                draft.raw[column],
                f"{what} is used by rows {rows} (lines {lines}); {what}s must be unique (ignoring case)",
                fix,
            )


def _join_numbers(numbers: Sequence[int]) -> str:
    """``2, 5 and 9``."""
    texts = [str(n) for n in numbers]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]


# --------------------------------------------------------------------------------------------
# Ids
# --------------------------------------------------------------------------------------------


def _row_fingerprint(draft: _Draft) -> str:
    """Everything a row asks for: inputs as written and resolved, output, max_frames, seed."""
    payload = ["portrait-render/row/v1"]
    for column in PATH_COLUMNS:
        payload += [draft.raw.get(column, ""), draft.paths.get(column, "")]
    for value in (draft.output, draft.max_frames, draft.seed):
        payload.append("" if value is None else str(value))
    if draft.framing is not None:  # only when given: the ids of rows without it stay as they were
        payload.append(f"framing={draft.framing}")
    return json.dumps(payload, ensure_ascii=False)


def derive_ids(fingerprints: Sequence[str]) -> list[str]:
    """``row-<12 hex>`` ids for rows given by their fingerprints, in file order.

    Each id hashes the fingerprint and its 0-based occurrence among identical fingerprints, so
    ids do not depend on where a row sits in the file and identical rows get distinct ids. A
    (48-bit) collision between different rows gets ``-2``, ``-3``... in file order.
    """
    occurrences: dict[str, int] = defaultdict(int)
    ids: list[str] = []
    for fingerprint in fingerprints:
        count = occurrences[fingerprint]
        occurrences[fingerprint] += 1
        ids.append("row-" + hashlib.sha256(f"{fingerprint}#{count}".encode()).hexdigest()[:12])
    seen: dict[str, int] = defaultdict(int)
    for position, row_id in enumerate(ids):
        seen[row_id] += 1
        if seen[row_id] > 1:
            ids[position] = f"{row_id}-{seen[row_id]}"
    return ids


def _assign_ids(drafts: Sequence[_Draft]) -> None:
    """Check given ids are unique; derive the missing ones."""
    _report_shared(
        drafts, "id", "id", "give each row its own id, or leave the id cells empty to derive them"
    )
    given = {d.id.casefold() for d in drafts if d.id}
    unnamed = [d for d in drafts if not d.raw.get("id")]
    for draft, row_id in zip(
        unnamed, derive_ids([_row_fingerprint(d) for d in unnamed]), strict=True
    ):
        draft.id = row_id
        if row_id.casefold() in given:
            draft.problem(
                "id",
                None,
                f"the id derived for this row, {row_id!r}, is given to another row",
                "rename that row's id",
            )


def _with_row_ids(
    problems: list[ManifestProblem], drafts: Sequence[_Draft]
) -> list[ManifestProblem]:
    """Each row problem labelled with its row's id (given or derived), so a row rejected by the
    CSV checks is reported under the same id as one rejected later by a media check."""
    ids = {draft.index + 1: draft.id for draft in drafts}
    return [
        replace(problem, row_id=ids.get(problem.row)) if problem.row is not None else problem
        for problem in problems
    ]


def _build_row(draft: _Draft, uri: str) -> ManifestRow:
    assert draft.id is not None  # set by _assign_ids
    return ManifestRow(
        index=draft.index,
        line=draft.line,
        id=draft.id,
        portrait=draft.paths["portrait"],
        driving_video=draft.paths["driving_video"],
        audio=draft.paths.get("audio"),
        output=draft.output,
        max_frames=draft.max_frames,
        seed=draft.seed,
        framing=draft.framing,
        source=uri,
        extra=draft.extra,
    )


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def _split_header(records: list[_Record]) -> tuple[_Record | None, list[_Record]]:
    non_blank = [record for record in records if not record.blank]
    if not non_blank:
        return None, []
    return non_blank[0], non_blank[1:]


def _read_table(data: bytes) -> tuple[_Record | None, list[_Record], ManifestProblem | None]:
    """Decode and parse: (header, data records, fatal problem)."""
    text, problem = _decode(data)
    if problem:
        return None, [], problem
    records, problem = _parse_records(text) if text.strip() else ([], None)
    if problem:
        return None, [], problem
    header, rows = _split_header(records)
    if header is None:
        fix = f"write the header on the first line ({_HEADER_HINT}), then one row per video"
        return None, [], ManifestProblem(None, None, None, "the manifest is empty", fix)
    return header, rows, None


def _check_rows(
    records: Sequence[_Record], found: _Header, width: int, uri: str
) -> tuple[list[_Draft], list[_PathCheck]]:
    """Per-row checks that need no file system: cells, numbers, names, ids, outputs."""
    drafts: list[_Draft] = []
    checks: list[_PathCheck] = []
    for index, record in enumerate(records):
        raw = {name: record.cells[pos] for name, pos in found.positions.items()}
        extra = {name: record.cells[pos] for name, pos in found.extras.items()}
        draft = _Draft(index=index, line=record.line, raw=raw, extra=extra)
        _check_width(draft, record, width)
        checks += _check_paths(draft, uri)
        _check_numbers(draft)
        _check_framing(draft)
        _check_names(draft)
        drafts.append(draft)
    _assign_ids(drafts)
    _report_shared(
        drafts, "output", "output name", "give each row its own output name, or leave it empty"
    )
    return drafts, checks


def parse_manifest(
    data: bytes,
    *,
    uri: str,
    exists: Exists | None = None,
    allowed_input_roots: Sequence[str | os.PathLike[str]] = (),
    check_exists: bool = True,
    strict: bool = False,
) -> tuple[Manifest, list[ManifestProblem]]:
    """Validate manifest bytes; return the valid rows and every problem found.

    Args:
        data: the CSV file's bytes.
        uri: the manifest's absolute path or s3:// URI (relative paths resolve against it).
        exists, allowed_input_roots, check_exists, strict: see `load_manifest`.

    Returns:
        ``(manifest, problems)``: `manifest.rows` holds only the rows without problems.
    """
    header, records, problem = _read_table(data)
    if header is None:
        return Manifest(uri=uri, rows=(), columns=()), [problem] if problem else []
    found = _header_problems(header, records, strict=strict)
    positions, problems = found.positions, found.problems
    columns = tuple(sorted(positions, key=positions.__getitem__))
    extras = tuple(sorted(found.extras, key=found.extras.__getitem__))
    for warning in found.warnings:
        logger.warning("manifest %s: %s", uri, warning)
    if not records and positions:
        fix = "add one row per portrait/driving-video pair below the header"
        problems.append(
            ManifestProblem(
                None,
                None,
                None,
                "the manifest has a header but no data rows",
                fix,
                line=header.line,
            )
        )
    if not positions or not records:
        return Manifest(uri, (), columns, extras, tuple(found.warnings)), problems

    drafts, checks = _check_rows(records, found, _header_width(header), uri)
    path_problems = _path_problems(
        checks,
        allowed_input_roots=allowed_input_roots,
        exists=exists,
        check_exists=check_exists,
        manifest_uri=uri,
    )
    rows_with_path_problems = {problem.row for problem in path_problems}
    for draft in drafts:
        problems += draft.problems
    problems += path_problems
    problems = _with_row_ids(problems, drafts)
    problems.sort(key=_sort_key)
    complete = all(name in positions for name in REQUIRED_COLUMNS)
    rows = tuple(
        _build_row(draft, uri)
        for draft in drafts
        if complete and draft.valid and draft.index + 1 not in rows_with_path_problems
    )
    return Manifest(uri, rows, columns, extras, tuple(found.warnings)), problems


def check_manifest(
    uri_or_path: str | os.PathLike[str],
    *,
    read_bytes: ReadBytes | None = None,
    exists: Exists | None = None,
    allowed_input_roots: Sequence[str | os.PathLike[str]] = (),
    check_exists: bool = True,
    strict: bool = False,
) -> tuple[Manifest, list[ManifestProblem]]:
    """Like `load_manifest`, but return ``(valid rows, problems)`` instead of raising.

    For validation steps that add their own problems (media probing) and report all at once
    with `raise_if_problems`. A manifest that can't be read at all still raises `ManifestError`.
    """
    uri = normalise(uri_or_path)
    data = _read(uri, read_bytes)
    manifest, problems = parse_manifest(
        data,
        uri=uri,
        exists=exists,
        allowed_input_roots=allowed_input_roots,
        check_exists=check_exists,
        strict=strict,
    )
    logger.info("manifest %s: %d valid rows, %d problems", uri, len(manifest), len(problems))
    return manifest, problems


def load_manifest(
    uri_or_path: str | os.PathLike[str],
    *,
    read_bytes: ReadBytes | None = None,
    exists: Exists | None = None,
    allowed_input_roots: Sequence[str | os.PathLike[str]] = (),
    check_exists: bool = True,
    strict: bool = False,
) -> Manifest:
    """Read and validate a CSV manifest.

    Args:
        uri_or_path: local path (``~`` expanded) or ``s3://bucket/dir/manifest.csv``.
        read_bytes: ``read_bytes(uri) -> bytes``; default reads local files (required for s3://).
        exists: ``exists(uri) -> bool`` for s3:// inputs (the storage layer's); default None:
            s3:// inputs are not checked. Local inputs are always checked with the file system.
        allowed_input_roots: when non-empty, local inputs (symlinks resolved) must lie inside
            one of these local folders; s3:// entries restrict s3:// inputs to those prefixes.
        check_exists: False skips the existence checks (syntax and roots are still checked).
        strict: every column the pipeline does not read is a problem (default: such columns
            are kept as each row's `extra`; one that looks like a misspelling is warned about).

    Returns:
        The manifest with every row validated.

    Raises:
        ManifestError: listing every problem of every row.
        ValueError: an s3:// manifest without `read_bytes`.
    """
    manifest, problems = check_manifest(
        uri_or_path,
        read_bytes=read_bytes,
        exists=exists,
        allowed_input_roots=allowed_input_roots,
        check_exists=check_exists,
        strict=strict,
    )
    raise_if_problems(problems, uri=manifest.uri)
    return manifest
