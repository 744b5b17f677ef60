"""The walk of one row from its CSV line to its committed mp4: which modules it crosses.

    python scripts/row_walk.py                      # this checkout
    python scripts/row_walk.py --tree /tmp/old      # another tree of the project (git archive)

One row (the example portrait and driving clip, 24 frames, tiny random model on the CPU) goes
through validation, the row plan and a `RowRenderer` in this process, with a profiler noting every
call from one module of ``pipeline/`` or ``jobs/`` into another. The driver's dispatch across Ray
(``jobs/render.py`` → ``split_rows.py`` → ``cluster/_pool.py`` → ``worker/_actor.py`` → the renderer)
cannot be traced in one process and is added as the calls the code makes. Printed: the modules in
the order the row first enters them, how many distinct calls between modules it makes, and which
go up a floor (a room's floor: 0 when it imports no other room, else one above the highest room
it imports; rooms are the top-level modules and packages of ``pipeline/``, and ``jobs/``).
docs/architecture.md quotes these counts. Takes a minute or two.
"""

from __future__ import annotations

import argparse
import ast
import functools
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

MEDIA = Path(__file__).resolve().parents[1] / "manifests" / "media"
DISPATCH = ("jobs/render.py", "pipeline/split_rows.py", "pipeline/cluster/_pool.py",
            "pipeline/worker/_actor.py", "pipeline/worker/_row.py")  # fmt: skip
OLD_DISPATCH = {"pipeline/cluster/_pool.py": "pipeline/cluster.py"}  # trees before the package


def room_of(module: str) -> str:
    """``pipeline/storage/_uri.py`` → ``storage``; ``pipeline/_storage_s3.py`` → ``storage``."""
    parts = module.split("/")
    if parts[0] == "jobs":
        return "jobs"
    name = parts[1].removesuffix(".py")
    return "storage" if name.startswith("_storage_") else name


def floors(tree: Path) -> dict[str, int]:
    """Each room's floor, from the imports in the code."""
    imports: dict[str, set[str]] = {}
    for file in [*tree.glob("pipeline/**/*.py"), *tree.glob("jobs/*.py")]:
        module = file.relative_to(tree).as_posix()
        package = ".".join(Path(module).with_suffix("").parts[:-1])
        found = imports.setdefault(room_of(module), set())
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for name in names:
                parts = name.split(".")
                if parts[0] == "jobs":
                    found.add("jobs")
                elif parts[0] == "pipeline" and len(parts) > 1:
                    found.add(room_of("pipeline/" + parts[1]))
    for room, found in imports.items():
        found.discard(room)
        found &= imports.keys()

    @functools.cache
    def floor(room: str, seen: frozenset[str] = frozenset()) -> int:
        below = [floor(r, seen | {room}) for r in imports[room] if r not in seen]
        return 1 + max(below) if below else 0

    return {room: floor(room) for room in imports}


def trace(tree: Path) -> tuple[list[str], dict[tuple[str, str], str], str]:
    """The modules one row enters (in order) and the calls between modules; the output URI."""
    sys.path.insert(0, str(tree))
    # an editable install maps `pipeline` to its own checkout: read the tree given instead
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f)]
    work = Path(tempfile.mkdtemp(prefix="row-walk-"))
    shutil.copy(MEDIA / "portrait_a.png", work / "portrait.png")
    shutil.copy(MEDIA / "driving.mp4", work / "driving.mp4")
    (work / "rows.csv").write_text("id,portrait,driving_video\nrow1,portrait.png,driving.mp4\n")

    import torch  # noqa: PLC0415 - after the path is set

    from pipeline.config import RenderConfig  # noqa: PLC0415
    from pipeline.ledger import Ledger  # noqa: PLC0415
    from pipeline.models import save_random_weights  # noqa: PLC0415
    from pipeline.storage import Storage  # noqa: PLC0415
    from pipeline.validate import validate_manifest  # noqa: PLC0415
    from pipeline.worker import RowRenderer, build_animator  # noqa: PLC0415

    try:
        from pipeline.row_plan import RowPlanner  # noqa: PLC0415
    except ImportError:  # before issue 19 the plan lived in the render job
        from jobs.render import RowPlanner  # noqa: PLC0415

    torch.set_num_threads(1)
    settings = RenderConfig()
    model = settings.model
    model.architecture, model.dtype, model.device, model.resolution = "tiny", "fp32", "cpu", 64
    model.weights_dir = str(save_random_weights(work / "weights", architecture="tiny", seed=0))
    settings.storage.output_root = str(work / "out")
    settings.job.max_frames, settings.video.preset = 24, "ultrafast"
    storage = Storage(settings.storage)
    animator = build_animator(model)
    (work / "scratch").mkdir()

    roots = (str(tree / "pipeline") + os.sep, str(tree / "jobs") + os.sep)
    order: list[str] = []
    calls: dict[tuple[str, str], str] = {}
    lock = threading.Lock()

    def module(frame) -> str | None:  # noqa: ANN001
        name = frame.f_code.co_filename
        return os.path.relpath(name, tree) if name.startswith(roots) else None

    def profile(frame, event, arg) -> None:  # noqa: ANN001, ARG001
        if event != "call" or (callee := module(frame)) is None:
            return
        back, caller = frame.f_back, None
        while back is not None and caller is None:
            caller, back = module(back), back.f_back
        with lock:
            if callee not in order:
                order.append(callee)
            if caller is not None and caller != callee:
                calls.setdefault((caller, callee), frame.f_code.co_name)

    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        planner = RowPlanner(settings, storage, Ledger(storage, str(work / "out" / "rows")), "walk")
        validation = validate_manifest(
            str(work / "rows.csv"), storage, max_frames=settings.job.max_frames,
            framing=settings.framing, settled=planner.settled,
        )  # fmt: skip
        task = planner.task(validation.ready[0])
        renderer = RowRenderer(animator, storage, settings.video, work / "scratch")
        result = renderer.render(task)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    if result.status != "done":
        raise SystemExit(f"the row did not render: {result.error}")
    return order, calls, str(result.output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    order, calls, output = trace(tree)
    # the dispatch across Ray: the driver's modules, and the calls between them
    candidates = [m if (tree / m).exists() else OLD_DISPATCH.get(m, m) for m in DISPATCH]
    present = [m for m in candidates if (tree / m).exists()]
    for module in present:
        if module not in order:
            order.insert(order.index("pipeline/worker/_row.py"), module)
    for caller, callee in zip(present, present[1:]):
        calls.setdefault((caller, callee), "(dispatch)")
    for callee in ("pipeline/validate.py", "pipeline/row_plan.py"):
        if (tree / callee).exists():
            calls.setdefault(("jobs/render.py", callee), "(driver)")
    floor = floors(tree)
    up = {(a, b): f for (a, b), f in calls.items() if floor[room_of(b)] > floor[room_of(a)]}
    rooms = list(dict.fromkeys(room_of(m) for m in order))
    print(f"committed: {output}\n")
    for number, module in enumerate(order, 1):
        print(f"{number:3d}  {module}  (floor {floor[room_of(module)]})")
    print(f"\n{len(order)} modules in {len(rooms)} rooms: {', '.join(rooms)}")
    print(f"{len(calls)} distinct calls between modules, {len(up)} of them up a floor:")
    for (caller, callee), name in up.items():
        print(f"  {caller} -> {callee} ({name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
