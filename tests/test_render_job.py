"""job=render end to end: manifest → embedded Ray workers → videos with audio, checked by decoding."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
from job_helpers import run_in_process, tiny_render_overrides, write_manifest
from media_factory import click_time, pattern_video, video_with_click

from pipeline.media import probe

# every test here is a whole job on the embedded Ray (about a minute each on 2 cores)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from pipeline.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return hydra_compose("config", overrides=list(overrides))


def render(manifest: Path, out: Path, weights: Path, *extra: str) -> int:
    return run_in_process(tiny_render_overrides(manifest, out, weights, *extra))


def outputs_by_id(job: Path) -> dict[str, Path]:
    summary = json.loads((job / "summary.json").read_text())
    return {row["row_id"]: Path(row["output"]) for row in summary["rows"] if row["output"]}


def test_example_manifest_renders_with_exact_timing_and_audio(
    ray_local, tiny_weights, tmp_path: Path
) -> None:
    """The bundled example: every output decodes with the driving video's exact rate, length and audio."""
    example = tmp_path / "example"
    shutil.copytree(REPO / "manifests", example)
    assert render(example / "example.csv", tmp_path / "out", tiny_weights) == 0
    driving = probe(example / "media/driving.mp4").video
    assert driving.frame_rate == Fraction(30000, 1001)
    summary = json.loads((tmp_path / "out/example/summary.json").read_text())
    assert summary["totals"]["done"] == 3 and summary["totals"]["failed"] == 0
    for row in summary["rows"]:
        info = probe(row["output"])
        assert info.video.frame_rate == Fraction(30000, 1001)  # exact, never a hard-coded 25
        assert info.video.num_frames == driving.num_frames
        assert abs(info.video.duration_seconds - driving.duration_seconds) <= 1 / float(
            driving.frame_rate
        )
        assert (info.video.width, info.video.height) == (64, 64)
        assert info.audio is not None, row
        assert abs(info.audio.duration_seconds - info.video.duration_seconds) <= 1 / float(
            driving.frame_rate
        )
    status = json.loads((tmp_path / "out/example/status.json").read_text())
    assert status["state"] == "finished" and status["rows"]["done"] == 3
    assert (tmp_path / "out/example/config.yaml").is_file()


def test_audio_stays_in_sync_and_follows_the_length_policy(
    ray_local, tiny_weights, tmp_path: Path
) -> None:
    """A click at 1.0 s in the driving video's audio is at 1.0 s in the output (±1 frame);
    a separate short audio file is padded with silence to the video's length."""
    clip = video_with_click(tmp_path / "talk.mp4", duration=2.0, click_at=1.0)
    short = tmp_path / "short.wav"
    from media_factory import click_audio

    click_audio(short, click_at=0.4, duration=1.0)
    portrait = REPO / "manifests/media/portrait_a.png"
    manifest = write_manifest(
        tmp_path / "sync.csv",
        [
            {"id": "own", "portrait": str(portrait), "driving_video": str(clip), "audio": ""},
            {
                "id": "file",
                "portrait": str(portrait),
                "driving_video": str(clip),
                "audio": str(short),
            },
            {
                "id": "capped",
                "portrait": str(portrait),
                "driving_video": str(clip),
                "audio": "",
                "max_frames": "30",
            },
        ],
    )
    assert render(manifest, tmp_path / "out", tiny_weights) == 0
    outputs = outputs_by_id(tmp_path / "out/sync")
    frame = 1 / 25
    assert click_time(outputs["own"]) == pytest.approx(1.0, abs=frame)
    assert click_time(outputs["file"]) == pytest.approx(0.4, abs=frame)
    padded = probe(outputs["file"])
    assert padded.video.num_frames == 50
    assert padded.audio.duration_seconds == pytest.approx(2.0, abs=frame)  # 1 s of audio + silence
    capped = probe(outputs["capped"])
    assert capped.video.num_frames == 30
    assert capped.audio.duration_seconds == pytest.approx(
        30 / 25, abs=frame
    )  # trimmed to the video


def test_eight_rows_on_two_cpu_workers(ray_local, tiny_weights, tmp_path: Path) -> None:
    clips = [
        pattern_video(tmp_path / f"clip{i}.mp4", frames=10 + 3 * i, rate="25") for i in range(4)
    ]
    portrait = REPO / "manifests/media/portrait_b.png"
    rows = [
        {"portrait": str(portrait), "driving_video": str(clips[i % 4]), "seed": str(i)}
        for i in range(8)
    ]
    manifest = write_manifest(tmp_path / "eight.csv", rows)
    assert render(manifest, tmp_path / "out", tiny_weights, "cluster.cpu_workers=2") == 0
    summary = json.loads((tmp_path / "out/eight/summary.json").read_text())
    assert [r["status"] for r in summary["rows"]] == ["done"] * 8
    assert len({r["row_id"] for r in summary["rows"]}) == 8
    assert {r["worker"] for r in summary["rows"]} == {
        "cpu-worker-0",
        "cpu-worker-1",
    }  # rows handed out dynamically
    for row in summary["rows"]:
        assert probe(row["output"]).video.num_frames == row["frames"]
    # the job's aggregate rate: all frames over the first start → last end span of the rows,
    # which the two workers overlap (so the span is shorter than the rows' summed time)
    totals, rows = summary["totals"], summary["rows"]
    span = max(r["started_at"] + r["seconds"] for r in rows) - min(r["started_at"] for r in rows)
    assert totals["span_seconds"] == pytest.approx(span, abs=0.01)
    assert totals["span_seconds"] < totals["row_seconds"]
    assert totals["aggregate_fps"] == pytest.approx(totals["frames"] / span, rel=1e-3)


def test_a_failed_row_is_reported_and_sets_the_exit_code(
    ray_local, tiny_weights, tmp_path: Path
) -> None:
    clip = pattern_video(tmp_path / "ok.mp4", frames=8)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")
    portrait = REPO / "manifests/media/portrait_a.png"
    manifest = write_manifest(
        tmp_path / "mixed.csv",
        [
            {"id": "good", "portrait": str(portrait), "driving_video": str(clip)},
            {"id": "bad", "portrait": str(portrait), "driving_video": str(not_video)},
        ],
    )
    assert render(manifest, tmp_path / "out", tiny_weights) == 1
    summary = {
        r["row_id"]: r
        for r in json.loads((tmp_path / "out/mixed/summary.json").read_text())["rows"]
    }
    assert summary["good"]["status"] == "done"
    assert summary["bad"]["status"] == "failed"
    assert "driving_video" in summary["bad"]["error"] and "notes.mp4" in summary["bad"]["error"]


def test_status_counts_agree_with_the_summary_and_a_rerun_keeps_the_jobs_story(
    ray_local, tiny_weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status.json and summary.json count each row once: a fresh job, a partial one (a row with
    a missing file fails under its own id), a rerun with nothing to do (every row skipped, once,
    without starting workers), a rerun after a row was added (skipped plus done). The summary of
    a rerun still says which run rendered each output, how fast, and lists the runs."""
    import jobs.render as render_module

    clip = pattern_video(tmp_path / "ok.mp4", frames=8)
    portrait = REPO / "manifests/media/portrait_a.png"
    rows = [{"id": f"r{i}", "portrait": str(portrait), "driving_video": str(clip), "seed": str(i),
             "campaign": f"spring-{i}"} for i in range(3)]  # fmt: skip
    missing = {"id": "lost", "portrait": str(tmp_path / "gone.png"), "driving_video": str(clip),
               "seed": "9", "campaign": "x"}  # fmt: skip

    def read(name: str) -> dict:
        return json.loads((tmp_path / "out/counted" / name).read_text())

    class NoPool:
        def __init__(self, *args, **kwargs) -> None:
            raise AssertionError("a rerun with nothing to render must not start workers")

    first_run = None
    for stage, manifest_rows, expected, code in (
        ("fresh", rows[:2], {"done": 2, "skipped": 0, "failed": 0}, 0),
        ("partial", [*rows[:2], missing], {"done": 0, "skipped": 2, "failed": 1}, 1),
        ("rerun", rows[:2], {"done": 0, "skipped": 2, "failed": 0}, 0),
        ("added", rows, {"done": 1, "skipped": 2, "failed": 0}, 0),
    ):
        manifest = write_manifest(tmp_path / "counted.csv", manifest_rows)
        with monkeypatch.context() as patch:
            if expected["done"] == 0:
                patch.setattr(render_module, "RenderPool", NoPool)
            assert render(manifest, tmp_path / "out", tiny_weights) == code, stage
        status, summary = read("status.json"), read("summary.json")
        totals = summary["totals"]
        assert status["state"] == "finished", stage
        for key, value in expected.items():
            assert status["rows"][key] == totals[key] == value, (stage, status["rows"], totals)
        assert sum(status["rows"][k] for k in ("done", "failed", "skipped", "quarantined", "interrupted")) == len(manifest_rows), (stage, status["rows"])  # fmt: skip
        assert totals["rows"] == len(manifest_rows), stage
        by_id = {row["row_id"]: row for row in summary["rows"]}
        assert set(by_id) == {row["id"] for row in manifest_rows}, stage  # ids, never "row 3"
        assert by_id["r0"]["extra"] == {"campaign": "spring-0"}, stage
        assert by_id["r0"]["inputs"]["portrait"] == str(portrait), stage
        if stage == "fresh":
            first_run = summary["run"]["id"]
            first_story = {row_id: by_id[row_id]["rendered"] for row_id in ("r0", "r1")}
        else:  # the run that rendered them told their story; later runs keep it as it was
            assert {row_id: by_id[row_id]["rendered"] for row_id in ("r0", "r1")} == first_story
        if stage == "partial":
            assert by_id["lost"]["status"] == "failed" and "gone.png" in by_id["lost"]["error"]
        # the outputs as they stand: r0 and r1 were rendered by the first run, whatever came later
        for row_id in ("r0", "r1"):
            rendered = by_id[row_id]["rendered"]
            assert rendered["run"] == first_run and rendered["frames"] == 8, (stage, rendered)
            assert rendered["seconds"] > 0 and rendered["fps"] > 0, (stage, rendered)
        assert summary["outputs"]["committed"] == len(manifest_rows) - expected["failed"], stage
        assert [run["id"] for run in summary["runs"]][-1] == summary["run"]["id"], stage
        provenance = summary["provenance"]
        assert provenance["architecture"] == "tiny" and provenance["weights_revision"], stage
    assert [run["done"] for run in summary["runs"]] == [2, 0, 0, 1]
    assert by_id["r2"]["rendered"]["run"] == summary["run"]["id"] != first_run


def test_rows_sharing_a_driving_video_reuse_its_pose_and_motion(
    ray_local, tiny_weights, tmp_path: Path
) -> None:
    """The first row computes the clip's conditioning and caches it; the next reads it instead of
    decoding the clip and running the keypoint extractor and motion encoder — same frames."""
    import numpy as np

    from pipeline.media import VideoReader

    clip = pattern_video(tmp_path / "shared.mp4", frames=22, rate="25", size="96x72")
    rows = [
        {
            "id": f"face{i}",
            "portrait": str(REPO / f"manifests/media/portrait_{p}.png"),
            "driving_video": str(clip),
        }
        for i, p in enumerate("ab")
    ]
    manifest = write_manifest(tmp_path / "shared.csv", rows)
    # one row after the other, none prepared ahead: the second starts after the first committed
    one_at_a_time = ("cluster.cpu_workers=1", "model.streams_per_worker=1", "cluster.rows_ahead=0")
    assert render(manifest, tmp_path / "out", tiny_weights, *one_at_a_time) == 0
    markers = {
        json.loads(p.read_text())["row_id"]: json.loads(p.read_text())
        for p in (tmp_path / "out/shared/_rows").glob("*/commit.json")
    }
    assert sorted(m["conditioning"] for m in markers.values()) == ["cached", "computed"]
    caches = list((tmp_path / "out/_cache/conditioning").glob("*.bin"))
    assert len(caches) == 1
    cached_row = next(row for row, m in markers.items() if m["conditioning"] == "cached")
    fresh = tmp_path / "fresh"
    assert (
        render(manifest, fresh, tiny_weights, *one_at_a_time, "model.cache_conditioning=false") == 0
    )
    with_cache = outputs_by_id(tmp_path / "out/shared")[cached_row]
    without = outputs_by_id(fresh / "shared")[cached_row]
    assert np.array_equal(
        np.stack(list(VideoReader(str(with_cache)))), np.stack(list(VideoReader(str(without))))
    )
