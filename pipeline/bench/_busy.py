"""GPU busy time in the steady state, as NVML samples it."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from typing import Any

import torch

logger = logging.getLogger(__name__)


class BusySampler:
    """Samples NVML's GPU utilisation (share of time a kernel ran) during the steady state."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: list[int] = []
        self.times: list[float] = []  # monotonic time of each sample
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, after_calls: int, stats: Any) -> None:
        """Sample every 0.2 s once ``stats`` (the batcher's) counts more than ``after_calls``
        calls; nothing on a CPU or without NVML."""
        if self.device.type != "cuda":
            return
        try:
            import pynvml  # noqa: PLC0415

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.device.index or 0)
        except Exception as err:  # noqa: BLE001 - NVML is optional
            logger.info("no GPU utilisation sampling (%s)", err)
            return

        def sample() -> None:
            while not self._stop.is_set():
                if stats.calls > after_calls:
                    self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                    self.times.append(time.monotonic())
                self._stop.wait(0.2)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def percent_between(self, start: float, end: float) -> float | None:
        """Mean of the samples taken between two monotonic times (the timed window: the calls
        before it may capture CUDA graphs, seconds in which the GPU waits for the host), else
        :attr:`percent`."""
        inside = [s for s, t in zip(self.samples, self.times) if start <= t <= end]
        return statistics.mean(inside) if inside else self.percent

    @property
    def percent(self) -> float | None:
        # drop the last samples: the rows' tails and commits, not the steady state
        samples = self.samples[:-5] if len(self.samples) > 10 else self.samples
        return statistics.mean(samples) if samples else None
