"""The state of one animated stream, and its (de)serialisation for resume."""

from __future__ import annotations

import io
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from ..models import HeadPose
from ._preprocess import HostCopy, HostScalar

STATE_VERSION = 1


@dataclass
class Chunk:
    """A 4-frame chunk in the latent window.

    Attributes:
        start: index of its first frame in the driving video (negative: warm-up transition
            frames before frame 0; at or past the end: mirrored padding).
        real: how many of its frames are driving frames to emit (0 for warm-up/padding).
        keypoints: ``(4, K, 3)`` posed keypoints drawn for the pose guider.
        motion: ``(4, T, C)`` motion tokens.
        pose_features: ``(4, C0, h, w)`` pose guider output (recomputed from ``keypoints`` on
            restore, with the same batch shape, so resumed frames are identical).
    """

    start: int
    real: int
    keypoints: torch.Tensor
    motion: torch.Tensor
    pose_features: torch.Tensor | None = None


@dataclass
class PendingKeyframe:
    """A keyframe candidate whose distance is still on its way from the GPU.

    Attributes:
        distance: L2 distance of ``motion`` to the nearest motion in the bank (``.item()``
            reads it, waiting only for the work queued before it).
        latent: ``(1, 4, h, w)`` the candidate frame's clean latent.
        motion: ``(1, T, C)`` its motion tokens.
    """

    distance: HostScalar
    latent: torch.Tensor
    motion: torch.Tensor


@dataclass
class StreamState:
    """Everything one stream carries between denoising calls.

    The portrait-derived part (``clip_embeds``, ``reference_latent``, ``reference_kv``,
    ``reference_pose``, ``reference_motion``) is recomputed from the portrait on restore; the rest is
    what :meth:`state_dict` saves.
    """

    stream_id: str
    seed: int
    portrait_digest: str
    generator: torch.Generator
    clip_embeds: torch.Tensor
    reference_latent: torch.Tensor
    reference_kv: list[tuple[torch.Tensor, torch.Tensor]]
    reference_pose: HeadPose
    reference_motion: torch.Tensor
    latents: torch.Tensor  # (12, 4, h, w) the window minus its newest chunk, oldest frame first
    chunks: deque[Chunk] = field(default_factory=deque)  # the 3 pending chunks matching `latents`
    calls: int = 0  # denoising calls made
    frames_in: int = 0  # driving frames received
    frames_out: int = 0  # driving frames emitted
    total_frames: int | None = None  # known once the input ended
    first_pose: HeadPose | None = None  # pose of driving frame 0 (translation anchor)
    motion_bank: torch.Tensor | None = None  # (n, T, C) motions of the portrait and keyframes
    keyframe_latents: list[torch.Tensor] = field(default_factory=list)  # each (4, h, w)
    bank: list[tuple[torch.Tensor, torch.Tensor]] | None = (
        None  # per layer: portrait's then keyframes' keys/values
    )
    history: deque[tuple[int, torch.Tensor, torch.Tensor]] = field(
        default_factory=lambda: deque(maxlen=16)
    )
    last_observation: Any = None  # the Observation of the frames the last call took (not saved)
    # the last call's keyframe candidate, decided at the start of the next call so the host
    # never waits for a denoising call: (distance to the bank, its x0 latent, its motion)
    pending_keyframe: PendingKeyframe | None = None
    # a part of a split row (pipeline/animate/_parts.py); none of these is saved with the state
    emit_from: int = 0  # frames before this one are denoised but not decoded (a part's overlap)
    # keyframes fixed in advance: candidate call -> (motion, latent); None: decided live
    forced_keyframes: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None
    capture_x0: bool = False  # keep each call's clean latent of the window's oldest frame
    captured_x0: torch.Tensor | None = None  # (1, 4, h, w) the last call's, when capture_x0

    @property
    def ended(self) -> bool:
        return self.total_frames is not None

    @property
    def done(self) -> bool:
        return self.ended and self.frames_out >= self.total_frames

    @property
    def num_keyframes(self) -> int:
        return len(self.keyframe_latents)

    def bank_kv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer keys/values the denoising UNet reads: the portrait's, then the keyframes'."""
        return self.reference_kv if self.bank is None else self.bank

    def add_keyframe_kv(self, keyframe_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.bank = [
            (torch.cat([k, nk], dim=2), torch.cat([v, nv], dim=2))
            for (k, v), (nk, nv) in zip(self.bank_kv(), keyframe_kv)
        ]

    def state_dict(self) -> dict:
        """A dict of tensors and plain values (loadable with ``torch.load(weights_only=True)``)."""
        return self.snapshot().resolve()

    def snapshot(self) -> StateSnapshot:
        """The state as of now, its tensors on their way to host memory.

        The copies are queued behind the work that made the tensors, so the caller never waits
        for the GPU here (a row thread at a segment boundary would otherwise sit out the next
        batched call); :meth:`StateSnapshot.resolve` waits for them, on whichever thread needs
        the bytes.
        """

        def host(t: torch.Tensor | None) -> HostCopy | None:
            # through pinned memory: a plain copy to host memory can stall other threads' launches
            return None if t is None else HostCopy(t.detach())

        pending = self.pending_keyframe
        return StateSnapshot(
            {
                "version": STATE_VERSION,
                "stream_id": self.stream_id,
                "seed": self.seed,
                "portrait_digest": self.portrait_digest,
                "rng_state": self.generator.get_state(),
                "latents": host(self.latents),
                "chunks": [
                    {
                        "start": c.start,
                        "real": c.real,
                        "keypoints": host(c.keypoints),
                        "motion": host(c.motion),
                    }
                    for c in self.chunks
                ],
                "calls": self.calls,
                "frames_in": self.frames_in,
                "frames_out": self.frames_out,
                "total_frames": self.total_frames,
                "first_pose": None
                if self.first_pose is None
                else {k: host(v) for k, v in vars(self.first_pose).items()},
                "motion_bank": host(self.motion_bank),
                "keyframe_latents": [host(t) for t in self.keyframe_latents],
                "history": [(i, host(k), host(m)) for i, k, m in self.history],
                "pending_keyframe": None
                if pending is None
                else {
                    "distance": pending.distance,
                    "latent": host(pending.latent),
                    "motion": host(pending.motion),
                },
            }
        )


class StateSnapshot:
    """A :meth:`StreamState.snapshot`: the state's values, device tensors still being copied."""

    def __init__(self, values: dict) -> None:
        self._values = values

    def resolve(self) -> dict:
        """The state dict (waits for the copies; a keyframe distance is read as a float)."""

        def settle(value: Any) -> Any:
            if isinstance(value, HostScalar):
                return float(value.item())
            if isinstance(value, HostCopy):
                return value.result()
            if isinstance(value, dict):
                return {k: settle(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return type(value)(settle(v) for v in value)
            return value

        return settle(self._values)

    def to_bytes(self) -> bytes:
        return serialize_state(self.resolve())


def serialize_state(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def deserialize_state(data: bytes) -> dict:
    """Inverse of :func:`serialize_state`; never executes code from the bytes."""
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        found = state.get("version") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"animator state has version {found!r}; this build reads version {STATE_VERSION}"
        )
    return state
