"""job=render: every manifest row → ``<output_root>/<job>/<row id>.mp4``, plus summary.json.

Steps: validate every row (all problems reported together, bad rows fail with their reason),
make sure the weights are there, start the Ray worker pool, hand rows out as workers free up,
show progress, write the summary. Exit code 0 when every row rendered, 1 when any failed,
2 when the job could not run at all.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from omegaconf import DictConfig

from pipeline.cluster import RenderPool, describe_workers
from pipeline.ledger import Ledger, content_hash
from pipeline.logs import CONSOLE
from pipeline.models import WeightsError, ensure_random_weights, missing_files
from pipeline.progress import (
    JobFinished,
    JobStarted,
    MultiReporter,
    RowFinished,
    RowResult,
    StatusFile,
    make_reporter,
    summary_table,
    write_summary_json,
)
from pipeline.report import write_report
from pipeline.storage import Storage, join
from pipeline.validate import validate_manifest
from pipeline.worker import RowOutcome, RowTask

from . import ConfigError
from ._common import config_tree, config_yaml, job_name, output_folder, require_manifest, typed

logger = logging.getLogger(__name__)


def run(cfg: DictConfig) -> int:
    settings = typed(cfg)
    manifest_uri = require_manifest(settings)
    name = job_name(settings)
    storage = Storage(settings.storage)
    out = output_folder(settings)
    CONSOLE.print(config_tree(cfg))
    storage.put(config_yaml(cfg), join(out, "config.yaml"))

    validation = validate_manifest(
        manifest_uri,
        storage,
        max_frames=settings.job.max_frames,
        allowed_input_roots=settings.storage.allowed_input_roots,
    )
    if validation.problems:
        from pipeline.manifest import ManifestError  # noqa: PLC0415

        report = ManifestError(validation.problems, uri=manifest_uri)
        CONSOLE.print(report.problems_table())
    if validation.structural:
        logger.error("the manifest %s cannot be used; nothing was rendered", manifest_uri)
        return 2
    _prepare_weights(settings)

    results: list[RowResult] = []
    for label, problems in validation.failed_rows().items():
        message = "; ".join(str(problem) for problem in problems)
        results.append(RowResult(label, "failed", 0, 0.0, 0.0, error=f"invalid input: {message}"))

    ledger = Ledger(storage, out)
    tasks, skipped = _plan(settings, storage, ledger, [media.row for media in validation.ready])
    results.extend(skipped)
    reporter = MultiReporter(
        [
            make_reporter(settings.job.progress, console=CONSOLE),
            StatusFile(
                join(out, "status.json"), write_bytes=lambda uri, data: storage.put(data, uri)
            ),
        ]
    )
    reporter.handle(
        JobStarted(name, total_rows=len(tasks) + len(results), skipped_rows=len(skipped))
    )
    for result in results:
        reporter.handle(
            RowFinished(
                result.row_id,
                result.status,
                frames=result.frames,
                error=result.error,
                output=result.output,
            )
        )
    started = time.monotonic()
    state = "finished"
    try:
        if tasks:
            results.extend(_render(settings, tasks, reporter))
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        reporter.handle(
            JobFinished(
                "finished" if state == "finished" else "interrupted", time.monotonic() - started
            )
        )
        reporter.close()
        document = write_summary_json(
            results, lambda data: storage.put(data, join(out, "summary.json")), job_name=name
        )
        CONSOLE.print(summary_table(results, title=f"{name}: {document['totals']}"))
    try:
        write_report(out, storage, summary=document)
    except Exception as err:  # noqa: BLE001 - the report is a convenience; never the job's result
        logger.warning("could not write the job report in %s: %s", out, err)
    failed = [r for r in results if r.status in ("failed", "quarantined")]
    logger.info("summary: %s", join(out, "summary.json"))
    return 1 if failed else 0


def _plan(
    settings, storage: Storage, ledger: Ledger, rows
) -> tuple[list[RowTask], list[RowResult]]:
    """Row tasks for rows still to render; results for rows already committed (skipped)."""
    settings_hash = content_hash(pixel_settings(settings))
    revision = model_revision(settings.model)
    tasks, skipped, resuming = [], [], 0
    for row in rows:
        fingerprint = {
            "inputs": {
                column: storage.fingerprint(uri) if uri else None
                for column, uri in (
                    ("portrait", row.portrait),
                    ("driving_video", row.driving_video),
                    ("audio", row.audio),
                )
            },
            "max_frames": row.max_frames if row.max_frames is not None else settings.job.max_frames,
            "seed": row.seed if row.seed is not None else settings.job.seed,
            "settings": settings_hash,
            "model": revision,
        }
        key = Ledger.row_key(row.output or row.id, fingerprint)
        state = ledger.row(key)
        if state.state == "committed" and ledger.verify_commit(state.commit):
            ledger.tidy(key, state.commit)  # leftovers of an attempt killed after the commit
            frames = int(state.commit.get("frames", 0))
            skipped.append(
                RowResult(
                    row.id,
                    "skipped",
                    frames,
                    0.0,
                    0.0,
                    output=state.commit["video"],
                    error=f"already rendered (committed {state.commit.get('committed_at', '?')})",
                )
            )
            continue
        resuming += state.state == "partial"
        conditioning = None
        if settings.model.cache_conditioning:
            conditioning = conditioning_uri(
                settings, fingerprint["inputs"]["driving_video"], revision
            )
        tasks.append(
            RowTask(
                row_id=row.id,
                portrait=row.portrait,
                driving_video=row.driving_video,
                audio=row.audio,
                job_uri=ledger.job_uri,
                row_key=key,
                max_frames=fingerprint["max_frames"],
                seed=fingerprint["seed"],
                meta={
                    "inputs": fingerprint["inputs"],
                    "settings_hash": settings_hash,
                    "model_revision": revision,
                },
                conditioning_uri=conditioning,
            )
        )
    if skipped:
        logger.info(
            "%d row(s) already rendered by an earlier run of this job: skipped", len(skipped)
        )
    if resuming:
        logger.info("%d row(s) resume from their last committed segment", resuming)
    return tasks, skipped


def conditioning_uri(settings, driving_fingerprint: str, revision: str) -> str:
    """Where a driving video's pose/motion cache lives: by its content and what the values depend on."""
    model = settings.model
    key = content_hash(
        {
            "driving_video": driving_fingerprint,
            "model": revision,
            "architecture": model.architecture,
            "dtype": model.dtype,
            "device": model.device,
            "resolution": model.resolution,
            "fit": settings.video.fit,
        },
        length=20,
    )
    return join(settings.storage.output_root, "_cache", "conditioning", f"{key}.bin")


def pixel_settings(settings) -> dict:
    """The settings that change a row's pixels or sound (a change re-renders the row)."""
    model, video = settings.model, settings.video
    return {
        "model": {
            k: getattr(model, k) for k in ("name", "architecture", "resolution", "dtype", "device")
        },
        "animator": asdict(model.animator),
        "video": {
            k: getattr(video, k)
            for k in (
                "fit",
                "codec",
                "crf",
                "preset",
                "pix_fmt",
                "audio",
                "audio_length",
                "audio_codec",
                "audio_bitrate",
            )
        },
    }


def model_revision(model) -> str:
    """What identifies the weights: hub revisions, or the random seed of random weights."""
    if model.random_init:
        return f"random-{model.architecture}-seed{model.random_seed}"
    revisions = ",".join(f"{r.repo_id}@{r.revision}" for r in model.hub)
    return revisions or f"local:{model.weights_dir}"


def _prepare_weights(settings) -> None:
    model = settings.model
    if model.random_init:
        ensure_random_weights(
            model.weights_dir, architecture=model.architecture, seed=model.random_seed
        )
        return
    if settings.cluster.address is None and missing_files(model.weights_dir):
        raise ConfigError(
            f"model weights are missing from {model.weights_dir}: run `python run.py job=fetch_weights` "
            "(or set model.weights_dir to the folder that holds them; model=tiny runs without downloads)"
        )


def _render(settings, tasks: list[RowTask], reporter) -> list[RowResult]:
    results: list[RowResult] = []

    def on_outcome(outcome: RowOutcome, attempts: int) -> None:
        status = outcome.status if outcome.status in ("done", "failed", "quarantined") else "failed"
        result = RowResult(
            outcome.row_id,
            status,
            outcome.frames,
            round(outcome.seconds, 2),
            round(outcome.fps, 2),
            error=outcome.error,
            output=outcome.output,
            attempts=max(1, attempts),
            worker=outcome.worker,
        )
        results.append(result)
        reporter.handle(
            RowFinished(
                outcome.row_id,
                status,
                frames=outcome.frames,
                seconds=outcome.seconds,
                error=outcome.error,
                output=outcome.output,
                attempts=max(1, attempts),
            )
        )

    with RenderPool(settings.cluster, settings.model, settings.video, settings.storage) as pool:
        try:
            describe_workers(pool)
        except Exception as err:  # noqa: BLE001 - a worker that cannot load the model stops the job
            cause = getattr(err, "cause", None) or err
            if isinstance(cause, WeightsError):
                raise ConfigError(str(cause)) from err
            raise ConfigError(
                f"render workers could not start: {str(cause).strip().splitlines()[-1]}"
            ) from err
        pool.run(tasks, reporter.handle, on_outcome)
    return results
