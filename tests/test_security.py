"""Untrusted input and secrets: names cannot escape the output root, inputs cannot come from outside
the allowed roots, weight and state files never run code, credentials never show up anywhere, and
every server the job starts (the embedded Ray) or the tests start (moto) listens on 127.0.0.1 only.

The unit checks of names and roots are in tests/test_manifest.py (`test_unsafe_output_and_id`,
`test_allowed_roots_reject_symlink_escape`), and of weight files in tests/test_models.py
(`test_weight_files_never_execute_code`); here they are shown end to end, through job=render.
"""

from __future__ import annotations

import ast
import contextlib
import io
import ipaddress
import os
import pickle
import posixpath
import secrets
import shutil
import socket
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import psutil
import pytest
import torch
from media_factory import pattern_video
from test_faults import (
    PORTRAIT,
    job_args,
    kill_session,
    make_bucket,
    run_in_process,
    start_job,
    summary_rows,
    wait_until,
    write_manifest,
)

from pipeline.animate import deserialize_state
from pipeline.config import StorageConfig
from pipeline.ledger import Ledger
from pipeline.storage import Storage, StorageError, join

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = ipaddress.ip_address("127.0.0.1")


# ------------------------------------------------------------------------------------------
# Output names and input roots
# ------------------------------------------------------------------------------------------

ESCAPING_NAMES = [
    "../escape",
    "/etc/passwd",
    "a/../../b",
    "a\\..\\b",
    "a\u2215b",  # DIVISION SLASH
    "\uff0e\uff0e",  # FULLWIDTH FULL STOPs: '..' after NFKC
    "a\x00b",
    "\u202eevil",  # RIGHT-TO-LEFT OVERRIDE
    "file:///etc/passwd",
    "s3://other-bucket/x",
]


def stays_inside(uri: str, root: str) -> bool:
    """Whether ``uri``, read the way a file system or a lenient S3 tool might (NFKC, ``..``
    collapsed, ``\\`` as ``/``), still lies under ``root``."""
    normal = unicodedata.normalize("NFKC", uri).replace("\\", "/")
    scheme, _, path = normal.rpartition("://")
    inside = posixpath.normpath(path).startswith(root.split("://")[-1] + "/")
    return inside and scheme == root.rpartition("://")[0] and "\x00" not in normal


@pytest.mark.parametrize("name", ESCAPING_NAMES)
@pytest.mark.parametrize("root", ["/out/job", "s3://bucket/out/job"])
def test_storage_names_cannot_escape_their_folder(root: str, name: str) -> None:
    """`join` refuses any part that could leave the folder, locally and on S3; the ledger's names
    (``<key>.mp4``, ``_rows/<key>``) are refused or stay inside."""
    with pytest.raises(StorageError, match=r"join\(\): part 0 .* (is refused because|is absolute)"):
        join(root, name)
    ledger = Ledger(Storage(StorageConfig()), root)
    for build in (ledger.public_uri, ledger.row_uri, lambda key: ledger.segment_uri(key, 0, "mp4")):
        try:
            uri = build(name)
        except StorageError:
            continue
        assert stays_inside(uri, root), uri


@pytest.mark.slow
def test_a_manifest_cannot_name_outputs_or_read_inputs_outside_their_roots(
    ray_local, tiny_weights, tmp_path: Path
) -> None:
    """Through job=render with storage.allowed_input_roots set: rows whose output names escape,
    or whose inputs lie outside the root (absolute path, '..', a symlink), fail with their reason;
    nothing is read or written outside the roots, and the good row renders."""
    root, outside = tmp_path / "inputs", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    pattern_video(root / "clip.mp4", frames=8)
    pattern_video(outside / "secret.mp4", frames=8)  # a valid clip: reading it would render it
    shutil.copy(PORTRAIT, root / "face.png")
    os.symlink(outside / "secret.mp4", root / "link.mp4")
    base = {"portrait": "face.png", "driving_video": "clip.mp4", "output": ""}
    rows = [
        {**base, "id": "good"},
        {**base, "id": "abs", "driving_video": str(outside / "secret.mp4")},
        {**base, "id": "dotdot", "driving_video": "../outside/secret.mp4"},
        {**base, "id": "symlink", "driving_video": "link.mp4"},
        {**base, "id": "out1", "output": "../../escaped"},
        {**base, "id": "out2", "output": str(tmp_path / "escaped")},
        {**base, "id": "out3", "output": "x\u2215escaped"},
        {**base, "id": "out4", "output": "\u202eevil"},
    ]
    manifest = write_manifest(root / "untrusted.csv", rows)
    before = {path for path in tmp_path.rglob("*")}
    args = job_args(
        manifest, tmp_path / "out", tiny_weights, f"storage.allowed_input_roots=[{root}]"
    )
    assert run_in_process(args) == 1

    verdicts = summary_rows(tmp_path / "out/untrusted")
    assert verdicts.pop("good")["status"] == "done"
    assert {entry["status"] for entry in verdicts.values()} == {"failed"}
    errors = "\n".join(entry["error"] for entry in verdicts.values())
    outside_root = f"is outside the allowed input roots [{root}]"
    assert errors.count(outside_root) == 3
    for resolved in (outside / "secret.mp4", root / "link.mp4"):
        assert f"{resolved} {outside_root}" in errors
    assert errors.count("; it must be a plain file name (no folders)") == 4
    assert "output contains a control or invisible character (U+202E)" in errors
    assert "output contains DIVISION SLASH (U+2215), which looks like a path separator" in errors
    # written: only under the output root; nothing beside the inputs or above the root
    after = {path for path in tmp_path.rglob("*")}
    out = tmp_path / "out"
    assert {path for path in after - before if path != out and out not in path.parents} == set()
    (video,) = (tmp_path / "out/untrusted").glob("*.mp4")
    assert video.name.startswith("good-")


# ------------------------------------------------------------------------------------------
# Weights and resume state: no unpickling of code
# ------------------------------------------------------------------------------------------


def _unsafe_loads(tree: ast.AST) -> list[str]:
    """Calls that can run code from a file: torch.load without weights_only=True, pickle/marshal
    loads, yaml.load, numpy loads with allow_pickle=True."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        name = f"{owner}.{node.func.attr}"
        keywords = {k.arg: k.value for k in node.keywords}

        def true(key: str, keywords: dict = keywords) -> bool:
            value = keywords.get(key)
            return isinstance(value, ast.Constant) and value.value is True

        unsafe = (
            (name == "torch.load" and not true("weights_only"))
            or name in {"pickle.load", "pickle.loads", "marshal.loads", "yaml.load"}
            or (name in {"np.load", "numpy.load"} and true("allow_pickle"))
        )
        if unsafe:
            found.append(f"{name} at line {node.lineno}")
    return found


def test_no_code_path_unpickles_code_from_a_file() -> None:
    """Every torch.load in the pipeline passes weights_only=True (weights, resume state); nothing
    else unpickles. tests/test_models.py::test_weight_files_never_execute_code shows a trojan
    weight file refused."""
    sources = sorted((REPO / "pipeline").rglob("*.py")) + sorted((REPO / "jobs").rglob("*.py"))
    unsafe = {
        str(path.relative_to(REPO)): calls
        for path in sources
        if (calls := _unsafe_loads(ast.parse(path.read_text(), str(path))))
    }
    assert unsafe == {}
    loads = sum("torch.load(" in path.read_text() for path in sources)
    assert loads >= 2  # the weights loader and the resume state: the scan saw them


class _Trojan:
    """Unpickling this would run code (it creates a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_tampered_resume_state_cannot_run_code(tmp_path: Path) -> None:
    """Segment state files live on the output storage; a forged one is refused, never executed."""
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"version": 1, "trojan": _Trojan(marker)}, buffer, pickle_module=pickle)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        deserialize_state(buffer.getvalue())
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# Credentials and listening sockets: one S3 job, watched while it runs
# ------------------------------------------------------------------------------------------


@dataclass
class WatchedJob:
    """What a job with recognisable credentials left behind, and what listened while it ran."""

    exit_code: int
    secrets: dict[str, str]
    texts: dict[str, bytes] = field(default_factory=dict)  # where -> content
    listeners: dict[str, set[str]] = field(default_factory=dict)  # process -> addresses


def listening_addresses(process: psutil.Process) -> set[str]:
    """``ip:port`` of every TCP socket ``process`` listens on and every UDP socket it bound."""
    found = set()
    with contextlib.suppress(psutil.Error):
        for conn in process.net_connections(kind="inet"):
            if conn.laddr and (conn.status == psutil.CONN_LISTEN or conn.type == socket.SOCK_DGRAM):
                found.add(f"{conn.laddr.ip}:{conn.laddr.port}")
    return found


def tree_listeners(root: psutil.Process, label: str = "") -> dict[str, set[str]]:
    """``name[pid]`` -> listening addresses, for ``root`` and all its descendants."""
    listeners = {}
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            addresses = listening_addresses(process)
            if addresses:
                listeners[f"{label or process.name()}[{process.pid}]"] = addresses
    return listeners


def is_loopback_v4(address: str) -> bool:
    ip = ipaddress.ip_address(address.rsplit(":", 1)[0].strip("[]"))
    ip = getattr(ip, "ipv4_mapped", None) or ip  # '::ffff:127.0.0.1' is 127.0.0.1
    return ip == LOOPBACK


@pytest.fixture(scope="module")
def watched_s3_job(
    moto_s3_server, tiny_weights, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WatchedJob]:
    """A real job (driver, embedded Ray, workers) on S3 with recognisable credentials, debug
    logs and worker logs streamed to the driver; a row with a missing input fails on purpose."""
    folder = tmp_path_factory.mktemp("watched")
    endpoint = moto_s3_server.endpoint_url
    bucket = f"watched-{secrets.token_hex(4)}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    client.upload_file(str(pattern_video(folder / "clip.mp4", frames=60)), bucket, "in/clip.mp4")
    client.upload_file(str(PORTRAIT), bucket, "in/face.png")
    rows = [
        {"id": "good", "portrait": "face.png", "driving_video": "clip.mp4"},
        {"id": "missing", "portrait": "face.png", "driving_video": "nowhere.mp4"},
    ]
    client.upload_file(str(write_manifest(folder / "creds.csv", rows)), bucket, "in/creds.csv")
    credentials = {
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": "SECRETsecret" + secrets.token_hex(16),
        "AWS_SESSION_TOKEN": "TOKENtoken" + secrets.token_hex(24),
    }
    ray_dir = tempfile.mkdtemp(prefix="rs-", dir="/tmp")  # short: Ray's socket paths are limited
    env = {**credentials, "PORTRAIT_RENDER_LOG_LEVEL": "DEBUG", "RAY_TMPDIR": ray_dir}
    args = job_args(
        f"s3://{bucket}/in/creds.csv", f"s3://{bucket}/out", tiny_weights,
        f"storage.s3.endpoint_url={endpoint}", "cluster.log_to_driver=true",
    )  # fmt: skip
    log = folder / "job.log"
    job = start_job(args, log, env)
    try:
        wait_until(lambda: "row_started" in log.read_text(), 120, "a row to start")
        listeners = tree_listeners(psutil.Process(job.pid))
        moto = psutil.Process(moto_s3_server._process.pid)
        listeners.update(tree_listeners(moto, label="moto-server"))
        code = job.wait(timeout=180)
    finally:
        kill_session(job)
    watched = WatchedJob(code, credentials, listeners=listeners)
    watched.texts["driver log"] = log.read_bytes()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="out/"):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            watched.texts[f"s3://{bucket}/{item['Key']}"] = body
    for path in Path(ray_dir).rglob("*"):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                watched.texts[str(path)] = path.read_bytes()
    yield watched
    shutil.rmtree(ray_dir, ignore_errors=True)


@pytest.mark.slow
def test_no_credential_appears_in_logs_summaries_reports_or_errors(watched_s3_job) -> None:
    job = watched_s3_job
    assert job.exit_code == 1, job.texts["driver log"][-3000:].decode(errors="replace")
    outputs = {where for where in job.texts if where.startswith("s3://")}
    names = {where.rsplit("/", 1)[-1] for where in outputs}
    assert {"summary.json", "status.json", "report.html", "config.yaml"} <= names
    assert b"object not found at s3://" in job.texts["driver log"]  # an error message was made
    assert any("/logs/" in where for where in job.texts)  # Ray's own logs were read too
    leaks = {
        (name, where)
        for name, value in job.secrets.items()
        for where, content in job.texts.items()
        if value.encode() in content
    }
    assert leaks == set()


@pytest.mark.slow
def test_embedded_ray_and_the_test_s3_server_listen_on_loopback_only(watched_s3_job) -> None:
    listeners = watched_s3_job.listeners
    names = " ".join(listeners)
    assert "gcs_server" in names and "raylet" in names  # the watch saw Ray's servers
    assert "moto-server" in names  # and the test S3 server
    exposed = {
        name: sorted(a for a in addresses if not is_loopback_v4(a))
        for name, addresses in listeners.items()
    }
    assert {name: found for name, found in exposed.items() if found} == {}


def test_a_manifest_read_from_s3_may_name_only_remote_inputs_and_local_files_under_roots(
    moto_s3_server, tmp_path: Path
) -> None:
    """A manifest in a bucket (whoever can write there must not make the job read this machine's
    files): a local absolute path fails with the rule and the option to name; an s3:// input and,
    once roots are set, a local file under a root are accepted."""
    from pipeline.config import S3Config
    from pipeline.validate import validate_manifest

    endpoint = moto_s3_server.endpoint_url
    client = make_bucket(endpoint, "remote-manifests")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    pattern_video(inputs / "clip.mp4", frames=8)
    shutil.copy(PORTRAIT, inputs / "face.png")
    client.upload_file(str(inputs / "clip.mp4"), "remote-manifests", "batch/clip.mp4")
    client.upload_file(str(PORTRAIT), "remote-manifests", "batch/face.png")
    manifest = (
        "id,portrait,driving_video\n"
        "remote,face.png,clip.mp4\n"
        "passwd,/etc/passwd,clip.mp4\n"
        f"local,{inputs / 'face.png'},{inputs / 'clip.mp4'}\n"
    )
    client.put_object(Bucket="remote-manifests", Key="batch/m.csv", Body=manifest.encode())
    uri = "s3://remote-manifests/batch/m.csv"

    def verdicts(roots: list[str]) -> tuple[set[str], dict[str, str]]:
        storage = Storage(
            StorageConfig(s3=S3Config(endpoint_url=endpoint), allowed_input_roots=roots)
        )
        validation = validate_manifest(uri, storage, allowed_input_roots=roots, framing=None)
        failed = {label: str(problems[0]) for label, problems in validation.failed_rows().items()}
        return {media.row.id for media in validation.ready}, failed

    ready, failed = verdicts([])
    assert ready == {"remote"} and set(failed) == {"passwd", "local"}
    assert (
        "names the local file /etc/passwd, but a manifest read from s3:// may name only "
        in failed["passwd"]
    )
    assert "storage.allowed_input_roots" in failed["passwd"]
    ready, failed = verdicts([str(inputs)])
    assert ready == {"remote", "local"} and set(failed) == {"passwd"}
    assert f"/etc/passwd is outside the allowed input roots [{inputs}]" in failed["passwd"]
