"""PersonaLive's networks (pure: tensors in, tensors out) and the published weight layout.

Names are imported on first use (PEP 562): the driver of a job checks a weights folder
(``missing_files``, ``WeightsError``) without loading torch and diffusers, which only the
workers need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ATTENTION_BACKENDS": "._attention",
    "AttentionProcessor": "._attention",
    "BankPadding": "._attention",
    "resolve_attention_backend": "._attention",
    "PersonaLiveModels": "._bundle",
    "build_models": "._bundle",
    "HeadPose": "._keypoints",
    "KeypointExtractor": "._keypoints",
    "crop_faces": "._keypoints",
    "draw_keypoint_canvas": "._keypoints",
    "drive_pose": "._keypoints",
    "face_boxes": "._keypoints",
    "posed_keypoints": "._keypoints",
    "warmup_poses": "._keypoints",
    "WeightsError": "._layout",
    "fetched_commits": "._layout",
    "missing_files": "._layout",
    "record_fetched_commit": "._layout",
    "MotionEncoder": "._motion_encoder",
    "PoseGuider": "._pose_guider",
    "DenoisingUNet": "._unet",
    "ReferenceUNet": "._unet",
    "ARCHITECTURES": ".architecture",
    "base_configs": ".architecture",
    "network_sizes": ".architecture",
    "ensure_random_weights": ".weights",
    "load_personalive": ".weights",
    "resolve_device": ".weights",
    "resolve_dtype": ".weights",
    "save_random_weights": ".weights",
}

__all__ = [
    "ARCHITECTURES",
    "ATTENTION_BACKENDS",
    "AttentionProcessor",
    "BankPadding",
    "DenoisingUNet",
    "HeadPose",
    "KeypointExtractor",
    "MotionEncoder",
    "PersonaLiveModels",
    "PoseGuider",
    "ReferenceUNet",
    "WeightsError",
    "base_configs",
    "build_models",
    "crop_faces",
    "draw_keypoint_canvas",
    "drive_pose",
    "ensure_random_weights",
    "fetched_commits",
    "face_boxes",
    "load_personalive",
    "missing_files",
    "network_sizes",
    "posed_keypoints",
    "record_fetched_commit",
    "resolve_attention_backend",
    "resolve_device",
    "resolve_dtype",
    "save_random_weights",
    "warmup_poses",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


if TYPE_CHECKING:  # what type checkers and editors see
    from ._attention import (
        ATTENTION_BACKENDS,
        AttentionProcessor,
        BankPadding,
        resolve_attention_backend,
    )
    from ._bundle import PersonaLiveModels, build_models
    from ._keypoints import (
        HeadPose,
        KeypointExtractor,
        crop_faces,
        draw_keypoint_canvas,
        drive_pose,
        face_boxes,
        posed_keypoints,
        warmup_poses,
    )
    from ._layout import WeightsError, fetched_commits, missing_files, record_fetched_commit
    from ._motion_encoder import MotionEncoder
    from ._pose_guider import PoseGuider
    from ._unet import DenoisingUNet, ReferenceUNet
    from .architecture import ARCHITECTURES, base_configs, network_sizes
    from .weights import (
        ensure_random_weights,
        load_personalive,
        resolve_device,
        resolve_dtype,
        save_random_weights,
    )
