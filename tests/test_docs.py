"""The docs cannot rot: every command in README.md and docs/*.md is run by this file.

Each ```bash block of those files is read command by command (``\\`` continuations joined,
``#`` comment lines skipped) and, in document order:

* **run**: the command runs with ``bash -o pipefail`` in a sandbox — a temporary folder that looks
  like a fresh clone (the repository's files linked in, ``manifests/`` copied, nothing git ignores,
  so ``outputs/``, the tiny model's weights and generated media land in the sandbox) — with this
  virtual environment's ``python`` first on the PATH. It must exit 0. This is the default.
* **compose-only**, for commands that need a GPU, a Ray cluster, S3 or the internet: mark the block
  with ``<!-- doc-test: compose-only -->`` on the line right before its fence. Each
  ``python run.py …`` command then runs with ``--cfg job`` appended (Hydra composes the config and
  prints it; nothing runs) and the printed config must pass the checks every job makes
  (`jobs._common.typed`); ``--help`` and ``--cfg`` commands run as written; for any other command
  the program must exist (a shell builtin, on the PATH or a file of the repository; for
  ``python -m x`` the module ``x``).

Environment set-up in a command chain (``python3 -m venv .venv``, ``. .venv/bin/activate``,
``pip install …``) is not run again: the virtual environment running this test exists already.
On a clean clone ``.ci/run`` performs exactly these steps — this file checks that ``.ci/run``
contains each of them — so the README's first command is covered by CI's set-up plus its render
part here. ``python -m pytest …`` is checked to be what ``.ci/run`` runs (running the suite from
inside itself would recurse).

Beyond the commands: the cluster story's ``job=validate`` command runs against a local S3 server
holding its inputs, and the rooms table of docs/architecture.md is checked against the imports.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
CI_SCRIPT = REPO / ".ci" / "run"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MODES = ("run", "compose-only")
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<mode>\S+)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
SHELL_LANGUAGES = ("bash", "sh", "shell")
#: Set-up steps of a command chain that .ci/run performs on a clean clone.
SETUP_STEP = re.compile(r"^(python3? -m venv \S+|\. \S*\.venv/bin/activate|pip install .+)$")
TEST_SUITE = re.compile(r"^python3? -m pytest\b")
#: The README's set-up commands: first, and word for word as CI knows them.
README_SETUP = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 -e '.[dev]' && "
    "python run.py job=render manifest=manifests/example.csv model=tiny",
    ". .venv/bin/activate && python -m pytest -q",
)
COMMAND_TIMEOUT_S = 600


# --------------------------------------------------------------------------------------------
# Reading the docs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One shell command of a doc, where it is written and how it is tested."""

    doc: str  # path relative to the repository
    line: int  # 1-based line of its first line
    text: str
    mode: str  # "run" or "compose-only"

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # line of the opening fence
    mode: str
    commands: tuple[Command, ...]
    section: str  # the heading (level 1 to 3) the block is under


def read_blocks(path: Path, doc: str | None = None) -> tuple[list[Block], list[str]]:
    """The shell blocks of a Markdown file, and its marker mistakes (a marker must be right above
    a shell fence and name a known mode). `doc`: the name in messages (default: repo-relative)."""
    doc = doc or str(path.relative_to(REPO))
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    mistakes: list[str] = []
    marker: tuple[str, int] | None = None
    section = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        found = MARKER.match(line)
        fence = FENCE.match(line)
        if re.match(r"^#{1,3} ", line):
            section = line.lstrip("#").strip()
        if found:
            if marker is not None:
                mistakes.append(f"{doc}:{marker[1]}: doc-test marker not followed by a fence")
            marker = (found["mode"], index + 1)
            if found["mode"] not in MODES:
                mistakes.append(
                    f"{doc}:{index + 1}: unknown doc-test mode {found['mode']!r} "
                    f"(known: {', '.join(MODES)})"
                )
        elif fence:
            end = index + 1
            while end < len(lines) and not re.match(r"^\s*```\s*$", lines[end]):
                end += 1
            if fence["lang"] in SHELL_LANGUAGES:
                mode = marker[0] if marker else "run"
                body = [text.removeprefix(fence["indent"]) for text in lines[index + 1 : end]]
                commands = tuple(
                    Command(doc, index + 2 + offset, text, mode)
                    for offset, text in split_commands(body)
                )
                blocks.append(Block(doc, index + 1, mode, commands, section))
            elif marker is not None:
                mistakes.append(f"{doc}:{marker[1]}: doc-test marker above a non-shell fence")
            marker = None
            index = end
        elif line.strip() and marker is not None:
            mistakes.append(f"{doc}:{marker[1]}: doc-test marker not right before a fence")
            marker = None
        index += 1
    return blocks, mistakes


def split_commands(body: list[str]) -> Iterator[tuple[int, str]]:
    """(line offset, command) for each command of a block: continuations joined, comments out."""
    pending: list[str] = []
    start = 0
    for offset, line in enumerate(body):
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = offset
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        pending.append(line)
        yield start, " ".join(part.strip() for part in pending)
        pending = []
    if pending:
        yield start, " ".join(part.strip() for part in pending)


def doc_commands() -> list[Command]:
    return [
        command for path in DOCS for block in read_blocks(path)[0] for command in block.commands
    ]


def chain(text: str) -> list[str]:
    """The steps of ``a && b && c``."""
    return [part.strip() for part in re.split(r"\s&&\s", text) if part.strip()]


def ci_lines() -> set[str]:
    """The commands of .ci/run, whitespace-normalised, with pip's ``--quiet`` dropped."""
    lines = set()
    for line in CI_SCRIPT.read_text().splitlines():
        line = re.sub(r"\s--quiet\b", "", line.strip())
        if line and not line.startswith("#"):
            lines.add(" ".join(line.split()))
    return lines


# --------------------------------------------------------------------------------------------
# Running them
# --------------------------------------------------------------------------------------------


def git_visible_files() -> list[str]:
    """What a fresh clone has (tracked files) plus new files not ignored by git."""
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    return [name for name in result.stdout.decode().split("\0") if name and (REPO / name).exists()]


def make_sandbox(root: Path) -> Path:
    """A folder that looks like a fresh clone: top-level entries linked, ``manifests/`` copied
    (commands write generated media there), nothing git ignores (no outputs, no weights)."""
    root.mkdir(parents=True, exist_ok=True)
    files = git_visible_files()
    for top in sorted({name.split("/", 1)[0] for name in files} - {"manifests"}):
        (root / top).symlink_to(REPO / top)
    for name in files:
        if name.startswith("manifests/"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    return root


def shell_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


def run_shell(text: str, cwd: Path, command: Command) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", text],
        cwd=cwd,
        env=shell_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (
        f"{command.where}: `{text}` exited with {result.returncode}\n"
        f"--- output (end) ---\n{(result.stdout + result.stderr)[-4000:]}"
    )
    return result


def check_in_ci(step: str, command: Command) -> None:
    normal = " ".join(step.split())
    assert normal in ci_lines(), (
        f"{command.where}: `{step}` is left to CI's set-up, but .ci/run does not run it; "
        "make .ci/run and the docs agree"
    )


def compose_only(text: str, cwd: Path, command: Command) -> None:
    """Check that a command which cannot run here at least makes sense (module docstring)."""
    from jobs import ConfigError
    from jobs._common import typed
    from pipeline.config import RenderConfig

    words = shlex.split(text, comments=True)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words.pop(0)  # VAR=value before the program
    assert words, f"{command.where}: empty command"
    program = words[0]
    if program in ("python", "python3") and words[1:2] == ["run.py"]:
        overrides = words[2:]
        if any(word in ("--help", "-h", "--cfg", "-c", "--info") for word in overrides):
            run_shell(shlex.join(["python", "run.py", *overrides]), cwd, command)
            return
        shown = run_shell(
            shlex.join(["python", "run.py", *overrides, "--cfg", "job"]), cwd, command
        )
        cfg = OmegaConf.merge(OmegaConf.structured(RenderConfig), OmegaConf.create(shown.stdout))
        try:
            typed(cfg)  # the checks every job makes first
        except ConfigError as err:
            raise AssertionError(f"{command.where}: `{text}`: {err}") from err
    elif program in ("python", "python3") and words[1:2] == ["-m"]:
        module = words[2]
        found = subprocess.run(
            [sys.executable, "-c", f"import importlib.util as u; assert u.find_spec({module!r})"],
            cwd=cwd,
            capture_output=True,
            check=False,
        )
        assert found.returncode == 0, f"{command.where}: no module {module!r}"
    elif "/" in program:
        assert (cwd / program).is_file(), f"{command.where}: {program} does not exist"
    else:
        kind = subprocess.run(
            ["bash", "-c", f"type -t {shlex.quote(program)}"],
            env=shell_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        assert kind.stdout.strip(), f"{command.where}: {program!r} is not a command here"


def exercise(command: Command, sandbox: Path) -> None:
    runnable = []
    for step in chain(command.text):
        if SETUP_STEP.match(step) or TEST_SUITE.match(step):
            check_in_ci(step, command)
        else:
            runnable.append(step)
    if not runnable:
        return
    text = " && ".join(runnable)
    if command.mode == "compose-only":
        for step in runnable:
            compose_only(step, sandbox, command)
    else:
        run_shell(text, sandbox, command)


DOCS_WITH_COMMANDS = [path for path in DOCS if read_blocks(path)[0]]


# What the README says its commands produce, checked in the sandbox the section ran in.


def _public_videos(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.mp4"))


def _example_claims(sandbox: Path) -> None:
    """The example writes outputs/example/: one <row id>-<hash>.mp4 per row, report.html, ..."""
    job = sandbox / "outputs" / "example"
    with open(sandbox / "manifests" / "example.csv", newline="") as handle:
        ids = [row["id"] for row in csv.DictReader(handle)]
    names = sorted(path.name.rsplit("-", 1)[0] for path in _public_videos(job))
    assert names == sorted(ids), names
    for name in ("report.html", "summary.json", "status.json", "config.yaml"):
        assert (job / name).is_file(), name


def _social_claims(sandbox: Path) -> None:
    """12 videos and a report; each clip's conditioning computed, then read from the cache."""
    job = sandbox / "outputs" / "social"
    assert len(_public_videos(job)) == 12 and (job / "report.html").is_file()
    markers = [json.loads(path.read_text()) for path in job.glob("_rows/*/commit.json")]
    sources = [marker["conditioning"] for marker in markers]
    # the first row of each clip computes; rows starting after it finished read (timing decides
    # about the rows in between, but the last wave always finds both clips cached)
    assert len(sources) == 12 and sources.count("computed") >= 2, sources
    assert sources.count("cached") >= 4, sources
    assert len(list((sandbox / "outputs" / "_cache" / "conditioning").glob("*.bin"))) == 2


def _overnight_claims(sandbox: Path) -> None:
    """One video with every driving frame at the exact rate, with sound; status.json finished."""
    from pipeline.media import probe

    job = sandbox / "outputs" / "talk"
    (video,) = _public_videos(job)
    driving = probe(str(sandbox / "manifests" / "overnight" / "media" / "talk.mp4"))
    rendered = probe(str(video))
    assert rendered.video is not None and driving.video is not None
    assert rendered.video.num_frames == driving.video.num_frames == 500
    assert rendered.video.frame_rate == driving.video.frame_rate
    assert rendered.audio is not None
    status = json.loads((job / "status.json").read_text())
    assert status["state"] == "finished" and status["frames_done"] == 500, status


def _framing_claims(sandbox: Path) -> None:
    """Two story-format videos (1080x1920), every driving frame, the face found in each."""
    from pipeline.media import probe

    job = sandbox / "outputs" / "framing"
    videos = _public_videos(job)
    assert len(videos) == 2, videos
    for video in videos:
        info = probe(str(video)).video
        assert info is not None and (info.width, info.height, info.num_frames) == (1080, 1920, 75)
    summary = json.loads((job / "summary.json").read_text())
    for row in summary["rows"]:
        assert row["framing"]["portrait"] == "face" and row["framing"]["canvas"] == [1080, 1920]
        assert row["framing"]["driving_frames_without_face"] == 0


#: (doc, section heading) → what its commands must have produced.
CLAIMS = {
    ("README.md", "Two commands"): _example_claims,
    ("README.md", "1. A social batch: many portraits, one driving clip"): _social_claims,
    ("README.md", "2. A long presentation overnight"): _overnight_claims,
    (
        "docs/framing.md",
        "Framing: any photo in, the face animated, the photo back out",
    ): _framing_claims,
}
#: Sections run side by side: a render uses the CPU unevenly (start-up, a last row alone).
PARALLEL_SECTIONS = 2


@pytest.mark.parametrize(
    "path",
    [  # the README's render commands take minutes
        pytest.param(p, marks=pytest.mark.slow) if p.name in ("README.md", "framing.md") else p
        for p in DOCS_WITH_COMMANDS
    ],
    ids=[str(p.relative_to(REPO)) for p in DOCS_WITH_COMMANDS],
)
def test_every_command_of_the_doc_works(path: Path, tmp_path: Path) -> None:
    """The doc's commands in order. Each section (a heading of level 1 to 3: one story) has its
    own sandbox, so sections must not depend on each other, and sections run side by side."""
    sections: dict[str, list[Block]] = {}
    for block in read_blocks(path)[0]:
        sections.setdefault(block.section, []).append(block)

    doc = str(path.relative_to(REPO))
    unknown = [section for name, section in CLAIMS if name == doc and section not in sections]
    assert not unknown, f"{doc} has no section {unknown}: update CLAIMS in tests/test_docs.py"

    def run_section(number: int, section: str, blocks: list[Block]) -> None:
        sandbox = make_sandbox(tmp_path / f"section-{number}")
        for block in blocks:
            for command in block.commands:
                exercise(command, sandbox)
        check = CLAIMS.get((doc, section))
        if check is not None:
            try:
                check(sandbox)
            except AssertionError as err:
                raise AssertionError(f"{doc}, section {section!r}: {err}") from err

    with ThreadPoolExecutor(PARALLEL_SECTIONS) as pool:
        futures = [
            pool.submit(run_section, number, section, blocks)
            for number, (section, blocks) in enumerate(sections.items())
        ]
        errors = [str(error) for future in futures if (error := future.exception())]
    assert not errors, "\n\n".join(errors)


# --------------------------------------------------------------------------------------------
# What the commands promise, checked where running them is not enough
# --------------------------------------------------------------------------------------------


def test_markers_are_well_placed_and_known() -> None:
    mistakes = [mistake for path in DOCS for mistake in read_blocks(path)[1]]
    assert not mistakes, "\n".join(mistakes)


def test_the_readme_starts_with_the_two_setup_commands() -> None:
    blocks, _ = read_blocks(REPO / "README.md")
    first_two = tuple(block.commands[0].text for block in blocks[:2])
    assert first_two == README_SETUP
    assert all(len(block.commands) == 1 and block.mode == "run" for block in blocks[:2])


def test_ci_runs_the_readme_setup_and_test_commands() -> None:
    """.ci/run is the README's two commands on a clean clone: the set-up steps of the first,
    the second's test command last (so the README's render part is what this file runs)."""
    steps = [step for text in README_SETUP for step in chain(text)]
    lines = ci_lines()
    for step in steps:
        if SETUP_STEP.match(step) or TEST_SUITE.match(step):
            assert " ".join(step.split()) in lines, step
    last = [line for line in CI_SCRIPT.read_text().splitlines() if line.strip()][-1]
    assert last.strip() == "python -m pytest -q"


def test_the_docs_are_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    for path in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{path.name})" in readme, f"README.md does not link docs/{path.name}"
    assert "(docs/img/report.png)" in readme and (REPO / "docs/img/report.png").is_file()


def test_a_command_in_a_compose_only_block_that_cannot_work_fails(tmp_path: Path) -> None:
    """The compose-only check has teeth: an unusable config or a missing program is caught."""
    command = Command("x.md", 1, "", "compose-only")
    with pytest.raises(AssertionError, match=r"storage\.output_root is required"):
        compose_only("python run.py job=render manifest=x.csv storage=s3", REPO, command)
    with pytest.raises(AssertionError, match="exited with"):
        compose_only("python run.py job=render model.dtyp=fp16", REPO, command)
    with pytest.raises(AssertionError, match="is not a command here"):
        compose_only("no-such-program --flag", REPO, command)
    compose_only(
        "python run.py job=render manifest=x.csv preset=cluster storage.output_root=s3://b/p",
        REPO,
        command,
    )


def test_reading_blocks_markers_and_continuations(tmp_path: Path) -> None:
    doc = tmp_path / "sample.md"
    doc.write_text(
        "text\n\n<!-- doc-test: compose-only -->\n```bash\n# a comment\necho a \\\n  b\n\n"
        "echo c  # trailing\n```\n\n   ```bash\n   echo d\n   ```\n"
        "<!-- doc-test: sometimes -->\nprose\n```python\nprint()\n```\n"
    )
    blocks, mistakes = read_blocks(doc, "sample.md")
    assert [(b.mode, [(c.line, c.text) for c in b.commands]) for b in blocks] == [
        ("compose-only", [(6, "echo a b"), (9, "echo c  # trailing")]),
        ("run", [(13, "echo d")]),
    ]
    assert len(mistakes) == 2 and "unknown doc-test mode 'sometimes'" in mistakes[0]


# --------------------------------------------------------------------------------------------
# The cluster story against a real (local) S3 endpoint
# --------------------------------------------------------------------------------------------

#: Local files standing in for the cluster example's S3 inputs (by key).
CLUSTER_INPUTS = {
    "inputs/portraits/alice.png": "manifests/media/portrait_a.png",
    "inputs/portraits/bob.png": "manifests/media/portrait_b.png",
    "inputs/drivers/hello.mp4": "manifests/media/driving.mp4",
    "inputs/drivers/nod.mp4": "manifests/social/media/nod.mp4",
    "inputs/voice/bob.wav": "manifests/media/speech.wav",
}


def test_the_cluster_story_validates_against_s3(moto_s3_server) -> None:
    """The README's cluster `job=validate` command, pointed at a local S3 server that holds the
    inputs of manifests/cluster/example.csv: the preset composes, every row reads from S3."""
    import boto3

    command = next(
        c
        for c in doc_commands()
        if c.doc == "README.md" and "job=validate" in c.text and "preset=cluster" in c.text
    )
    with open(REPO / "manifests/cluster/example.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    uris = {row[column] for row in rows for column in ("portrait", "driving_video", "audio")}
    uris.discard("")
    buckets = {uri[5:].split("/", 1)[0] for uri in uris}
    assert len(buckets) == 1, buckets
    (bucket,) = buckets
    assert {uri.split("/", 3)[3] for uri in uris} == set(CLUSTER_INPUTS)

    client = boto3.client("s3", endpoint_url=moto_s3_server.endpoint_url, region_name="us-east-1")
    existing = {entry["Name"] for entry in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    for key, local in CLUSTER_INPUTS.items():
        client.upload_file(str(REPO / local), bucket, key)

    words = shlex.split(command.text, comments=True)
    assert words[:2] == ["python", "run.py"]
    result = subprocess.run(
        [
            sys.executable,
            "run.py",
            *words[2:],
            f"storage.s3.endpoint_url={moto_s3_server.endpoint_url}",
        ],
        cwd=REPO,
        env=shell_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert f"{len(rows)} row(s) OK, 0 with problems" in " ".join(output.split())


# --------------------------------------------------------------------------------------------
# docs/architecture.md: the rooms table against the code's imports
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Room:
    name: str
    paths: tuple[str, ...]  # files, or folders ending in "/"
    allowed: frozenset[str]  # room names; "pipeline": every pipeline room; "*": anything


def room_name(path: str) -> str:
    """``pipeline/media/`` → ``media``, ``pipeline/_storage_s3.py`` → ``storage``, ``run.py`` → ``run``."""
    stem = path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".py")
    return "storage" if stem.startswith("_storage_") else stem


def rooms() -> list[Room]:
    text = (REPO / "docs" / "architecture.md").read_text()
    found = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        paths = tuple(re.findall(r"`([^`]+)`", cells[0]))
        allowed = cells[2]
        names = {"*"} if allowed == "everything" else set(re.findall(r"`([^`]+)`", allowed))
        found.append(Room(room_name(paths[0]), paths, frozenset(names)))
    return found


def python_files(room: Room) -> list[Path]:
    files: list[Path] = []
    for path in room.paths:
        target = REPO / path
        files += sorted(target.rglob("*.py")) if path.endswith("/") else [target]
    return [file for file in files if file.suffix == ".py"]


def imported_modules(file: Path) -> set[str]:
    """Every module a file imports (also inside functions), relative imports resolved."""
    package = ".".join(file.relative_to(REPO).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_every_module_is_in_a_room() -> None:
    covered = {file for room in rooms() for file in python_files(room)}
    covered.add(REPO / "pipeline" / "__init__.py")  # the (empty) package marker
    modules = [*REPO.glob("pipeline/**/*.py"), *REPO.glob("jobs/*.py"), REPO / "run.py"]
    missing = sorted(str(m.relative_to(REPO)) for m in modules if m not in covered)
    assert not missing, f"docs/architecture.md has no room for {missing}"


@pytest.mark.parametrize("room", rooms(), ids=lambda room: room.name)
def test_a_room_imports_only_what_the_table_allows(room: Room) -> None:
    if "*" in room.allowed:
        return
    by_module = {}
    for other in rooms():
        for file in python_files(other):
            parts = file.relative_to(REPO).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            by_module[module] = other.name
    pipeline_rooms = {name for module, name in by_module.items() if module.startswith("pipeline")}
    allowed = set(room.allowed) | {room.name}
    if "pipeline" in allowed:
        allowed |= pipeline_rooms
    for file in python_files(room):
        for module in imported_modules(file):
            owner = next(
                (
                    by_module[prefix]
                    for prefix in sorted(by_module, key=len, reverse=True)
                    if module == prefix or module.startswith(prefix + ".")
                ),
                None,
            )
            if owner is not None:
                assert owner in allowed, (
                    f"{file.relative_to(REPO)} imports {module} (room {owner!r}); "
                    f"docs/architecture.md allows {sorted(room.allowed)}"
                )


def test_only_the_cluster_imports_ray_and_only_the_s3_backend_boto3() -> None:
    for file in [*REPO.glob("pipeline/**/*.py"), *REPO.glob("jobs/*.py"), REPO / "run.py"]:
        top = {module.split(".")[0] for module in imported_modules(file)}
        name = str(file.relative_to(REPO))
        if "ray" in top:
            assert name.startswith("pipeline/cluster/"), name
        if top & {"boto3", "botocore"}:
            assert name == "pipeline/storage/_s3.py", name
