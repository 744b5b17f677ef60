"""CUDA graph replay of the hot calls (pipeline/models/_cuda_graphs.py) and the batched banks.

The graph tests need a GPU (they run on the lent H100 with the benchmark); on CPU the wrapper
must step aside and change nothing.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.animate._animator import _batch_banks, _LastBatchedBanks
from pipeline.models._cuda_graphs import GraphedCall

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def _network(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(16, 4, 3, padding=1)
    ).to(device)


def _call(network: torch.nn.Module):
    def fn(x: torch.Tensor, extras: list[tuple[torch.Tensor, torch.Tensor]], scale: float):
        out = network(x) * scale
        for a, b in extras:
            out = out + (a * b).mean()
        return out

    return fn


def test_on_cpu_the_call_runs_as_it_is() -> None:
    network = _network("cpu")
    graphed = GraphedCall(_call(network))
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(graphed(x, [], 2.0), _call(network)(x, [], 2.0))
    assert graphed.captures == graphed.replays == 0


@pytest.mark.gpu
@cuda
def test_replays_equal_eager_calls_for_every_signature() -> None:
    network = _network("cuda")
    eager = _call(network)
    graphed = GraphedCall(eager, max_graphs=2)
    banks = [(torch.randn(3, 5, device="cuda"), torch.randn(3, 5, device="cuda"))]
    results = []
    with torch.no_grad():
        for _ in range(6):
            x = torch.randn(2, 4, 8, 8, device="cuda")
            results.append((graphed(x, banks, 0.5), eager(x, banks, 0.5)))
        # every result still holds its own call's values: replays did not overwrite them
        assert all(torch.allclose(got, expected, atol=1e-5) for got, expected in results)
        # seen once (eager), captured on the second call, replayed from then on
        assert graphed.captures == 1 and graphed.replays == 4
        # a changed bank (same object, modified in place) is copied in again
        banks[0][0].mul_(3)
        x = torch.randn(2, 4, 8, 8, device="cuda")
        assert torch.allclose(graphed(x, banks, 0.5), eager(x, banks, 0.5), atol=1e-5)
        # a new batch size and a new scalar are new signatures: each gets its own graph
        for _ in range(2):
            y = torch.randn(3, 4, 8, 8, device="cuda")
            assert torch.allclose(graphed(y, banks, 0.5), eager(y, banks, 0.5), atol=1e-5)
            assert torch.allclose(graphed(x, banks, 2.0), eager(x, banks, 2.0), atol=1e-5)
        assert graphed.captures == 3 and len(graphed._graphs) == 2  # the oldest was dropped


@pytest.mark.gpu
@cuda
def test_a_call_that_cannot_be_captured_runs_eagerly_from_then_on(caplog) -> None:
    def syncs(x: torch.Tensor) -> torch.Tensor:
        return x * float(x.sum())  # reads a value back to the host: not capturable

    graphed = GraphedCall(syncs, name="syncing call")
    x = torch.ones(4, device="cuda")
    with caplog.at_level("WARNING"):
        results = [graphed(x) for _ in range(3)]
    assert all(torch.equal(r, x * 4) for r in results)
    assert not graphed.enabled and graphed.captures == 0
    assert "syncing call: CUDA graph capture failed" in caplog.text
    # the failed capture left nothing behind: the GPU's random generator still draws
    assert torch.randn(8, device="cuda").isfinite().all()


def test_batched_banks_are_reused_until_a_bank_changes() -> None:
    torch.manual_seed(0)

    def bank(length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.randn(1, 2, length, 4), torch.randn(1, 2, length, 4))]

    first, second = bank(3), bank(5)
    batch = _LastBatchedBanks()
    batched = batch([first, second])
    assert batch([first, second]) is batched  # same streams, same banks: no new concatenation
    grown = bank(7)  # a keyframe joined the second stream: its bank is a new list
    rebatched = batch([first, grown])
    assert rebatched is not batched
    expected = _batch_banks([first, grown])
    assert all(torch.equal(a, b) for a, b in zip(rebatched[0][0], expected[0][0]))
    assert torch.equal(rebatched[1][0].mask, expected[1][0].mask)  # the shorter bank's padding
    assert rebatched[1][0].lengths == (3, 7)  # and both banks' real lengths
    swapped = batch([grown, first])  # the order of the streams in the batch matters
    assert torch.equal(swapped[0][0][0][0], grown[0][0][0])


@pytest.mark.gpu
@cuda
def test_the_graphed_decoder_serves_every_frame_count_with_a_graph_per_chunk(
    tiny_weights, monkeypatch
) -> None:
    """Rows starting, warming up and ending emit any number of frames per call; the decoder's
    frame count is rounded up to whole chunks, so two graphs serve 1–8 frames, each image as the
    eager decoder makes it (to a tenth of one 8-bit step: another batch size may pick another
    convolution algorithm)."""
    from pipeline.models import load_personalive
    from pipeline.models._bundle import DECODE_FRAMES_MULTIPLE

    # fp32 as fp32: TF32 products would differ between algorithms by far more than fp32 rounding
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    models = load_personalive(tiny_weights, "fp32", "cuda", architecture="tiny")
    eager = models.decode
    models.optimize(cuda_graphs=True)
    decoder = models._graphed[1]
    torch.manual_seed(3)
    with torch.no_grad():
        for _ in range(2):  # seen once (eager), captured on the second sight
            for frames in range(1, 2 * DECODE_FRAMES_MULTIPLE + 1):
                latents = torch.randn(frames, 4, 8, 8, device="cuda")
                got = models.decode(latents)
                assert got.shape[0] == frames
                assert (got - eager(latents)).abs().max() < 1e-3, frames
    # 16 calls: two first sights run eagerly, two captures, twelve replays
    assert decoder.captures == 2 and decoder.replays == 12


@pytest.mark.gpu
@cuda
def test_the_small_networks_of_a_call_replay_graphs_from_any_thread(
    tiny_weights, monkeypatch
) -> None:
    """The keypoint extractor, motion encoder and pose guider run in every call (hundreds of short
    kernels): under graphs the observation of 1–8 frames takes two graphs (frame counts rounded
    up to whole chunks) and the pose guider one, each giving what the eager networks give; the
    preparation thread and the batch thread may replay the same graph at once."""
    import threading

    from conftest import TINY_RESOLUTION

    from pipeline.models import load_personalive
    from pipeline.models._bundle import DECODE_FRAMES_MULTIPLE

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    models = load_personalive(tiny_weights, "fp32", "cuda", architecture="tiny")
    eager_observe, eager_pose = models.observe, models.pose_features
    models.optimize(cuda_graphs=True)
    observer, pose_guider = models._graphed[2], models._graphed[3]
    size = TINY_RESOLUTION
    torch.manual_seed(5)
    with torch.no_grad():
        for _ in range(2):  # seen once (eager), captured on the second sight
            for frames in range(1, 2 * DECODE_FRAMES_MULTIPLE + 1):
                pixels = torch.rand(frames, 3, size, size, device="cuda") * 2 - 1
                pose, motion = models.observe(pixels, size)
                want_pose, want_motion = eager_observe(pixels, size)
                assert motion.shape[0] == frames and pose.canonical.shape[0] == frames
                assert (motion - want_motion).abs().max() < 1e-3, frames
                for name, value in vars(pose).items():
                    assert (value - getattr(want_pose, name)).abs().max() < 1e-3, (frames, name)
        assert observer.captures == 2 and observer.replays == 12

        keypoints = [torch.rand(4, 21, 3, device="cuda") * 2 - 1 for _ in range(6)]
        expected = [eager_pose(k, size) for k in keypoints]
        errors: list[float] = []

        def replay(order: list[int]) -> None:
            for _ in range(10):
                for i in order:
                    got = models.pose_features(keypoints[i], size)
                    errors.append(float((got - expected[i]).abs().max()))

        threads = [threading.Thread(target=replay, args=(o,)) for o in ([0, 1, 2], [3, 4, 5])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        torch.cuda.synchronize()
    assert len(errors) == 60 and max(errors) < 1e-3
    assert pose_guider.captures == 1


@pytest.mark.gpu
@cuda
def test_a_portrait_and_a_rows_signal_samples_are_encoded_by_graphs(
    tiny_weights, monkeypatch
) -> None:
    """The preparation thread's networks replay graphs too: a new row's portrait (image encoder,
    VAE encoder, reference UNet and bank projection, keypoints, motion encoder: one graph, the
    same shapes every row) and the CLIP embeddings of a row's signal samples (1–8 images, two
    graphs). Each equals the eager networks, and a state fused through the graph streams the same
    frames as one fused eagerly."""
    import numpy as np
    from conftest import TINY_RESOLUTION
    from test_animator import driving, portrait

    from pipeline.animate import StreamingAnimator
    from pipeline.config import AnimatorConfig
    from pipeline.models import load_personalive

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    eager = StreamingAnimator(
        load_personalive(tiny_weights, "fp32", "cuda", architecture="tiny"),
        AnimatorConfig(),
        resolution=TINY_RESOLUTION,
    )
    models = load_personalive(tiny_weights, "fp32", "cuda", architecture="tiny")
    models.optimize(cuda_graphs=True)
    graphed = StreamingAnimator(models, AnimatorConfig(), resolution=TINY_RESOLUTION)
    encoder, embedder = models._graphed[4], models._graphed[5]
    frames = driving(24)
    for seed in range(3):  # seen once (eager), captured, replayed
        want, got = (a.fuse_reference(portrait(seed), seed=seed) for a in (eager, graphed))
        for name in ("clip_embeds", "reference_latent", "reference_motion", "latents"):
            difference = (getattr(got, name) - getattr(want, name)).abs().max()
            assert difference < 1e-3, (seed, name)
        for (k, v), (k0, v0) in zip(got.reference_kv, want.reference_kv):
            assert (k - k0).abs().max() < 1e-3 and (v - v0).abs().max() < 1e-3
        for name, value in vars(got.reference_pose).items():
            assert (value - getattr(want.reference_pose, name)).abs().max() < 1e-3, name
    assert encoder.captures == 1 and encoder.replays == 1
    # the last portrait's stream, fused by the graph, renders the eager stream's frames
    outputs = [
        torch.cat([animator.push(state, frames[i : i + 4]) for i in range(0, 24, 4)]).cpu()
        for animator, state in ((eager, want), (graphed, got))
    ]
    assert outputs[0].shape[0] == 12
    assert (outputs[0].int() - outputs[1].int()).abs().max() <= 1

    for _ in range(2):
        for count in range(1, 9):
            images = np.stack([portrait(i) for i in range(count)])
            inputs = graphed.clip_inputs(images)
            difference = (graphed.embed_images(inputs) - eager.embed_images(inputs)).abs().max()
            assert difference < 1e-3, count
    assert embedder.captures == 2 and embedder.replays == 12


@pytest.mark.gpu
@cuda
def test_threads_capturing_at_the_same_time_take_turns() -> None:
    """The batch thread captures the UNet while the preparation thread captures a portrait's or
    a row's signals' graph: a capture begins by synchronising the device, which fails another
    thread's capture under way (and that call's graphs were dropped for good). Captures take turns,
    so both threads end with every graph captured and eager-equal results."""
    import threading

    calls = [GraphedCall(_call(_network("cuda")), name=f"thread {i}") for i in range(2)]
    start = threading.Barrier(2)
    errors: list[float] = []

    def capture_many(graphed: GraphedCall) -> None:
        start.wait()
        with torch.no_grad():
            for batch in range(1, 7):
                for _ in range(3):  # first sight, capture, replay
                    # drawn on the host: the GPU's default generator belongs to a capture
                    # while one is under way (another thread's draw would fail)
                    x = torch.randn(batch, 4, 32, 32).cuda()
                    got = graphed(x, [], 1.0)
                    errors.append(float((got - graphed.fn(x, [], 1.0)).abs().max()))

    threads = [threading.Thread(target=capture_many, args=(c,)) for c in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    torch.cuda.synchronize()
    assert [(c.enabled, c.captures, c.replays) for c in calls] == [(True, 6, 6)] * 2
    assert len(errors) == 36 and max(errors) < 1e-5


@pytest.mark.gpu
@cuda
def test_after_a_rehearsal_a_workers_first_rows_capture_no_graph(tiny_weights) -> None:
    """``model.graphs_at_start``: the rehearsal captures the graphs of 1..S streams' calls, a
    portrait and the signals' embeddings, so rows that then start, stream together and leave
    (without history keyframes) only replay."""
    import numpy as np
    from conftest import TINY_RESOLUTION
    from test_animator import driving, portrait

    from pipeline.animate import StreamingAnimator, rehearse
    from pipeline.config import AnimatorConfig
    from pipeline.models import load_personalive

    models = load_personalive(tiny_weights, "fp16", "cuda", architecture="tiny")
    models.optimize(channels_last=True, cuda_graphs=True)
    animator = StreamingAnimator(models, AnimatorConfig(), resolution=TINY_RESOLUTION)
    rehearse(animator, 3, embed_batch=8)
    # the UNet, decoder and observation for 1, 2 and 3 streams; pose guider; portrait; 4 and 8
    # images embedded
    captures = {g.name: g.captures for g in models._graphed}
    assert captures == {**captures, "denoising UNet": 3, "decoder": 3, "observe": 3}
    assert captures["portrait encoding"] == 1 and captures["image embeddings"] == 2
    assert models.graphs_given_up() == []
    captured, replays = models.graph_captures(), sum(g.replays for g in models._graphed)
    frames = driving(20)
    streams = [animator.fuse_reference(portrait(i), seed=i) for i in range(3)]
    for start in range(0, 20, 4):  # three rows together, then two, then one, then done
        live = [s for i, s in enumerate(streams) if start < 20 - 4 * i]
        animator.advance(live, [frames[start : start + 4]] * len(live))
    for stream in streams:
        while not stream.done:
            animator.advance([stream], [None])
    inputs = animator.clip_inputs(np.stack([portrait(i) for i in range(6)]))
    animator.embed_images(inputs)
    assert models.graph_captures() == captured
    assert sum(g.replays for g in models._graphed) > replays + 20
