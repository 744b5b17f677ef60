"""job=render: every manifest row → ``<output_root>/<job>/<row id>.mp4``, plus summary.json.

Steps: validate every row (all problems reported together, bad rows fail with their reason),
make sure the weights are there, start the Ray worker pool, hand rows out as workers free up,
show progress, write the summary.

Exit codes: 0 every row rendered (or was already), 1 some row failed or was quarantined, 2 the job
could not run at all, 3 the rows ran but summary.json could not be written (stderr says why),
128 + N when stopped by signal N: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.

SIGINT and SIGTERM drain the job (`StopSignals`): no new row starts, the rows being rendered stop
at once (their committed segments stay; a rerun of the same job resumes them), every unfinished
row is "interrupted" in the summary, and the summary, status.json and the report are written. A
second signal stops at once, a third kills the process.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

import psutil
from omegaconf import DictConfig

from pipeline.cluster import INTERRUPTED_RENDERING, RenderPool, describe_workers
from pipeline.job_story import JobHistory, iso_time, provenance, run_entry, run_id
from pipeline.ledger import Ledger
from pipeline.logs import CONSOLE, show
from pipeline.models import WeightsError, missing_files
from pipeline.progress import (
    JobFinished,
    JobStarted,
    MultiReporter,
    RowFinished,
    StatusFile,
    ThroughputSampler,
    WorkerRoster,
    make_reporter,
    startup_times,
    summary_table,
    totals_of,
    write_summary_json,
)
from pipeline.report import write_report
from pipeline.row_plan import RowPlanner
from pipeline.row_result import RowResult
from pipeline.split_rows import SplitRows
from pipeline.storage import Storage, StorageError, join
from pipeline.validate import validate_manifest
from pipeline.worker import RowTask

from . import ConfigError
from ._common import (
    announce_config,
    config_choices,
    config_yaml,
    job_name,
    output_folder,
    require_manifest,
    typed,
)

logger = logging.getLogger(__name__)


EXIT_FAILED_ROWS = 1
EXIT_UNUSABLE = 2
EXIT_NO_SUMMARY = 3


class JobInterrupted(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: the job stops at once, wherever the driver is."""


class StopSignals:
    """SIGINT and SIGTERM ask the job to stop.

    The first signal only records the request (`requested`; the render loop drains the job), the
    second raises `JobInterrupted` in the driver's main thread, and after that the default action
    applies (a third signal kills the process). A context manager: the handlers are installed on
    entry and the previous ones restored on exit; only the main thread can install them.
    """

    signals = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal received
        self._received = 0
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether the job was asked to stop."""
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        """128 + the signal's number (the shell's convention): 130 for SIGINT, 143 for SIGTERM."""
        return 128 + int(self.signum or 0)

    def request(self, signum: int) -> None:
        """Record a stop request as if ``signum`` had been received (once)."""
        if self.signum is None:
            self.signum = signum

    def install(self) -> None:
        """(Re)install the handlers; call again after code that replaces them (``ray.init``
        installs its own SIGTERM handler)."""
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not the main thread: SIGINT/SIGTERM keep their current handlers")
            return
        for signum in self.signals:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._received += 1
        name = signal.Signals(signum).name
        if self._received == 1:
            self.request(signum)
            logger.warning(
                "%s received: stopping. No new row starts; rows being rendered stop now and keep "
                "their committed segments (rerun the same job to resume them); the summary is "
                "written next. Send %s again to stop at once.",
                name,
                name,
            )
            return
        for each in self.signals:  # a third signal gets the default action: the process dies
            signal.signal(each, signal.SIG_DFL)
        logger.error("second stop signal (%s): stopping at once", name)
        raise JobInterrupted(name)


def run(cfg: DictConfig) -> int:
    """Render every row of the manifest ``cfg.manifest``; return the exit code (module docstring)."""
    settings = typed(cfg)
    manifest_uri = require_manifest(settings)
    announce_config(cfg, settings)
    with StopSignals() as stop:
        try:
            return _run(cfg, settings, manifest_uri, stop)
        except JobInterrupted:
            stop.request(signal.SIGINT)
            logger.error(
                "stopped at once: the summary of this run may be missing; committed rows and "
                "segments are kept (rerun the same job to resume)"
            )
            return stop.exit_code


@dataclass
class _JobClock:
    """When the job's process started (Unix time) and when its workers were ready to render."""

    started_at: float = field(default_factory=lambda: psutil.Process().create_time())
    ray_ready_at: float | None = None  # Ray started (or joined) and the worker actors created
    workers_ready_at: float | None = None
    workers: list[dict[str, Any]] = field(default_factory=list)  # what each worker reported


def _run(cfg: DictConfig, settings, manifest_uri: str, stop: StopSignals) -> int:
    clock = _JobClock()
    this_run = run_id(clock.started_at)
    name, out, storage = job_name(settings), output_folder(settings), Storage(settings.storage)
    try:
        storage.put(config_yaml(cfg), join(out, "config.yaml"))
    except StorageError as err:
        logger.error("cannot write to the output folder %s: %s; nothing was rendered", out, err)
        return EXIT_UNUSABLE

    # 1. the rows: rows an earlier run committed are settled without opening their media
    history = JobHistory.load(storage, out)
    planner = RowPlanner(settings, storage, Ledger(storage, out), this_run)
    validation = _validate(settings, storage, manifest_uri, planner)
    if validation is None:
        return EXIT_UNUSABLE

    # 2. their verdicts so far: invalid rows failed, committed rows skipped, the rest to render
    planned = _plan(validation, planner, history, name)
    if planned is None:
        return EXIT_UNUSABLE
    results, tasks, frames = planned
    if tasks:  # a rerun with nothing to render needs no weights, no Ray
        _prepare_weights(settings)

    # 3. render (long rows split over workers), reporting progress to the console and status.json
    throughput, roster = ThroughputSampler(clock.started_at), WorkerRoster()
    reporter = _reporter(settings, storage, out, [throughput, roster])
    _announce(reporter, name, len(tasks), results)
    started = time.monotonic()
    if tasks and not stop.requested:
        split = SplitRows(settings.cluster, frames, planner.ledger)
        results.extend(_render(settings, tasks, reporter, stop, planner, clock, split))
    results.extend(_without_verdict(tasks, results, reporter, planner))
    state = "interrupted" if stop.requested else "finished"
    reporter.handle(JobFinished(state, time.monotonic() - started))
    reporter.close()

    # 4. the summary (this run's counts beside the job's outputs as they stand) and the report
    run = run_entry(this_run, clock.started_at, time.time(), state, totals_of(results))
    sections = {
        "run": run, "runs": history.runs_with(run),
        "provenance": provenance(settings, planner.revision, config_choices()),
        "throughput": throughput.samples, "workers": roster.entries(),
    }  # fmt: skip
    startup = startup_times(
        results, clock.started_at, ray_ready_at=clock.ray_ready_at,
        workers_ready_at=clock.workers_ready_at,
    )  # fmt: skip
    document = _write_summary(
        results, storage, out, name, {**startup, "workers": clock.workers}, sections
    )
    if document is not None:
        _write_report(out, storage, document)
    return _exit_code(results, stop, summary_written=document is not None)


def _validate(settings, storage: Storage, manifest_uri: str, planner: RowPlanner):  # noqa: ANN001, ANN202
    """Every row checked (problems printed together); None when the manifest is unusable."""
    validation = validate_manifest(
        manifest_uri, storage, max_frames=settings.job.max_frames,
        allowed_input_roots=settings.storage.allowed_input_roots, framing=settings.framing,
        strict=settings.job.strict_manifest, settled=planner.settled,
    )  # fmt: skip
    if validation.problems:
        from pipeline.manifest import ManifestError  # noqa: PLC0415

        CONSOLE.print(ManifestError(validation.problems, uri=manifest_uri).problems_table())
    if validation.structural:
        logger.error("the manifest %s cannot be used; nothing was rendered", manifest_uri)
        return None
    return validation


def _plan(
    validation, planner: RowPlanner, history: JobHistory, name: str
) -> tuple[list[RowResult], list[RowTask], dict[str, int]] | None:  # noqa: ANN001
    """The results known before rendering (invalid rows, committed rows), the tasks of the rest
    and each one's frame count; None when storage cannot be read."""
    results = _invalid_rows(validation)
    try:
        results += [planner.skipped(row, history) for row in validation.settled]
        tasks = [planner.task(media) for media in validation.ready]
    except StorageError as err:
        logger.error("cannot read the inputs or earlier results of job %s: %s", name, err)
        return None
    planner.log_plan()
    return results, tasks, {media.row.id: media.frames for media in validation.ready}


def _reporter(settings, storage: Storage, out: str, extra: list[Any]) -> MultiReporter:  # noqa: ANN001
    """The console's progress, status.json, and the ``extra`` listeners."""
    status = StatusFile(
        join(out, "status.json"), write_bytes=lambda uri, data: storage.put(data, uri)
    )
    return MultiReporter([make_reporter(settings.job.progress, console=CONSOLE), status, *extra])


def _announce(reporter: MultiReporter, name: str, to_render: int, results: list[RowResult]) -> None:
    """The job's start, and the verdicts it has before rendering (skipped rows counted once)."""
    skipped = sum(result.status == "skipped" for result in results)
    reporter.handle(JobStarted(name, total_rows=to_render + len(results), skipped_rows=skipped))
    for result in results:
        if result.status != "skipped":
            reporter.handle(RowFinished(result=result))


def _write_report(out: str, storage: Storage, document: dict[str, Any]) -> None:
    try:
        show(f"report: {write_report(out, storage, summary=document)}", soft_wrap=True)
    except Exception as err:  # noqa: BLE001 - the report is a convenience; never the job's result
        logger.warning("could not write the job report in %s: %s", out, err)


def _invalid_rows(validation) -> list[RowResult]:
    """A failed result per row validation rejected, under the row's id."""
    results = []
    for label, problems in validation.failed_rows().items():
        message = "; ".join(str(problem) for problem in problems)
        results.append(RowResult(label, "failed", error=f"invalid input: {message}"))
    return results


def _without_verdict(
    tasks: list[RowTask], results: list[RowResult], reporter: MultiReporter, planner: RowPlanner
) -> list[RowResult]:
    """An "interrupted" result for every row the render loop gave no verdict (the job stopped
    before it got there, or was stopped at once)."""
    known = {result.row_id for result in results}
    missing = []
    error = "job interrupted before this row had a result; rerun the same job to render it"
    for task in tasks:
        if task.row_id in known:
            continue
        result = RowResult(
            task.row_id, "interrupted", error=error, **planner.described(task.row_id)
        )
        missing.append(result)
        reporter.handle(RowFinished(result=result))
    return missing


def _write_summary(
    results: list[RowResult],
    storage: Storage,
    out: str,
    name: str,
    startup: dict[str, Any],
    sections: dict[str, Any],
) -> dict[str, Any] | None:
    """Print the summary table and write summary.json; None (and an error on stderr) when it
    cannot be written."""
    data: list[bytes] = []
    document = write_summary_json(
        results, data.append, job_name=name, startup=startup, sections=sections
    )
    if startup["first_commit_seconds"] is not None:
        logger.info(
            "first frame out %.1f s and first segment committed %.1f s after the job started "
            "(workers ready after %.1f s)",
            startup["first_frame_seconds"],
            startup["first_commit_seconds"],
            startup["workers_ready_seconds"] or 0.0,
        )
    show(summary_table(results, title=name))
    uri = join(out, "summary.json")
    try:
        storage.put(data[0], uri)
    except StorageError as err:
        logger.error(
            "could not write the job summary %s: %s. The table above is this run's only record; "
            "rows committed so far stay committed (a rerun of the same job skips them)",
            uri,
            err,
        )
        return None
    show(f"summary: {uri}", soft_wrap=True)
    return document


def _exit_code(results: list[RowResult], stop: StopSignals, *, summary_written: bool) -> int:
    if stop.requested:
        return stop.exit_code
    if not summary_written:
        return EXIT_NO_SUMMARY
    failed = any(result.status in ("failed", "quarantined") for result in results)
    return EXIT_FAILED_ROWS if failed else 0


def _prepare_weights(settings) -> None:
    model = settings.model
    if model.random_init:
        if missing_files(model.weights_dir):  # (the folder's check needs no deep-learning import)
            from pipeline.models import ensure_random_weights  # noqa: PLC0415

            ensure_random_weights(
                model.weights_dir, architecture=model.architecture, seed=model.random_seed
            )
        return
    if settings.cluster.address is None and missing_files(model.weights_dir):
        raise ConfigError(
            f"model weights are missing from {model.weights_dir}: run `python run.py job=fetch_weights` "
            "(or set model.weights_dir to the folder that holds them; model=tiny runs without downloads)"
        )


def _render(
    settings,
    tasks: list[RowTask],
    reporter,
    stop: StopSignals,
    planner: RowPlanner,
    clock: _JobClock,
    split: SplitRows,
) -> list[RowResult]:
    """Render ``tasks`` on a worker pool (long rows cut into parts by ``split``); the results
    of the rows that got a verdict.

    A stop request drains the pool (see `RenderPool.run`); a second signal (`JobInterrupted`)
    leaves it at once. Either way the pool is closed: its workers killed, the embedded Ray shut
    down.
    """
    results: list[RowResult] = []
    by_id = {task.row_id: task for task in tasks}

    def on_outcome(task_result: RowResult, task_attempts: int) -> None:
        merged = split.outcome(task_result, task_attempts)
        if merged is None:  # a part of a row whose other parts are still out
            return
        worker_result, attempts = merged
        result = _completed(worker_result, attempts, planner, by_id[worker_result.row_id])
        results.append(result)
        reporter.handle(RowFinished(result=result))

    try:
        with RenderPool(settings.cluster, settings.model, settings.video, settings.storage) as pool:
            stop.install()  # ray.init replaced the SIGTERM handler
            clock.ray_ready_at = time.time()
            clock.workers = _start_workers(pool, lambda: stop.requested)
            clock.workers_ready_at = time.time()
            slots = sum(int(worker.get("streams") or 1) for worker in clock.workers)
            pool.run(
                split.tasks(tasks, slots),
                lambda event: _show(split.event(event), reporter),
                on_outcome,
                should_stop=lambda: stop.requested,
            )
            if not stop.requested:  # their GPU time in and between calls, for the summary
                clock.workers = pool.describe() or clock.workers
    except JobInterrupted:
        logger.warning("stopped at once; the workers were killed")
    except SystemExit as err:  # ray.init's own SIGTERM handler, active while Ray starts
        if err.code != signal.SIGTERM:
            raise
        stop.request(signal.SIGTERM)
    return results


def _completed(result: RowResult, attempts: int, planner: RowPlanner, task: RowTask) -> RowResult:
    """A worker's (or the pool's) result as the summary keeps it: a status the summary knows,
    its attempts, times rounded, an interruption's reason, who rendered it, the row's inputs
    and extra columns."""
    known = ("done", "failed", "quarantined", "interrupted")
    status = result.status if result.status in known else "failed"
    error = result.error
    if status == "interrupted":
        error = _interrupted_reason(result.error or "", planner.ledger, task)
    return replace(
        result, status=status, error=error, attempts=max(1, attempts),
        seconds=round(result.seconds, 2), fps=round(result.fps, 2),
        started_at=round(result.started_at or 0.0, 3) or None,
        rendered=_rendered_now(result, planner.run) if status == "done" else None,
        **planner.described(result.row_id),
    )  # fmt: skip


def _show(event: Any, reporter) -> None:  # noqa: ANN001
    if event is not None:
        reporter.handle(event)


def _rendered_now(result: RowResult, run: str) -> dict[str, Any]:
    """Who rendered a row done in this run (the summary's ``rendered``, as later runs keep it)."""
    return {
        "run": run,
        "at": iso_time(result.timeline.finished_at if result.timeline else time.time()),
        "frames": result.frames,
        "seconds": round(result.seconds, 2),
        "fps": round(result.fps, 2),
        "worker": result.worker,
        "started_at": round(result.started_at or 0.0, 3) or None,
    }


def _start_workers(pool: RenderPool, should_stop: Callable[[], bool]) -> list[dict[str, Any]]:
    """Wait for the workers to load the model and return what each says of itself (streams,
    seconds to load and optimize); a worker that cannot stops the job (`ConfigError`)."""
    try:
        return describe_workers(pool, should_stop=should_stop)
    except Exception as err:  # noqa: BLE001 - a worker that cannot load the model stops the job
        cause = getattr(err, "cause", None) or err
        if isinstance(cause, WeightsError):
            raise ConfigError(str(cause)) from err
        raise ConfigError(
            f"render workers could not start: {str(cause).strip().splitlines()[-1]}"
        ) from err


def _interrupted_reason(error: str, ledger: Ledger, task: RowTask) -> str:
    """The cluster's reason plus what is kept of the row and how to go on."""
    if error != INTERRUPTED_RENDERING:
        return f"{error}; rerun the same job to render it"
    try:
        record = ledger.row(task.row_key)
    except StorageError as err:
        logger.debug("could not read the ledger of row %s: %s", task.row_id, err)
        return f"{error}; rerun the same job to resume it from its last committed segment"
    if not record.segments:
        return f"{error}, before its first segment was committed; rerun the same job to render it"
    return (
        f"{error}; {record.frames_committed} frames in {len(record.segments)} committed "
        f"segment(s) are kept: rerun the same job to resume it from frame {record.frames_committed}"
    )
