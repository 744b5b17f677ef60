"""PersonaLive's staggered DDIM schedule.

Four fixed timesteps, 999/666/333/0 (the published scheduler config: scaled-linear betas from
0.00085 to 0.02, 1000 training steps, epsilon prediction, trailing spacing, no guidance, eta 0).
A 16-frame window holds four 4-frame chunks at four noise levels — oldest at t=0, newest at t=999 —
and one denoising call moves every chunk down one level: the t=0 chunk becomes clean (x0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class StaggeredSchedule:
    """The noise schedule and the per-frame arithmetic of one staggered DDIM step.

    Attributes:
        chunk_frames: frames per chunk (4).
        levels: timesteps of the chunks in a window, oldest first (0, 333, 666, 999).
        stride: distance to the next lower timestep (333); below 0 the sample is clean.
    """

    chunk_frames: int = 4
    levels: tuple[int, ...] = (0, 333, 666, 999)
    stride: int = 333
    beta_start: float = 0.00085
    beta_end: float = 0.02
    train_timesteps: int = 1000

    @property
    def window_frames(self) -> int:
        return self.chunk_frames * len(self.levels)

    @property
    def pending_frames(self) -> int:
        """Frames that stay in the window between calls (all chunks but the finished one)."""
        return self.chunk_frames * (len(self.levels) - 1)

    def alphas_cumprod(self, device: torch.device | str | None = None) -> torch.Tensor:
        """ᾱ_t for t = 0..999 (cached per device: no host-to-device copy per call)."""
        return _alphas_cumprod(
            self.beta_start, self.beta_end, self.train_timesteps, str(torch.device(device or "cpu"))
        )

    def window_timesteps(self, device: torch.device | None = None) -> torch.Tensor:
        """``(window_frames,)`` long: ``[0]*4 + [333]*4 + [666]*4 + [999]*4`` (cached per device)."""
        return _window_timesteps(self.levels, self.chunk_frames, str(torch.device(device or "cpu")))

    def add_noise(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """Forward diffusion per frame: ``sqrt(ā_t)·x + sqrt(1-ā_t)·ε``; frames on dim ``-4``."""
        alpha = self.alphas_cumprod(latents.device)[timesteps.to(latents.device)]
        shape = (-1,) + (1,) * 3
        a = alpha.sqrt().view(shape).to(latents.dtype)
        b = (1 - alpha).sqrt().view(shape).to(latents.dtype)
        return a * latents + b * noise

    def step(
        self, noise_pred: torch.Tensor, timesteps: torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One deterministic DDIM step (eta = 0) per frame, computed in fp32.

        Args:
            noise_pred: ``(..., F, C, h, w)`` predicted noise.
            timesteps: ``(F,)`` current timestep of each frame.
            sample: ``(..., F, C, h, w)`` current latents.

        Returns:
            ``(previous, x0)``: latents at ``t - step`` (x0 itself where that is below 0) and the
            predicted clean latents, both fp32.
        """
        alphas = self.alphas_cumprod(sample.device)
        timesteps = timesteps.to(sample.device)
        alpha_t = alphas[timesteps]
        previous_t = timesteps - self.stride
        alpha_prev = torch.where(
            previous_t >= 0, alphas[previous_t.clamp(min=0)], torch.ones_like(alpha_t)
        )
        shape = (-1, 1, 1, 1)
        alpha_t, alpha_prev = alpha_t.view(shape), alpha_prev.view(shape)
        eps = noise_pred.float()
        x0 = (sample.float() - (1 - alpha_t) ** 0.5 * eps) / alpha_t**0.5
        previous = alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * eps
        return previous, x0


@lru_cache(maxsize=16)
def _alphas_cumprod(beta_start: float, beta_end: float, steps: int, device: str) -> torch.Tensor:
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(device)


@lru_cache(maxsize=16)
def _window_timesteps(levels: tuple[int, ...], chunk_frames: int, device: str) -> torch.Tensor:
    return torch.tensor(levels).repeat_interleave(chunk_frames).to(device)
