"""PersonaLive's streaming generation algorithm (knows nothing of files or Ray)."""

from ._animator import Observation, StreamingAnimator
from ._batcher import BatchStats, StepBatcher
from ._preprocess import HostCopy
from ._rehearsal import rehearse
from ._schedule import StaggeredSchedule
from ._state import StateSnapshot, StreamState, deserialize_state, serialize_state

__all__ = [
    "BatchStats",
    "HostCopy",
    "Observation",
    "StaggeredSchedule",
    "StepBatcher",
    "StateSnapshot",
    "StreamState",
    "StreamingAnimator",
    "deserialize_state",
    "rehearse",
    "serialize_state",
]
