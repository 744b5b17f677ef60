"""PersonaLive's networks (pure: tensors in, tensors out) and the published weight layout."""

from ._attention import ATTENTION_BACKENDS, AttentionProcessor, resolve_attention_backend
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
from ._motion_encoder import MotionEncoder
from ._pose_guider import PoseGuider
from ._unet import DenoisingUNet, ReferenceUNet
from .architecture import ARCHITECTURES, base_configs, network_sizes
from .weights import (
    WeightsError,
    ensure_random_weights,
    load_personalive,
    missing_files,
    resolve_device,
    resolve_dtype,
    save_random_weights,
)

__all__ = [
    "ARCHITECTURES",
    "ATTENTION_BACKENDS",
    "AttentionProcessor",
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
    "face_boxes",
    "load_personalive",
    "missing_files",
    "network_sizes",
    "posed_keypoints",
    "resolve_attention_backend",
    "resolve_device",
    "resolve_dtype",
    "save_random_weights",
    "warmup_poses",
]
