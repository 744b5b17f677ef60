"""Pixel preprocessing of the portrait and driving frames (the published model's conventions)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# CLIP's image normalisation (OpenAI CLIP, as in the image encoder's preprocessor config)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def as_rgb_array(image: np.ndarray | torch.Tensor | Image.Image) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB array from a PIL image, numpy array or tensor."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    elif isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} array of shape {image.shape}"
        )
    return image


def resize_lanczos(image: np.ndarray, size: int) -> np.ndarray:
    """Square resize with PIL's Lanczos filter (what the published pipeline does to the portrait)."""
    return np.asarray(Image.fromarray(image).resize((size, size), resample=Image.LANCZOS))


def to_signed_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` → float ``(1, 3, H, W)`` in [-1, 1].

    The tensor keeps the pixels' channels-last memory layout, as diffusers' image processor does
    in the published pipeline: convolutions pick their kernels by layout, so this reproduces the
    reference's VAE encoding bit for bit (a contiguous tensor differs by ~1e-4 relative).
    """
    return torch.from_numpy(image[None].astype(np.float32) / 255.0).permute(0, 3, 1, 2) * 2 - 1


def clip_pixels(image: np.ndarray, size: int) -> torch.Tensor:
    """CLIP preprocessing: bicubic resize of the short side to ``size``, centre crop, normalise."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    resized = Image.fromarray(image).resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), resample=Image.BICUBIC
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    cropped = (
        np.asarray(resized.crop((left, top, left + size, top + size))).astype(np.float32) / 255.0
    )
    normalised = (cropped - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(
        CLIP_STD, dtype=np.float32
    )
    return torch.from_numpy(normalised).permute(2, 0, 1)[None].contiguous()


def frames_to_signed(frames: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """Driving frames uint8 ``(k, H, W, 3)`` → float32 ``(k, 3, H, W)`` in [-1, 1] on ``device``.

    Kept in fp32 (like the reference) until each network casts its own input.
    """
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"driving frames must be uint8 (k, H, W, 3); got {frames.dtype} {tuple(frames.shape)}"
        )
    frames = to_device(frames, device).permute(0, 3, 1, 2).contiguous()
    return frames.float() / 255.0 * 2 - 1


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host tensor to ``device`` without making the host wait for the GPU's queue (a
    tensor already on a GPU is moved as ``Tensor.to`` moves it).

    A copy from ordinary (pageable) memory blocks the host until the GPU reaches it in stream
    order — behind the whole previous denoising call; from pinned memory it is asynchronous.
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class HostCopy:
    """A device tensor on its way to host memory: the copy is queued now (into pinned memory, so
    it never holds up other threads' GPU work the way a copy to ordinary memory does), and
    :meth:`result` waits only for the work queued before it."""

    def __init__(self, value: torch.Tensor) -> None:
        self._event = None
        if value.is_cuda:
            self._value = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            self._value.copy_(value, non_blocking=True)
            self._event = torch.cuda.Event(blocking=True)  # waiters sleep instead of spinning
            self._event.record()
        else:
            self._value = value.detach().clone()

    def result(self) -> torch.Tensor:
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        return self._value


class HostScalar(HostCopy):
    """A device scalar on its way to the host (``tensor.item()`` would wait for everything queued
    since, e.g. a whole denoising call)."""

    def item(self) -> float:
        return float(self.result())


def signed_to_output(images: torch.Tensor, output_dtype: str) -> torch.Tensor:
    """Decoded ``(k, 3, H, W)`` in [-1, 1] → ``(k, H, W, 3)`` uint8 (0..255) or float ([0, 1])."""
    unit = (images.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    if output_dtype == "float":
        return unit
    if output_dtype != "uint8":
        raise ValueError(f"model.animator.output_dtype={output_dtype!r}; choose uint8 or float")
    return (unit * 255).round().to(torch.uint8)
