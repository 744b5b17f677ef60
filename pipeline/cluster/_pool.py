"""The pool: worker actors fed rows as they free up, their failures and the nodes they are on.
(The package's docstring tells the whole story.)"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import ClusterConfig, ModelConfig, StorageConfig, VideoConfig
from ..progress import (
    RowAccepted,
    RowReleased,
    RowRetrying,
    WorkerJoined,
    WorkerLeft,
    WorkerReady,
)
from ..worker import RenderWorker, RowResult, RowTask, max_streams
from ._join import start_ray
from ._placement import NoRoomError, alive_nodes, on_head, workers_to_start
from ._warm import NAMESPACE, WarmName, find_warm, next_index, signature, stop_warm

logger = logging.getLogger(__name__)

INTERRUPTED_RENDERING = "job interrupted while this row was rendering"
INTERRUPTED_WAITING = "job interrupted before this row started"
NODE_LEFT = "its node left the cluster"


@dataclass
class _Slot:
    """A worker actor and what the driver knows about it."""

    name: str
    actor: Any
    node: str = ""  # the Ray node it is pinned to
    deaths: int = 0
    alive: bool = True
    ready_at: float = 0.0  # monotonic time before which the actor is restarting
    inflight: int = 0  # rows it holds now (preparing, streaming or finishing)
    isolated: bool = False  # rendering a row that must run alone
    capacity: int = 1  # rows it may hold: its stream slots plus cluster.rows_ahead
    finishing_room: int = 0  # and rows past their slot on top of those (cluster.rows_finishing)
    loading: Any = None  # a worker started mid-job: its describe() call, until the model is loaded
    left: str | None = None  # why it is gone for good (NODE_LEFT, too many deaths, no model)
    warm: WarmName | None = None  # a detached worker that outlives the job (pipeline.cluster._warm)
    adopted: bool = False  # a warm worker an earlier job started, taken over by this one

    def has_room(self, finishing: int, *, isolate: bool = False) -> bool:
        """Whether it takes another row, holding ``finishing`` rows past their stream slot: a row
        that must run alone only when it holds none; else up to its capacity, plus the rows
        finishing, up to ``finishing_room`` of them."""
        if isolate:
            return self.inflight == 0
        return self.inflight < self.capacity + min(finishing, self.finishing_room)


@dataclass
class _Rows:
    """The rows of one :meth:`RenderPool.run` and where their verdicts go."""

    pending: deque[RowTask]
    on_event: Callable[[Any], None]
    on_outcome: Callable[[RowResult, int], None]
    inflight: dict[Any, tuple[_Slot, RowTask]] = field(default_factory=dict)  # call -> row
    crashes: dict[str, int] = field(default_factory=dict)  # row id -> deaths of its workers


class RenderPool:
    """The worker actors of one job. Use as a context manager around :meth:`run`.

    Args:
        cluster / model / video / storage: the job's config sections.
    """

    poll_seconds = 0.2
    restart_wait_seconds = 1.0  # after a worker failed, before a row is sent to it again
    node_wait_seconds = 600.0  # with no worker left but nodes gone: how long a new node may take

    def __init__(
        self, cluster: ClusterConfig, model: ModelConfig, video: VideoConfig, storage: StorageConfig
    ):
        self.cfg = cluster
        self.model, self.video, self.storage = model, video, storage
        self._owns_ray = False
        self.slots: list[_Slot] = []
        self.events: Any = None
        self._started: set[tuple[str, int]] = set()  # (row, attempt) a worker reported starting
        self._released: set[tuple[str, int]] = set()  # (row, attempt) past its slot, finishing
        self._notices: list[Any] = []  # worker events not yet handed to run()'s on_event
        self._next_scan = 0.0  # monotonic time of the next look at the cluster's nodes
        self._no_worker_since: float | None = None  # since when no worker is alive or loading
        self._remote: Any = None  # RenderWorker as a Ray actor class
        self._signature: str | None = None  # of this job's workers, when they may be kept warm
        self._sent = 0  # rows sent to workers so far
        self._clean_end = False  # run() ended with every row settled: warm workers may stay

    def _trace_for(self, name: str) -> tuple[str, int, int] | None:
        """``cluster.trace_dir``'s trace for the worker called ``name``: (path, first call, calls)."""
        if not self.cfg.trace_dir:
            return None
        first, calls = self.cfg.trace_calls
        # absolute here: a worker's working folder is Ray's choice
        folder = Path(self.cfg.trace_dir).expanduser().resolve()
        return str(folder / f"{name}.json.gz"), int(first), int(calls)

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
        nodes = ray.nodes()
        self.events = Queue(maxsize=100_000, actor_options={"num_cpus": 0, **on_head(nodes)})
        use_gpus = workers_to_start(self.cfg, nodes, {})[1]
        if self.cfg.keep_workers and self._owns_ray:
            logger.warning(
                "cluster.keep_workers=true keeps nothing with embedded Ray (it stops with the "
                "job): start a cluster once with `ray start --head` and use cluster=warm"
            )
        adopted = self._adopt_warm(use_gpus) if not self._owns_ray else 0
        plan = workers_to_start(self.cfg, nodes, Counter(slot.node for slot in self.slots))[0]
        self._next_scan = time.monotonic() + self.cfg.rescan_seconds
        if not plan:
            if not adopted:
                self._no_room(nodes, use_gpus)
            return self
        count = self._start_workers(plan, use_gpus, nodes, at_start=True)
        logger.info(
            "%d %s worker(s) on %d node(s) loading the model",
            count,
            "GPU" if use_gpus else "CPU",
            len(plan),
        )
        return self

    def _actor_options(self, use_gpus: bool) -> tuple[dict[str, Any], int | None]:
        """The Ray options every worker of this job starts with, and its torch threads on CPU."""
        capacity, finishing = self._rows_per_worker()
        options: dict[str, Any] = {
            "num_cpus": self.cfg.cpus_per_worker,
            "max_concurrency": capacity + finishing + 2,  # its rows, and describe() beside them
            "max_restarts": self.cfg.max_restarts,
            "max_task_retries": 0,  # the driver decides about re-running rows (resume, poison rows)
        }
        if use_gpus:
            options["num_gpus"] = self.cfg.gpus_per_worker
        threads = max(1, int(self.cfg.cpus_per_worker)) if not use_gpus else None
        return options, threads

    def _adopt_warm(self, use_gpus: bool) -> int:
        """On a cluster the job joined: take over the warm workers earlier jobs left with the same
        settings (`pipeline.cluster._warm`), and stop those left with other settings (they hold
        GPUs this job needs). Returns how many were taken over."""
        options, threads = self._actor_options(use_gpus)
        sig = signature(self.model, options, threads)
        if self.cfg.keep_workers:
            self._signature = sig
        found, stale = find_warm(sig)
        if stale:
            logger.warning(
                "stopping %d warm worker(s) that earlier jobs left with other model or worker "
                "settings: %s",
                len(stale),
                ", ".join(stale),
            )
            stop_warm(stale)
        for worker in found[: self.cfg.num_workers]:
            self.slots.append(
                _Slot(
                    worker.display, worker.actor, worker.name.node, warm=worker.name, adopted=True
                )
            )
        stop_warm([str(worker.name) for worker in found[len(self.slots) :]])  # over num_workers
        if self.slots:
            logger.info(
                "took over %d warm worker(s) left by an earlier job (model loaded): %s",
                len(self.slots),
                ", ".join(slot.name for slot in self.slots),
            )
        return len(self.slots)

    def _no_room(self, nodes: list[dict[str, Any]], use_gpus: bool) -> None:
        """No node can hold a worker now: wait for one to join, or (fixed pool) stop the job."""
        needs = f"{self.cfg.cpus_per_worker:g} CPU(s)"
        if use_gpus:
            needs += f" and {self.cfg.gpus_per_worker:g} GPU(s)"
        have = "; ".join(
            f"{node['NodeID'][:8]}: {node['Resources'].get('CPU', 0.0):g} CPU(s), "
            f"{node['Resources'].get('GPU', 0.0):g} GPU(s)"
            for node in nodes
            if node.get("Alive")
        )
        if self.cfg.rescan_seconds <= 0:
            raise NoRoomError(needs, have or "none alive")
        logger.warning(
            "no node of the cluster has room for a render worker yet (each needs %s; the nodes "
            "have %s): waiting up to %.0f s for one to join",
            needs,
            have or "none alive",
            self.node_wait_seconds,
        )

    def _start_workers(
        self, plan: dict[str, int], use_gpus: bool, nodes: list[dict[str, Any]], *, at_start: bool
    ) -> int:
        """Start the workers of ``plan`` (``{node id: count}``), each pinned to its node; return
        how many. A worker started mid-job takes rows once it says it has loaded the model."""
        import ray  # noqa: PLC0415
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

        if self._remote is None:
            self._remote = ray.remote(RenderWorker)
        options, threads = self._actor_options(use_gpus)
        capacity, finishing = self._rows_per_worker()
        addresses = {node["NodeID"]: node.get("NodeManagerAddress", "") for node in nodes}
        for node, count in plan.items():
            # Pinned to the node (soft=False) rather than placed by resources alone: a CPU worker
            # would otherwise often land on an old node with CPUs to spare (Ray prefers packing),
            # leaving the new node idle; and when the node leaves, Ray cannot restart the actor
            # elsewhere, so it dies with its node (which is what happened) instead of crowding a
            # node the pool has already filled.
            strategy = NodeAffinitySchedulingStrategy(node, soft=False)
            for _ in range(count):
                name = self._display_name("gpu" if use_gpus else "cpu")
                warm = self._warm_name(node)
                kept = {} if warm is None else {
                    "name": str(warm), "namespace": NAMESPACE, "lifetime": "detached"
                }  # fmt: skip
                actor = self._remote.options(
                    **options, **kept, scheduling_strategy=strategy
                ).remote(
                    self.model,
                    self.video,
                    self.storage,
                    name=name,
                    cpu_threads=threads,
                    trace=self._trace_for(name),
                )
                slot = _Slot(
                    name, actor, node, capacity=capacity, finishing_room=finishing, warm=warm
                )
                if not at_start:  # at the start, describe_workers waits for them all
                    slot.loading = actor.describe.remote()
                self.slots.append(slot)
                self._notices.append(
                    WorkerJoined(name, node, addresses.get(node, ""), time.time(), at_start)
                )
        return sum(plan.values())

    def _display_name(self, kind: str) -> str:
        """``<kind>-worker-<n>``, the lowest n no worker of the pool has (a warm worker taken
        over keeps its name)."""
        taken = {slot.name for slot in self.slots}
        index = 0
        while f"{kind}-worker-{index}" in taken:
            index += 1
        return f"{kind}-worker-{index}"

    def _warm_name(self, node: str) -> WarmName | None:
        """The detached actor name of a worker to keep after the job; None when it stops with
        the job (``cluster.keep_workers=false``, or embedded Ray, which stops with the job)."""
        if self._signature is None:
            return None
        taken = {slot.warm for slot in self.slots if slot.warm is not None}
        return WarmName(self._signature, node, next_index(taken, self._signature, node))

    def __exit__(self, *exc: object) -> None:
        import ray  # noqa: PLC0415

        if not ray.is_initialized():
            return
        kept = []
        for slot in self.slots:
            if self._keeps(slot):
                kept.append(slot.name)
                continue
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - the actor may already be gone
                pass
        if self.events is not None:
            try:
                ray.kill(self.events.actor)
            except Exception:  # noqa: BLE001
                pass
        if kept:
            logger.info(
                "kept %d warm worker(s) on the cluster for the next job (cluster.keep_workers): "
                "%s; a job with cluster.keep_workers=false stops them at its end",
                len(kept),
                ", ".join(kept),
            )
        if self._owns_ray:
            ray.shutdown()

    def _keeps(self, slot: _Slot) -> bool:
        """Whether ``slot``'s worker stays after the job: kept warm, alive, and the job ended
        with every row settled (a stopped or failed job stops its workers, rows in flight and all)."""
        return (
            self._signature is not None
            and self._clean_end
            and slot.warm is not None
            and slot.alive
            and slot.left is None
        )

    def run(
        self,
        tasks: Iterable[RowTask],
        on_event: Callable[[Any], None],
        on_outcome: Callable[[RowResult, int], None],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Render ``tasks`` on the pool until all have a final outcome.

        Args:
            tasks: rows to render (each submitted once a worker is free).
            on_event: receives worker progress events, retry notices and the pool's worker
                events (joined, ready, left), in arrival order.
            on_outcome: receives each row's final :class:`RowResult` and its attempt count.
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
            # 2. The cluster: workers that loaded their model, nodes that joined or left.
            self._watch_cluster(rows)
            self._report_workers(on_event)
            # 3. Pending rows to the workers with room (least busy first).
            self._dispatch(rows.pending, rows.inflight)
            # 4. No row out: a worker is restarting or loading (the rows wait for it), a node
            #    may join, or no worker is left.
            if not rows.inflight:
                if rows.pending and self._worker_to_come():
                    time.sleep(self.poll_seconds)
                    continue
                self._no_worker_left(rows)
                break
            # 5. The next finished render call, and the progress that arrived meanwhile.
            ready, _ = ray.wait(list(rows.inflight), num_returns=1, timeout=self.poll_seconds)
            self._drain_events(on_event)
            # 6. Each finished row's verdict: done, failed, retried, waiting or quarantined.
            for ref in ready:
                self._settle(ref, rows)
        self._drain_events(on_event)
        self._report_workers(on_event)
        self._clean_end = not rows.inflight and not should_stop()

    def _off_worker(self, slot: _Slot, task: RowTask) -> None:
        """A row's render call is over on ``slot`` (finished, failed or lost with its node): the
        worker's count of rows drops, and so does the row's place among those finishing."""
        slot.inflight -= 1
        self._released.discard((task.row_id, task.attempt))

    def _settle(self, ref: Any, rows: _Rows) -> None:
        """What a finished render call means for its row: a final outcome, or the row back in
        the queue (its worker died or restarted, its node left; a retryable failure with retries
        left)."""
        import ray  # noqa: PLC0415
        from ray.exceptions import (  # noqa: PLC0415
            ActorUnschedulableError,
            RayActorError,
            RayTaskError,
        )

        slot, task = rows.inflight.pop(ref)
        self._off_worker(slot, task)
        slot.isolated = slot.isolated and not task.isolate
        try:
            outcome: RowResult = ray.get(ref)
        except (RayActorError, ActorUnschedulableError) as err:  # the worker (or its node) died
            self._worker_died(slot, task, err, rows)
            return
        except RayTaskError as err:  # render() itself should never raise; treat as a bug
            outcome = RowResult(task.row_id, "failed", error=f"internal error: {_first_line(err)}")
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
        """A render call ended with its worker's death (or restart). A worker lost with its node
        is no fault of the row: it goes back to the queue. Otherwise only a row that had started
        there counts as having killed it (one sent during the restart waits); a row that killed
        its worker ``poison_after`` times is quarantined, else retried alone on its worker, so a
        poison row cannot take innocent rows down twice."""
        if self.lost_with_node(slot, err):
            self._back_after_node_loss(slot, task, rows)
            return
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
            rows.on_outcome(RowResult(task.row_id, "quarantined", error=error), task.attempt)
            return
        retry = replace(task, attempt=task.attempt + 1, isolate=slot.capacity > 1)
        rows.on_event(RowRetrying(task.row_id, retry.attempt, f"worker died: {_first_line(err)}"))
        rows.pending.appendleft(retry)

    def _back_after_node_loss(self, slot: _Slot, task: RowTask, rows: _Rows) -> None:
        """A row whose worker's node left: back to the front of the queue, not counted as a crash
        (its next worker resumes it from its last committed segment)."""
        if (task.row_id, task.attempt) not in self._started:
            rows.pending.appendleft(task)  # never started there: it simply waits for a worker
            return
        logger.warning(
            "%s's node left the cluster while it rendered row %s: the row goes back to the queue "
            "and resumes from its last committed segment",
            slot.name,
            task.row_id,
        )
        retry = replace(task, attempt=task.attempt + 1)
        rows.on_event(RowRetrying(task.row_id, retry.attempt, f"{slot.name} left: {NODE_LEFT}"))
        rows.pending.appendleft(retry)

    def lost_with_node(self, slot: _Slot, err: BaseException) -> bool:
        """Whether ``err``, a failed call to ``slot``'s worker, means the worker's node left the
        cluster (then the worker has left the pool) rather than its process dying on a node
        that is still there.

        Ray says so three ways: the actor cannot be scheduled (it is pinned to a node that no
        longer exists, Ray's answer when it tries to restart it), it was preempted (the
        autoscaler drained its node), or the cluster's node table lists its node as dead. (A
        node whose Ray services crash while the machine stays up is listed as dead only after
        Ray's health checks, about 15 s; a worker that died before that counts as a crash.)
        """
        from ray.exceptions import ActorUnschedulableError  # noqa: PLC0415

        lost = (
            slot.left == NODE_LEFT
            or isinstance(err, ActorUnschedulableError)
            or bool(getattr(err, "preempted", False))
            or slot.node not in alive_nodes()
        )
        if lost:
            self._leave(slot, NODE_LEFT)
        return lost

    def _leave(self, slot: _Slot, reason: str) -> None:
        """``slot``'s worker is gone for good (or must be: it is killed)."""
        import ray  # noqa: PLC0415

        if slot.left is not None:
            return
        slot.left, slot.alive, slot.loading = reason, False, None
        logger.warning("%s left the pool: %s", slot.name, reason)
        self._notices.append(WorkerLeft(slot.name, reason, time.time()))
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone with its node
            pass

    def mark_ready(self, slot: _Slot, info: dict[str, Any], *, at_start: bool) -> None:
        """``slot``'s worker loaded the model (``info``: what it says of itself): it takes rows,
        as many at once as its stream slots and ``cluster.rows_ahead`` allow, and rows finishing
        on top (``cluster.rows_finishing``)."""
        slot.capacity = self.capacity(info["streams"])
        slot.finishing_room = self.finishing_room(info["streams"])
        self._notices.append(WorkerReady(slot.name, time.time(), at_start))

    def _watch_cluster(self, rows: _Rows) -> None:
        """Workers started mid-job that finished loading; every ``cluster.rescan_seconds`` a look
        at the cluster's nodes (`_scan`)."""
        self._check_loading()
        if self.cfg.rescan_seconds > 0 and time.monotonic() >= self._next_scan:
            self._scan(rows)

    def _check_loading(self) -> None:
        """Workers started mid-job whose model is loaded take rows from now on; one that could
        not load it leaves the pool (the job goes on without it)."""
        import ray  # noqa: PLC0415

        loading = [slot for slot in self.slots if slot.loading is not None]
        if not loading:
            return
        refs = [slot.loading for slot in loading]
        done = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
        for slot in loading:
            if slot.loading not in done:
                continue
            call, slot.loading = slot.loading, None
            try:
                info = ray.get(call)
            except Exception as err:  # noqa: BLE001 - the worker's failure, not the job's
                if not self.lost_with_node(slot, err):
                    self._leave(slot, f"could not load the model: {_first_line(err)}")
                continue
            self.mark_ready(slot, info, at_start=False)

    def _scan(self, rows: _Rows) -> None:
        """Look at the cluster's nodes now. The workers of nodes that left leave the pool (their
        rows go back to the queue at once, instead of waiting for Ray to fail their calls); while
        rows wait for a worker, nodes with room get new ones (`workers_to_start`)."""
        import ray  # noqa: PLC0415

        self._next_scan = time.monotonic() + self.cfg.rescan_seconds
        nodes = ray.nodes()
        alive = alive_nodes(nodes)
        gone = [slot for slot in self.slots if slot.left is None and slot.node not in alive]
        if gone:  # which of their rows had started: the rows a worker accepted before its node left
            self._drain_events(rows.on_event)
        for slot in gone:
            self._leave(slot, NODE_LEFT)
            for ref, (holder, task) in list(rows.inflight.items()):
                if holder is slot:
                    del rows.inflight[ref]
                    self._off_worker(slot, task)
                    self._back_after_node_loss(slot, task, rows)
        if not rows.pending:  # a worker started now would only load the model
            return
        plan, use_gpus = workers_to_start(
            self.cfg, nodes, Counter(slot.node for slot in self.slots)
        )
        if plan:
            count = self._start_workers(plan, use_gpus, nodes, at_start=False)
            logger.info(
                "the cluster has room for %d more %s worker(s) (node(s) %s): starting them",
                count,
                "GPU" if use_gpus else "CPU",
                ", ".join(node[:8] for node in plan),
            )

    def _worker_to_come(self) -> bool:
        """Whether rows without a worker should wait: a worker is alive (restarting, loading),
        or nodes left and one with room may join (with rescans on, for `node_wait_seconds`)."""
        if any(slot.alive for slot in self.slots):
            self._no_worker_since = None
            return True
        crashed_out = bool(self.slots) and all(slot.left != NODE_LEFT for slot in self.slots)
        if self.cfg.rescan_seconds <= 0 or crashed_out:
            return False
        now = time.monotonic()
        if self._no_worker_since is None:
            self._no_worker_since = now
            logger.warning(
                "no render worker left: waiting up to %.0f s for a node with room to join",
                self.node_wait_seconds,
            )
        return now - self._no_worker_since < self.node_wait_seconds

    def _report_workers(self, on_event: Callable[[Any], None]) -> None:
        """Hand the pool's own events (workers joined, ready, left) to ``on_event``."""
        notices, self._notices = self._notices, []
        for event in notices:
            on_event(event)

    def _no_worker_left(self, rows: _Rows) -> None:
        """No worker is left (they died more often than Ray restarts them, or their nodes left
        and none joined): the rows still waiting fail."""
        lost = sum(slot.left == NODE_LEFT for slot in self.slots)
        waited = f"no node with room joined within {self.node_wait_seconds:.0f} s"
        if not self.cfg.rescan_seconds > 0:
            waited = "cluster.rescan_seconds=0 starts no new ones"
        kept = "; rerun the job to render this row (committed segments are kept)"
        if not self.slots:
            error = f"no render worker: no node of the cluster had room for one, and {waited}{kept}"
        elif lost:
            error = (
                f"no render worker left alive: {lost} of {len(self.slots)} worker(s) left with "
                f"their node(s), and {waited}{kept}"
            )
        else:
            error = (
                "no render worker left alive: every worker died more often than "
                f"cluster.max_restarts={self.cfg.max_restarts} allows (see the warnings "
                "above); rerun the job to render this row"
            )
        for task in rows.pending:
            rows.on_outcome(RowResult(task.row_id, "failed", error=error), task.attempt)
        rows.pending.clear()

    def capacity(self, streams: int) -> int:
        """Rows a worker with ``streams`` stream slots holds at once: those streaming and those
        prepared ahead (``cluster.rows_ahead``; null: as many as its slots)."""
        ahead = self.cfg.rows_ahead
        return streams + (streams if ahead is None else ahead)

    def _rows_per_worker(self) -> tuple[int, int]:
        """A new worker's capacity and finishing room, until it says how many stream slots it
        has (auto: by its GPU's memory; `mark_ready`)."""
        streams = max_streams(self.model.streams_per_worker)
        return self.capacity(streams), self.finishing_room(streams)

    def finishing_room(self, streams: int) -> int:
        """Rows past their stream slot a worker with ``streams`` slots holds on top of its
        capacity (``cluster.rows_finishing``; null: as many as ``cluster.rows_ahead``)."""
        finishing = self.cfg.rows_finishing
        if finishing is not None:
            return finishing
        return self.capacity(streams) - streams

    def describe(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """What each live worker says of itself now (`RenderWorker.describe`: its stream slots,
        start-up seconds, GPU time in and between calls); a worker that does not answer, or is
        still loading the model, is left out."""
        import ray  # noqa: PLC0415

        found = []
        for slot in self.slots:
            if not slot.alive or slot.loading is not None:
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
            self._leave(slot, f"gone for good after {slot.deaths} death(s): {_first_line(err)}")
        slot.ready_at = now + self.restart_wait_seconds

    def _stop(
        self,
        pending: deque,
        inflight: dict[Any, tuple[_Slot, RowTask]],
        on_outcome: Callable[[RowResult, int], None],
    ) -> None:
        """Give every row without a verdict its last one: a result already back counts as it is
        (no retry now), every other row is "interrupted"."""
        import ray  # noqa: PLC0415

        refs = list(inflight)
        finished = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) if refs else set()
        for ref, (_slot, task) in inflight.items():
            outcome = _returned_outcome(ref) if ref in finished else None
            if outcome is None:
                outcome = RowResult(task.row_id, "interrupted", error=INTERRUPTED_RENDERING)
            on_outcome(outcome, task.attempt)
        for task in pending:
            waiting = RowResult(task.row_id, "interrupted", error=INTERRUPTED_WAITING)
            on_outcome(waiting, task.attempt - 1)
        logger.warning(
            "stopped: %d row(s) were rendering, %d had not started", len(inflight), len(pending)
        )
        inflight.clear()
        pending.clear()

    def _dispatch(self, pending: deque, inflight: dict) -> None:
        """Hand pending rows to workers with room: up to each one's capacity (its stream slots
        plus the rows it prepares ahead) and its rows past their slot on top (finishing, up to
        ``cluster.rows_finishing``), the least busy worker first (rows spread over the
        workers), an isolated row (a retry after a crash) only to a worker with nothing else to
        do. A worker still loading the model gets none yet."""
        now = time.monotonic()
        finishing = Counter(
            id(slot)
            for slot, task in inflight.values()
            if (task.row_id, task.attempt) in self._released
        )  # per worker, its rows past their stream slot (RowReleased)
        for task in list(pending):
            ready = [
                slot
                for slot in self.slots
                if slot.alive
                and slot.loading is None
                and slot.ready_at <= now
                and not slot.isolated
                and slot.has_room(finishing[id(slot)], isolate=task.isolate)
            ]
            if not ready:
                continue
            slot = min(ready, key=lambda candidate: candidate.inflight)
            pending.remove(task)
            slot.inflight += 1
            slot.isolated = task.isolate
            self._sent += 1  # the worker streams its rows in this order (StreamSlots.accept)
            setup = (self.video, self.storage)
            call = slot.actor.render.remote(task, self.events, setup, self._sent)
            inflight[call] = (slot, task)

    def _drain_events(self, on_event: Callable[[Any], None]) -> None:
        while True:
            try:
                batch = self.events.get_nowait_batch(min(self.events.qsize(), 1000))
            except Exception:  # noqa: BLE001 - queue empty or gone: nothing more to show
                return
            if not batch:
                return
            for event in batch:
                if isinstance(event, RowReleased):  # the pool's own bookkeeping, not shown
                    self._released.add((event.row_id, event.attempt))
                    continue
                if isinstance(event, RowAccepted):
                    self._started.add((event.row_id, event.attempt))
                on_event(event)


def _returned_outcome(ref: Any) -> RowResult | None:
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
    """Wait for every worker the job started with to finish loading and return what each
    reports (device, dtype, pid).

    Returns an empty list, without waiting longer, as soon as ``should_stop()`` is True. A worker
    whose model failed to load raises its error here (one whose node left meanwhile leaves the
    pool instead); ``ray.exceptions.GetTimeoutError`` after ``timeout_s``.
    """
    import ray  # noqa: PLC0415

    started = time.monotonic()
    deadline = started + timeout_s
    slots = list(pool.slots)
    refs = [
        (slot.actor.begin_job if slot.adopted else slot.actor.describe).remote() for slot in slots
    ]
    while refs and time.monotonic() < deadline:
        if should_stop():
            logger.info("stop requested while the workers were loading the model")
            return []
        wait_s = min(pool.poll_seconds, max(0.0, deadline - time.monotonic()))
        if not ray.wait(refs, num_returns=len(refs), timeout=wait_s)[1]:
            break
    described = []
    for slot, ref in zip(slots, refs):
        try:
            info = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        except Exception as err:
            if pool.lost_with_node(slot, err):
                continue
            raise
        pool.mark_ready(slot, info, at_start=True)
        described.append(info)
    if not described:
        return described
    logger.info(
        "workers ready in %.1f s: %s",
        time.monotonic() - started,
        "; ".join(map(_started_how, described)),
    )
    return described


def _started_how(info: dict[str, Any]) -> str:
    """One worker's start, as the log says it: what it cost, or that it was kept warm."""
    head = f"{info['name']} {info['streams']} stream slot(s), "
    if info.get("jobs", 1) > 1:
        return head + f"kept warm (job {info['jobs']} on it: nothing loaded)"
    return head + (
        f"libraries imported in {info['import_seconds']:.1f} s, weights loaded in "
        f"{info['load_seconds']:.1f} s, optimized in {info['optimize_seconds']:.1f} s"
        + (
            f", CUDA graphs captured in {info['graphs_seconds']:.1f} s"
            if "graphs_seconds" in info
            else ""
        )
    )
