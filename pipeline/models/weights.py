"""The published PersonaLive weight layout: strict loading, and random weights in the same layout.

Layout under ``weights_dir`` (what ``job=fetch_weights`` downloads)::

    personalive/denoising_unet.pth      denoising UNet without its temporal modules
    personalive/temporal_module.pth     the temporal modules (``*.temporal_modules.*`` keys)
    personalive/reference_unet.pth      reference UNet (no output head)
    personalive/pose_guider.pth
    personalive/motion_encoder.pth
    personalive/motion_extractor.pth    LivePortrait keypoint extractor (``detector.*``)
    sd-image-variations-diffusers/unet/config.json            UNet sizes (its weights are unused)
    sd-image-variations-diffusers/image_encoder/config.json   CLIP vision tower
    sd-image-variations-diffusers/image_encoder/pytorch_model.bin (or model.safetensors)
    sd-vae-ft-mse/config.json
    sd-vae-ft-mse/diffusion_pytorch_model.safetensors (or .bin)

Every ``.pth``/``.bin`` is read with ``torch.load(weights_only=True)``: a weight file can never run
code. Loading is strict: a missing, unexpected or mis-shaped key is a :class:`WeightsError` that
names the file and the keys.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file as load_safetensors
from torch import nn

from ._bundle import PersonaLiveModels, build_models
from ._layout import (
    BASE_MODEL_DIR,
    PERSONALIVE_DIR,
    PERSONALIVE_FILES,
    TAESD_DIR,
    VAE_DIR,
    WeightsError,
    expected_files,
    first_existing,
    missing_files,
)
from .architecture import NetworkSizes, base_configs, network_sizes

logger = logging.getLogger(__name__)

# Keys some published files carry that current libraries no longer keep in the state dict.
_BENIGN_EXTRA_KEYS = {"vision_model.embeddings.position_ids"}
# sd-vae-ft-mse predates diffusers' attention renaming (diffusers renames these on load too).
_LEGACY_VAE_NAMES = {
    ".query.": ".to_q.",
    ".key.": ".to_k.",
    ".value.": ".to_v.",
    ".proj_attn.": ".to_out.0.",
}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``, ``.pth`` or ``.bin`` file, never executing code."""
    try:
        if path.suffix == ".safetensors":
            return load_safetensors(str(path))
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"{path}: cannot read weights ({type(err).__name__}: {err}). The file may be truncated or "
            "not a weights file; delete it and run `python run.py job=fetch_weights` again."
        ) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"{path}: expected a flat dict of tensors (a state dict), found {type(state).__name__}"
        )
    return state


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path}: cannot read config ({err})") from err


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module`` (possibly on the meta device) requiring an exact key match.

    Raises:
        WeightsError: naming ``source`` and the missing, unexpected or mis-shaped keys.
    """
    expected = module.state_dict()
    state = {k: v for k, v in state.items() if k not in _BENIGN_EXTRA_KEYS or k in expected}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_sample(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_sample(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_sample(mismatched)}")
    if problems:
        raise WeightsError(
            f"{source} does not match the model architecture: "
            + "; ".join(problems)
            + ". Check model.architecture and that the weights folder holds the published files."
        )
    module.load_state_dict(state, strict=True, assign=True)


def _sample(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def _rename_legacy_vae_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state.items():
        for old, new in _LEGACY_VAE_NAMES.items():
            if "attentions" in key and old in key:
                key = key.replace(old, new)
                # legacy checkpoints store the attention projections as 1×1 convs in some exports
                if value.dim() == 4 and key.endswith(".weight"):
                    value = value[:, :, 0, 0]
        renamed[key] = value
    return renamed


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise WeightsError(
            f"model.device={device!r} but no CUDA GPU is visible here; use model.device=cpu or auto"
        )
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    names = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in names:
        raise ValueError(f"model.dtype={dtype!r} is not known; choose auto, fp16, bf16 or fp32")
    return names[dtype]


def load_personalive(
    weights_dir: str | os.PathLike,
    dtype: torch.dtype | str = "auto",
    device: torch.device | str = "auto",
    *,
    architecture: str = "full",
    attention: str = "sdpa",
    vae_decoder: str = "full",
) -> PersonaLiveModels:
    """Build PersonaLive and load the published weight files from ``weights_dir``.

    Args:
        weights_dir: folder with the layout in this module's docstring.
        dtype: ``torch.dtype`` or "auto"/"fp16"/"bf16"/"fp32".
        device: ``torch.device`` or "auto"/"cpu"/"cuda[:N]".
        architecture: "full" (published sizes) or "tiny"; sizes of networks without config files.
        attention: attention backend ("sdpa", "xformers", "eager"), with fallback.
        vae_decoder: "full" (sd-vae-ft-mse) or "tiny" (TAESD from ``weights_dir/taesd``).

    Returns:
        :class:`PersonaLiveModels` in eval mode on ``device`` in ``dtype``.

    Raises:
        WeightsError: missing files (listed, with the command that fetches them), unreadable
            files, or keys that do not match the architecture (file and keys named).
    """
    started = time.monotonic()
    device = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, device)
    missing = missing_files(weights_dir)
    if missing:
        listing = "\n  ".join(str(p) for p in missing)
        raise WeightsError(
            f"the weights folder {weights_dir} is incomplete; missing:\n  {listing}\n"
            "Run `python run.py job=fetch_weights` (needs internet) or point model.weights_dir at the folder."
        )
    files = expected_files(weights_dir)
    with init_empty_weights():
        models = build_models(
            read_json(files["unet_config"]),
            read_json(files["vae_config"]),
            read_json(files["clip_config"]),
            network_sizes(architecture),
        )
    denoising = read_state_dict(files["denoising_unet"])
    temporal = read_state_dict(files["temporal_module"])
    _check_split(denoising, temporal, files)
    load_strict(
        models.denoising_unet,
        {**denoising, **temporal},
        f"{files['denoising_unet']} + {files['temporal_module']}",
    )
    del denoising, temporal
    for name in ("reference_unet", "pose_guider", "motion_encoder", "keypoint_extractor"):
        load_strict(getattr(models, name), read_state_dict(files[name]), str(files[name]))
    load_strict(
        models.vae, _rename_legacy_vae_keys(read_state_dict(files["vae"])), str(files["vae"])
    )
    load_strict(models.image_encoder, read_state_dict(files["clip"]), str(files["clip"]))
    if vae_decoder == "tiny":
        models.tiny_decoder = _load_taesd(Path(weights_dir) / TAESD_DIR)
    elif vae_decoder != "full":
        raise ValueError(f"model.vae_decoder={vae_decoder!r} is not known; choose full or tiny")
    _materialise_buffers(models)
    models.to(device=device, dtype=dtype).eval()
    models.set_attention_backend(attention)
    logger.info(
        "loaded PersonaLive (%s) from %s on %s in %s in %.1f s",
        architecture,
        weights_dir,
        device,
        str(dtype).removeprefix("torch."),
        time.monotonic() - started,
    )
    return models


def _load_taesd(folder: Path):
    """The tiny decoder (diffusers ``AutoencoderTiny``) from ``folder``, loaded strictly."""
    from diffusers import AutoencoderTiny  # noqa: PLC0415

    config = folder / "config.json"
    weights = first_existing(
        folder, ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
    )
    if not config.is_file() or not weights.is_file():
        raise WeightsError(
            f"model.vae_decoder=tiny needs TAESD in {folder} (config.json and diffusion_pytorch_model.safetensors); "
            "run `python run.py job=fetch_weights` or use model.vae_decoder=full"
        )
    with init_empty_weights():
        decoder = AutoencoderTiny.from_config(read_json(config))
    load_strict(decoder, read_state_dict(weights), str(weights))
    return decoder


def random_models(
    architecture: str,
    device: torch.device,
    dtype: torch.dtype,
    *,
    seed: int = 0,
    vae_decoder: str = "full",
) -> PersonaLiveModels:
    """Randomly initialised networks built directly on ``device`` (benchmarks: same sizes and
    FLOPs as the published model, no download, no disk)."""
    from diffusers import AutoencoderTiny  # noqa: PLC0415

    unet_config, vae_config, clip_config = base_configs(architecture)
    torch.manual_seed(seed)
    with torch.device(device):
        models = build_models(unet_config, vae_config, clip_config, network_sizes(architecture))
        if vae_decoder == "tiny":
            models.tiny_decoder = AutoencoderTiny()
    _randomise_batchnorm_statistics(models, seed)
    _plausible_keypoint_head(models, seed)
    return models.to(device=device, dtype=dtype).eval()


def _check_split(denoising: dict, temporal: dict, files: dict[str, Path]) -> None:
    """The two denoising files must split the UNet cleanly: temporal modules in one, the rest in the other."""
    stray = [k for k in denoising if ".temporal_modules." in k]
    foreign = [k for k in temporal if ".temporal_modules." not in k]
    overlap = sorted(set(denoising) & set(temporal))
    problems = []
    if stray:
        problems.append(f"{files['denoising_unet']} holds temporal-module keys: {_sample(stray)}")
    if foreign:
        problems.append(f"{files['temporal_module']} holds non-temporal keys: {_sample(foreign)}")
    if overlap:
        problems.append(f"keys in both files: {_sample(overlap)}")
    if problems:
        raise WeightsError("; ".join(problems))


def _materialise_buffers(models: PersonaLiveModels) -> None:
    """Non-persistent buffers built under ``init_empty_weights`` are real already; parameters must be."""
    for name, network in models.networks().items():
        still_meta = [n for n, p in network.named_parameters() if p.is_meta]
        if still_meta:
            raise WeightsError(f"{name}: parameters not loaded: {_sample(still_meta)}")


# ---------------------------------------------------------------------------------------------
# Random weights in the published layout (tests, the offline demo, benchmarks without a download)


def personalive_state_dicts(models: PersonaLiveModels) -> dict[str, dict[str, torch.Tensor]]:
    """Split the networks' state dicts into the six published ``.pth`` files (file name → dict)."""
    unet = models.denoising_unet.state_dict()
    return {
        PERSONALIVE_FILES["denoising_unet"]: {
            k: v for k, v in unet.items() if ".temporal_modules." not in k
        },
        PERSONALIVE_FILES["temporal_module"]: {
            k: v for k, v in unet.items() if ".temporal_modules." in k
        },
        PERSONALIVE_FILES["reference_unet"]: models.reference_unet.state_dict(),
        PERSONALIVE_FILES["pose_guider"]: models.pose_guider.state_dict(),
        PERSONALIVE_FILES["motion_encoder"]: models.motion_encoder.state_dict(),
        PERSONALIVE_FILES["keypoint_extractor"]: models.keypoint_extractor.state_dict(),
    }


def _legacy_vae_state(vae_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    legacy = {}
    for key, value in vae_state.items():
        if "attentions" in key:
            for old, new in _LEGACY_VAE_NAMES.items():
                key = key.replace(new, old)
        legacy[key] = value
    return legacy


def save_random_weights(
    weights_dir: str | os.PathLike,
    *,
    architecture: str = "tiny",
    seed: int = 0,
    configs: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None = None,
    sizes: NetworkSizes | None = None,
) -> Path:
    """Write randomly initialised weights for ``architecture`` in the published layout.

    Key names, file split and formats are the published ones (legacy VAE attention names, the CLIP
    ``position_ids`` entry), so :func:`load_personalive` exercises exactly the real loading path.
    The weights are random — the output is not a portrait — except that the keypoint head is
    biased toward a plausible face layout so face boxes and canvases are meaningful.

    Args:
        configs: ``(unet, vae, clip)`` config.json contents overriding the architecture's.
        sizes: network sizes overriding the architecture's.
    """
    root = Path(weights_dir)
    unet_config, vae_config, clip_config = configs or base_configs(architecture)
    torch.manual_seed(seed)
    models = build_models(
        unet_config, vae_config, clip_config, sizes or network_sizes(architecture)
    )
    _randomise_batchnorm_statistics(models, seed)
    _plausible_keypoint_head(models, seed)
    (root / PERSONALIVE_DIR).mkdir(parents=True, exist_ok=True)
    for file, state in personalive_state_dicts(models).items():
        _atomic_torch_save(state, root / PERSONALIVE_DIR / file)
    base = root / BASE_MODEL_DIR
    for sub, config in (("unet", unet_config), ("image_encoder", clip_config)):
        (base / sub).mkdir(parents=True, exist_ok=True)
        _atomic_write_text(base / sub / "config.json", json.dumps(config, indent=2))
    _atomic_write_text(
        base / "model_index.json",
        json.dumps({"_class_name": "StableDiffusionImageVariationPipeline"}),
    )
    clip_state = dict(models.image_encoder.state_dict())
    num_positions = models.image_encoder.vision_model.embeddings.num_positions
    clip_state["vision_model.embeddings.position_ids"] = torch.arange(num_positions)[None]
    _atomic_torch_save(clip_state, base / "image_encoder" / "pytorch_model.bin")
    (root / VAE_DIR).mkdir(parents=True, exist_ok=True)
    _atomic_write_text(root / VAE_DIR / "config.json", json.dumps(vae_config, indent=2))
    _atomic_torch_save(
        _legacy_vae_state(models.vae.state_dict()), root / VAE_DIR / "diffusion_pytorch_model.bin"
    )
    _save_random_taesd(root / TAESD_DIR, architecture)
    logger.info("wrote random %s weights (seed %d) to %s", architecture, seed, root)
    return root


TINY_TAESD_CONFIG: dict[str, Any] = {
    "encoder_block_out_channels": [8, 8, 8, 8],
    "decoder_block_out_channels": [8, 8, 8, 8],
    "num_encoder_blocks": [1, 1, 1, 1],
    "num_decoder_blocks": [1, 1, 1, 1],
    "latent_channels": 4,
}


def _save_random_taesd(folder: Path, architecture: str) -> None:
    """The optional tiny decoder (``model.vae_decoder=tiny``), in diffusers' layout."""
    from diffusers import AutoencoderTiny  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    sizes = TINY_TAESD_CONFIG if architecture == "tiny" else {}
    decoder = AutoencoderTiny(**sizes)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "AutoencoderTiny", **sizes}
    _atomic_write_text(folder / "config.json", json.dumps(config, default=list, indent=2))
    temp = folder / "diffusion_pytorch_model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(temp))
    os.replace(temp, folder / "diffusion_pytorch_model.safetensors")


def _plausible_keypoint_head(models: PersonaLiveModels, seed: int) -> None:
    """Bias the random keypoint head so outputs look like a face: points spread around the image
    centre, small head rotations, unit scale. Inputs still move them (weights stay non-zero)."""
    generator = torch.Generator().manual_seed(seed + 1)
    head = models.keypoint_extractor.detector
    num_kp = head.fc_kp.out_features // 3
    with torch.no_grad():
        layout = torch.rand(num_kp, 3, generator=generator) * 0.8 - 0.4
        head.fc_kp.bias.copy_(layout.flatten().to(head.fc_kp.bias.device))
        for layer, gain in ((head.fc_kp, 0.02), (head.fc_t, 0.02), (head.fc_scale, 0.01)):
            layer.weight.mul_(gain)
        head.fc_t.bias.zero_()
        head.fc_scale.bias.fill_(1.0)
        for layer in (head.fc_pitch, head.fc_yaw, head.fc_roll):
            layer.weight.mul_(0.5)


def _randomise_batchnorm_statistics(models: PersonaLiveModels, seed: int) -> None:
    """Give BatchNorm layers non-trivial running statistics, as trained weights have."""
    generator = torch.Generator().manual_seed(seed)
    for module in models.motion_encoder.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(
                torch.randn(module.running_mean.shape, generator=generator) * 0.1
            )
            module.running_var.copy_(
                torch.rand(module.running_var.shape, generator=generator) + 0.5
            )
            module.num_batches_tracked.fill_(1000)


def _atomic_torch_save(state: dict[str, torch.Tensor], path: Path) -> None:
    temp = path.with_name(path.name + ".tmp")
    torch.save({k: v.detach().contiguous() for k, v in state.items()}, temp)
    os.replace(temp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    os.replace(temp, path)


def ensure_random_weights(weights_dir: str | os.PathLike, *, architecture: str, seed: int) -> None:
    """Create random weights in ``weights_dir`` unless a complete layout is already there."""
    if missing_files(weights_dir):
        save_random_weights(weights_dir, architecture=architecture, seed=seed)
