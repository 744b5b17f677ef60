"""A manifest row's place in a job: its key, whether it is rendered, the task that renders it.

A row's output is named and found by its key: ``<output or id>-<hash>``, the hash covering the
inputs' content fingerprints, the row's frame cap, seed and framing, the model's revision and
every setting that changes pixels or sound (`pixel_settings`). A rerun computes the same key, so
a committed row is skipped and a partial one resumes; a change to any of those settings renders
the row again under a new key. The driving clip's pose/motion cache has a key of its own
(`conditioning_uri`): only what those values depend on.

Which settings change pixels is declared here once for every option of the schema
(`OPTION_EFFECTS`); a test fails when an option is added to the schema without being declared, so
a new setting that alters the frames cannot silently reuse old outputs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, fields, is_dataclass, replace
from typing import Any

from .job_story import JobHistory
from .ledger import Ledger, content_hash
from .models import fetched_commits
from .progress import RowResult
from .storage import Storage, StorageError, join
from .worker import RowTask

logger = logging.getLogger(__name__)

PIXELS = "pixels"  # changes a row's frames or sound: part of the row's key
SINCE_DEFAULT = "pixels-when-set"  # as PIXELS, but only when off its default (an option added
# later: outputs rendered before it existed keep their keys)
NO = "no"  # where, how fast or how it is reported: not part of the key

#: What each option of the schema does to a row's output (dotted paths; a section's name covers
#: every field inside it). The row key's document is built from this table, section by section,
#: in the order the key has always had.
OPTION_EFFECTS: dict[str, str] = {
    # model: the networks and their numerics
    "model.name": PIXELS,
    "model.architecture": PIXELS,
    "model.resolution": PIXELS,
    "model.dtype": PIXELS,
    "model.device": PIXELS,
    "model.fp8": SINCE_DEFAULT,
    "model.animator": PIXELS,
    "model.weights_dir": NO,  # the weights' revision is keyed instead (model_revision)
    "model.random_init": NO,  # keyed through model_revision
    "model.random_seed": NO,  # keyed through model_revision
    "model.hub": NO,  # keyed through model_revision
    "model.attention": NO,  # same maths, another kernel
    "model.streams_per_worker": NO,
    "model.compile": NO,
    "model.cuda_graphs": NO,
    "model.graphs_at_start": NO,  # when the graphs are captured, not what they compute
    "model.channels_last": NO,
    "model.vae_decoder": NO,
    "model.cache_conditioning": NO,
    # framing: the square animated and how it is pasted back
    "framing": PIXELS,
    # video: how frames are cut, encoded and muxed
    "video.fit": PIXELS,
    "video.canvas": PIXELS,
    "video.codec": PIXELS,
    "video.crf": PIXELS,
    "video.preset": PIXELS,
    "video.pix_fmt": PIXELS,
    "video.encoder_threads": PIXELS,
    "video.audio": PIXELS,
    "video.audio_length": PIXELS,
    "video.audio_codec": PIXELS,
    "video.audio_bitrate": PIXELS,
    "video.segment_seconds": NO,  # segments are joined without re-encoding
    "video.first_segment_seconds": NO,
    "video.ffmpeg": NO,
    # the rest say what to run, where, and how to report it
    "job": NO,  # max_frames and seed are keyed per row (the row's own or the job's)
    "cluster": NO,
    "storage": NO,
    "manifest": NO,
}

#: the key's sections, in the order of the key's document (it must not change: old keys)
_KEY_SECTIONS = (("model", "model"), ("animator", "model.animator"), ("framing", "framing"),
                 ("video", "video"))  # fmt: skip


def option_paths(schema: Any, prefix: str = "") -> list[str]:
    """Every leaf option of a config dataclass (or instance), as dotted paths."""
    paths = []
    for item in fields(schema):
        path = f"{prefix}{item.name}"
        value = getattr(schema, item.name, None) if not isinstance(schema, type) else None
        kind = value if value is not None else item.type
        if is_dataclass(value) or (isinstance(kind, type) and is_dataclass(kind)):
            paths += option_paths(value if value is not None else kind, path + ".")
        else:
            paths.append(path)
    return paths


def effect_of(path: str) -> str | None:
    """The declared effect of an option (its own entry, else its nearest section's)."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        effect = OPTION_EFFECTS.get(".".join(parts[:end]))
        if effect is not None:
            return effect
    return None


def pixel_settings(settings) -> dict:
    """The settings that change a row's pixels or sound (a change re-renders the row), from
    `OPTION_EFFECTS`: a section declared whole goes in whole, else its declared fields."""
    from .config import RenderConfig  # noqa: PLC0415

    defaults = RenderConfig()
    document: dict[str, Any] = {}
    for name, section in _KEY_SECTIONS:
        value = _at(settings, section)
        if OPTION_EFFECTS.get(section) == PIXELS:
            document[name] = asdict(value)
            continue
        part = {}
        for item in fields(value):
            path = f"{section}.{item.name}"
            effect = OPTION_EFFECTS.get(path)
            own = getattr(value, item.name)
            if effect == PIXELS and not is_dataclass(own):
                part[item.name] = own
            elif effect == SINCE_DEFAULT and own != _at(defaults, path):
                part[item.name] = own
        document[name] = part
    return document


def _at(settings: Any, path: str) -> Any:
    for part in path.split("."):
        settings = getattr(settings, part)
    return settings


class RowPlanner:
    """Turns manifest rows into this run's work: each row's key (its inputs' fingerprints and
    every setting that changes its pixels), whether an earlier run committed it (then it is
    skipped, with the story of who rendered it), else the task a worker renders."""

    def __init__(self, settings, storage: Storage, ledger: Ledger, run: str) -> None:
        self.settings, self.storage, self.ledger, self.run = settings, storage, ledger, run
        self.settings_hash = content_hash(pixel_settings(settings))
        self.revision = model_revision(settings.model)
        self.rows: dict[str, Any] = {}  # row id -> ManifestRow, for the rows planned
        self._fingerprints: dict[str, dict[str, Any]] = {}
        self._commits: dict[str, dict[str, Any] | None] = {}
        self._skipped = self._resuming = 0

    def fingerprint(self, row) -> dict[str, Any]:
        """What the row's output depends on (inputs' content fingerprints, frames, seed...)."""
        if row.id not in self._fingerprints:
            settings = self.settings
            self._fingerprints[row.id] = {
                "inputs": {
                    column: self.storage.fingerprint(uri) if uri else None
                    for column, uri in (
                        ("portrait", row.portrait),
                        ("driving_video", row.driving_video),
                        ("audio", row.audio),
                    )
                },
                "max_frames": row.max_frames
                if row.max_frames is not None
                else settings.job.max_frames,
                "seed": row.seed if row.seed is not None else settings.job.seed,
                **({"framing": row.framing} if row.framing is not None else {}),
                "settings": self.settings_hash,
                "model": self.revision,
            }
        return self._fingerprints[row.id]

    def key(self, row) -> str:
        return Ledger.row_key(row.output or row.id, self.fingerprint(row))

    def commit(self, row) -> dict[str, Any] | None:
        """The row's commit marker when an earlier run committed this very output (verified)."""
        if row.id not in self._commits:
            state = self.ledger.row(self.key(row))
            committed = state.state == "committed" and self.ledger.verify_commit(state.commit)
            self._commits[row.id] = state.commit if committed else None
            self._resuming += state.state == "partial"
        return self._commits[row.id]

    def settled(self, row) -> bool:
        """Whether the row is already rendered (validation then leaves its media unopened)."""
        try:
            return self.commit(row) is not None
        except (StorageError, OSError) as err:  # validation will say what is wrong with it
            logger.debug("row %s: cannot tell whether it is rendered: %s", row.id, err)
            return False

    def described(self, row_id: str) -> dict[str, Any]:
        """The row's inputs and extra manifest columns, for its result."""
        row = self.rows.get(row_id)
        if row is None:
            return {}
        inputs = {"portrait": row.portrait, "driving_video": row.driving_video, "audio": row.audio}
        return {"inputs": inputs, "extra": dict(row.extra) or None}

    def skipped(self, row, history: JobHistory) -> RowResult:
        """The result of a row an earlier run committed: skipped, with who rendered it."""
        commit = self.commit(row)
        assert commit is not None  # only settled rows are skipped
        self.rows[row.id] = row
        self._skipped += 1
        self.ledger.tidy(self.key(row), commit)  # leftovers of an attempt killed after the commit
        return RowResult(
            row.id,
            "skipped",
            int(commit.get("frames", 0)),
            0.0,
            0.0,
            output=commit["video"],
            error=f"already rendered (committed {commit.get('committed_at', '?')})",
            framing=commit.get("framing"),
            conditioning=commit.get("conditioning"),
            rendered=history.rendered_before(row.id, commit),
            **self.described(row.id),
            **history.carried(row.id, commit["video"]),
        )

    def task(self, media) -> RowTask:
        """What a worker needs to render a row that is not committed yet."""
        row, settings = media.row, self.settings
        self.rows[row.id] = row
        fingerprint, key = self.fingerprint(row), self.key(row)
        self.commit(row)  # counts a partial row (it resumes from its last committed segment)
        conditioning = None
        if settings.model.cache_conditioning:
            conditioning = conditioning_uri(
                settings, fingerprint["inputs"]["driving_video"], self.revision
            )
        return RowTask(
            row_id=row.id,
            portrait=row.portrait,
            driving_video=row.driving_video,
            audio=row.audio,
            job_uri=self.ledger.job_uri,
            row_key=key,
            max_frames=fingerprint["max_frames"],
            seed=fingerprint["seed"],
            meta={
                "inputs": fingerprint["inputs"],
                "settings_hash": self.settings_hash,
                "model_revision": self.revision,
                "run_id": self.run,
            },
            conditioning_uri=conditioning,
            framing=row_framing(settings.framing, row.framing),
            portrait_face=media.face,
            signals_every_seconds=settings.job.signals_every_seconds,
            frames=media.frames,
            frame_rate=media.frame_rate,
        )

    def log_plan(self) -> None:
        if self._skipped:
            logger.info(
                "%d row(s) already rendered by an earlier run of this job: skipped", self._skipped
            )
        if self._resuming:
            logger.info("%d row(s) resume from their last committed segment", self._resuming)


def conditioning_uri(settings, driving_fingerprint: str, revision: str) -> str:
    """Where a driving video's pose/motion cache lives: by its content and what the values depend on."""
    model = settings.model
    key = content_hash(
        {
            "driving_video": driving_fingerprint,
            "model": revision,
            "architecture": model.architecture,
            "dtype": model.dtype,
            "device": model.device,
            "resolution": model.resolution,
            "fit": settings.video.fit,
            "framing": driving_framing(settings.framing),
        },
        length=20,
    )
    return join(settings.storage.output_root, "_cache", "conditioning", f"{key}.bin")


def row_framing(framing, portrait: str | None):
    """The job's framing with the row's own `framing` column (its portrait mode), if any."""
    return framing if portrait is None else replace(framing, portrait=portrait)


def driving_framing(framing) -> dict | str:
    """The settings the driving frames' cut depends on (part of the conditioning cache's key)."""
    if framing.driving == "off":
        return "off"
    keys = ("face_index", "scale", "center_y", "detect_every", "smoothing")
    return {key: getattr(framing, key) for key in keys}


def model_revision(model) -> str:
    """What identifies the weights: the commit each hub repository was fetched at (recorded by
    job=fetch_weights; else its configured revision), or the random seed of random weights."""
    if model.random_init:
        return f"random-{model.architecture}-seed{model.random_seed}"
    commits = fetched_commits(model.weights_dir)
    revisions = ",".join(f"{r.repo_id}@{commits.get(r.repo_id, r.revision)}" for r in model.hub)
    return revisions or f"local:{model.weights_dir}"
