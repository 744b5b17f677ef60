"""The Ray actor body: one model per GPU, rows streamed through its stream slots.

The deep-learning imports happen inside the methods: the driver of a job imports this module to
create the actors (Ray needs the class) and must not pay for loading torch and diffusers.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..config import ModelConfig, StorageConfig, VideoConfig
from ._slots import StreamSlots, streams_for
from ._task import RowOutcome, RowTask

if TYPE_CHECKING:
    from ..animate import StreamingAnimator

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
    """

    def __init__(
        self,
        model: ModelConfig,
        video: VideoConfig,
        storage: StorageConfig,
        name: str = "",
        cpu_threads: int | None = None,
    ) -> None:
        started = time.monotonic()
        self.timings: dict[str, float] = {"init_started_at": round(time.time(), 3)}
        import torch  # noqa: PLC0415 - see the module's docstring

        from ..animate import StepBatcher  # noqa: PLC0415
        from ..storage import Storage  # noqa: PLC0415
        from ._row import RowRenderer  # noqa: PLC0415

        self.timings["import_seconds"] = round(time.monotonic() - started, 2)
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        self.name = name
        self.events: Any = None
        self.scratch = tempfile.mkdtemp(prefix="portrait-render-")
        self.animator = build_animator(model, self.timings)
        self.streams = streams_for(model.streams_per_worker, self.animator)
        self.slots = StreamSlots(self.streams)
        self.batcher = StepBatcher(self.animator)  # the rows this actor renders at once share it
        self.gpu_prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu-prep")
        self.renderer = RowRenderer(
            self.animator,
            Storage(storage),
            video,
            self.scratch,
            events=self._emit,
            worker_name=name,
            batcher=self.batcher,
            slots=self.slots,
            gpu_prep=self.gpu_prep,
        )
        self.timings["ready_seconds"] = round(time.monotonic() - started, 2)
        logger.info("%s ready with %d stream slot(s): %s", name, self.streams, self.timings)

    def _emit(self, event: Any) -> None:
        if self.events is not None:
            try:
                self.events.put_nowait(event)
            except Exception:  # noqa: BLE001 - progress is best effort; never fail a row over it
                logger.debug("progress event dropped", exc_info=True)

    def render(self, task: RowTask, events: Any = None) -> RowOutcome:
        """Render one row; progress events go to ``events`` (a ``ray.util.queue.Queue``), if given.

        The queue comes with each call rather than to the constructor: Ray restarts a dead actor
        by re-running its constructor, which must not depend on objects that may be gone.
        """
        self.events = events
        return self.renderer.render(task)

    def pid(self) -> int:
        return os.getpid()

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
            **self.timings,
            "gpu": clock.totals() if clock is not None else None,
        }

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "scratch", ""), ignore_errors=True)
