"""Same inputs, same bytes: a segment's encode is a pure function of its frames and the settings.

The bundled libx264 read memory it never wrote, so in a long-lived process the same frames could
encode to different bytes (seen at 64x64: 4 different results in 4 runs of one process);
`pipeline.media._writer._steady_heap` fixes what such reads see. These tests encode repeatedly in
one process (where the heap holds earlier data) and in a fresh one, and render a row twice and
once interrupted and resumed, comparing bytes.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from media_factory import pattern_video

from pipeline.config import ModelConfig, StorageConfig, VideoConfig
from pipeline.ledger import Ledger
from pipeline.media import VideoEncoder
from pipeline.storage import Storage
from pipeline.worker import RowRenderer, RowTask, build_animator

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "manifests/media/portrait_a.png"

ENCODE = textwrap.dedent(
    """
    import hashlib, sys
    from fractions import Fraction
    from pathlib import Path
    from pipeline.media import VideoEncoder
    from scripts.bench_encode import frames_of

    def segment_digests(folder, frames, length=48):
        digests = []
        for index, start in enumerate(range(0, len(frames), length)):
            path = Path(folder) / f"segment-{index}.mp4"
            with VideoEncoder(path, frame_rate=Fraction(25), width=64, height=64) as encoder:
                for at in range(start, min(len(frames), start + length), 4):
                    encoder.add_frames(frames[at : at + 4])
            digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
        return digests

    if __name__ == "__main__":
        print(" ".join(segment_digests(sys.argv[1], frames_of(64, 250, noise=8))))
    """
)


def test_the_same_frames_encode_to_the_same_bytes_in_one_process_and_in_another(
    tmp_path: Path,
) -> None:
    """Four encodes of 250 frames in 48-frame segments (the issue's case: default crf 18,
    preset medium) in this process, whose heap holds the earlier ones' data, and one in a fresh
    process: every segment has the same bytes every time."""
    namespace: dict = {}
    exec(compile(ENCODE, "encode", "exec"), namespace)  # the same code the fresh process runs
    frames = namespace["frames_of"](64, 250, noise=8)
    runs = []
    for attempt in range(4):
        folder = tmp_path / f"run{attempt}"
        folder.mkdir()
        runs.append(namespace["segment_digests"](folder, frames))
    script = tmp_path / "encode.py"
    script.write_text(ENCODE)
    (tmp_path / "fresh").mkdir()
    fresh = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "fresh")],
        cwd=REPO, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    ).stdout.split()  # fmt: skip
    assert len(runs[0]) == 6
    assert all(run == runs[0] for run in runs), [len(set(r)) for r in zip(*runs)]
    assert fresh == runs[0]


def test_a_fixed_thread_count_is_the_default_and_is_kept(tmp_path: Path) -> None:
    """x264's bytes depend on its thread count: segments use video.encoder_threads (4), not the
    machine's core count."""
    assert VideoConfig().encoder_threads == 4
    path = tmp_path / "one.mp4"
    with VideoEncoder(path, frame_rate=Fraction(25), width=64, height=64, threads=4) as encoder:
        encoder.add_frames(np.zeros((8, 64, 64, 3), dtype=np.uint8))
        assert encoder._stream.codec_context.thread_count == 4


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """250 frames at 25 fps with a tone: segments, joins and the audio mux all take part."""
    folder = tmp_path_factory.mktemp("talk")
    return pattern_video(
        folder / "talk.mp4", frames=250, rate="25", size="96x72",
        audio="sine=frequency=330:duration=10",
    )  # fmt: skip


def render_row(tiny_weights: Path, clip: Path, job: Path, scratch: Path) -> tuple[dict, list[str]]:
    """The row rendered in this process: its commit marker and each committed segment's SHA-256."""
    model = ModelConfig(
        architecture="tiny", weights_dir=str(tiny_weights), dtype="fp32", device="cpu",
        resolution=64,
    )  # fmt: skip
    video = VideoConfig(segment_seconds=1.92)  # 48-frame segments; every other setting default
    scratch.mkdir(parents=True, exist_ok=True)
    renderer = RowRenderer(build_animator(model), Storage(StorageConfig()), video, scratch)
    task = RowTask("talk", str(PORTRAIT), str(clip), None, str(job), "talk-key", None, 7)
    outcome = renderer.render(task)
    record = Ledger(Storage(StorageConfig()), str(job)).row("talk-key")
    return outcome, record


@pytest.mark.slow
def test_a_row_rendered_twice_or_resumed_gives_the_same_bytes(
    tiny_weights, talk: Path, tmp_path: Path, monkeypatch
) -> None:
    """The whole row (segments, join, audio) twice in one process, then once stopped after two
    committed segments and resumed: the committed segments and the final video are byte for byte
    the same (the commit markers' SHA-256)."""
    segments: dict[str, list[str]] = {}
    real_commit = Ledger.commit_segment
    stop_after: dict[str, int] = {}

    def recording(self, key, index, start, end, video_path, state, **kwargs):
        job = Path(self.job_uri).name
        if stop_after.get(job) == index:
            raise RuntimeError(f"stopped before segment {index}")
        digest = hashlib.sha256(Path(video_path).read_bytes()).hexdigest()
        segments.setdefault(job, []).append(f"{index}:{start}-{end}:{digest}")
        return real_commit(self, key, index, start, end, video_path, state, **kwargs)

    monkeypatch.setattr(Ledger, "commit_segment", recording)
    markers = {}
    for job in ("first", "second"):
        outcome, record = render_row(tiny_weights, talk, tmp_path / job, tmp_path / "scratch")
        assert outcome.status == "done" and outcome.frames == 250 and outcome.has_audio
        markers[job] = record.commit
    assert segments["first"] == segments["second"]
    assert [s.split(":")[1] for s in segments["first"]][:3] == ["0-24", "24-72", "72-120"]
    assert markers["first"]["video_sha256"] == markers["second"]["video_sha256"]

    stop_after["resumed"] = 2  # the third segment's commit fails: two stay committed
    outcome, record = render_row(tiny_weights, talk, tmp_path / "resumed", tmp_path / "scratch")
    assert outcome.status == "failed" and "stopped before segment 2" in outcome.error
    assert len(record.segments) == 2 and record.commit is None
    del stop_after["resumed"]
    outcome, record = render_row(tiny_weights, talk, tmp_path / "resumed", tmp_path / "scratch")
    assert outcome.status == "done"
    assert record.commit["resumed_from_frame"] == 72
    assert segments["resumed"] == segments["first"]
    assert record.commit["video_sha256"] == markers["first"]["video_sha256"]
