"""Benchmark results as a rich table."""

from __future__ import annotations

from rich.table import Table

from ._result import BenchResult

# (header, justify): the text columns to the left, the figures to the right
COLUMNS = (
    ("label", "left"),
    ("device", "left"),
    ("dtype", "left"),
    ("S", "right"),
    ("compile", "left"),
    ("fps", "right"),
    ("ms/call", "right"),
    ("GPU ms/call", "right"),
    ("peak GiB", "right"),
    ("TF/frame", "right"),
    ("of peak", "right"),
    ("GPU busy", "right"),
    ("idle between", "right"),
)


def result_table(results: list[BenchResult]) -> Table:
    table = Table(title="portrait-render benchmark")
    for column, justify in COLUMNS:
        table.add_column(column, justify=justify)
    for r in results:
        table.add_row(
            r.label,
            r.device,
            r.dtype + ("" if r.fp8 == "none" else f" +fp8 {r.fp8}"),
            str(r.streams),
            r.compile + (" +graphs" if r.cuda_graphs else ""),
            f"{r.output_fps:.2f}",
            f"{r.ms_per_call:.0f}",
            _fmt(r.device_ms_per_call, "{:.0f}"),
            _fmt(r.peak_memory_gib, "{:.2f}"),
            _fmt(r.flops_per_frame_t, "{:.2f}"),
            _fmt(r.fraction_of_peak, "{:.1%}"),
            _fmt(r.gpu_busy_percent, "{:.0f}%"),
            _fmt(r.gpu_idle_between_calls_percent, "{:.1f}%"),
        )
    return table


def _fmt(value: float | None, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)
