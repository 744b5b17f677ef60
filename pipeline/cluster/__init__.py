"""Ray: an elastic pool of render workers (one per GPU, or CPU workers) fed rows dynamically.

* Embedded local Ray by default, bound to 127.0.0.1; ``cluster.address=auto`` or
  ``ray://host:port`` joins an existing cluster instead.
* Workers are placed node by node (`workers_to_start`): one
  :class:`~pipeline.worker.RenderWorker` actor per GPU of each node, or ``cluster.cpu_workers``
  per node on a cluster without GPUs, at most ``cluster.num_workers`` in all; each stays on its
  node. The model loads once per actor.
* The pool follows the cluster (``cluster.rescan_seconds``): while rows wait for a worker, nodes
  that joined get workers, which take rows once their model is loaded; a node that leaves takes
  its workers with it, and their rows go back to the queue and resume from their last committed
  segment on another worker. A node's loss is not held against its rows
  (`RenderPool.lost_with_node`).
* The least busy worker with room takes the next row (no static partitioning): each holds its
  stream slots' rows plus ``cluster.rows_ahead`` more that it prepares meanwhile (default: as
  many as its slots), so a slot freed by a finished row is taken at the next batched call.
  Results stream back as rows finish, and progress events arrive through a Ray queue; the
  pool's own events (`WorkerJoined`, `WorkerReady`, `WorkerLeft`) go out with them.
* Failure semantics, set on purpose: a worker process that dies is restarted by Ray
  (``max_restarts``) and its row goes back to the queue; a row that has killed its worker
  ``poison_after`` times is quarantined instead of looping; a row failure marked retryable
  (transient storage errors) is retried up to ``row_retries`` times; other failures are final.
* Stopping (``should_stop``, set by SIGINT/SIGTERM on the driver): no row starts any more, rows
  still queued and rows being rendered end "interrupted", and closing the pool kills the workers.
  That loses nothing committed: segments and rows are committed with markers written last, so a
  killed worker leaves at most an unmarked upload that a rerun ignores, and the rerun resumes
  each interrupted row from its last committed segment.
"""

from ._join import LOOPBACK, ClusterJoinError, start_ray
from ._placement import HEAD_RESOURCE, NoRoomError, node_room, workers_to_start
from ._pool import (
    INTERRUPTED_RENDERING,
    INTERRUPTED_WAITING,
    NODE_LEFT,
    RenderPool,
    describe_workers,
)

__all__ = [
    "HEAD_RESOURCE",
    "INTERRUPTED_RENDERING",
    "INTERRUPTED_WAITING",
    "LOOPBACK",
    "NODE_LEFT",
    "ClusterJoinError",
    "NoRoomError",
    "RenderPool",
    "describe_workers",
    "node_room",
    "start_ray",
    "workers_to_start",
]
