"""Where the time of a `job.bench.trace` goes: GPU busy and idle, the kernels, who launched them.

    python scripts/trace_summary.py bench-out/trace-S8.json.gz [--top 15]

Reads a Chrome trace written by torch.profiler (what `job=bench ... job.bench.trace=FILE` writes,
or each worker of a real render with `cluster.trace_dir=DIR`) and prints:

* the GPU timeline: busy share of the traced span and idle time by gap size (many gaps under
  100 µs: the host launches kernels more slowly than the GPU runs them; a few long gaps: the
  host waited for something);
* the longest idle gaps and the operator each host thread was in at that moment;
* kernel time by kernel name, by the animator stage (``stage:observe``/``keyframes``/``denoise``/
  ``decode`` ranges) and by the host operators that launched them (the chain of the innermost
  four), which is how the NCHW copies around GroupNorm were found, and by kernel, operator and
  input shapes (traces recorded with ``record_shapes``, as ``job.bench.trace`` does);
* per host thread: operator time and the longest single operator (a thread stuck in one
  `aten::to` for hundreds of ms was waiting for the GPU).
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def load_events(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return json.loads(data)["traceEvents"]


def gpu_timeline(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Busy time (union of kernel intervals), span, and the idle gaps between them (µs)."""
    spans = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") in GPU_CATEGORIES and e.get("ph") == "X"
    )
    if not spans:
        return {"kernels": 0, "span_us": 0.0, "busy_us": 0.0, "gaps": []}
    busy, gaps = 0.0, []
    start, end = spans[0]
    for s, e in spans[1:]:
        if s > end:
            busy += end - start
            gaps.append((s - end, end, s))
            start, end = s, e
        else:
            end = max(end, e)
    busy += end - start
    return {
        "kernels": len(spans),
        "span_us": max(e for _, e in spans) - spans[0][0],
        "busy_us": busy,
        "first_us": spans[0][0],
        "gaps": sorted(gaps, reverse=True),
    }


BUCKETS = (
    (10, "<10 µs"),
    (100, "<100 µs"),
    (1000, "<1 ms"),
    (10000, "<10 ms"),
    (float("inf"), ">=10 ms"),
)


def _bucket(gap_us: float) -> str:
    return next(name for limit, name in BUCKETS if gap_us < limit)


def host_ops(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    by_thread: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "cpu_op":
            by_thread[e["tid"]].append(e)
    for ops in by_thread.values():
        ops.sort(key=lambda e: e["ts"])
    return by_thread


def thread_summary(ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Top-level operator time of one thread, by name, and its longest operator."""
    top, end = [], float("-inf")
    for e in ops:
        if e["ts"] >= end:
            top.append(e)
            end = e["ts"] + e["dur"]
    by_name: Counter[str] = Counter()
    for e in top:
        by_name[e["name"]] += e["dur"]
    longest = max(top, key=lambda e: e["dur"])
    return {
        "operators": len(ops),
        "busy_us": sum(e["dur"] for e in top),
        "by_name": by_name,
        "longest": (longest["name"], longest["dur"]),
    }


def kernel_owners(
    events: list[dict[str, Any]], threads: dict[int, list[dict[str, Any]]]
) -> tuple[Counter, Counter, Counter]:
    """Kernel time by the chain of host operators around the launch that queued it, by the
    animator stage (``stage:*`` ranges) it was launched in, and by kernel name plus the innermost
    operator's input shapes (traces recorded with ``record_shapes``)."""
    launches = {
        e["args"].get("correlation"): e
        for e in events
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and "args" in e
    }
    ranges: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "user_annotation":
            if e.get("name", "").startswith("stage:"):
                ranges[e["tid"]].append(e)
    owners: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    shapes: Counter[str] = Counter()
    for kernel in events:
        if kernel.get("cat") != "kernel":
            continue
        launch = launches.get(kernel.get("args", {}).get("correlation"))
        if launch is None:
            owners["(launch not traced)"] += kernel["dur"]
            stages["(launch not traced)"] += kernel["dur"]
            continue
        at = launch["ts"]
        stage = next(
            (
                r["name"]
                for r in ranges.get(launch["tid"], [])
                if r["ts"] <= at <= r["ts"] + r["dur"]
            ),
            "(outside the stages)",
        )
        stages[stage] += kernel["dur"]
        around = [
            op for op in threads.get(launch["tid"], []) if op["ts"] <= at <= op["ts"] + op["dur"]
        ]
        around.sort(key=lambda op: -op["dur"])
        owners[" > ".join(op["name"] for op in around[-4:]) or "(no operator)"] += kernel["dur"]
        inner = around[-1] if around else None
        dims = inner.get("args", {}).get("Input Dims") if inner else None
        label = f"{kernel['name'][:60]} | {inner['name'] if inner else '(no operator)'}"
        shapes[f"{label} {dims}" if dims else label] += kernel["dur"]
    return owners, stages, shapes


def summarize(path: Path, top: int = 15) -> str:
    events = load_events(path)
    threads = host_ops(events)
    lines = [f"trace {path}"]
    timeline = gpu_timeline(events)
    if timeline["kernels"]:
        span, busy = timeline["span_us"], timeline["busy_us"]
        lines.append(
            f"GPU: {timeline['kernels']} kernels/copies over {span / 1e3:.1f} ms, busy "
            f"{busy / 1e3:.1f} ms ({100 * busy / span:.1f} %)"
        )
        idle: Counter[str] = Counter()
        for gap, _, _ in timeline["gaps"]:
            idle[_bucket(gap)] += gap
        lines.append(
            "idle by gap size: "
            + ", ".join(f"{name} {idle[name] / 1e3:.1f} ms" for _, name in BUCKETS if name in idle)
        )
        lines.append("longest idle gaps (what each host thread was doing):")
        for gap, begin, _ in timeline["gaps"][:5]:
            middle = begin + gap / 2
            lines.append(f"  {gap / 1e3:.2f} ms at +{(begin - timeline['first_us']) / 1e3:.1f} ms")
            for tid, ops in threads.items():
                running = [op for op in ops if op["ts"] <= middle <= op["ts"] + op["dur"]]
                if running:
                    op = min(running, key=lambda o: o["dur"])
                    lines.append(f"    thread {tid}: {op['name']} ({op['dur'] / 1e3:.1f} ms)")
        kernels: Counter[str] = Counter()
        for e in events:
            if e.get("cat") in GPU_CATEGORIES and e.get("ph") == "X":
                kernels[e["name"][:90]] += e["dur"]
        lines.append("GPU time by kernel (ms):")
        lines += [f"  {us / 1e3:9.1f}  {name}" for name, us in kernels.most_common(top)]
        owners, stages, shapes = kernel_owners(events, threads)
        lines.append("GPU time by animator stage (ms):")
        lines += [f"  {us / 1e3:9.1f}  {stage}" for stage, us in stages.most_common()]
        lines.append("GPU time by launching host operators (ms):")
        lines += [f"  {us / 1e3:9.1f}  {chain}" for chain, us in owners.most_common(top)]
        lines.append("GPU time by kernel, operator and input shapes (ms):")
        lines += [f"  {us / 1e3:9.1f}  {label}" for label, us in shapes.most_common(3 * top)]
    else:
        lines.append("GPU: no kernels in this trace (a CPU run)")
    lines.append("host threads (by operator count):")
    for tid, ops in sorted(threads.items(), key=lambda kv: -len(kv[1]))[:top]:
        summary = thread_summary(ops)
        name, longest = summary["longest"]
        busiest = ", ".join(f"{n} {us / 1e3:.1f}" for n, us in summary["by_name"].most_common(4))
        lines.append(
            f"  thread {tid}: {summary['operators']} operators, {summary['busy_us'] / 1e3:.1f} ms "
            f"in operators; longest {name} {longest / 1e3:.1f} ms; most time (ms): {busiest}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path, help="a .json or .json.gz Chrome trace")
    parser.add_argument("--top", type=int, default=15, help="rows per table")
    args = parser.parse_args()
    print(summarize(args.trace, args.top))


if __name__ == "__main__":
    main()
