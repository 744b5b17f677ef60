"""PersonaLive's streaming generation: one portrait, driving frames four at a time, forever.

Per stream the animator keeps a 16-frame latent window of four 4-frame chunks at noise levels
0/333/666/999 (oldest first). Each call appends the newest chunk (the portrait's latent noised to
t=999, conditioned on the new driving frames' pose and motion), runs one denoising-UNet call over
the window, and emits the oldest chunk, now clean, through the VAE. So a driving frame leaves three
calls after it arrives; the window starts filled with a 12-frame transition from the portrait's own
pose/expression to the first driving frame (not emitted unless ``keep_warmup``), and at the end of
the input mirrored frames flush the last real chunks out. History keyframes (at most
``max_keyframes``) join the portrait in the self-attention bank when the expression strays far from
everything in the bank. Memory per stream is constant however long the video.

Several streams (different portraits) advance together in one batched denoising call.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from ..config import AnimatorConfig
from ..models import (
    BankPadding,
    HeadPose,
    PersonaLiveModels,
    drive_pose,
    posed_keypoints,
    warmup_poses,
)
from ._preprocess import (
    HostScalar,
    as_rgb_array,
    clip_pixels,
    frames_to_signed,
    resize_lanczos,
    signed_to_output,
    to_device,
    to_signed_tensor,
)
from ._schedule import StaggeredSchedule
from ._state import Chunk, PendingKeyframe, StreamState, deserialize_state

logger = logging.getLogger(__name__)

Frames = torch.Tensor | np.ndarray


@dataclass
class Observation:
    """What the animator takes from driving frames: each frame's head pose and motion tokens.

    Computed from pixels by the keypoint extractor and the motion encoder; it can be cached and
    handed to :meth:`StreamingAnimator.advance` instead of the frames (rows sharing a driving
    video then skip decoding it and running both networks again).

    Attributes:
        pose: the keypoint extractor's output for ``k`` frames.
        motion: ``(k, T, C)`` motion tokens.
    """

    pose: HeadPose
    motion: torch.Tensor

    def __len__(self) -> int:
        return int(self.motion.shape[0])

    def to(self, device: torch.device, dtype: torch.dtype) -> Observation:
        """On ``device`` in ``dtype``; host tensors (a cache's) are copied as frames are, without
        waiting for the GPU's queue (`to_device`)."""
        fields = {k: to_device(v, device).to(dtype) for k, v in vars(self.pose).items()}
        return Observation(HeadPose(**fields), to_device(self.motion, device).to(dtype))


class StreamingAnimator:
    """Animate portraits with PersonaLive, streaming, for several streams at once.

    Args:
        models: the loaded networks (:func:`pipeline.models.load_personalive`).
        config: algorithm settings (keyframes, translation damping, output format).
        resolution: output frame size (frames are ``resolution × resolution``); driving frames
            must already be square at this size.

    Typical use::

        stream = animator.fuse_reference(portrait, seed=42)
        for chunk in chunks_of_4:                  # uint8 (4, H, W, 3)
            emit(animator.push(stream, chunk))     # 0 frames for the first 3 calls, then 4
        emit(animator.finish(stream, last_partial_chunk_or_None))
    """

    def __init__(
        self,
        models: PersonaLiveModels,
        config: AnimatorConfig | None = None,
        *,
        resolution: int = 512,
    ) -> None:
        self.models = models
        self.config = config or AnimatorConfig()
        self.schedule = StaggeredSchedule()
        self.resolution = resolution
        factor = models.vae_scale_factor * 2 ** (len(models.denoising_unet.down_blocks) - 1)
        if resolution % factor:
            raise ValueError(
                f"model.resolution={resolution} must be a multiple of {factor} for this model"
            )
        self.latent_size = resolution // models.vae_scale_factor
        self._batch_banks = _LastBatchedBanks()

    # ------------------------------------------------------------------ reference

    @torch.no_grad()
    def fuse_reference(self, portrait: Frames, *, seed: int, stream_id: str = "") -> StreamState:
        """Encode a square portrait once: CLIP token, latent, reference bank, pose and motion.

        Args:
            portrait: ``(S, S, 3)`` uint8 RGB (any size; resized here).
            seed: seeds this stream's noise (same seed, same frames).
            stream_id: a label carried in the state (row id).

        Returns:
            A fresh :class:`StreamState` with the 12 warm-up latents drawn.
        """
        models, device = self.models, self.models.device
        image = as_rgb_array(portrait)
        if image.shape[0] != image.shape[1]:
            raise ValueError(
                f"portrait must be square (crop or pad it first); got {image.shape[1]}x{image.shape[0]}"
            )
        digest = hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()
        # copied through pinned memory: a plain copy would wait for every batched call queued
        # before it (this runs on the preparation thread while other rows render), and rows
        # would start only as fast as those calls end
        encoding = models.encode_portrait(
            to_device(to_signed_tensor(resize_lanczos(image, self.resolution)), device),
            to_device(to_signed_tensor(resize_lanczos(image, models.keypoint_input_size)), device),
            to_device(clip_pixels(image, models.clip_image_size), device),
            self.resolution,
        )
        latent, motion = encoding.latent, encoding.motion
        generator = torch.Generator().manual_seed(int(seed))
        pending = self.schedule.pending_frames
        noise = self._noise(generator, pending)
        timesteps = self.schedule.window_timesteps(device)[:pending]
        latents = self.schedule.add_noise(latent.expand(pending, -1, -1, -1), noise, timesteps)
        return StreamState(
            stream_id=stream_id,
            seed=int(seed),
            portrait_digest=digest,
            generator=generator,
            clip_embeds=encoding.clip_embeds,
            reference_latent=latent,
            reference_kv=encoding.reference_kv,
            reference_pose=encoding.pose,
            reference_motion=motion,
            latents=latents,
            motion_bank=motion.clone(),
        )

    def clip_inputs(self, images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
        """The image encoder's input ``(n, 3, S, S)`` (host, float32) for uint8 RGB images,
        preprocessed as :meth:`fuse_reference` preprocesses the portrait (CPU work: resizing)."""
        size = self.models.clip_image_size
        return torch.cat([clip_pixels(as_rgb_array(image), size) for image in images])

    @torch.no_grad()
    def embed_images(self, inputs: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings ``(n, C)`` on the model's device of :meth:`clip_inputs`, by the
        loaded image encoder, as the portrait's ``StreamState.clip_embeds`` is made: output frames
        can be compared with their portrait (a row's signals)."""
        return self.models.embed_images(to_device(inputs, self.models.device))

    def _noise(self, generator: torch.Generator, frames: int) -> torch.Tensor:
        """``(frames, 4, h, w)`` Gaussian noise, drawn as the reference draws it: ``(1, 4, frames, h, w)``."""
        size = self.latent_size
        noise = (
            torch.randn((1, 4, frames, size, size), generator=generator)[0]
            .transpose(0, 1)
            .contiguous()
        )
        return to_device(noise, self.models.device).to(self.models.dtype)

    # ------------------------------------------------------------------ public stepping

    def push(self, stream: StreamState, frames: Frames) -> torch.Tensor:
        """Feed one chunk of exactly 4 driving frames; returns the frames finished by this call."""
        if len(frames) != self.schedule.chunk_frames:
            raise ValueError(
                f"push() takes {self.schedule.chunk_frames} frames, got {len(frames)}; "
                "give the last, shorter chunk to finish()"
            )
        return self.advance([stream], [frames])[0]

    def finish(self, stream: StreamState, frames: Frames | None = None) -> torch.Tensor:
        """End the input (with an optional last chunk of 1–4 frames) and return every frame left."""
        outputs = [
            self.advance([stream], [frames if frames is not None and len(frames) else None])[0]
        ]
        while not stream.done:
            outputs.append(self.advance([stream], [None])[0])
        return torch.cat(outputs)

    @torch.no_grad()
    def advance(
        self, streams: Sequence[StreamState], frames: Sequence[Frames | Observation | None]
    ) -> list[torch.Tensor]:
        """One denoising call for several streams at once.

        Args:
            streams: states from :meth:`fuse_reference` / :meth:`restore`, none of them done.
            frames: per stream, uint8 ``(k, H, W, 3)`` driving frames with 1 ≤ k ≤ 4 — fewer than
                4 marks that stream's last chunk — or their :class:`Observation` (cached), or
                ``None`` once its input has ended (flush). Each stream's observation of this
                call is left in ``stream.last_observation``.

        Returns:
            Per stream, the output frames finished by this call: ``(n, H, W, 3)`` uint8 (or float
            in [0, 1]), in driving-frame order; n is 0 during warm-up, else up to 4.
        """
        if len(streams) != len(frames) or not streams:
            raise ValueError(
                f"advance() needs one frames entry per stream; got {len(streams)} streams, {len(frames)}"
            )
        # the stages are named in profiler traces (scripts/trace_summary.py sums GPU time by them)
        with record_function("stage:observe"):
            driving = [self._accept(stream, chunk) for stream, chunk in zip(streams, frames)]
            computed = self._observe([d for d in driving if isinstance(d, torch.Tensor)])
            new_chunks = []
            for stream, given in zip(streams, driving):
                observed = computed.pop(0) if isinstance(given, torch.Tensor) else given
                stream.last_observation = observed
                new_chunks.append(self._enter_chunk(stream, observed))
        with record_function("stage:keyframes"):
            for stream in streams:  # the previous call's candidate joins the bank before this one
                self._settle_keyframe(stream)
            distances = [self._keyframe_distance(stream) for stream in streams]
        with record_function("stage:denoise"):
            emitted = self._denoise(streams, new_chunks, distances)
        with record_function("stage:decode"):
            return self._decode(emitted)

    # ------------------------------------------------------------------ steps of a call

    def check_chunk(self, stream: StreamState, chunk: Frames | Observation | None) -> None:
        """Raise ``ValueError`` if ``stream`` cannot take ``chunk`` now; changes nothing (callers
        that batch streams check each one first, so a bad chunk fails only its own stream)."""
        if stream.done:
            raise ValueError(f"stream {stream.stream_id!r} is finished; start a new one")
        if chunk is None or len(chunk) == 0:
            if not stream.ended and stream.frames_in == 0:
                raise ValueError(f"stream {stream.stream_id!r} ended before any driving frame")
            return
        if stream.ended:
            raise ValueError(f"stream {stream.stream_id!r} already received its last chunk")
        if isinstance(chunk, Observation):
            if not 1 <= len(chunk) <= self.schedule.chunk_frames:
                raise ValueError(f"an observation chunk must hold 1..4 frames; got {len(chunk)}")
            return
        size = self.resolution
        shape = tuple(chunk.shape)
        if not 1 <= shape[0] <= self.schedule.chunk_frames or shape[1:] != (size, size, 3):
            raise ValueError(f"driving chunk must be (1..4, {size}, {size}, 3) uint8; got {shape}")

    def _accept(
        self, stream: StreamState, chunk: Frames | Observation | None
    ) -> torch.Tensor | Observation | None:
        """Validate a stream's input for this call; pixels become signed tensors."""
        self.check_chunk(stream, chunk)
        if chunk is None or len(chunk) == 0:
            if not stream.ended:
                stream.total_frames = stream.frames_in
            return None
        if isinstance(chunk, Observation):
            return chunk.to(self.models.device, self.models.dtype)
        return frames_to_signed(chunk, self.models.device)

    @torch.no_grad()
    def observe(self, chunks: Sequence[Frames]) -> list[Observation]:
        """Head pose and motion tokens of each chunk of uint8 ``(k, H, W, 3)`` driving frames, in
        one batch (what :meth:`advance` computes from pixels; a part's keyframe pass reads them
        without denoising)."""
        return self._observe([frames_to_signed(chunk, self.models.device) for chunk in chunks])

    def _observe(self, batches: list[torch.Tensor]) -> list[Observation]:
        """Head pose and motion tokens of every new driving frame (all streams in one batch)."""
        if not batches:
            return []
        pose, motion = self.models.observe(torch.cat(batches), self.resolution)
        results, start = [], 0
        for batch in batches:
            end = start + batch.shape[0]
            results.append(Observation(pose.index(slice(start, end)), motion[start:end]))
            start = end
        return results

    def _enter_chunk(self, stream: StreamState, observed: Observation | None) -> Chunk:
        """Build this call's newest chunk (real frames, or mirrored padding) for one stream."""
        chunk_frames = self.schedule.chunk_frames
        start = stream.chunks[-1].start + chunk_frames if stream.chunks else 0
        real = 0
        if observed is not None:
            pose, motion = observed.pose, observed.motion
            first_call = stream.first_pose is None
            if first_call:
                stream.first_pose = pose.index(0)
            keypoints = posed_keypoints(
                drive_pose(
                    stream.reference_pose, stream.first_pose, pose, self.config.translation_scale
                )
            )
            real = keypoints.shape[0]
            for j in range(real):
                stream.history.append((stream.frames_in + j, keypoints[j], motion[j]))
            stream.frames_in += real
            if real < chunk_frames:
                stream.total_frames = stream.frames_in
            if first_call:
                self._enter_warmup(stream, pose.index(0), motion[:1])
            start = stream.frames_in - real
        padding = [
            self._mirror(stream, index) for index in range(start + real, start + chunk_frames)
        ]
        recent = [entry for entry in stream.history if entry[0] >= start][:real]
        keypoints = torch.stack([k for _, k, _ in recent] + [k for k, _ in padding])
        motion = torch.stack([m for _, _, m in recent] + [m for _, m in padding])
        chunk = Chunk(start=start, real=real, keypoints=keypoints, motion=motion)
        chunk.pose_features = self._pose_features(keypoints)
        return chunk

    def _enter_warmup(
        self, stream: StreamState, first_pose: HeadPose, first_motion: torch.Tensor
    ) -> None:
        """The 12-frame transition from the portrait to the first driving frame (3 pending chunks)."""
        pending, chunk_frames = self.schedule.pending_frames, self.schedule.chunk_frames
        keypoints = posed_keypoints(warmup_poses(stream.reference_pose, first_pose, pending))
        alphas = torch.linspace(
            0, 1, pending + 1, dtype=first_motion.dtype, device=first_motion.device
        )[:-1]
        weights = alphas.view(-1, 1, 1)
        motion = (1 - weights) * stream.reference_motion + weights * first_motion
        for i in range(0, pending, chunk_frames):
            chunk = Chunk(
                start=i - pending,
                real=0,
                keypoints=keypoints[i : i + chunk_frames],
                motion=motion[i : i + chunk_frames],
            )
            chunk.pose_features = self._pose_features(chunk.keypoints)
            stream.chunks.append(chunk)

    def _mirror(self, stream: StreamState, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning of padding frame ``index`` (≥ the input's length): the input mirrored
        backwards from its second-to-last frame, as the published offline script pads."""
        total = stream.total_frames
        if total is None:
            raise RuntimeError("padding requested before the stream ended")
        source = _reflect(2 * total - 2 - index, total)
        for frame_index, keypoints, motion in stream.history:
            if frame_index == source:
                return keypoints, motion
        raise RuntimeError(f"frame {source} is no longer in the stream's history")

    def _pose_features(self, keypoints: torch.Tensor) -> torch.Tensor:
        """Pose guider on one chunk's canvases (always 4 at a time: same numbers on resume)."""
        return self.models.pose_features(keypoints, self.resolution)

    def _keyframe_distance(self, stream: StreamState) -> HostScalar | None:
        """Distance of the window's oldest frame's motion to the bank, on its way to the host, or
        None when this call cannot add a keyframe (too early, or the cap is reached).

        From call ``keyframe_min_chunks`` on, the oldest frame of the window joins the bank when
        its motion is farther than ``keyframe_threshold`` (L2) from every motion in the bank. The
        value is read at the start of the stream's next call (:meth:`_settle_keyframe`), before
        that call's denoising, so the host never waits for a denoising call to finish.
        """
        config = self.config
        if (
            stream.forced_keyframes is not None
            or stream.calls < config.keyframe_min_chunks
            or stream.num_keyframes >= config.max_keyframes
        ):
            return None
        candidate = stream.chunks[0].motion[0].float().flatten()
        bank = stream.motion_bank.float().flatten(1)
        return HostScalar((bank - candidate).pow(2).sum(dim=1).sqrt().min())

    def _settle_keyframe(self, stream: StreamState) -> None:
        """Add the previous call's candidate to the bank if it was far enough from it."""
        if stream.forced_keyframes is not None:  # decided in advance (a part's keyframe pass)
            forced = stream.forced_keyframes.get(stream.calls - 1)
            if forced is not None:
                stream.motion_bank = torch.cat([stream.motion_bank, forced[0]])
                self._add_keyframe(stream, forced[1])
            return
        pending, stream.pending_keyframe = stream.pending_keyframe, None
        if pending is None or pending.distance.item() <= self.config.keyframe_threshold:
            return
        stream.motion_bank = torch.cat([stream.motion_bank, pending.motion])
        self._add_keyframe(stream, pending.latent)

    def _denoise(
        self,
        streams: Sequence[StreamState],
        new_chunks: list[Chunk],
        keyframe_distances: list[HostScalar | None],
    ) -> list[tuple[StreamState, Chunk, torch.Tensor]]:
        """The batched denoising call and DDIM step; returns what each stream emits (latents),
        in the order of ``streams``.

        Inside the call the streams run longest bank first (stable): streams with equal banks
        form one run for the bank attention, and the call's shapes depend on how many streams
        hold how many keyframes, not on the order rows handed in their chunks — a CUDA graph
        (``model.cuda_graphs``) is captured once per such mix instead of once per ordering."""
        order = sorted(range(len(streams)), key=lambda i: -streams[i].num_keyframes)
        if order != list(range(len(streams))):
            emitted = self._denoise(
                [streams[i] for i in order],
                [new_chunks[i] for i in order],
                [keyframe_distances[i] for i in order],
            )
            restored: list[tuple[StreamState, Chunk, torch.Tensor]] = [emitted[0]] * len(order)
            for position, i in enumerate(order):
                restored[i] = emitted[position]
            return restored
        models, schedule = self.models, self.schedule
        device, dtype = models.device, models.dtype
        chunk_frames = schedule.chunk_frames
        new_latents = []
        for stream in streams:
            noise = self._noise(stream.generator, chunk_frames)
            t_max = schedule.window_timesteps(device)[-chunk_frames:]
            new_latents.append(
                schedule.add_noise(
                    stream.reference_latent.expand(chunk_frames, -1, -1, -1), noise, t_max
                )
            )
        # one layout whatever the streams' history: a stream's first call holds the portrait's
        # latents, its later ones the channels-last step's, and in other layouts the batched
        # call would be another CUDA graph signature for every mix of new and running streams
        sample = torch.stack([torch.cat([s.latents, n]) for s, n in zip(streams, new_latents)])
        sample = sample.contiguous()
        windows = [list(s.chunks) + [c] for s, c in zip(streams, new_chunks)]
        motion = torch.stack([torch.cat([c.motion for c in w]) for w in windows]).to(dtype)
        pose = torch.stack([torch.cat([c.pose_features for c in w]) for w in windows])
        bank_kv, bank_mask = self._batch_banks([s.bank_kv() for s in streams])
        timesteps = schedule.window_timesteps(device)
        noise_pred = models.denoising_unet(
            sample,
            timesteps,
            torch.cat([s.clip_embeds for s in streams]),
            motion,
            pose,
            bank_kv=bank_kv,
            bank_mask=bank_mask,
        ).sample
        previous, x0 = schedule.step(noise_pred, timesteps, sample)
        window = torch.cat([x0[:, :chunk_frames], previous[:, chunk_frames:]], dim=1).to(dtype)
        emitted = []
        for i, (stream, chunk) in enumerate(zip(streams, new_chunks)):
            stream.latents = window[i, chunk_frames:]
            stream.chunks.append(chunk)
            finished = stream.chunks.popleft()
            if keyframe_distances[i] is not None:
                stream.pending_keyframe = PendingKeyframe(
                    keyframe_distances[i], x0[i, 0:1].to(dtype), finished.motion[:1]
                )
            if stream.capture_x0:
                stream.captured_x0 = x0[i, 0:1].to(dtype)
            stream.calls += 1
            emitted.append((stream, finished, window[i, :chunk_frames]))
        return emitted

    def _add_keyframe(self, stream: StreamState, latent: torch.Tensor) -> None:
        bank = self.models.reference_unet(latent, stream.clip_embeds)
        stream.add_keyframe_kv(self.models.denoising_unet.project_bank(bank))
        stream.keyframe_latents.append(latent[0])
        logger.debug(
            "stream %s: history keyframe %d at call %d",
            stream.stream_id,
            stream.num_keyframes,
            stream.calls,
        )

    def _decode(self, emitted: list[tuple[StreamState, Chunk, torch.Tensor]]) -> list[torch.Tensor]:
        """VAE-decode the frames each stream emits (warm-up/padding frames are skipped)."""
        selected, counts = [], []
        for stream, chunk, latents in emitted:
            count = chunk.real
            if self.config.keep_warmup and chunk.start < 0:
                count = latents.shape[0]
            if stream.emit_from and chunk.start < stream.emit_from:  # a part's overlap: never shown
                count = 0
            stream.frames_out += chunk.real
            selected.append(latents[:count])
            counts.append(count)
        outputs: list[torch.Tensor] = []
        if sum(counts):
            images = self.models.decode(torch.cat(selected))  # the VAE, or TAESD when chosen
            frames = signed_to_output(images, self.config.output_dtype)
            outputs = list(torch.split(frames, counts))
        else:
            empty_dtype = torch.float32 if self.config.output_dtype == "float" else torch.uint8
            size = self.resolution
            outputs = [
                torch.empty((0, size, size, 3), dtype=empty_dtype, device=self.models.device)
            ] * len(counts)
        return outputs

    # ------------------------------------------------------------------ resume

    @torch.no_grad()
    def restore(self, portrait: Frames, saved: dict | bytes) -> StreamState:
        """Rebuild a stream from its portrait and a :meth:`StreamState.state_dict` (or its bytes).

        The continuation produces the frames an uninterrupted run would have produced.
        """
        saved = deserialize_state(saved) if isinstance(saved, (bytes, bytearray)) else saved
        stream = self.fuse_reference(portrait, seed=saved["seed"], stream_id=saved["stream_id"])
        if stream.portrait_digest != saved["portrait_digest"]:
            raise ValueError(
                f"stream {saved['stream_id']!r}: the portrait differs from the one this state was saved with"
            )
        device, dtype = self.models.device, self.models.dtype

        def move(tensor: torch.Tensor) -> torch.Tensor:
            # through pinned memory, as fuse_reference copies: a resumed row is prepared while
            # other rows' calls fill the GPU's queue
            return to_device(tensor, device)

        stream.generator.set_state(saved["rng_state"])
        stream.latents = move(saved["latents"]).to(dtype)
        for entry in saved["chunks"]:
            chunk = Chunk(
                start=entry["start"],
                real=entry["real"],
                keypoints=move(entry["keypoints"]),
                motion=move(entry["motion"]),
            )
            chunk.pose_features = self._pose_features(chunk.keypoints)
            stream.chunks.append(chunk)
        stream.calls = saved["calls"]
        stream.frames_in = saved["frames_in"]
        stream.frames_out = saved["frames_out"]
        stream.total_frames = saved["total_frames"]
        if saved["first_pose"] is not None:
            stream.first_pose = HeadPose(**{k: move(v) for k, v in saved["first_pose"].items()})
        stream.motion_bank = move(saved["motion_bank"])
        for latent in saved["keyframe_latents"]:
            self._add_keyframe(stream, move(latent).to(dtype)[None])
        pending = saved.get("pending_keyframe")  # absent in states saved before it existed
        if pending is not None:
            stream.pending_keyframe = PendingKeyframe(
                HostScalar(torch.tensor(pending["distance"])),
                move(pending["latent"]).to(dtype),
                move(pending["motion"]),
            )
        stream.history = deque(
            ((i, move(k), move(m)) for i, k, m in saved["history"]),
            maxlen=stream.history.maxlen,
        )
        return stream


def _reflect(index: int, length: int) -> int:
    """Index into ``[0, length)`` reflected at both ends (…2,1,0,1,2… / …n-2,n-1,n-2…)."""
    if length == 1:
        return 0
    period = 2 * (length - 1)
    index %= period
    return period - index if index >= length else index


class _LastBatchedBanks:
    """:func:`_batch_banks` that reuses its last result while the same streams (in the same order)
    still have the same banks: they change only when a keyframe joins, so most calls skip
    copying every stream's bank into the batch (and a CUDA graph skips copying the batch)."""

    def __init__(self) -> None:
        self._sources: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        self._batched: Any = None

    def __call__(
        self, banks: list[list[tuple[torch.Tensor, torch.Tensor]]]
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[BankPadding | None] | None]:
        same = len(banks) == len(self._sources) and all(
            a is b for a, b in zip(banks, self._sources)
        )
        if not same:
            self._sources, self._batched = banks, _batch_banks(banks)
        return self._batched


def _batch_banks(
    banks: list[list[tuple[torch.Tensor, torch.Tensor]]],
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[BankPadding | None] | None]:
    """Stack per-stream banks; streams with fewer keyframes are padded, with their real lengths
    (:class:`~pipeline.models._attention.BankPadding`)."""
    if len(banks) == 1:
        return banks[0], None
    batched, masks = [], []
    any_padding = False
    for layer in zip(*banks):
        lengths = [k.shape[2] for k, _ in layer]
        longest = max(lengths)
        if all(length == longest for length in lengths):
            batched.append((torch.cat([k for k, _ in layer]), torch.cat([v for _, v in layer])))
            masks.append(None)
            continue
        any_padding = True
        keys, values, mask = [], [], []
        for (k, v), length in zip(layer, lengths):
            pad = longest - length
            keys.append(F.pad(k, (0, 0, 0, pad)))
            values.append(F.pad(v, (0, 0, 0, pad)))
            valid = torch.zeros(1, longest, dtype=torch.bool, device=k.device)
            valid[:, :length] = True
            mask.append(valid)
        batched.append((torch.cat(keys), torch.cat(values)))
        masks.append(BankPadding(torch.cat(mask), tuple(lengths)))
    return batched, masks if any_padding else None
