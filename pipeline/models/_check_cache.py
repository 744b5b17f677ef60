"""The verdicts of the load-time kernel checks, kept on local disk per GPU and software stack.

When a CUDA model loads, :func:`._fast_layers.check_kernels` runs every Triton kernel once against
PyTorch and picks the attention op for the reference bank. The verdict depends only on the GPU,
the software (torch, Triton, CUDA) and the kernels' own source, so a second job on the same
machine reads it here instead of running the checks again (Triton keeps the compiled kernels in
its own disk cache). Only a passing verdict is kept: a failure (no C compiler for Triton's
launcher, say) is checked again next time, in case it was mended.

The file is ``$PORTRAIT_RENDER_CACHE/kernel-checks.json`` (default ``~/.cache/portrait-render``);
delete it to check again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

_SOURCES = ("_nhwc_kernels.py", "_fast_layers.py", "_attention.py")


def cache_file() -> Path:
    root = os.environ.get("PORTRAIT_RENDER_CACHE") or Path.home() / ".cache" / "portrait-render"
    return Path(root) / "kernel-checks.json"


def stack_key(device: torch.device | str, dtype: torch.dtype) -> str:
    """What a verdict depends on: the GPU, dtype, torch/Triton/CUDA versions, the kernels' source."""
    try:
        import triton  # noqa: PLC0415

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    folder = Path(__file__).parent
    source = hashlib.sha256(b"".join((folder / name).read_bytes() for name in _SOURCES))
    parts = [
        name,
        str(capability),
        str(dtype),
        torch.__version__,
        str(torch.version.cuda),
        triton_version,
        source.hexdigest()[:16],
    ]
    return "|".join(parts)


def load_verdict(key: str) -> dict[str, Any] | None:
    """The kept verdict for ``key``; None when there is none (or the file is unreadable)."""
    try:
        verdicts = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return None
    found = verdicts.get(key) if isinstance(verdicts, dict) else None
    return found if isinstance(found, dict) else None


def store_verdict(key: str, verdict: dict[str, Any]) -> None:
    """Keep ``verdict`` for ``key`` (atomically; a write that fails only costs the next job the
    checks)."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            verdicts = json.loads(path.read_text())
        except (OSError, ValueError):
            verdicts = {}
        if not isinstance(verdicts, dict):
            verdicts = {}
        verdicts[key] = verdict
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".kernel-checks.", suffix=".tmp")
        with os.fdopen(handle, "w") as stream:
            json.dump(verdicts, stream, indent=1)
        os.replace(temp, path)
    except OSError as err:
        logger.debug("could not keep the kernel checks' verdict in %s: %s", path, err)
