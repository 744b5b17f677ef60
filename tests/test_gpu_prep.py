"""Preparing a row on the GPU while other rows' calls fill its queue (GPU only)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_RESOLUTION
from test_animator import driving, portrait

from pipeline.animate import StreamingAnimator
from pipeline.config import AnimatorConfig


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU's queue")
@pytest.mark.parametrize("cuda_graphs", [False, True], ids=["eager", "graphs"])
def test_preparing_a_row_never_waits_for_the_calls_queued_on_the_gpu(
    tiny_weights, cuda_graphs
) -> None:
    """A new row's portrait is fused on the preparation thread while other rows' calls fill the
    GPU's queue: any copy or read that waits for that queue would hold each new row back by whole
    calls (rows then start only as fast as calls end). With CUDA's sync check set to fail, the
    portrait's fusing and the row's first calls run without one (with graphs: replayed, after
    the rows that captured them)."""
    from pipeline.models import load_personalive

    models = load_personalive(tiny_weights, "fp32", "cuda", architecture="tiny")
    models.optimize(cuda_graphs=cuda_graphs)
    animator = StreamingAnimator(models, AnimatorConfig(), resolution=TINY_RESOLUTION)
    frames = driving(8)
    # once per worker: libraries, constants (and with graphs, the first sight and the capture)
    for seed in (1, 2) if cuda_graphs else (1,):
        first = animator.fuse_reference(portrait(seed), seed=seed)
        for i in (0, 4):
            animator.advance([first], [frames[i : i + 4]])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stream = animator.fuse_reference(portrait(0), seed=0)
        outputs = [animator.advance([stream], [frames[i : i + 4]])[0] for i in (0, 4)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert stream.calls == 2 and all(o.shape[0] == 0 for o in outputs)  # still warming up
