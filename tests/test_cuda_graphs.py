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
