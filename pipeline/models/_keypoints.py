"""Keypoint motion extractor (LivePortrait's, ConvNeXtV2-tiny) and the keypoint geometry.

The extractor predicts, per image, canonical 3-D keypoints, head pitch/yaw/roll (as 66-bin
classifications), a translation and a scale. PersonaLive composes them (canonical points and scale
from the portrait, rotation from the driving frame, damped translation), draws seven of the points
as coloured disks on a canvas for the pose guider, and derives face crops from them.
All functions here are pure tensor maths.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# The seven keypoints drawn on the canvas and used for face boxes, with their colours (RGB).
CANVAS_POINTS: tuple[int, ...] = (1, 2, 3, 4, 12, 15, 20)
CANVAS_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (255, 255, 0),
    (0, 255, 0),
    (0, 255, 255),
    (0, 0, 255),
    (255, 0, 255),
    (255, 0, 85),
)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels for NHWC (``channels_last``) or NCHW (``channels_first``), in fp32."""

    def __init__(
        self, channels: int, eps: float = 1e-6, data_format: str = "channels_last"
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.data_format = data_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        if self.data_format == "channels_first":
            x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, (x.shape[-1],), self.weight.float(), self.bias.float(), self.eps)
        if self.data_format == "channels_first":
            x = x.permute(0, 3, 1, 2)
        return x.to(dtype)


class GlobalResponseNorm(nn.Module):
    """ConvNeXtV2's GRN on NHWC input (the L2 norm is taken in fp32 so fp16 cannot overflow)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x.float(), ord=2, dim=(1, 2), keepdim=True)
        scaled = (norm / (norm.mean(dim=-1, keepdim=True) + 1e-6)).to(x.dtype)
        return self.gamma * (x * scaled) + self.beta + x


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = ChannelLayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2Detector(nn.Module):
    """ConvNeXtV2 backbone with LivePortrait's keypoint heads (module names as published)."""

    def __init__(
        self, depths: tuple[int, ...], dims: tuple[int, ...], num_kp: int, num_bins: int
    ) -> None:
        super().__init__()
        stem = nn.Sequential(
            nn.Conv2d(3, dims[0], kernel_size=4, stride=4),
            ChannelLayerNorm(dims[0], data_format="channels_first"),
        )
        layers = [stem]
        for i in range(len(dims) - 1):
            layers.append(
                nn.Sequential(
                    ChannelLayerNorm(dims[i], data_format="channels_first"),
                    nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
                )
            )
        self.downsample_layers = nn.ModuleList(layers)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(depth)])
                for depth, dim in zip(depths, dims)
            ]
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.fc_kp = nn.Linear(dims[-1], 3 * num_kp)
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], num_bins)
        self.fc_yaw = nn.Linear(dims[-1], num_bins)
        self.fc_roll = nn.Linear(dims[-1], num_bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(
            dims[-1], 3 * num_kp
        )  # published but unused: expression comes from motion tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return self.norm(x.mean(dim=(-2, -1)))


@dataclass
class HeadPose:
    """Per-image outputs of the keypoint extractor (angles already in degrees).

    Shapes: ``canonical`` ``(N, K, 3)``, ``pitch``/``yaw``/``roll`` ``(N,)``, ``translation``
    ``(N, 3)``, ``scale`` ``(N, 1)``.
    """

    canonical: torch.Tensor
    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    translation: torch.Tensor
    scale: torch.Tensor

    def index(self, item: slice | torch.Tensor | int) -> HeadPose:
        if isinstance(item, int):
            item = slice(item, item + 1)
        return HeadPose(*(getattr(self, f)[item] for f in self.__dataclass_fields__))

    @staticmethod
    def cat(poses: list[HeadPose]) -> HeadPose:
        return HeadPose(
            *(torch.cat([getattr(p, f) for p in poses]) for f in HeadPose.__dataclass_fields__)
        )


class KeypointExtractor(ModelMixin, ConfigMixin):
    """Image ``(N, 3, S, S)`` in [0, 1] (S = 256 for the published model) → :class:`HeadPose`."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        depths: tuple[int, ...] = (3, 3, 9, 3),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        num_kp: int = 21,
        num_bins: int = 66,
        input_size: int = 256,
    ) -> None:
        super().__init__()
        self.detector = ConvNeXtV2Detector(tuple(depths), tuple(dims), num_kp, num_bins)
        self.register_buffer(
            "bin_centres", torch.arange(num_bins, dtype=torch.float32), persistent=False
        )

    def forward(self, images: torch.Tensor) -> HeadPose:
        features = self.detector(images)
        head = self.detector
        return HeadPose(
            canonical=head.fc_kp(features).view(images.shape[0], -1, 3),
            pitch=self._degrees(head.fc_pitch(features)),
            yaw=self._degrees(head.fc_yaw(features)),
            roll=self._degrees(head.fc_roll(features)),
            translation=head.fc_t(features),
            scale=head.fc_scale(features),
        )

    def _degrees(self, logits: torch.Tensor) -> torch.Tensor:
        # expectation over 66 bins of 3 degrees, centred at -97.5 (LivePortrait's convention)
        return torch.matmul(logits.softmax(dim=1), self.bin_centres.to(logits.dtype)) * 3 - 97.5


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees ``(N,)`` → ``(N, 3, 3)`` matrices ``(Rz·Ry·Rx)ᵀ`` that right-multiply row vectors."""
    x, y, z = (angle.reshape(-1, 1).float() * (math.pi / 180) for angle in (pitch, yaw, roll))
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    rot_x = torch.cat(
        [ones, zeros, zeros, zeros, x.cos(), -x.sin(), zeros, x.sin(), x.cos()], dim=1
    )
    rot_y = torch.cat(
        [y.cos(), zeros, y.sin(), zeros, ones, zeros, -y.sin(), zeros, y.cos()], dim=1
    )
    rot_z = torch.cat(
        [z.cos(), -z.sin(), zeros, z.sin(), z.cos(), zeros, zeros, zeros, ones], dim=1
    )
    rot = rot_z.view(-1, 3, 3) @ rot_y.view(-1, 3, 3) @ rot_x.view(-1, 3, 3)
    return rot.transpose(1, 2)


def posed_keypoints(pose: HeadPose) -> torch.Tensor:
    """Apply rotation, scale and (x, y) translation to the canonical keypoints → ``(N, K, 3)``."""
    rot = rotation_matrix(pose.pitch, pose.yaw, pose.roll).to(pose.canonical.dtype)
    points = (pose.canonical @ rot) * pose.scale[..., None]
    shift = torch.zeros_like(points[:, :1, :])
    shift[..., :2] = pose.translation[:, None, :2]
    return points + shift


def drive_pose(
    reference: HeadPose, first_frame: HeadPose, driving: HeadPose, translation_scale: float
) -> HeadPose:
    """The portrait posed by driving frames: the portrait's canonical points and scale, the
    driver's absolute rotation and its translation relative to the first driving frame, damped."""
    count = driving.pitch.shape[0]
    return HeadPose(
        canonical=reference.canonical.expand(count, -1, -1),
        pitch=driving.pitch,
        yaw=driving.yaw,
        roll=driving.roll,
        translation=(driving.translation - first_frame.translation) * translation_scale
        + reference.translation,
        scale=reference.scale.expand(count, -1),
    )


def warmup_poses(reference: HeadPose, first_driving: HeadPose, count: int) -> HeadPose:
    """``count`` poses interpolated linearly from the portrait's pose toward the first driving
    frame's rotation (excluding the end point); translation and scale stay the portrait's."""
    alphas = torch.linspace(
        0, 1, count + 1, dtype=reference.pitch.dtype, device=reference.pitch.device
    )[:-1]

    def lerp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        weights = alphas.view(-1, *([1] * (a.dim() - 1)))
        return (1 - weights) * a + weights * b

    # translation/scale targets equal the portrait's, but are interpolated like the angles so the
    # arithmetic (and its rounding) is the reference implementation's
    target_translation = (
        first_driving.translation - first_driving.translation
    ) + reference.translation
    return HeadPose(
        canonical=reference.canonical.expand(count, -1, -1),
        pitch=lerp(reference.pitch, first_driving.pitch),
        yaw=lerp(reference.yaw, first_driving.yaw),
        roll=lerp(reference.roll, first_driving.roll),
        translation=lerp(reference.translation, target_translation.reshape(1, -1)),
        scale=lerp(reference.scale, reference.scale),
    )


@functools.lru_cache(maxsize=8)
def _constants(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The canvas point indices and colours, created once per device (no copy per call)."""
    indices = torch.tensor(CANVAS_POINTS).to(device)
    colors = (torch.tensor(CANVAS_COLORS, dtype=torch.float32) / 255.0).to(device)
    return indices, colors


def _pixel_points(keypoints: torch.Tensor, size: int) -> torch.Tensor:
    """Canvas points ``(N, 7, 2)`` in integer pixels (x, y), truncated toward zero as published."""
    indices, _ = _constants(str(keypoints.device))
    points = keypoints.index_select(1, indices)[..., :2].float() * 0.5 + 0.5
    return (points * size).long()


def draw_keypoint_canvas(keypoints: torch.Tensor, size: int, radius: int = 4) -> torch.Tensor:
    """Draw the seven canvas keypoints as coloured disks → ``(N, 3, size, size)`` in [0, 1]."""
    points = _pixel_points(keypoints, size)
    grid = torch.arange(size, device=keypoints.device)
    canvas = torch.zeros(points.shape[0], 3, size, size, device=keypoints.device)
    _, colors = _constants(str(keypoints.device))
    for i in range(points.shape[1]):
        dx = (points[:, i, 0, None, None] - grid[None, None, :]) ** 2
        dy = (points[:, i, 1, None, None] - grid[None, :, None]) ** 2
        disk = (dx + dy <= radius**2).float()
        canvas += colors[i][None, :, None, None] * disk[:, None]
    return canvas.clamp(0, 1)


def face_boxes(keypoints: torch.Tensor, size: int) -> torch.Tensor:
    """Square-ish face boxes ``(N, 4)`` as integer ``(x1, y1, x2, y2)`` from posed keypoints.

    The box is centred on the seven canvas points, its side 3.4× the distance from their centre
    to the topmost point (slightly off-centre: 0.95 before, 1.05 after), clamped to the image.
    """
    points = _pixel_points(keypoints, size).float()
    cx, cy = points[..., 0].mean(dim=1), points[..., 1].mean(dim=1)
    side = (cy - points[..., 1].min(dim=1).values) * 2.0 * 1.7
    x1 = (cx - side / 2 * 0.95).clamp(0, size - 1).long()
    y1 = (cy - side / 2 * 0.95).clamp(0, size - 1).long()
    x2 = (cx + side / 2 * 1.05).clamp(0, size - 1).long()
    y2 = (cy + side / 2 * 1.05).clamp(0, size - 1).long()
    return torch.stack([x1, y1, x2, y2], dim=1)


def crop_faces(images: torch.Tensor, boxes: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Crop ``(N, 3, H, W)`` images to their boxes and resize bilinearly → ``(N, 3, crop, crop)``.

    What the published pipeline does: ``F.interpolate(image[:, y1:y2, x1:x2], mode="bilinear",
    align_corners=False)`` per box. On a GPU the same sampling runs as one batched ``grid_sample``
    with the boxes kept on the device (the per-box loop needs the boxes on the host: a sync per
    call, which stalls the GPU); the two agree to float32 rounding (see the tests).
    A degenerate box (no face found: zero width or height) falls back to the whole image, so a
    frame without a visible face yields a usable (if uninformative) crop instead of an error.
    """
    if images.is_cuda:
        return _crop_faces_on_device(images, boxes, crop_size)
    crops = []
    for image, (x1, y1, x2, y2) in zip(images, boxes.tolist()):
        patch = image[:, y1:y2, x1:x2] if (x2 > x1 and y2 > y1) else image
        crops.append(
            F.interpolate(
                patch[None], size=(crop_size, crop_size), mode="bilinear", align_corners=False
            )
        )
    return torch.cat(crops)


def _crop_faces_on_device(
    images: torch.Tensor, boxes: torch.Tensor, crop_size: int
) -> torch.Tensor:
    """:func:`crop_faces` without leaving the device: sample positions ``(i + ½)·side/crop − ½``,
    clamped to the box as ``interpolate`` clamps them, read with one ``grid_sample``."""
    _, _, height, width = images.shape
    boxes = boxes.to(images.device).to(torch.float32)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    x1, y1 = torch.where(valid, boxes[:, 0], 0.0), torch.where(valid, boxes[:, 1], 0.0)
    x2, y2 = (
        torch.where(valid, boxes[:, 2], float(width)),
        torch.where(valid, boxes[:, 3], float(height)),
    )
    steps = torch.arange(crop_size, device=images.device, dtype=torch.float32) + 0.5

    def axis(start: torch.Tensor, end: torch.Tensor, size: int) -> torch.Tensor:
        side = (end - start)[:, None]
        source = (steps[None] * side / crop_size - 0.5).clamp(min=0)
        source = torch.minimum(source, side - 1) + start[:, None]  # pixel coordinates in the image
        return source * (2 / (size - 1)) - 1 if size > 1 else torch.zeros_like(source)

    xs = axis(x1, x2, width)  # (N, crop)
    ys = axis(y1, y2, height)
    grid = torch.stack(
        [xs[:, None, :].expand(-1, crop_size, -1), ys[:, :, None].expand(-1, -1, crop_size)], dim=-1
    )
    return F.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=True
    )
