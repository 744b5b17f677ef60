"""Warm workers: render workers that outlive a job on a running Ray cluster.

A job that joins a cluster (``cluster.address``) with ``cluster.keep_workers=true`` leaves its
workers running when it ends, model loaded and first calls made, as *detached* Ray actors named
after what they were started with. The next job with the same settings on that cluster takes
them over instead of starting new ones, so it skips the worker's boot, the imports, the weights
and the first calls of each shape (docs/cluster.md, "Warm workers").

A worker's name says what it holds, so no registry is kept beside Ray's own named actors:
``<prefix>-<signature>-<node id>-<index>``, in the namespace :data:`NAMESPACE`. The signature is
a hash of everything fixed when a worker starts (the model settings, its CPUs, GPUs, threads,
concurrency and restarts); what may differ per job (video, storage) travels with each row. Warm
workers of another signature hold GPUs this job needs, so a job replaces them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from ..config import ModelConfig

logger = logging.getLogger(__name__)

NAMESPACE = "portrait-render"
PREFIX = "warm"
PING_SECONDS = 10.0  # a warm worker is idle: it answers at once, or it is gone


@dataclass(frozen=True)
class WarmName:
    """The parts of a warm worker's actor name."""

    signature: str
    node: str
    index: int

    def __str__(self) -> str:
        return f"{PREFIX}-{self.signature}-{self.node}-{self.index}"

    @classmethod
    def parse(cls, name: str) -> WarmName | None:
        """The parts of ``name``; None for an actor that is not a warm worker."""
        parts = name.split("-")
        if len(parts) != 4 or parts[0] != PREFIX or not parts[3].isdigit():
            return None
        return cls(parts[1], parts[2], int(parts[3]))


def signature(model: ModelConfig, actor_options: dict[str, Any], cpu_threads: int | None) -> str:
    """A short hash of what a worker is started with and keeps for life: two jobs whose
    signatures match can share a worker."""
    fixed = {
        "model": asdict(model),
        "options": {key: actor_options[key] for key in sorted(actor_options)},
        "cpu_threads": cpu_threads,
    }
    text = json.dumps(fixed, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class WarmWorker:
    """A warm worker found on the cluster: its actor, its name's parts and its display name."""

    actor: Any
    name: WarmName
    display: str


def find_warm(sig: str) -> tuple[list[WarmWorker], list[str]]:
    """The live warm workers of signature ``sig`` on the cluster, and the names of warm workers
    of other signatures (stale: started with other settings).

    Each candidate is asked its name (`RenderWorker.describe` is heavier; ``pid`` would not say
    the display name); one that does not answer within :data:`PING_SECONDS` is dead or stuck and
    is left out (and killed: it would hold its GPU for nothing).
    """
    import ray  # noqa: PLC0415

    names = [
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry.get("namespace") == NAMESPACE and WarmName.parse(entry["name"]) is not None
    ]
    ours = [name for name in names if WarmName.parse(name).signature == sig]  # type: ignore[union-attr]
    stale = [name for name in names if name not in ours]
    handles = {}
    for name in ours:
        try:
            handles[name] = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:  # gone between the listing and now
            continue
    calls = {name: actor.display_name.remote() for name, actor in handles.items()}
    found = []
    for name, call in calls.items():
        try:
            display = ray.get(call, timeout=PING_SECONDS)
        except Exception as err:  # noqa: BLE001 - dead, restarting or stuck: not usable now
            logger.warning("warm worker %s did not answer (%s): replacing it", name, err)
            stale.append(name)
            continue
        found.append(WarmWorker(handles[name], WarmName.parse(name), display))  # type: ignore[arg-type]
    return found, stale


def stop_warm(names: list[str]) -> int:
    """Kill the warm workers named ``names`` (those still there); return how many."""
    import ray  # noqa: PLC0415

    stopped = 0
    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
            stopped += 1
        except Exception:  # noqa: BLE001 - already gone
            continue
    return stopped


def next_index(taken: set[WarmName], sig: str, node: str) -> int:
    """The lowest index no warm worker of ``sig`` on ``node`` has."""
    used = {name.index for name in taken if name.signature == sig and name.node == node}
    index = 0
    while index in used:
        index += 1
    return index
