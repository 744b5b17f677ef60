"""The Ray actor body: one model per GPU, rows streamed through its stream slots.

The deep-learning imports happen inside the methods: the driver of a job imports this module to
create the actors (Ray needs the class) and must not pay for loading torch and diffusers.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..config import ModelConfig, StorageConfig, VideoConfig
from ._slots import StreamSlots, streams_for
from ._task import RowResult, RowTask

if TYPE_CHECKING:
    from ..animate import StreamingAnimator
    from ._row import RowRenderer

logger = logging.getLogger(__name__)


def build_animator(
    model: ModelConfig, timings: dict[str, float] | None = None
) -> StreamingAnimator:
    """Load the model described by ``model`` and wrap it in an animator; the seconds spent
    loading the weights and optimizing (layer swaps, kernel checks, compiling) go to ``timings``."""
    from ..animate import StreamingAnimator  # noqa: PLC0415 - see the module's docstring
    from ..models import load_personalive  # noqa: PLC0415

    started = time.monotonic()
    models = load_personalive(
        model.weights_dir,
        model.dtype,
        model.device,
        architecture=model.architecture,
        attention=model.attention,
        vae_decoder=model.vae_decoder,
    )
    loaded = time.monotonic()
    models.optimize(
        channels_last=model.channels_last,
        compile_mode=model.compile,
        cuda_graphs=model.cuda_graphs,
        fp8=model.fp8,
    )
    if timings is not None:
        timings["load_seconds"] = round(loaded - started, 2)
        timings["optimize_seconds"] = round(time.monotonic() - loaded, 2)
    return StreamingAnimator(models, model.animator, resolution=model.resolution)


def capture_graphs_at_start(
    model: ModelConfig, animator: StreamingAnimator, streams: int
) -> float | None:
    """With ``model.graphs_at_start`` and graphed calls (``model.cuda_graphs`` on a GPU): the
    graphs a worker of ``streams`` slots needs first, captured on synthetic rows before its first
    row (:func:`~pipeline.animate.rehearse`, signals included); the seconds it took, else None."""
    from ..animate import rehearse  # noqa: PLC0415 - see the module's docstring
    from ._signals import EMBED_BATCH  # noqa: PLC0415

    if not (model.graphs_at_start and animator.models.graphed()):
        return None
    return rehearse(animator, streams, embed_batch=EMBED_BATCH)


class RenderWorker:
    """Ray actor body: loads the model once, then renders rows, several at a time.

    Each ``render`` call is one row on a thread of the actor (Ray's ``max_concurrency``). The
    rows share one batched denoising call (:class:`~pipeline.animate.StepBatcher`) through
    ``streams`` stream slots (:class:`StreamSlots`): a row prepares without a slot, streams in one,
    and finishes after giving it back, so the driver sends a worker a few rows more than it has
    slots and a free slot is taken at the next call.

    Args:
        model / video / storage: the job's config sections (plain dataclasses).
        name: shown in progress displays.
        cpu_threads: torch threads on CPU (Ray gives actors one thread by default).
        trace: ``(path, first call, calls)``: a Chrome trace of those batched calls
            (``cluster.trace_dir``, :class:`~pipeline.animate._call_trace.CallTracer`).
    """

    def __init__(
        self,
        model: ModelConfig,
        video: VideoConfig,
        storage: StorageConfig,
        name: str = "",
        cpu_threads: int | None = None,
        trace: tuple[str, int, int] | None = None,
    ) -> None:
        started = time.monotonic()
        self.timings: dict[str, float] = {"init_started_at": round(time.time(), 3)}
        import torch  # noqa: PLC0415 - see the module's docstring

        from ..animate import StepBatcher  # noqa: PLC0415
        from ..animate._call_trace import CallTrace  # noqa: PLC0415

        self.timings["import_seconds"] = round(time.monotonic() - started, 2)
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        self.name = name
        self.jobs = 1  # jobs served: a warm worker (pipeline.cluster._warm) serves several
        self.events: Any = None
        self.scratch = tempfile.mkdtemp(prefix="portrait-render-")
        self.animator = build_animator(model, self.timings)
        self.streams = streams_for(model.streams_per_worker, self.animator)
        seconds = capture_graphs_at_start(model, self.animator, self.streams)
        if seconds is not None:
            self.timings["graphs_seconds"] = round(seconds, 2)
        self.slots = StreamSlots(self.streams)
        # the rows this actor renders at once share it
        self.batcher = StepBatcher(
            self.animator, trace=None if trace is None else CallTrace(*trace)
        )
        self.gpu_prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu-prep")
        self.part_prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu-part-start")
        self._renderers: dict[str, RowRenderer] = {}  # per job setup (video, storage)
        self._renderers_lock = threading.Lock()
        self.renderer = self._renderer_for(video, storage)
        self.timings["ready_seconds"] = round(time.monotonic() - started, 2)
        logger.info("%s ready with %d stream slot(s): %s", name, self.streams, self.timings)

    def _emit(self, event: Any) -> None:
        if self.events is not None:
            try:
                self.events.put_nowait(event)
            except Exception:  # noqa: BLE001 - progress is best effort; never fail a row over it
                logger.debug("progress event dropped", exc_info=True)

    def render(
        self, task: RowTask, events: Any = None, setup: Any = None, order: int | None = None
    ) -> RowResult:
        """Render one row; progress events go to ``events`` (a ``ray.util.queue.Queue``), if given.
        ``order``: the driver's count of rows sent, in whose order rows take stream slots.

        The queue comes with each call rather than to the constructor: Ray restarts a dead actor
        by re-running its constructor, which must not depend on objects that may be gone. So does
        ``setup`` (the job's video and storage settings): a warm worker outlives the job that
        started it (`pipeline.cluster._warm`) and serves later jobs with their own settings.
        """
        self.events = events
        renderer = self.renderer if setup is None else self._renderer_for(*setup)
        return renderer.render(task, order)

    def _renderer_for(self, video: VideoConfig, storage: StorageConfig) -> RowRenderer:
        """The row renderer for a job's settings: all share the model, the batched call and the
        stream slots; a warm worker keeps the few it has made."""
        from ..storage import Storage  # noqa: PLC0415
        from ._row import RowRenderer  # noqa: PLC0415

        key = repr((video, storage))
        with self._renderers_lock:
            if key not in self._renderers:
                if len(self._renderers) >= 8:  # a warm worker serving many jobs: oldest out
                    self._renderers.pop(next(iter(self._renderers)))
                self._renderers[key] = RowRenderer(
                    self.animator,
                    Storage(storage),
                    video,
                    self.scratch,
                    events=self._emit,
                    worker_name=self.name,
                    batcher=self.batcher,
                    slots=self.slots,
                    gpu_prep=self.gpu_prep,
                    part_prep=self.part_prep,
                )
            return self._renderers[key]

    def pid(self) -> int:
        return os.getpid()

    def display_name(self) -> str:
        """The name progress displays show (a warm worker keeps the one it started with)."""
        return self.name

    def begin_job(self) -> dict[str, Any]:
        """A new job takes this worker (a warm one, kept from an earlier job): its GPU clock
        starts again, so the job's figures are its own. Returns `describe`'s answer, with
        ``jobs``: how many jobs it has served, this one included."""
        from ..animate._batcher import GpuClock  # noqa: PLC0415

        self.jobs += 1
        if self.batcher.gpu_clock is not None:
            self.batcher.gpu_clock = GpuClock()
        return self.describe()

    def describe(self) -> dict[str, Any]:
        """What the worker is (device, stream slots), how long it took to start (seconds to load
        the weights and optimize), and on a GPU its time in and between batched calls."""
        models = self.animator.models
        clock = self.batcher.gpu_clock
        return {
            "name": self.name,
            "device": str(models.device),
            "dtype": str(models.dtype),
            "pid": os.getpid(),
            "streams": self.streams,
            "jobs": self.jobs,
            **self.timings,
            "gpu": (
                {**clock.totals(), "graphs_given_up": models.graphs_given_up()}
                if clock is not None
                else None
            ),
        }

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "scratch", ""), ignore_errors=True)
