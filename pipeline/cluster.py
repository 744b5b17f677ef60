"""Ray: a pool of render workers (one per GPU, or CPU workers) fed rows dynamically.

* Embedded local Ray by default, bound to 127.0.0.1; ``cluster.address=auto`` or
  ``ray://host:port`` joins an existing cluster instead.
* One :class:`~pipeline.worker.RenderWorker` actor per GPU; the model loads once per actor.
* The least busy worker with room takes the next row (no static partitioning): each holds its
  stream slots' rows plus ``cluster.rows_ahead`` more that it prepares meanwhile (default: as
  many as its slots), so a slot freed by a finished row is taken at the next batched call.
  Results stream back as rows finish, and progress events arrive through a Ray queue.
* Failure semantics, set on purpose: a worker process that dies is restarted by Ray
  (``max_restarts``) and its row goes back to the queue; a row that has killed its worker
  ``poison_after`` times is quarantined instead of looping; a row failure marked retryable
  (transient storage errors) is retried up to ``row_retries`` times; other failures are final.
* Stopping (``should_stop``, set by SIGINT/SIGTERM on the driver): no row starts any more, rows
  still queued and rows being rendered end "interrupted", and closing the pool kills the workers.
  That loses nothing committed: segments and rows are committed with markers written last, so a
  killed worker leaves at most an unmarked upload that a rerun ignores, and the rerun resumes
  each interrupted row from its last committed segment.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .config import ClusterConfig, ModelConfig, StorageConfig, VideoConfig
from .worker import RenderWorker, RowOutcome, RowTask, max_streams

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
INTERRUPTED_RENDERING = "job interrupted while this row was rendering"
INTERRUPTED_WAITING = "job interrupted before this row started"


@dataclass
class _Slot:
    """A worker actor and what the driver knows about it."""

    name: str
    actor: Any
    deaths: int = 0
    alive: bool = True
    ready_at: float = 0.0  # monotonic time before which the actor is restarting
    inflight: int = 0  # rows it holds now (preparing, streaming or finishing)
    isolated: bool = False  # rendering a row that must run alone
    capacity: int = 1  # rows it may hold: its stream slots plus cluster.rows_ahead


@dataclass
class _Rows:
    """The rows of one :meth:`RenderPool.run` and where their verdicts go."""

    pending: deque[RowTask]
    on_event: Callable[[Any], None]
    on_outcome: Callable[[RowOutcome, int], None]
    inflight: dict[Any, tuple[_Slot, RowTask]] = field(default_factory=dict)  # call -> row
    crashes: dict[str, int] = field(default_factory=dict)  # row id -> deaths of its workers


def start_ray(cfg: ClusterConfig) -> bool:
    """Start or join Ray; returns True when this process started it (and must shut it down)."""
    import ray  # noqa: PLC0415 - Ray is only needed by jobs that render

    if ray.is_initialized():
        return False
    if cfg.address is None:
        # keep every Ray server on loopback: an embedded cluster must not listen on the network
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray turns token authentication on for a local cluster (good) and says so with a warning
        # that lands in the middle of the progress display; the notice is all this silences
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
        ray.init(
            address="local",
            num_cpus=cfg.num_cpus,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            log_to_driver=cfg.log_to_driver,
            logging_level=logging.WARNING,
        )
        logger.info(
            "started embedded Ray on %s (%s CPUs)", LOOPBACK, ray.cluster_resources().get("CPU")
        )
        return True
    refused = _unreachable(cfg.address)
    if refused is not None:  # said at once, instead of after Ray's own 20-60 s of retries
        raise ClusterJoinError(cfg.address, refused)
    try:
        ray.init(
            address=cfg.address, log_to_driver=cfg.log_to_driver, logging_level=logging.WARNING
        )
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ClusterJoinError(cfg.address, _join_failure(err)) from err
    logger.info("joined Ray cluster at %s: %s", cfg.address, ray.cluster_resources())
    return False


class ClusterJoinError(ConnectionError):
    """The Ray cluster at ``cluster.address`` could not be joined; the message says why and what
    to do (the job stops with exit code 2, like a configuration mistake)."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(
            f"could not join the Ray cluster at cluster.address={address}: {reason}. {JOIN_ADVICE}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.address, self.reason))


JOIN_ADVICE = (
    "To join it: run the job on a node of the cluster with cluster.address=auto; or give this "
    "process the cluster's token: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<token> (or "
    "RAY_AUTH_TOKEN_PATH=<file>; default ~/.ray/auth_token; `ray get-auth-token` on the head "
    "node prints it); or use the Ray Client address cluster.address=ray://<head>:10001"
)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port`` or ``ray://host:port``; None for ``auto`` and the like."""
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def _unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why nothing can be reached at `address` (connection refused, no such host, no answer),
    or None when something accepts connections there (or the address names no host:port)."""
    target = _host_port(address)
    if target is None:
        return None
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError as err:
        what = err.strerror or type(err).__name__
        if isinstance(err, TimeoutError):
            what = f"no answer within {timeout_s:g} s"
        return (
            f"nothing answers at {target[0]}:{target[1]} ({what.lower()}); check the address "
            "(a head's port is 6379 unless `ray start --port` chose another; `ray status` on the "
            "head shows it) and that the cluster is up"
        )
    return None


def _join_failure(err: BaseException) -> str:
    """What `ray.init` 's failure means, from the error and the errors it chains."""
    chain, seen = [], set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    text = "\n".join(chain)
    if "InvalidAuthToken" in text or "Authentication" in text or "Unauthenticated" in text:
        return (
            "the cluster refused this driver: it uses token authentication (Ray's default for "
            "`ray start` clusters) and this process sent no token, or a wrong one"
        )
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else 'no reason given'}"


def worker_count(cfg: ClusterConfig, resources: dict[str, float]) -> tuple[int, bool]:
    """(number of workers, whether they use GPUs) for the cluster's resources."""
    gpus = resources.get("GPU", 0.0)
    use_gpus = gpus >= cfg.gpus_per_worker > 0
    if cfg.num_workers is not None:
        if cfg.num_workers < 1:
            raise ValueError(
                f"cluster.num_workers={cfg.num_workers} must be at least 1 (or null for automatic)"
            )
        return cfg.num_workers, use_gpus
    if use_gpus:
        return int(gpus // cfg.gpus_per_worker), True
    return max(1, cfg.cpu_workers), False


class RenderPool:
    """The worker actors of one job. Use as a context manager around :meth:`run`.

    Args:
        cluster / model / video / storage: the job's config sections.
    """

    poll_seconds = 0.2
    restart_wait_seconds = 1.0  # after a worker failed, before a row is sent to it again

    def __init__(
        self, cluster: ClusterConfig, model: ModelConfig, video: VideoConfig, storage: StorageConfig
    ):
        self.cfg = cluster
        self.model, self.video, self.storage = model, video, storage
        self._owns_ray = False
        self.slots: list[_Slot] = []
        self.events: Any = None
        self._started: set[tuple[str, int]] = set()  # (row, attempt) a worker reported starting

    def __enter__(self) -> RenderPool:
        try:
            return self._start()
        except BaseException:  # a failed or interrupted start must not leave Ray running
            self.__exit__()
            raise

    def _start(self) -> RenderPool:
        import ray  # noqa: PLC0415
        from ray.util.queue import Queue  # noqa: PLC0415

        self._owns_ray = start_ray(self.cfg)
        count, use_gpus = worker_count(self.cfg, ray.cluster_resources())
        self.events = Queue(maxsize=100_000, actor_options={"num_cpus": 0})
        remote = ray.remote(RenderWorker)
        # until a worker says how many stream slots it has (auto: by its GPU's memory)
        capacity = self.capacity(max_streams(self.model.streams_per_worker))
        options: dict[str, Any] = {
            "num_cpus": self.cfg.cpus_per_worker,
            "max_concurrency": capacity + 2,  # its rows, and calls to describe() beside them
            "max_restarts": self.cfg.max_restarts,
            "max_task_retries": 0,  # the driver decides about re-running rows (resume, poison rows)
        }
        if use_gpus:
            options["num_gpus"] = self.cfg.gpus_per_worker
        threads = max(1, int(self.cfg.cpus_per_worker)) if not use_gpus else None
        for i in range(count):
            name = f"{'gpu' if use_gpus else 'cpu'}-worker-{i}"
            actor = remote.options(**options).remote(
                self.model, self.video, self.storage, name=name, cpu_threads=threads
            )
            self.slots.append(_Slot(name, actor, capacity=capacity))
        logger.info("%d %s worker(s) loading the model", count, "GPU" if use_gpus else "CPU")
        return self

    def __exit__(self, *exc: object) -> None:
        import ray  # noqa: PLC0415

        if not ray.is_initialized():
            return
        for slot in self.slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - the actor may already be gone
                pass
        if self.events is not None:
            try:
                ray.kill(self.events.actor)
            except Exception:  # noqa: BLE001
                pass
        if self._owns_ray:
            ray.shutdown()

    def run(
        self,
        tasks: Iterable[RowTask],
        on_event: Callable[[Any], None],
        on_outcome: Callable[[RowOutcome, int], None],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Render ``tasks`` on the pool until all have a final outcome.

        Args:
            tasks: rows to render (each submitted once a worker is free).
            on_event: receives worker progress events and retry notices, in arrival order.
            on_outcome: receives each row's final :class:`RowOutcome` and its attempt count.
            should_stop: polled between results (about every ``poll_seconds``); when it returns
                True no new row starts, every row without a verdict yet ends "interrupted"
                (see `_stop`) and this method returns; the workers are killed when the pool closes.
        """
        import ray  # noqa: PLC0415

        rows = _Rows(deque(tasks), on_event, on_outcome)
        while rows.pending or rows.inflight:
            # 1. A stop request: every row without a verdict gets its last one; nothing starts.
            if should_stop():
                self._stop(rows.pending, rows.inflight, on_outcome)
                break
            # 2. Pending rows to the workers with room (least busy first).
            self._dispatch(rows.pending, rows.inflight)
            # 3. No row out: a worker is restarting (its rows wait for it), or none is left.
            if not rows.inflight:
                if rows.pending and any(slot.alive for slot in self.slots):
                    time.sleep(self.poll_seconds)
                    continue
                self._no_worker_left(rows)
                break
            # 4. The next finished render call, and the progress that arrived meanwhile.
            ready, _ = ray.wait(list(rows.inflight), num_returns=1, timeout=self.poll_seconds)
            self._drain_events(on_event)
            # 5. Each finished row's verdict: done, failed, retried, waiting or quarantined.
            for ref in ready:
                self._settle(ref, rows)
        self._drain_events(on_event)

    def _settle(self, ref: Any, rows: _Rows) -> None:
        """What a finished render call means for its row: a final outcome, or the row back in
        the queue (its worker died or restarted; a retryable failure with retries left)."""
        import ray  # noqa: PLC0415
        from ray.exceptions import RayActorError, RayTaskError  # noqa: PLC0415

        from .progress import RowRetrying  # noqa: PLC0415

        slot, task = rows.inflight.pop(ref)
        slot.inflight -= 1
        slot.isolated = slot.isolated and not task.isolate
        try:
            outcome: RowOutcome = ray.get(ref)
        except RayActorError as err:  # the worker process died, or is restarting after a death
            self._worker_died(slot, task, err, rows)
            return
        except RayTaskError as err:  # render() itself should never raise; treat as a bug
            outcome = RowOutcome(task.row_id, "failed", error=f"internal error: {_first_line(err)}")
        if (
            outcome.status == "failed"
            and outcome.retryable
            and task.attempt <= self.cfg.row_retries
        ):
            retry = replace(task, attempt=task.attempt + 1)
            rows.on_event(
                RowRetrying(task.row_id, retry.attempt, outcome.error or "transient error")
            )
            rows.pending.append(retry)
            return
        rows.on_outcome(outcome, task.attempt)

    def _worker_died(self, slot: _Slot, task: RowTask, err: Exception, rows: _Rows) -> None:
        """A render call ended with its worker's death (or restart). Only a row that had started
        there counts as having killed it (one sent during the restart waits); a row that killed
        its worker ``poison_after`` times is quarantined, else retried alone on its worker, so a
        poison row cannot take innocent rows down twice."""
        from .progress import RowRetrying  # noqa: PLC0415

        started = (task.row_id, task.attempt) in self._started
        self._worker_failed(slot, err, started=started)
        if not started:
            logger.debug("row %s waits: %s", task.row_id, _first_line(err))
            rows.pending.appendleft(task)
            return
        crashes = rows.crashes[task.row_id] = rows.crashes.get(task.row_id, 0) + 1
        logger.warning(
            "%s died while rendering row %s: %s", slot.name, task.row_id, _first_line(err)
        )
        if crashes >= self.cfg.poison_after:
            error = (
                f"quarantined: this row killed its worker {crashes} times "
                f"(last: {_first_line(err)}); it is skipped so the other rows can finish"
            )
            rows.on_outcome(RowOutcome(task.row_id, "quarantined", error=error), task.attempt)
            return
        retry = replace(task, attempt=task.attempt + 1, isolate=slot.capacity > 1)
        rows.on_event(RowRetrying(task.row_id, retry.attempt, f"worker died: {_first_line(err)}"))
        rows.pending.appendleft(retry)

    def _no_worker_left(self, rows: _Rows) -> None:
        """Every worker died more often than Ray restarts it: the rows still waiting fail."""
        error = (
            "no render worker left alive: every worker died more often than "
            f"cluster.max_restarts={self.cfg.max_restarts} allows (see the warnings "
            "above); rerun the job to render this row"
        )
        for task in rows.pending:
            rows.on_outcome(RowOutcome(task.row_id, "failed", error=error), task.attempt)
        rows.pending.clear()

    def capacity(self, streams: int) -> int:
        """Rows a worker with ``streams`` stream slots holds at once: those streaming and those
        prepared ahead (``cluster.rows_ahead``; null: as many as its slots)."""
        ahead = self.cfg.rows_ahead
        return streams + (streams if ahead is None else ahead)

    def describe(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """What each live worker says of itself now (`RenderWorker.describe`: its stream slots,
        start-up seconds, GPU time in and between calls); a worker that does not answer is left
        out."""
        import ray  # noqa: PLC0415

        found = []
        for slot in self.slots:
            if not slot.alive:
                continue
            try:
                found.append(ray.get(slot.actor.describe.remote(), timeout=timeout_s))
            except Exception as err:  # noqa: BLE001 - a figure for the summary, never the job's result
                logger.debug("%s did not describe itself: %s", slot.name, _first_line(err))
        return found

    def _worker_failed(self, slot: _Slot, err: Exception, *, started: bool) -> None:
        """Record what a render call that failed with ``RayActorError`` says about its worker.

        ``ActorDiedError``: the worker is gone for good (Ray restarts it no more). Otherwise it is
        restarting, and rows wait a moment before they are sent to it again. Only a call whose
        row had started counts as a death: a call sent while the worker restarts fails at once
        ("the actor is restarting") without anything having died.
        """
        from ray.exceptions import ActorDiedError  # noqa: PLC0415

        now = time.monotonic()
        if started and now >= slot.ready_at:  # one death, however many rows it took
            slot.deaths += 1
        if isinstance(err, ActorDiedError) and slot.alive:
            slot.alive = False
            logger.warning(
                "%s is gone for good after %d death(s): %s",
                slot.name,
                slot.deaths,
                _first_line(err),
            )
        slot.ready_at = now + self.restart_wait_seconds

    def _stop(
        self,
        pending: deque,
        inflight: dict[Any, tuple[_Slot, RowTask]],
        on_outcome: Callable[[RowOutcome, int], None],
    ) -> None:
        """Give every row without a verdict its last one: a result already back counts as it is
        (no retry now), every other row is "interrupted"."""
        import ray  # noqa: PLC0415

        refs = list(inflight)
        finished = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) if refs else set()
        for ref, (_slot, task) in inflight.items():
            outcome = _returned_outcome(ref) if ref in finished else None
            if outcome is None:
                outcome = RowOutcome(task.row_id, "interrupted", error=INTERRUPTED_RENDERING)
            on_outcome(outcome, task.attempt)
        for task in pending:
            waiting = RowOutcome(task.row_id, "interrupted", error=INTERRUPTED_WAITING)
            on_outcome(waiting, task.attempt - 1)
        logger.warning(
            "stopped: %d row(s) were rendering, %d had not started", len(inflight), len(pending)
        )
        inflight.clear()
        pending.clear()

    def _dispatch(self, pending: deque, inflight: dict) -> None:
        """Hand pending rows to workers with room: up to each one's capacity (its stream slots
        plus the rows it prepares ahead), the least busy worker first (rows spread over the
        workers), an isolated row (a retry after a crash) only to a worker with nothing else to
        do."""
        now = time.monotonic()
        for task in list(pending):
            ready = [
                slot
                for slot in self.slots
                if slot.alive
                and slot.ready_at <= now
                and not slot.isolated
                and (slot.inflight == 0 if task.isolate else slot.inflight < slot.capacity)
            ]
            if not ready:
                continue
            slot = min(ready, key=lambda candidate: candidate.inflight)
            pending.remove(task)
            slot.inflight += 1
            slot.isolated = task.isolate
            inflight[slot.actor.render.remote(task, self.events)] = (slot, task)

    def _drain_events(self, on_event: Callable[[Any], None]) -> None:
        from .progress import RowAccepted  # noqa: PLC0415

        while True:
            try:
                batch = self.events.get_nowait_batch(min(self.events.qsize(), 1000))
            except Exception:  # noqa: BLE001 - queue empty or gone: nothing more to show
                return
            if not batch:
                return
            for event in batch:
                if isinstance(event, RowAccepted):
                    self._started.add((event.row_id, event.attempt))
                on_event(event)


def _returned_outcome(ref: Any) -> RowOutcome | None:
    """The outcome a finished render call returned; None when the call failed (worker died)."""
    import ray  # noqa: PLC0415

    try:
        return ray.get(ref, timeout=0)
    except Exception as err:  # noqa: BLE001 - any failure of the call: the row has no result
        logger.debug("a render call ended without a result: %s", _first_line(err))
        return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def describe_workers(
    pool: RenderPool,
    timeout_s: float = 600.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[dict[str, Any]]:
    """Wait for every worker to finish loading and return what each reports (device, dtype, pid).

    Returns an empty list, without waiting longer, as soon as ``should_stop()`` is True. A worker
    whose model failed to load raises its error here; ``ray.exceptions.GetTimeoutError`` after
    ``timeout_s``.
    """
    import ray  # noqa: PLC0415

    started = time.monotonic()
    deadline = started + timeout_s
    refs = [slot.actor.describe.remote() for slot in pool.slots]
    while time.monotonic() < deadline:
        if should_stop():
            logger.info("stop requested while the workers were loading the model")
            return []
        wait_s = min(pool.poll_seconds, max(0.0, deadline - time.monotonic()))
        if not ray.wait(refs, num_returns=len(refs), timeout=wait_s)[1]:
            break
    described = ray.get(refs, timeout=max(0.0, deadline - time.monotonic()))
    for slot, info in zip(pool.slots, described):
        slot.capacity = pool.capacity(info["streams"])
    logger.info(
        "workers ready in %.1f s: %s",
        time.monotonic() - started,
        "; ".join(
            f"{info['name']} {info['streams']} stream slot(s), libraries imported in "
            f"{info['import_seconds']:.1f} s, weights loaded in {info['load_seconds']:.1f} s, "
            f"optimized in {info['optimize_seconds']:.1f} s"
            for info in described
        ),
    )
    return described
