"""job=fetch_weights: download the published weights into ``model.weights_dir``.

The Hugging Face repositories in ``model.hub`` are downloaded with ``huggingface_hub`` — resumable: an interrupted download continues where it stopped — and only
the files the loader needs. Each large file is verified against the SHA-256 the Hub publishes,
then moved into the published layout. A revision is resolved to its commit first and every file
comes from that commit; the commit is recorded in ``<weights_dir>/revisions.json``, and render jobs
key their outputs by it, so a revision that names a branch (the optional tiny decoder's ``main``)
still identifies exactly the weights that rendered a video. Offline (``HF_HUB_OFFLINE=1`` or no network) with every
file present, the job says so and does nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import shutil
from pathlib import Path, PurePosixPath

from omegaconf import DictConfig

from pipeline.config import HubRepo
from pipeline.logs import CONSOLE
from pipeline.models import missing_files, record_fetched_commit

from . import ConfigError
from ._common import typed

logger = logging.getLogger(__name__)

DOWNLOAD_DIR = ".download"  # under weights_dir: partial files and resume state


def run(cfg: DictConfig) -> int:
    settings = typed(cfg)
    model = settings.model
    weights_dir = Path(model.weights_dir)
    if not model.hub:
        raise ConfigError(
            f"model={model.name} lists no Hugging Face repositories (model.hub); nothing to fetch"
        )
    missing = missing_files(weights_dir)
    if _offline():
        if missing:
            listing = "\n  ".join(str(p) for p in missing)
            logger.error(
                "offline (HF_HUB_OFFLINE is set or the Hub is unreachable) and files are missing:\n  %s",
                listing,
            )
            return 1
        CONSOLE.print(
            f"All weights are present in {weights_dir}; offline, so nothing was checked or downloaded."
        )
        return 0
    fetched = []
    for repo in model.hub:
        fetched.extend(fetch_repo(repo, weights_dir))
    still_missing = missing_files(weights_dir)
    if still_missing:
        logger.error("after downloading, still missing: %s", ", ".join(map(str, still_missing)))
        return 1
    shutil.rmtree(weights_dir / DOWNLOAD_DIR, ignore_errors=True)
    for line in fetched:
        CONSOLE.print(line)
    CONSOLE.print(f"Weights ready in {weights_dir}")
    return 0


def _offline() -> bool:
    from huggingface_hub import constants  # noqa: PLC0415

    if constants.HF_HUB_OFFLINE:
        return True
    try:
        import urllib.request  # noqa: PLC0415

        urllib.request.urlopen(constants.ENDPOINT, timeout=5)  # noqa: S310 - the configured Hub endpoint
    except OSError:
        return True
    return False


def target_path(repo: HubRepo, weights_dir: Path, filename: str) -> Path:
    """Where a repository file goes in the layout (``subfolder_strip`` removed from its path)."""
    path = PurePosixPath(filename)
    if repo.subfolder_strip:
        path = path.relative_to(repo.subfolder_strip)
    return weights_dir / repo.local_dir / Path(*path.parts)


def fetch_repo(repo: HubRepo, weights_dir: Path) -> list[str]:
    """Download the files of ``repo`` matching its patterns; returns one line per file."""
    from huggingface_hub import HfApi, hf_hub_download  # noqa: PLC0415

    api = HfApi()
    info = api.model_info(repo.repo_id, revision=repo.revision, files_metadata=True)
    commit = info.sha or repo.revision  # every file from the one commit the revision names now
    wanted = [
        sibling
        for sibling in info.siblings
        if not repo.allow_patterns
        or any(fnmatch.fnmatch(sibling.rfilename, p) for p in repo.allow_patterns)
    ]
    if not wanted:
        raise ConfigError(f"{repo.repo_id}@{repo.revision}: no file matches {repo.allow_patterns}")
    staging = weights_dir / DOWNLOAD_DIR / repo.repo_id.replace("/", "--")
    lines = []
    for sibling in wanted:
        target = target_path(repo, weights_dir, sibling.rfilename)
        expected = sibling.lfs.sha256 if sibling.lfs else None
        if target.is_file() and (expected is None or _sha256(target) == expected):
            lines.append(f"  kept     {repo.repo_id}/{sibling.rfilename} → {target}")
            continue
        downloaded = Path(
            hf_hub_download(repo.repo_id, sibling.rfilename, revision=commit, local_dir=staging)
        )
        if expected is not None and _sha256(downloaded) != expected:
            downloaded.unlink(missing_ok=True)
            raise ConfigError(
                f"{repo.repo_id}/{sibling.rfilename}: checksum mismatch after download; run the job again"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(downloaded, target)
        size = sibling.size or target.stat().st_size
        lines.append(
            f"  fetched  {repo.repo_id}/{sibling.rfilename} ({size / 1e6:.1f} MB) → {target}"
        )
    record_fetched_commit(weights_dir, repo.repo_id, repo.revision, commit)
    if commit != repo.revision:
        lines.append(f"  {repo.repo_id}: revision {repo.revision} is commit {commit} (recorded)")
    return lines


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * 1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()
