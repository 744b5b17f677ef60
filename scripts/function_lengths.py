"""The longest functions and methods in the pipeline's code, to keep procedures short.

    python scripts/function_lengths.py                 # the 20 longest in pipeline/ and jobs/
    python scripts/function_lengths.py --top 15
    python scripts/function_lengths.py --over 60       # every function over 60 lines
    python scripts/function_lengths.py --check 60      # the same, and exit 1 if there is one
    python scripts/function_lengths.py pipeline/media  # other folders or files

A function's length is its lines from ``def`` to its last line, docstring and comments included
(decorators not). Nested functions and methods are listed under their own qualified name
(``Class.method``, ``outer.inner``) and also count towards the function that holds them.
Reads the source with `ast` only: nothing is imported, so it runs without the project's
dependencies.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATHS = ("pipeline", "jobs")
DEFAULT_TOP = 20


@dataclass(frozen=True)
class Function:
    """One function or method: where it starts and how many lines it spans."""

    path: str  # relative to the repository root when inside it
    line: int
    name: str  # qualified: Class.method, outer.inner
    length: int

    def __str__(self) -> str:
        return f"{self.length:5d}  {self.path}:{self.line}  {self.name}"


def python_files(paths: Sequence[str]) -> Iterator[Path]:
    """The .py files under `paths` (folders searched recursively; caches skipped), sorted."""
    for given in paths:
        path = Path(given)
        if not path.is_absolute():
            path = ROOT / path
        if not path.exists():
            raise SystemExit(f"{given}: no such file or folder")
        if path.is_file():
            yield path
            continue
        yield from sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)


def functions_in(path: Path) -> Iterator[Function]:
    """Every function and method defined in one file, nested ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    yield from _walk(tree, prefix="", path=shown.as_posix())


def _walk(node: ast.AST, *, prefix: str, path: str) -> Iterator[Function]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = prefix + child.name
            assert child.end_lineno is not None  # set by ast.parse on Python >= 3.8
            yield Function(path, child.lineno, name, child.end_lineno - child.lineno + 1)
            yield from _walk(child, prefix=name + ".", path=path)
        elif isinstance(child, ast.ClassDef):
            yield from _walk(child, prefix=prefix + child.name + ".", path=path)
        else:  # functions defined inside if/try/with blocks
            yield from _walk(child, prefix=prefix, path=path)


def longest(paths: Sequence[str]) -> list[Function]:
    """All functions under `paths`, longest first (ties: by file and line)."""
    found = [fn for file in python_files(paths) for fn in functions_in(file)]
    return sorted(found, key=lambda fn: (-fn.length, fn.path, fn.line))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "paths",
        nargs="*",
        default=list(DEFAULT_PATHS),
        help="folders or files to measure, relative to the repository root "
        f"(default: {' '.join(DEFAULT_PATHS)})",
    )
    parser.add_argument(
        "--top", type=int, metavar="N", help=f"list the N longest (default: {DEFAULT_TOP})"
    )
    limits = parser.add_mutually_exclusive_group()
    limits.add_argument("--over", type=int, metavar="L", help="list every function over L lines")
    limits.add_argument(
        "--check",
        type=int,
        metavar="L",
        help="list every function over L lines and exit 1 if there is any",
    )
    args = parser.parse_args(argv)

    functions = longest(args.paths)
    limit = args.check if args.check is not None else args.over
    if limit is not None:
        functions = [fn for fn in functions if fn.length > limit]
    top = args.top if args.top is not None else (None if limit is not None else DEFAULT_TOP)
    shown = functions[:top] if top is not None else functions

    print("lines  location  function")
    for fn in shown:
        print(fn)
    if len(shown) < len(functions):
        print(f"... and {len(functions) - len(shown)} more")
    if args.check is None:
        return 0
    if functions:
        print(f"{len(functions)} function(s) over {args.check} lines: split them into steps")
        return 1
    print(f"no function over {args.check} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
