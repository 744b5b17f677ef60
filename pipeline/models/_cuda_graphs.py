"""Replay a network call as a captured CUDA graph: one launch instead of thousands.

A batched denoising call queues ~12,000 kernels; launched one by one from Python, the GPU idles in
the short gaps between them (5-7 % of a call on the H100, docs/benchmarks.md). A CUDA graph
records the call once and replays every kernel with one launch.

A graph replays fixed memory addresses, so :class:`GraphedCall` keeps one graph per argument
signature (shapes, strides, dtypes and every non-tensor argument): a stream count or a bank
length it has not seen runs eagerly first; the second time, it is captured; from then on it is
replayed after the new arguments are copied into the graph's input buffers. An argument that is
the same, unmodified tensor as in the previous replay is not copied again (the reference banks,
which change only when a keyframe joins). All graphs share one memory pool: they run one after
another, so each reuses the others' scratch memory.
"""

from __future__ import annotations

import logging
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree

logger = logging.getLogger(__name__)

# one capture at a time in the process: a capture starts by synchronising the device, which is
# not allowed while another thread's capture is under way (it fails both; on the H200 a row's
# signal embeddings captured while the batch thread captured the UNet, whose graphs were then
# dropped for the rest of the job). Replays and eager calls of other threads go on meanwhile.
_CAPTURING = threading.Lock()


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]  # the graph's input buffers, one per tensor argument
    output: Any  # a tensor, or tuples/lists/dicts of them
    # the tensor last copied into each input buffer (weakly: a freed one is copied again) and its
    # version counter, to skip copying an unchanged one
    sources: list[tuple[weakref.ref, int]]


def _end_generator_capture() -> None:
    """A capture that failed never ran its end, so the CUDA random generators still count as
    capturing and the next ``torch.randn`` on the GPU raises ("Offset increment outside graph
    capture"). An empty capture that ends properly (on its own stream and pool) closes that."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the CUDA graph is empty": it is meant to be
        with torch.cuda.graph(torch.cuda.CUDAGraph(), stream=torch.cuda.Stream()):
            pass


def _signature(leaves: list[Any], spec: pytree.TreeSpec) -> tuple:
    parts: list[Any] = [spec]
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            parts.append((tuple(leaf.shape), leaf.stride(), leaf.dtype, leaf.device))
        else:
            parts.append(("value", leaf))
    return tuple(parts)


class GraphedCall:
    """``fn(*args, **kwargs)`` through captured CUDA graphs, one per argument signature.

    Args:
        fn: a pure GPU computation (no host synchronisation, no randomness) whose arguments are
            tensors, lists/tuples/dicts of them, ``None`` or hashable values.
        name: for log messages.
        max_graphs: graphs kept; the least recently used is dropped beyond this.

    ``fn`` returns a tensor or tuples/lists/dicts of them; what is returned are fresh copies, so
    a later replay cannot overwrite them. Calls from several threads take turns (a replay's input
    buffers and outputs are shared). Capture failures (an operation a graph cannot hold) are
    logged once and the call runs eagerly from then on.
    """

    def __init__(
        self, fn: Callable[..., torch.Tensor], *, name: str = "call", max_graphs: int = 8
    ) -> None:
        self.fn = fn
        self.name = name
        self.max_graphs = max_graphs
        self.enabled = True
        self.captures = 0  # graphs captured so far (for logs and tests)
        self.replays = 0
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._seen: set[tuple] = set()
        self._pool: Any = None
        self._stream: torch.cuda.Stream | None = None
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        leaves, spec = pytree.tree_flatten((args, kwargs))
        if not self.enabled or not any(isinstance(x, torch.Tensor) and x.is_cuda for x in leaves):
            return self.fn(*args, **kwargs)
        with self._lock:
            return self._call(leaves, spec, args, kwargs)

    def _call(self, leaves: list[Any], spec: pytree.TreeSpec, args: Any, kwargs: Any) -> Any:
        key = _signature(leaves, spec)
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            return self._replay(graph, leaves)
        if key not in self._seen:  # first sight: maybe a passing shape (a stream just ended)
            self._seen.add(key)
            return self.fn(*args, **kwargs)
        with _CAPTURING:
            return self._capture(key, leaves, spec)

    def _replay(self, graph: _Graph, leaves: list[Any]) -> Any:
        tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
        for i, (buffer, source) in enumerate(zip(graph.inputs, tensors)):
            last, version = graph.sources[i]
            if last() is source and version == source._version:
                continue
            buffer.copy_(source)
            graph.sources[i] = (weakref.ref(source), source._version)
        graph.graph.replay()
        self.replays += 1
        return pytree.tree_map(torch.Tensor.clone, graph.output)

    def _capture(self, key: tuple, leaves: list[Any], spec: pytree.TreeSpec) -> Any:
        if self._stream is None:
            self._stream = torch.cuda.Stream()
            self._pool = torch.cuda.graph_pool_handle()
        inputs = [
            torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device).copy_(x)
            if isinstance(x, torch.Tensor)
            else x
            for x in leaves
        ]
        args, kwargs = pytree.tree_unflatten(inputs, spec)
        stream = self._stream
        stream.wait_stream(torch.cuda.current_stream())
        # the eager run on the capture stream is this call's result and warms up whatever
        # that stream initialises lazily (library workspaces), which a capture must not do
        with torch.cuda.stream(stream):
            result = self.fn(*args, **kwargs)
        torch.cuda.current_stream().wait_stream(stream)
        for tensor in pytree.tree_leaves(result):  # made on the side stream, used here
            tensor.record_stream(torch.cuda.current_stream())
        if len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread-local: the row threads may copy frames meanwhile; only this thread's calls
            # are checked for operations a capture cannot hold
            with torch.cuda.graph(
                graph, pool=self._pool, stream=stream, capture_error_mode="thread_local"
            ):
                output = self.fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any capture failure: run eagerly from now on
            self.enabled = False
            self._graphs.clear()
            del graph
            _end_generator_capture()
            logger.warning(
                "%s: CUDA graph capture failed (%s: %s); running it without graphs",
                self.name,
                type(err).__name__,
                err,
            )
            return result
        tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
        sources = [(weakref.ref(x), x._version) for x in leaves if isinstance(x, torch.Tensor)]
        self._graphs[key] = _Graph(graph, tensors, output, sources)
        self.captures += 1
        logger.info(
            "%s: captured CUDA graph %d for %s",
            self.name,
            self.captures,
            [tuple(x.shape) for x in leaves if isinstance(x, torch.Tensor)][:3],
        )
        return result
