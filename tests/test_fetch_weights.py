"""job=fetch_weights against a Hugging Face endpoint served on 127.0.0.1 (the real huggingface_hub
client talks HTTP to it), and offline behaviour."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """The few Hub endpoints huggingface_hub uses to list and download files of a revision."""

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos
        self.tampered: set[tuple[str, str]] = set()
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                path = unquote(urlparse(self.path).path)
                if path == "/":
                    return self._send(200, b"ok", {}, body)
                if path.startswith("/api/models/"):
                    repo_id, _, _revision = path[len("/api/models/") :].partition("/revision/")
                    return self._send(
                        200,
                        json.dumps(hub.info(repo_id)).encode(),
                        {"Content-Type": "application/json"},
                        body,
                    )
                repo_id, _, rest = path.lstrip("/").partition("/resolve/")
                _revision, _, filename = rest.partition("/")
                data = hub.repos.get(repo_id, {}).get(filename)
                if data is None:
                    return self._send(404, b"not found", {"X-Error-Code": "EntryNotFound"}, body)
                if (repo_id, filename) in hub.tampered:
                    data = data[:-1] + bytes([data[-1] ^ 1])
                headers = {
                    "X-Repo-Commit": COMMIT,
                    "ETag": f'"{hashlib.sha256(hub.repos[repo_id][filename]).hexdigest()}"',
                }
                start = 0
                if body and (ranged := self.headers.get("Range")):
                    start = int(ranged.split("=")[1].split("-")[0])
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self._send(206 if start else 200, data[start:], headers, body)

            def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def info(self, repo_id: str) -> dict:
        siblings = []
        for name, data in self.repos[repo_id].items():
            sibling = {
                "rfilename": name,
                "size": len(data),
                "blobId": hashlib.sha1(data).hexdigest(),
            }
            if len(data) > 1000:  # large files are LFS files on the Hub, with a published SHA-256
                sibling["lfs"] = {
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "pointerSize": 134,
                }
            siblings.append(sibling)
        return {
            "id": repo_id,
            "modelId": repo_id,
            "sha": COMMIT,
            "siblings": siblings,
            "private": False,
        }

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def hub_repos(weights: Path) -> dict[str, dict[str, bytes]]:
    """The tiny random weights, arranged as the three published repositories arrange them."""
    read = lambda relative: (weights / relative).read_bytes()  # noqa: E731
    return {
        "test/PersonaLive": {
            f"pretrained_weights/personalive/{f.name}": f.read_bytes()
            for f in (weights / "personalive").iterdir()
        }
        | {"README.md": b"# weights\n"},
        "test/sd-image-variations-diffusers": {
            name: read(f"sd-image-variations-diffusers/{name}")
            for name in (
                "unet/config.json",
                "image_encoder/config.json",
                "image_encoder/pytorch_model.bin",
                "model_index.json",
            )
        }
        | {"unet/diffusion_pytorch_model.bin": b"x" * 5000},  # not needed: must not be fetched
        "test/sd-vae-ft-mse": {
            name: read(f"sd-vae-ft-mse/{name}")
            for name in ("config.json", "diffusion_pytorch_model.bin")
        },
    }


HUB_OVERRIDE = (
    "model.hub=["
    "{repo_id:test/PersonaLive,revision:"
    + COMMIT
    + ",local_dir:.,allow_patterns:['pretrained_weights/personalive/*.pth'],subfolder_strip:pretrained_weights},"
    "{repo_id:test/sd-image-variations-diffusers,revision:v2.0,local_dir:sd-image-variations-diffusers,"
    "allow_patterns:['unet/config.json','image_encoder/config.json','image_encoder/pytorch_model.bin','model_index.json']},"
    "{repo_id:test/sd-vae-ft-mse,revision:main,local_dir:sd-vae-ft-mse,allow_patterns:['config.json','diffusion_pytorch_model.bin']}"
    "]"
)


def fetch(
    weights_dir: Path, endpoint: str | None, offline: bool = False
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        {"HF_HUB_OFFLINE": "1" if offline else "0", "HF_HOME": str(weights_dir.parent / "hf-home")}
    )
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return subprocess.run(
        [sys.executable, "run.py", "job=fetch_weights", "model=tiny", f"model.weights_dir={weights_dir}",
         "model.random_init=false", HUB_OVERRIDE, "job.progress=plain"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_fetch_downloads_verifies_and_lays_out_the_files(
    tiny_weights: Path, tmp_path: Path
) -> None:
    from pipeline.models import load_personalive, missing_files

    target = tmp_path / "weights"
    with FakeHub(hub_repos(tiny_weights)) as hub:
        result = fetch(target, hub.endpoint)
        assert result.returncode == 0, result.stdout + result.stderr
        assert missing_files(target) == []
        output = result.stdout + result.stderr
        assert (
            "fetched  test/PersonaLive/pretrained_weights/personalive/denoising_unet.pth" in output
        )
        assert not any("unet/diffusion_pytorch_model.bin" in r for r in hub.requests), (
            "unneeded file fetched"
        )
        assert not (target / ".download").exists()
        load_personalive(target, "fp32", "cpu", architecture="tiny")  # the layout loads
        # every repository's revision resolved to the commit it named, recorded; render jobs key
        # their outputs by it (a branch such as "main" then still names exact weights)
        recorded = json.loads((target / "revisions.json").read_text())
        assert recorded["test/sd-vae-ft-mse"] == {"revision": "main", "commit": COMMIT}
        assert recorded["test/sd-image-variations-diffusers"]["commit"] == COMMIT
        assert "test/sd-vae-ft-mse: revision main is commit" in output
        from pipeline.config import HubRepo, ModelConfig
        from pipeline.row_plan import model_revision

        model = ModelConfig(
            weights_dir=str(target),
            hub=[HubRepo(repo_id="test/sd-vae-ft-mse", revision="main", local_dir="v")],
        )
        assert model_revision(model) == f"test/sd-vae-ft-mse@{COMMIT}"
        for name in ("denoising_unet.pth", "temporal_module.pth"):
            assert (target / "personalive" / name).read_bytes() == (
                tiny_weights / "personalive" / name
            ).read_bytes()

        again = fetch(target, hub.endpoint)  # everything present and verified: nothing downloaded
        again_output = again.stdout + again.stderr
        assert (
            again.returncode == 0
            and "kept     test/PersonaLive" in again_output
            and "fetched" not in again_output
        )


def test_a_corrupted_download_is_refused(tiny_weights: Path, tmp_path: Path) -> None:
    target = tmp_path / "weights"
    with FakeHub(hub_repos(tiny_weights)) as hub:
        hub.tampered.add(("test/PersonaLive", "pretrained_weights/personalive/pose_guider.pth"))
        result = fetch(target, hub.endpoint)
    assert result.returncode == 2
    assert "pose_guider.pth: checksum mismatch after download" in result.stderr
    assert not (target / "personalive/pose_guider.pth").exists()


def test_offline_with_weights_present_does_nothing(tiny_weights: Path, tmp_path: Path) -> None:
    result = fetch(tiny_weights, None, offline=True)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "All weights are present" in output and "nothing was checked or downloaded" in output


def test_offline_with_weights_missing_says_what_is_missing(tmp_path: Path) -> None:
    result = fetch(tmp_path / "empty", None, offline=True)
    assert result.returncode == 1
    assert "offline" in result.stderr and "denoising_unet.pth" in result.stderr


@pytest.mark.parametrize("revision", [COMMIT])
def test_the_published_revisions_are_pinned(revision: str) -> None:
    """The real model's hub list pins the PersonaLive and VAE repositories to commits."""
    from omegaconf import OmegaConf

    hub = OmegaConf.load(REPO / "conf/model/personalive.yaml").hub
    pinned = {repo.repo_id: repo.revision for repo in hub}
    assert (
        len(pinned["huaichang/PersonaLive"]) == 40
        and len(pinned["stabilityai/sd-vae-ft-mse"]) == 40
    )
