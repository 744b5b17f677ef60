"""Shared fixtures: tiny random weights in the published layout, a tiny model, a local Ray."""

from __future__ import annotations

import os
import tempfile

# before anything imports huggingface_hub or Ray
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray binds to 127.0.0.1
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# dummy credentials for the local moto S3 server; set before Ray starts so its workers inherit them
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# the kernel checks' kept verdicts (pipeline/models/_check_cache.py): never the user's own
os.environ.setdefault("PORTRAIT_RENDER_CACHE", tempfile.mkdtemp(prefix="portrait-render-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

# without a GPU, Triton kernels run through Triton's interpreter on CPU tensors (the tests of
# pipeline/models/_nhwc_kernels.py); read when the kernels are defined, so before any import of them
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from s3_server import moto_s3_server  # noqa: E402, F401 - session fixture: moto's S3 server on 127.0.0.1

TINY_RESOLUTION = 64


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory):
    """A folder with tiny random PersonaLive weights in the published file layout."""
    from pipeline.models import save_random_weights

    return save_random_weights(tmp_path_factory.mktemp("weights"), architecture="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_models(tiny_weights):
    from pipeline.models import load_personalive

    torch.set_num_threads(2)
    return load_personalive(tiny_weights, "fp32", "cpu", architecture="tiny")


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the whole session (starting one costs seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
