"""Where the published PersonaLive weights lie under ``weights_dir`` (names only: no torch, so
the driver of a job can check a folder without loading the deep-learning libraries).

See :mod:`pipeline.models.weights` for the layout and how it is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PERSONALIVE_DIR = "personalive"
BASE_MODEL_DIR = "sd-image-variations-diffusers"
VAE_DIR = "sd-vae-ft-mse"
TAESD_DIR = "taesd"  # optional: the tiny decoder (madebyollin/taesd), for model.vae_decoder=tiny

PERSONALIVE_FILES = {
    "denoising_unet": "denoising_unet.pth",
    "temporal_module": "temporal_module.pth",
    "reference_unet": "reference_unet.pth",
    "pose_guider": "pose_guider.pth",
    "motion_encoder": "motion_encoder.pth",
    "keypoint_extractor": "motion_extractor.pth",
}


class WeightsError(RuntimeError):
    """A weights folder is incomplete or does not match the architecture (message says how)."""


def expected_files(weights_dir: str | os.PathLike) -> dict[str, Path]:
    """Every file of the layout (the first existing one where two formats are accepted)."""
    root = Path(weights_dir)
    files = {name: root / PERSONALIVE_DIR / file for name, file in PERSONALIVE_FILES.items()}
    files["unet_config"] = root / BASE_MODEL_DIR / "unet" / "config.json"
    files["clip_config"] = root / BASE_MODEL_DIR / "image_encoder" / "config.json"
    files["clip"] = first_existing(
        root / BASE_MODEL_DIR / "image_encoder", ("model.safetensors", "pytorch_model.bin")
    )
    files["vae_config"] = root / VAE_DIR / "config.json"
    files["vae"] = first_existing(
        root / VAE_DIR, ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
    )
    return files


def first_existing(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return folder / names[-1]


def missing_files(weights_dir: str | os.PathLike) -> list[Path]:
    return [path for path in expected_files(weights_dir).values() if not path.is_file()]


#: Under weights_dir: the commit each Hugging Face repository was fetched at (job=fetch_weights).
REVISIONS_FILE = "revisions.json"


def fetched_commits(weights_dir: str | os.PathLike) -> dict[str, str]:
    """``{repo_id: commit}`` of the repositories ``job=fetch_weights`` downloaded into
    ``weights_dir`` (empty when it did not, or the file is unreadable)."""
    try:
        recorded = json.loads((Path(weights_dir) / REVISIONS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {
        repo: entry["commit"]
        for repo, entry in recorded.items()
        if isinstance(entry, dict) and isinstance(entry.get("commit"), str)
    }


def record_fetched_commit(
    weights_dir: str | os.PathLike, repo_id: str, revision: str, commit: str
) -> None:
    """Note that ``repo_id`` was fetched at ``commit`` (what ``revision`` pointed to then)."""
    path = Path(weights_dir) / REVISIONS_FILE
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        recorded = {}
    recorded[repo_id] = {"revision": revision, "commit": commit}
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    os.replace(temp, path)
