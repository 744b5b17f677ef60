"""All PersonaLive networks together, and how they are built from configs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from ._attention import (
    AttentionBackend,
    resolve_attention_backend,
    set_attention_backend,
    set_vae_attention_backend,
)
from ._cuda_graphs import GraphedCall
from ._fast_layers import check_kernels, use_fast_layers
from ._fp8 import check_fp8_kernels, check_fp8_mode, check_fp8_producers, use_fp8
from ._fp8_conv import check_fp8_conv_kernel, use_fp8_convolutions
from ._keypoints import (
    HeadPose,
    KeypointExtractor,
    crop_faces,
    draw_keypoint_canvas,
    face_boxes,
    posed_keypoints,
)
from ._motion_encoder import MotionEncoder
from ._pose_guider import PoseGuider
from ._unet import DenoisingOutput, DenoisingUNet, ReferenceUNet, unet_kwargs_from_config
from .architecture import NetworkSizes

logger = logging.getLogger(__name__)

# with CUDA graphs, the decoder's frame count is rounded up to a multiple of this (one chunk):
# four graphs then serve every call of four streams
DECODE_FRAMES_MULTIPLE = 4


class PortraitEncoding(NamedTuple):
    """What a stream needs of its portrait, from :meth:`PersonaLiveModels.encode_portrait`."""

    clip_embeds: torch.Tensor  # (1, 1, C): the UNets' context
    latent: torch.Tensor  # (1, 4, h, w), scaled as the UNets see latents
    reference_kv: list[tuple[torch.Tensor, torch.Tensor]]  # the bank, projected per layer
    pose: HeadPose
    motion: torch.Tensor  # (1, T, C) motion tokens of the face


@dataclass
class PersonaLiveModels:
    """The seven networks of PersonaLive plus the facts the animator needs about them.

    Attributes:
        vae: sd-vae-ft-mse ``AutoencoderKL`` (latents are scaled by ``vae.config.scaling_factor``).
        image_encoder: CLIP vision tower with projection; its ``image_embeds`` is the UNets' context.
        reference_unet: writes the reference bank.
        denoising_unet: predicts noise for 16-frame windows.
        pose_guider: keypoint canvas → features added after the denoising UNet's ``conv_in``.
        motion_encoder: face crop → motion tokens.
        keypoint_extractor: image → head pose and canonical keypoints.
        canvas_radius: radius of the drawn keypoint disks.
        attention: the attention backend in use.
    """

    vae: AutoencoderKL
    image_encoder: CLIPVisionModelWithProjection
    reference_unet: ReferenceUNet
    denoising_unet: DenoisingUNet
    pose_guider: PoseGuider
    motion_encoder: MotionEncoder
    keypoint_extractor: KeypointExtractor
    canvas_radius: int = 4
    attention: AttentionBackend = "sdpa"
    tiny_decoder: AutoencoderTiny | None = None  # TAESD: when set, decodes instead of the VAE
    # the calls replayed as CUDA graphs (``optimize(cuda_graphs=True)``), for their capture counts
    _graphed: list[GraphedCall] = field(default_factory=list, init=False, repr=False)

    def networks(self) -> dict[str, nn.Module]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), nn.Module)
        }

    @property
    def device(self) -> torch.device:
        return self.denoising_unet.conv_in.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoising_unet.conv_in.weight.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def clip_image_size(self) -> int:
        return self.image_encoder.config.image_size

    @property
    def face_crop_size(self) -> int:
        return self.motion_encoder.config.crop_size

    @property
    def keypoint_input_size(self) -> int:
        return self.keypoint_extractor.config.input_size

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> PersonaLiveModels:
        """Every network on ``device`` with its floating-point tensors in ``dtype``.

        Each tensor moves in its own dtype and is cast where it lands: PyTorch casts a host
        tensor copied to a GPU on the host (one thread in a Ray worker: seconds for 3 B
        parameters), and on the GPU in a blink.
        """

        def move(tensor: torch.Tensor) -> torch.Tensor:
            if device is not None:
                tensor = tensor.to(device)
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            return tensor

        for network in self.networks().values():
            network._apply(move)  # what nn.Module.to does, with the order of the two steps chosen
        return self

    def eval(self) -> PersonaLiveModels:
        for network in self.networks().values():
            network.eval().requires_grad_(False)
        return self

    def set_attention_backend(self, requested: str) -> AttentionBackend:
        """Switch every network to ``requested`` (or its fallback); returns the backend in use."""
        backend = resolve_attention_backend(requested, self.device)
        for name in ("reference_unet", "denoising_unet", "motion_encoder"):
            set_attention_backend(getattr(self, name), backend)
        set_vae_attention_backend(self.vae, backend)
        self.image_encoder.config._attn_implementation = "eager" if backend == "eager" else "sdpa"
        self.attention = backend
        logger.info("attention backend: %s", backend)
        return backend

    def observe(self, pixels: torch.Tensor, resolution: int) -> tuple[HeadPose, torch.Tensor]:
        """Signed driving frames ``(N, 3, R, R)`` (R = ``resolution``) → their head poses and
        ``(N, T, C)`` motion tokens: the keypoint extractor, the face boxes its keypoints give,
        and the motion encoder on those crops. Each frame on its own (no mixing across N)."""
        size = self.keypoint_input_size
        unit = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
        return self._pose_and_motion(unit, pixels, resolution)

    def _pose_and_motion(
        self, keypoint_pixels: torch.Tensor, pixels: torch.Tensor, resolution: int
    ) -> tuple[HeadPose, torch.Tensor]:
        """Head poses of signed images at the keypoint extractor's input size, and the motion
        tokens of the faces those poses place in the same images at full size (``pixels``)."""
        pose = self.keypoint_extractor((keypoint_pixels / 2 + 0.5).to(self.dtype))
        boxes = face_boxes(posed_keypoints(pose), resolution)
        motion = self.motion_encoder(crop_faces(pixels, boxes, self.face_crop_size).to(self.dtype))
        return pose, motion

    def encode_portrait(
        self,
        reference: torch.Tensor,
        keypoint_pixels: torch.Tensor,
        clip_pixels: torch.Tensor,
        resolution: int,
    ) -> PortraitEncoding:
        """A portrait, once per stream: the CLIP embedding, the latent, the reference bank
        projected to the denoising UNet's keys/values, the head pose and the face's motion tokens.

        Args:
            reference: the portrait signed ``(1, 3, R, R)`` (R = ``resolution``).
            keypoint_pixels: the portrait signed at the keypoint extractor's input size.
            clip_pixels: the image encoder's normalised input ``(1, 3, c, c)``.
        """
        dtype = self.dtype
        clip_embeds = self.image_encoder(clip_pixels.to(dtype)).image_embeds[:, None]
        latent = self.vae.encode(reference.to(dtype)).latent_dist.mean
        latent = latent * float(self.vae.config.scaling_factor)
        reference_kv = self.denoising_unet.project_bank(self.reference_unet(latent, clip_embeds))
        pose, motion = self._pose_and_motion(keypoint_pixels, reference, resolution)
        return PortraitEncoding(clip_embeds, latent, reference_kv, pose, motion)

    def embed_images(self, clip_pixels: torch.Tensor) -> torch.Tensor:
        """The image encoder's normalised input ``(N, 3, c, c)`` → CLIP image embeddings
        ``(N, C)``, each image on its own (a row's signals compare them with the portrait's)."""
        return self.image_encoder(clip_pixels.to(self.dtype)).image_embeds

    def pose_features(self, keypoints: torch.Tensor, resolution: int) -> torch.Tensor:
        """Posed keypoints ``(N, K, 3)`` → the pose guider's features of their drawn canvases."""
        canvas = draw_keypoint_canvas(keypoints, resolution, self.canvas_radius)
        return self.pose_guider(canvas.to(self.dtype))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """UNet-space latents ``(N, 4, h, w)`` → images ``(N, 3, H, W)`` in [-1, 1]."""
        if self.tiny_decoder is not None:
            return self.tiny_decoder.decode(latents).sample
        return self.vae.decode(latents * (1 / self.vae.config.scaling_factor)).sample

    def optimize(
        self,
        *,
        channels_last: bool = False,
        compile_mode: str = "none",
        cuda_graphs: bool = False,
        backend: str = "inductor",
        fp8: str = "none",
    ) -> None:
        """Speed levers for GPUs: NHWC layout for the convolution-heavy networks (with layers that
        keep it and fold norms, biases, residual adds and upsampling together, on Triton kernels
        on CUDA); in either layout the GEGLU, temporal-attention and bank-attention fast paths
        (:mod:`._fast_layers`; on CUDA the kernels are checked once here, with a PyTorch
        fallback); ``torch.compile`` of the per-call hot path (denoising UNet, VAE decoder):
        whole networks (``"default"``/``"max-autotune"``; minutes of compiling) or their repeated
        blocks (``"regional"``); ``cuda_graphs``: those two calls replayed as CUDA graphs
        (:mod:`._cuda_graphs`; CUDA only). ``backend`` is torch.compile's (tests use a cheap
        one). ``fp8``: ``model.fp8`` (:mod:`._fp8`; ``"unet-linear"``: the denoising UNet's
        feed-forward products from 640 channels in e4m3, their inputs written in e4m3 by the
        kernels before them; ``"unet"``: and its convolutions, :mod:`._fp8_conv`; on GPUs
        that have FP8 tensor cores, else an error)."""
        check_fp8_mode(fp8, self.device)  # before any work: a GPU without FP8 fails at once
        if channels_last:
            for network in (self.denoising_unet, self.vae, self.pose_guider, self.tiny_decoder):
                if network is not None:
                    nn.Module.to(network, memory_format=torch.channels_last)
        for network in self.networks().values():
            use_fast_layers(network, channels_last=channels_last)
        if self.device.type == "cuda":  # the token-layout kernels run in either layout
            check_kernels(self.device, self.dtype)
        if fp8 in ("unet-linear", "unet"):
            check_fp8_kernels(self.device, self.dtype)
            check_fp8_producers(self.device, self.dtype)  # the norms and GEGLU writing FP8
            use_fp8(self.denoising_unet)
        if fp8 == "unet":
            check_fp8_conv_kernel(self.device, self.dtype)
            use_fp8_convolutions(self.denoising_unet)
        if compile_mode == "regional":
            self._compile_regions(backend)
        elif compile_mode != "none":
            self._compile_whole(compile_mode, backend)
        if cuda_graphs and self.device.type == "cuda":
            self._graph_hot_calls()

    def _compile_whole(self, compile_mode: str, backend: str) -> None:
        _allow_recompiles()
        mode = None if compile_mode == "default" else compile_mode
        self.denoising_unet.forward = torch.compile(
            self.denoising_unet.forward, mode=mode, backend=backend
        )
        decoder = self.tiny_decoder.decoder if self.tiny_decoder is not None else self.vae.decoder
        decoder.forward = torch.compile(decoder.forward, mode=mode, backend=backend)

    def _graph_hot_calls(self) -> None:
        """The denoising UNet and the decoder through :class:`GraphedCall` (instance attributes,
        like torch.compile's wrapping; the networks' parameters are untouched)."""
        forward = self.denoising_unet.forward
        unet = GraphedCall(lambda *a, **k: forward(*a, **k).sample, name="denoising UNet")
        self.denoising_unet.forward = lambda *a, **k: DenoisingOutput(unet(*a, **k))
        decoder = GraphedCall(self.decode, name="decoder")

        def decode(latents: torch.Tensor) -> torch.Tensor:
            # the frame count rounded up (the last latent repeated, its images dropped): rows
            # starting, ending or warming up emit every count from 1 to 4·S, which would each
            # cost a capture; the VAE decodes each image on its own, so the padding changes none
            return decoder(_whole_chunks(latents))[: latents.shape[0]]

        self.decode = decode  # type: ignore[method-assign]
        # the small networks of every call too: their hundreds of short kernels, launched one by
        # one, left the GPU idle at the start of each call of a real render (the batch thread
        # shares the interpreter with the rows' threads)
        eager_observe = self.observe
        observer = GraphedCall(
            lambda pixels, size: _pose_fields(eager_observe(pixels, size)), name="observe"
        )

        def observe(pixels: torch.Tensor, resolution: int) -> tuple[HeadPose, torch.Tensor]:
            frames = pixels.shape[0]  # rounded up as the decoder's: every frame on its own
            fields, motion = observer(_whole_chunks(pixels), resolution)
            return HeadPose(**{k: v[:frames] for k, v in fields.items()}), motion[:frames]

        self.observe = observe  # type: ignore[method-assign]
        self.pose_features = GraphedCall(self.pose_features, name="pose guider")  # type: ignore[method-assign]
        # a new row's portrait and a row's signals, on the preparation thread: ~2,500 kernels
        # launched one by one there while the batch thread kept the GPU's queue full took ~1.4 s
        # a portrait on the H200 (each launch waited for room in the queue), and rows started
        # only that fast
        eager_encode = self.encode_portrait
        portrait = GraphedCall(
            lambda *args: _encoding_fields(eager_encode(*args)), name="portrait encoding"
        )

        def encode_portrait(*args: Any) -> PortraitEncoding:
            fields = portrait(*args)
            return PortraitEncoding(**{**fields, "pose": HeadPose(**fields["pose"])})

        self.encode_portrait = encode_portrait  # type: ignore[method-assign]
        embedder = GraphedCall(self.embed_images, name="image embeddings")

        def embed_images(clip_pixels: torch.Tensor) -> torch.Tensor:
            # a row's last batch of samples may be short: rounded up too (each image on its own)
            return embedder(_whole_chunks(clip_pixels))[: clip_pixels.shape[0]]

        self.embed_images = embed_images  # type: ignore[method-assign]
        self._graphed = [unet, decoder, observer, self.pose_features, portrait, embedder]

    def graphed(self) -> bool:
        """Whether the hot calls replay CUDA graphs (``optimize(cuda_graphs=True)`` on CUDA)."""
        return bool(self._graphed)

    def graphs_given_up(self) -> list[str]:
        """The graphed calls whose capture failed and which run eagerly from then on (their
        warning is in the worker's log): a render that lost its UNet graphs runs slower."""
        return [graphed.name for graphed in self._graphed if not graphed.enabled]

    def graph_captures(self) -> int:
        """CUDA graphs captured so far (0 without ``cuda_graphs``): a call that captured one
        took seconds, so the benchmark leaves it out of its timed window."""
        return sum(graphed.captures for graphed in self._graphed)

    def _compile_regions(self, backend: str) -> None:
        """Compile repeated blocks with dynamic shapes instead of whole networks: the ResNet
        blocks and GEGLU feed-forwards, fusing their norms, activations and residual adds (inside
        a compiled block the channels-last layers take their PyTorch path; the compiler
        generates its own kernels).
        torch.compile's default of 8 graphs per block type bounds the compile time to about a
        minute (further shapes run eagerly). Measured on the H100 (docs/benchmarks.md): compiling
        the whole spatial transformers and motion/temporal modules as well took over 5 minutes
        (~30 graphs), and a compiled GroupNorm kernel for every norm was slower than
        :class:`._fast_layers.ChannelsLastGroupNorm` eagerly — neither is offered."""
        from diffusers.models.attention import FeedForward  # noqa: PLC0415
        from diffusers.models.resnet import ResnetBlock2D  # noqa: PLC0415

        decoder = self.tiny_decoder.decoder if self.tiny_decoder is not None else self.vae.decoder
        for network in (self.denoising_unet, decoder):
            for module in network.modules():
                if isinstance(module, (ResnetBlock2D, FeedForward)):
                    module.compile(dynamic=True, backend=backend)

    def parameter_counts(self) -> dict[str, int]:
        counts = {
            name: sum(p.numel() for p in net.parameters()) for name, net in self.networks().items()
        }
        unet = self.denoising_unet
        counts["denoising_unet.temporal_modules"] = sum(
            p.numel() for n, p in unet.named_parameters() if ".temporal_modules." in n
        )
        counts["denoising_unet.motion_modules"] = sum(
            p.numel() for n, p in unet.named_parameters() if ".motion_modules." in n
        )
        return counts


def _pose_fields(
    observed: tuple[HeadPose, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """:meth:`PersonaLiveModels.observe`'s result as tensors a CUDA graph can hand back."""
    pose, motion = observed
    return dict(vars(pose)), motion


def _whole_chunks(batch: torch.Tensor) -> torch.Tensor:
    """``batch`` with its last item repeated up to a multiple of ``DECODE_FRAMES_MULTIPLE``, for
    networks that take each item on its own (the padding changes no other item's result)."""
    padding = -batch.shape[0] % DECODE_FRAMES_MULTIPLE
    if not padding:
        return batch
    return torch.cat([batch, batch[-1:].expand(padding, *batch.shape[1:])])


def _encoding_fields(encoding: PortraitEncoding) -> dict[str, Any]:
    """:meth:`PersonaLiveModels.encode_portrait`'s result as tensors a CUDA graph can hand back."""
    return {**encoding._asdict(), "pose": dict(vars(encoding.pose))}


def _allow_recompiles() -> None:
    """One graph per block shape, stream count and bank length: raise torch.compile's caps."""
    from torch import _dynamo  # noqa: PLC0415 - `import torch._dynamo` would shadow torch here

    config = _dynamo.config
    config.cache_size_limit = max(config.cache_size_limit, 64)
    config.accumulated_cache_size_limit = max(config.accumulated_cache_size_limit, 512)


def build_models(
    unet_config: dict[str, Any],
    vae_config: dict[str, Any],
    clip_config: dict[str, Any],
    sizes: NetworkSizes,
) -> PersonaLiveModels:
    """Construct every network (random init, on the current default device) from configs."""
    unet_kwargs = unet_kwargs_from_config(unet_config)
    clip = CLIPVisionConfig(
        **{k: v for k, v in clip_config.items() if k not in ("architectures", "model_type")}
    )
    if clip.projection_dim != unet_kwargs["cross_attention_dim"]:
        raise ValueError(
            f"CLIP projection_dim={clip.projection_dim} must equal the UNet's "
            f"cross_attention_dim={unet_kwargs['cross_attention_dim']}"
        )
    motion_encoder = MotionEncoder(**sizes.motion_encoder)
    frame_kwargs = dict(sizes.frame_modules)
    frame_kwargs.setdefault("motion_token_dim", motion_encoder.config.token_dim)
    return PersonaLiveModels(
        vae=AutoencoderKL.from_config(vae_config),
        image_encoder=CLIPVisionModelWithProjection(clip),
        reference_unet=ReferenceUNet(**unet_kwargs),
        denoising_unet=DenoisingUNet(**unet_kwargs, **frame_kwargs),
        pose_guider=PoseGuider(
            embedding_channels=unet_kwargs["block_out_channels"][0], **sizes.pose_guider
        ),
        motion_encoder=motion_encoder,
        keypoint_extractor=KeypointExtractor(**sizes.keypoint_extractor),
        canvas_radius=sizes.canvas_radius,
    )
