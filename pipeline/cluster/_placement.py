"""Where workers go: how many each node holds, which nodes are alive, the head node."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..config import ClusterConfig
from ._join import ClusterJoinError

HEAD_RESOURCE = "node:__internal_head__"  # a resource only Ray's head node has


def node_room(cfg: ClusterConfig, resources: Mapping[str, float], use_gpus: bool) -> int:
    """Workers a node with ``resources`` (its totals, as ``ray.nodes()`` gives them) holds.

    On a GPU cluster one per ``cluster.gpus_per_worker`` of its GPUs; on a cluster without GPUs
    ``cluster.cpu_workers`` (with ``cluster.num_workers`` set: as many as fit); never more than
    its CPUs hold at ``cluster.cpus_per_worker`` each, since a worker that does not fit on the
    node it is pinned to would wait forever.
    """
    fits = int(resources.get("CPU", 0.0) // cfg.cpus_per_worker)
    if use_gpus:
        return min(fits, int(resources.get("GPU", 0.0) // cfg.gpus_per_worker))
    return fits if cfg.num_workers is not None else min(fits, cfg.cpu_workers)


def workers_to_start(
    cfg: ClusterConfig, nodes: Iterable[Mapping[str, Any]], placed: Mapping[str, int]
) -> tuple[dict[str, int], bool]:
    """How many workers to start on each alive node, and whether they use GPUs.

    Args:
        cfg: the cluster settings (`node_room`; ``cluster.num_workers`` caps the total).
        nodes: the cluster's nodes as ``ray.nodes()`` lists them (``NodeID``, ``Alive``,
            ``Resources``).
        placed: workers already started per node id, whatever became of them: a worker that died
            more often than Ray restarts it keeps its place (a crashing node does not get new
            workers forever); the workers of a node that left stop counting with the node.

    Returns:
        ``{node id: workers to start there}`` (the head node first, then by node id) and whether
        the cluster counts as a GPU cluster (its alive nodes have ``cluster.gpus_per_worker`` GPUs
        or more in all).
    """
    alive = sorted(
        (node for node in nodes if node.get("Alive")),
        key=lambda node: (HEAD_RESOURCE not in node["Resources"], node["NodeID"]),
    )
    gpus = sum(node["Resources"].get("GPU", 0.0) for node in alive)
    use_gpus = gpus >= cfg.gpus_per_worker > 0
    budget = float("inf")
    if cfg.num_workers is not None:
        budget = cfg.num_workers - sum(placed.get(node["NodeID"], 0) for node in alive)
    plan: dict[str, int] = {}
    for node in alive:
        count = min(
            budget, node_room(cfg, node["Resources"], use_gpus) - placed.get(node["NodeID"], 0)
        )
        if count > 0:
            plan[node["NodeID"]] = int(count)
            budget -= count
    return plan, use_gpus


class NoRoomError(ClusterJoinError):
    """No node of the cluster can hold a render worker and the pool is fixed
    (``cluster.rescan_seconds=0``); the job stops with exit code 2, like a configuration
    mistake."""

    def __init__(self, needs: str, have: str) -> None:
        self.needs, self.have = needs, have
        self.address, self.reason = "", f"no node has room for a worker ({needs})"
        ConnectionError.__init__(
            self,
            f"no node of the Ray cluster has room for a render worker: each needs {needs}; the "
            f"nodes have {have}. Lower cluster.cpus_per_worker (or cluster.gpus_per_worker), "
            "add a node with more, or set cluster.rescan_seconds above 0 to wait for one",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.needs, self.have))


def alive_nodes(nodes: list[dict[str, Any]] | None = None) -> set[str]:
    """The ids of the cluster's nodes that Ray counts as alive (of ``nodes``, else now)."""
    import ray  # noqa: PLC0415

    return {
        node["NodeID"] for node in (ray.nodes() if nodes is None else nodes) if node.get("Alive")
    }


def on_head(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Actor options that keep a driver-side actor (the progress queue) on the head node, which
    lives as long as the cluster: a queue on a node that leaves would take the job's progress
    with it. Soft, so it is placed anyway on a cluster whose head cannot be told."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

    head = next((node["NodeID"] for node in nodes if HEAD_RESOURCE in node["Resources"]), None)
    if head is None:
        return {}
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(head, soft=True)}
