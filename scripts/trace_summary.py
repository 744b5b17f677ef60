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
* the GPU's idle time by what the batch thread was in when it began (an animator stage and
  operator, or "between operators": Python, or waiting for the GIL) and by the other threads
  busy in an operator then (the preparation thread's ``prep:*`` ranges name it);
* the GPU preparation thread's ``prep:*`` ranges (a new row's portrait, a row's signals): time in
  operators and in CUDA launch calls (a launch blocks while the GPU's queue is full: ~2,500
  eager launches made a portrait take 1.4 s in a real render), its kernels' median wait in the
  queue;
* per host thread (named by its ranges): operator time and the longest single operator (a thread
  stuck in one `aten::to` for hundreds of ms was waiting for the GPU).
"""

from __future__ import annotations

import argparse
import bisect
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


def by_thread(events: list[dict[str, Any]], category: str) -> dict[int, list[dict[str, Any]]]:
    """Each host thread's complete events of ``category``, by start."""
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == category:
            found[e["tid"]].append(e)
    for spans in found.values():
        spans.sort(key=lambda e: e["ts"])
    return found


def host_ops(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    return by_thread(events, "cpu_op")


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


def annotations(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Each host thread's ``record_function`` ranges, by start."""
    return by_thread(events, "user_annotation")


def thread_roles(ranges: dict[int, list[dict[str, Any]]]) -> dict[int, str]:
    """A name for each thread from the ranges it ran: the animator's ``stage:*`` ranges mark the
    batch thread, ``prep:*`` the GPU preparation thread (``pipeline.worker``)."""
    roles = {}
    for tid, spans in ranges.items():
        kinds = Counter(e["name"].split(":", 1)[0] for e in spans if ":" in e["name"])
        if kinds:
            kind = kinds.most_common(1)[0][0]
            roles[tid] = {
                "stage": "batch thread",
                "batcher": "batch thread",
                "prep": "GPU preparation thread",
            }.get(kind, kind)
    return roles


def _innermost(
    spans: list[dict[str, Any]], at: float, starts: list[float]
) -> dict[str, Any] | None:
    """The latest-starting span (sorted by start; ``starts``: their start times) around ``at``: the
    innermost one, nested spans starting after their parents. Looks back a bounded way (a
    thousand spans), enough for an operator's children."""
    index = bisect.bisect_right(starts, at) - 1
    for e in spans[max(0, index - 1000) : index + 1][::-1]:
        if e["ts"] + e["dur"] >= at:
            return e
    return None


def idle_by_batch_state(
    gaps: list[tuple[float, float, float]],
    batch_ranges: list[dict[str, Any]],
    batch_ops: list[dict[str, Any]],
    threads: dict[int, list[dict[str, Any]]],
    batch_tid: int,
    roles: dict[int, str],
) -> tuple[Counter, Counter]:
    """GPU idle time (gaps of 10 µs and more) by what the batch thread was in when the gap began
    (its innermost range and operator: "between operators" is Python time or the GIL), and by
    the other threads that were inside an operator then (one gap can count for several)."""
    mine: Counter[str] = Counter()
    others: Counter[str] = Counter()
    starts = {tid: [e["ts"] for e in ops] for tid, ops in threads.items()}
    range_starts = [e["ts"] for e in batch_ranges]
    for gap, begin, _ in gaps:
        if gap < 10:
            continue
        at = begin + min(gap / 2, 5.0)
        span = _innermost(batch_ranges, at, range_starts)
        op = _innermost(batch_ops, at, starts.get(batch_tid, []))
        mine[
            f"{span['name'] if span else '(no range)'} | {op['name'] if op else '(between operators)'}"
        ] += gap
        for tid, ops in threads.items():
            if tid != batch_tid and _innermost(ops, at, starts[tid]) is not None:
                others[roles.get(tid, f"thread {tid}")] += gap
    return mine, others


def prep_ranges(
    events: list[dict[str, Any]],
    ranges: dict[int, list[dict[str, Any]]],
    threads: dict[int, list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Each ``prep:*`` range (the GPU preparation thread's work: a new row's portrait, a row's
    signals) with where its time went: its top-level operators, the CUDA launch calls inside it
    (a launch blocks while the GPU's queue is full), its kernels, and how long they waited
    on the GPU after their launch (the queue ahead of them)."""
    launches = [
        e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver") and e.get("ph") == "X"
    ]
    kernel_start = {
        e["args"].get("correlation"): e["ts"]
        for e in events
        if e.get("cat") in GPU_CATEGORIES and e.get("ph") == "X" and "args" in e
    }
    found = []
    for tid, spans in ranges.items():
        for span in (e for e in spans if e["name"].startswith("prep:")):
            begin, end = span["ts"], span["ts"] + span["dur"]
            ops = [e for e in threads.get(tid, []) if begin <= e["ts"] < end]
            inside = [e for e in launches if e["tid"] == tid and begin <= e["ts"] < end]
            calls = [e for e in inside if "Launch" in e["name"]]
            waits = sorted(
                kernel_start[e["args"]["correlation"]] - e["ts"]
                for e in inside
                if e.get("args", {}).get("correlation") in kernel_start
            )
            found.append(
                {
                    "name": span["name"],
                    "dur": span["dur"],
                    "operators_us": thread_summary(ops)["busy_us"] if ops else 0.0,
                    "launches": len(calls),
                    "launch_us": sum(e["dur"] for e in calls),
                    "kernels": len(waits),
                    "median_queue_us": waits[len(waits) // 2] if waits else None,
                }
            )
    return sorted(found, key=lambda r: -r["dur"])


def summarize(path: Path, top: int = 15) -> str:
    events = load_events(path)
    threads = host_ops(events)
    ranges = annotations(events)
    roles = thread_roles(ranges)
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
        batch = next((tid for tid, role in roles.items() if role == "batch thread"), None)
        if batch is not None:
            mine, others = idle_by_batch_state(
                timeline["gaps"], ranges[batch], threads.get(batch, []), threads, batch, roles
            )
            lines.append(
                f"GPU idle (gaps >= 10 µs) by what the batch thread (thread {batch}) was in (ms):"
            )
            lines += [f"  {us / 1e3:9.1f}  {state}" for state, us in mine.most_common(top)]
            lines.append("GPU idle (gaps >= 10 µs) while another thread was in an operator (ms):")
            lines += [f"  {us / 1e3:9.1f}  {who}" for who, us in others.most_common(top)]
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
    prep = prep_ranges(events, ranges, threads)
    if prep:
        lines.append(
            "the GPU preparation thread's ranges (ms: range, in operators, in launch calls; "
            "kernels and their median wait in the GPU's queue):"
        )
        for r in prep[:top]:
            queued = (
                f"{r['median_queue_us'] / 1e3:.1f}" if r["median_queue_us"] is not None else "–"
            )
            lines.append(
                f"  {r['dur'] / 1e3:9.1f}  {r['name']}: operators {r['operators_us'] / 1e3:.1f}, "
                f"{r['launches']} launches {r['launch_us'] / 1e3:.1f}; {r['kernels']} kernels, "
                f"queued {queued}"
            )
    lines.append("host threads (by operator count):")
    for tid, ops in sorted(threads.items(), key=lambda kv: -len(kv[1]))[:top]:
        summary = thread_summary(ops)
        name, longest = summary["longest"]
        busiest = ", ".join(f"{n} {us / 1e3:.1f}" for n, us in summary["by_name"].most_common(4))
        role = f" ({roles[tid]})" if tid in roles else ""
        lines.append(
            f"  thread {tid}{role}: {summary['operators']} operators, {summary['busy_us'] / 1e3:.1f} ms "
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
