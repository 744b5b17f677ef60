"""The networks and the published weight layout: building, strict loading, safety."""

from __future__ import annotations

import gzip
import json
import math
import pickle
from pathlib import Path

import pytest
import torch

from pipeline.models import (
    WeightsError,
    base_configs,
    build_models,
    load_personalive,
    missing_files,
    network_sizes,
)
from pipeline.models.weights import PERSONALIVE_FILES, personalive_state_dicts

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def full_meta_models():
    unet, vae, clip = base_configs("full")
    with torch.device("meta"):
        return build_models(unet, vae, clip, network_sizes("full"))


def test_full_model_parameter_counts_match_the_published_ones(full_meta_models) -> None:
    counts = full_meta_models.parameter_counts()
    assert counts["reference_unet"] == pytest.approx(0.8595e9, rel=1e-3)
    assert counts["denoising_unet"] == pytest.approx(1.6848e9, rel=1e-3)
    assert counts["denoising_unet.temporal_modules"] == pytest.approx(0.4532e9, rel=1e-3)
    assert counts["denoising_unet.motion_modules"] == pytest.approx(0.3721e9, rel=1e-3)
    assert counts["image_encoder"] == pytest.approx(0.304e9, rel=1e-2)
    assert counts["vae"] == pytest.approx(0.0837e9, rel=1e-2)
    assert counts["motion_encoder"] == pytest.approx(0.0616e9, rel=1e-2)
    assert counts["keypoint_extractor"] == pytest.approx(0.0281e9, rel=1e-2)
    total = sum(v for k, v in counts.items() if "." not in k)
    assert total == pytest.approx(3.02e9, rel=1e-2)


def test_full_model_state_dicts_have_the_published_keys_and_shapes(full_meta_models) -> None:
    """Key names and shapes of the six .pth files, as the reference implementation defines them."""
    with gzip.open(DATA / "published_keys.json.gz", "rt") as handle:
        published = json.load(handle)
    ours = {
        name: {key: list(tensor.shape) for key, tensor in state.items()}
        for name, state in personalive_state_dicts(full_meta_models).items()
    }
    assert set(ours) == set(published) == set(PERSONALIVE_FILES.values())
    for name in published:
        assert ours[name] == published[name], (
            f"{name}: keys or shapes differ from the published file"
        )
    assert sum(math.prod(s) for s in published["temporal_module.pth"].values()) == 454_417_600


def test_random_weights_are_written_in_the_published_layout(tiny_weights: Path) -> None:
    for file in PERSONALIVE_FILES.values():
        assert (tiny_weights / "personalive" / file).is_file()
    assert (tiny_weights / "sd-image-variations-diffusers/unet/config.json").is_file()
    assert (
        tiny_weights / "sd-image-variations-diffusers/image_encoder/pytorch_model.bin"
    ).is_file()
    vae = torch.load(tiny_weights / "sd-vae-ft-mse/diffusion_pytorch_model.bin", weights_only=True)
    assert any(".query." in key for key in vae), "the VAE file must use the legacy attention names"
    temporal = torch.load(tiny_weights / "personalive/temporal_module.pth", weights_only=True)
    assert temporal and all(".temporal_modules." in key for key in temporal)
    assert any(key.endswith("pos_encoder.pe") for key in temporal)
    assert missing_files(tiny_weights) == []


def test_loaded_model_reproduces_the_saved_tensors(tiny_weights: Path, tiny_models) -> None:
    saved = torch.load(tiny_weights / "personalive/reference_unet.pth", weights_only=True)
    loaded = tiny_models.reference_unet.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert tiny_models.dtype == torch.float32 and tiny_models.device.type == "cpu"


def _copy_weights(source: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(source, dest)
    return dest


def test_missing_key_is_named_with_its_file(tiny_weights: Path, tmp_path: Path) -> None:
    weights = _copy_weights(tiny_weights, tmp_path / "w")
    path = weights / "personalive/pose_guider.pth"
    state = torch.load(path, weights_only=True)
    del state["conv_out_modify.bias"]
    torch.save(state, path)
    with pytest.raises(
        WeightsError, match=r"pose_guider\.pth.*1 missing key\(s\): conv_out_modify\.bias"
    ):
        load_personalive(weights, "fp32", "cpu", architecture="tiny")


def test_unexpected_and_misshaped_keys_are_named(tiny_weights: Path, tmp_path: Path) -> None:
    weights = _copy_weights(tiny_weights, tmp_path / "w")
    path = weights / "personalive/motion_encoder.pth"
    state = torch.load(path, weights_only=True)
    state["model.extra_layer.weight"] = torch.zeros(3)
    state["final_proj.bias"] = torch.zeros(7)
    torch.save(state, path)
    with pytest.raises(
        WeightsError, match=r"motion_encoder\.pth.*unexpected key\(s\): model\.extra_layer\.weight"
    ) as info:
        load_personalive(weights, "fp32", "cpu", architecture="tiny")
    assert "final_proj.bias: file (7,) vs model (32,)" in str(info.value)


def test_denoising_files_must_split_cleanly(tiny_weights: Path, tmp_path: Path) -> None:
    weights = _copy_weights(tiny_weights, tmp_path / "w")
    denoising = torch.load(weights / "personalive/denoising_unet.pth", weights_only=True)
    temporal = torch.load(weights / "personalive/temporal_module.pth", weights_only=True)
    key = next(iter(temporal))
    denoising[key] = temporal[key]
    torch.save(denoising, weights / "personalive/denoising_unet.pth")
    with pytest.raises(WeightsError, match="denoising_unet.pth holds temporal-module keys"):
        load_personalive(weights, "fp32", "cpu", architecture="tiny")


def test_missing_files_are_listed_with_the_fix(tiny_weights: Path, tmp_path: Path) -> None:
    weights = _copy_weights(tiny_weights, tmp_path / "w")
    (weights / "personalive/temporal_module.pth").unlink()
    (weights / "sd-vae-ft-mse/config.json").unlink()
    with pytest.raises(
        WeightsError,
        match=r"(?s)temporal_module\.pth.*sd-vae-ft-mse/config\.json.*job=fetch_weights",
    ):
        load_personalive(weights, "fp32", "cpu", architecture="tiny")


class _Exploit:
    """Unpickling this would run code (creates a marker file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_weight_files_never_execute_code(tiny_weights: Path, tmp_path: Path) -> None:
    weights = _copy_weights(tiny_weights, tmp_path / "w")
    marker = tmp_path / "pwned"
    path = weights / "personalive/pose_guider.pth"
    state = torch.load(path, weights_only=True)
    state["trojan"] = _Exploit(str(marker))  # type: ignore[assignment]
    torch.save(state, path, pickle_module=pickle)
    with pytest.raises(WeightsError, match=r"pose_guider\.pth: cannot read weights"):
        load_personalive(weights, "fp32", "cpu", architecture="tiny")
    assert not marker.exists()


def test_architecture_mismatch_is_reported(tiny_weights: Path) -> None:
    with pytest.raises(WeightsError, match="does not match the model architecture"):
        load_personalive(tiny_weights, "fp32", "cpu", architecture="full")


def test_unknown_settings_are_rejected(tiny_weights: Path) -> None:
    with pytest.raises(ValueError, match="model.dtype='fp64' is not known"):
        load_personalive(tiny_weights, "fp64", "cpu", architecture="tiny")
    with pytest.raises(ValueError, match="model.architecture='huge' is not known"):
        load_personalive(tiny_weights, "fp32", "cpu", architecture="huge")
    with pytest.raises(
        ValueError, match="model.attention='flash' is not a known attention backend"
    ):
        load_personalive(tiny_weights, "fp32", "cpu", architecture="tiny", attention="flash")


def test_xformers_falls_back_to_sdpa_on_cpu_with_a_log_line(tiny_weights: Path, caplog) -> None:
    models = load_personalive(
        tiny_weights, "fp32", "cpu", architecture="tiny", attention="xformers"
    )
    assert models.attention == "sdpa"
    assert any("xformers needs a CUDA GPU" in r.getMessage() for r in caplog.records)


def test_attention_backends_compute_the_same_function(tiny_weights: Path) -> None:
    models = load_personalive(tiny_weights, "fp32", "cpu", architecture="tiny", attention="sdpa")
    unet = models.denoising_unet
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 16, 4, 8, 8, generator=generator)
    clip = torch.randn(2, 1, 32, generator=generator)
    motion = torch.randn(2, 16, 8, 4, generator=generator)
    bank = models.reference_unet(torch.randn(2, 4, 8, 8, generator=generator), clip)
    kv = unet.project_bank(bank)
    timesteps = torch.tensor([0] * 4 + [333] * 4 + [666] * 4 + [999] * 4)
    with torch.no_grad():
        sdpa = unet(sample, timesteps, clip, motion, bank_kv=kv).sample
        models.set_attention_backend("eager")
        eager = unet(sample, timesteps, clip, motion, bank_kv=kv).sample
    assert torch.allclose(sdpa, eager, rtol=1e-4, atol=1e-5)


def test_device_face_crop_matches_the_reference_crop() -> None:
    """The GPU's sync-free crop samples what the per-box interpolate samples (float32 rounding)."""
    from pipeline.models._keypoints import _crop_faces_on_device, crop_faces

    generator = torch.Generator().manual_seed(0)
    base = torch.rand(6, 3, 32, 32, generator=generator) * 2 - 1
    images = torch.nn.functional.interpolate(
        base, size=(512, 512), mode="bicubic", align_corners=False
    )
    boxes = torch.tensor(
        [
            [100, 120, 300, 330],
            [0, 0, 511, 511],
            [200, 200, 201, 260],
            [10, 400, 400, 511],
            [300, 300, 300, 350],
            [50, 60, 120, 90],
        ]
    )
    exact = crop_faces(images, boxes, 224)  # CPU: the reference's per-box interpolate
    fast = _crop_faces_on_device(images, boxes, 224)
    assert fast.shape == exact.shape == (6, 3, 224, 224)
    assert (fast - exact).abs().max() < 1e-4
    assert torch.equal(
        exact[4], torch.nn.functional.interpolate(images[4:5], size=(224, 224), mode="bilinear")[0]
    )


def test_tiny_decoder_is_a_switch(tiny_weights: Path, tmp_path: Path) -> None:
    """model.vae_decoder=tiny decodes with TAESD from weights_dir/taesd; without it, a clear error."""
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    full = load_personalive(tiny_weights, "fp32", "cpu", architecture="tiny")
    tiny = load_personalive(tiny_weights, "fp32", "cpu", architecture="tiny", vae_decoder="tiny")
    with torch.no_grad():
        full_images, tiny_images = full.decode(latents), tiny.decode(latents)
    assert full_images.shape == tiny_images.shape == (2, 3, 64, 64)
    assert not torch.allclose(full_images, tiny_images)
    weights = _copy_weights(tiny_weights, tmp_path / "w")
    import shutil

    shutil.rmtree(weights / "taesd")
    with pytest.raises(WeightsError, match=r"model\.vae_decoder=tiny needs TAESD in .*taesd"):
        load_personalive(weights, "fp32", "cpu", architecture="tiny", vae_decoder="tiny")
