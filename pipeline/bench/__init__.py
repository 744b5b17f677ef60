"""``job=bench``'s measurement: throughput of the worker's real streaming path on synthetic inputs
(or a manifest's first rows).

The model is built with random weights (the chosen architecture's sizes and FLOPs; no download);
``job.bench.streams`` rows render at once through :class:`~pipeline.worker.RowRenderer` —
decode-ahead, the batched animator, the encoder thread, segment commits to local storage —
exactly as a worker renders them. The result holds the steady-state output fps (warm-up calls
excluded; per-call CUDA-event times), ms per call, peak GPU memory, model FLOPs per output frame
(``torch.utils.flop_counter``), the GPU's measured fp16 matrix peak and the resulting fraction,
and GPU busy time (NVML) in steady state. Also runs on CPU (the tests use it with ``model=tiny``).

Modules: ``_run`` (a whole run from the typed config), ``_inputs`` (the rows rendered),
``_measure`` (the rows rendered at once, the steady state timed), ``_peak`` (FLOPs and the
matrix peak), ``_trace`` (profile, trace, where the host waited), ``_busy`` (NVML sampling),
``_result`` and ``_table`` (the result and its table).
"""

from __future__ import annotations

from ._busy import BusySampler
from ._inputs import BenchInputs, TooFewRows, bench_inputs, make_inputs, manifest_inputs
from ._measure import measure
from ._peak import count_flops, measure_matrix_peak, median_cuda_ms
from ._result import BenchResult
from ._run import run_benchmark
from ._table import result_table
from ._trace import SyncSites, profile_calls

__all__ = [
    "BenchInputs",
    "BenchResult",
    "BusySampler",
    "SyncSites",
    "TooFewRows",
    "bench_inputs",
    "count_flops",
    "make_inputs",
    "manifest_inputs",
    "measure",
    "measure_matrix_peak",
    "median_cuda_ms",
    "profile_calls",
    "result_table",
    "run_benchmark",
]
