"""Where one steady-state call's GPU time goes, by kernel and by the project's Python line that
launched it: the full-size model with random weights, optimised as a worker's is, S streams.

    python -m scripts.profile_call --streams 8 [--tiny-decoder] [--out profile.txt]

Prints the kernels by GPU time, then the PyTorch operators (eager only) with their input shapes
and the innermost project source line that called them: what a trace file alone does not say
(CUDA-graph replays hide their operators; run it without ``model.cuda_graphs``).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch

from scripts._steady import add_model_arguments, steady_animator


def _project_line(event) -> str:
    """The innermost Python frame of this project (else diffusers) above a profiled operator."""
    fallback = None
    parent = event.cpu_parent
    while parent is not None:
        name = parent.name
        if ".py(" in name:
            if ("pipeline/" in name or "jobs/" in name) and "profile_call" not in name:
                return name
            if fallback is None and "diffusers" in name:
                fallback = name[name.find("diffusers") :]
        parent = parent.cpu_parent
    return fallback or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--out", type=Path, default=None)
    add_model_arguments(parser, "cpu: a smoke test (CPU times)")
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    animator, states, chunks = steady_animator(args, args.streams)

    def own_time(event) -> float:  # ms, what the operator itself ran (not its children)
        return (event.self_device_time_total if cuda else event.self_cpu_time_total) / 1e3

    if cuda:
        torch.cuda.synchronize()
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA],
        record_shapes=True,
        with_stack=True,
    ) as profiler:
        for _ in range(args.calls):
            animator.advance(states, chunks)
        if cuda:
            torch.cuda.synchronize()

    lines = []
    events = profiler.key_averages()
    total = sum(own_time(e) for e in events) / args.calls
    lines.append(f"S={args.streams}: {total:.1f} ms of {device.type} time per call")
    by_line: dict[tuple[str, str, str], float] = defaultdict(float)
    for event in profiler.events():
        if ".py(" in event.name or own_time(event) <= 0:
            continue
        shapes = str(event.input_shapes)[:90]
        key = (event.name, shapes, _project_line(event))
        by_line[key] += own_time(event) / args.calls
    lines.append("\nms per call by operator, input shapes and the project line that ran it:")
    for (name, shapes, where), ms in sorted(by_line.items(), key=lambda kv: -kv[1])[: args.top]:
        lines.append(f"{ms:8.2f}  {name:32s} {shapes}\n          {where}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
