"""The command line as a user meets it: advice that fits the cause, job=validate's verdict in an
80-column terminal, results on stdout and logs on stderr, the composed config in one line,
``--help`` generated from the schema, and a Ray cluster that refuses the driver.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import psutil
import pytest
from hydra import compose, initialize_config_dir
from job_helpers import REPO, run_in_process, tiny_render_overrides, write_manifest
from s3_server import MotoServer, free_port, isolate_aws_env

from pipeline.cli_help import help_text
from pipeline.config import S3Config, StorageConfig, register_configs
from pipeline.config_schema import CHOICES, sections
from pipeline.logs import CONSOLE, OUT
from pipeline.storage import Storage
from pipeline.validate import validate_manifest

MEDIA = REPO / "manifests" / "media"
PATH_FIX = "check the path"


@pytest.fixture()
def media(tmp_path: Path) -> Path:
    """The example portraits and driving clip, plus a driving clip cut short after its index."""
    folder = tmp_path / "media"
    shutil.copytree(MEDIA, folder)
    data = (folder / "driving.mp4").read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    return folder


@pytest.fixture()
def width_80(monkeypatch: pytest.MonkeyPatch) -> None:
    """Results and logs rendered for an 80-column terminal."""
    monkeypatch.setattr(OUT, "width", 80)
    monkeypatch.setattr(CONSOLE, "width", 80)


def compose_job(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return compose("config", overrides=list(overrides))


def problems_of(validation) -> dict[str, tuple[str, str]]:
    """{row id: (message, fix)} of a validation's row problems."""
    return {p.row_id: (p.message, p.fix) for p in validation.problems if p.row_id}


# --------------------------------------------------------------------------------------------
# 1. Each fix says what to do for its cause
# --------------------------------------------------------------------------------------------


def test_an_s3_input_without_credentials_is_told_how_to_provide_them(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_aws_env(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    manifest = write_manifest(
        tmp_path / "rows.csv",
        [
            {"id": "remote", "portrait": "s3://inputs/p.png", "driving_video": "media/driving.mp4"},
            {"id": "local", "portrait": "media/nope.png", "driving_video": "media/driving.mp4"},
        ],
    )
    # no store listens there: credentials are looked for before any request is sent
    storage = Storage(StorageConfig(s3=S3Config(endpoint_url=f"http://127.0.0.1:{free_port()}")))
    problems = problems_of(validate_manifest(str(manifest), storage))

    message, fix = problems["remote"]
    assert message == "no AWS credentials found to read the metadata of s3://inputs/p.png"
    for way in ("AWS_PROFILE", "storage.s3.profile", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert way in fix
    assert PATH_FIX not in fix
    message, fix = problems["local"]
    assert message == f"file not found at {media / 'nope.png'}"
    assert fix.startswith(PATH_FIX)


@pytest.fixture(scope="module")
def s3_with_auth() -> Iterator[tuple[MotoServer, dict[str, str]]]:
    """A moto S3 server that checks credentials and permissions (IAM) after its first four
    requests: a bucket ``inputs`` with ``p.png``, and a user ``nobody`` without any policy."""
    saved = os.environ.get("INITIAL_NO_AUTH_ACTION_COUNT")
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"  # moto reads it at start
    try:
        server = MotoServer()
        server.start()
    finally:
        if saved is None:
            os.environ.pop("INITIAL_NO_AUTH_ACTION_COUNT")
        else:
            os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = saved
    try:
        setup = {
            "endpoint_url": server.endpoint_url,
            "region_name": "us-east-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        s3, iam = boto3.client("s3", **setup), boto3.client("iam", **setup)
        s3.create_bucket(Bucket="inputs")
        s3.put_object(Bucket="inputs", Key="p.png", Body=(MEDIA / "portrait_a.png").read_bytes())
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        yield server, {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        server.close()


@pytest.mark.parametrize(
    ("who", "message", "fix"),
    [
        ("no-permission", r"denied access to read the metadata of s3://inputs/p\.png "
         r"\(HTTP 403 AccessDenied\)$",
         r"^a permissions problem, not a path or credentials one: the job's identity needs "
         r"s3:GetObject on arn:aws:s3:::inputs/p\.png"),
        ("unknown-key", r"did not accept the credentials to read the metadata of "
         r"s3://inputs/p\.png \(HTTP 403 InvalidAccessKeyId\)$",
         r"^the access key ID is not one this store knows: check AWS_ACCESS_KEY_ID"),
        ("wrong-secret", r"did not accept the credentials .*\(HTTP 403 SignatureDoesNotMatch\)$",
         r"^the secret key does not match the access key ID: check AWS_SECRET_ACCESS_KEY"),
    ],
)  # fmt: skip
def test_a_refused_s3_input_says_whether_credentials_or_permissions_are_wrong(
    s3_with_auth, media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    who: str, message: str, fix: str,
) -> None:  # fmt: skip
    server, user = s3_with_auth
    key, secret = {
        "no-permission": (user["id"], user["secret"]),
        "unknown-key": ("AKIAUNKNOWN000000000", "whatever"),
        "wrong-secret": (user["id"], "not-the-secret"),
    }[who]
    isolate_aws_env(monkeypatch, tmp_path, secret=secret, region="us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    manifest = write_manifest(
        tmp_path / "rows.csv",
        [{"id": "remote", "portrait": "s3://inputs/p.png", "driving_video": "media/driving.mp4"}],
    )
    storage = Storage(StorageConfig(s3=S3Config(endpoint_url=server.endpoint_url)))
    found_message, found_fix = problems_of(validate_manifest(str(manifest), storage))["remote"]
    assert re.search(message, found_message), found_message
    assert re.search(fix, found_fix), found_fix
    assert PATH_FIX not in found_fix


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file: no permission to deny")
def test_an_unreadable_local_file_is_a_file_permissions_problem(
    media: Path, tmp_path: Path
) -> None:
    (media / "portrait_a.png").chmod(0)
    manifest = write_manifest(
        tmp_path / "rows.csv",
        [
            {
                "id": "locked",
                "portrait": "media/portrait_a.png",
                "driving_video": "media/driving.mp4",
            }
        ],
    )
    message, fix = problems_of(validate_manifest(str(manifest), Storage(StorageConfig())))["locked"]
    assert "not readable by this user" in message
    assert fix.startswith("a file permissions problem")


def test_a_truncated_mp4_is_one_clear_sentence(media: Path, tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path / "rows.csv",
        [{"id": "cut", "portrait": "media/portrait_a.png", "driving_video": "media/cut.mp4"}],
    )
    message, fix = problems_of(validate_manifest(str(manifest), Storage(StorageConfig())))["cut"]
    size = (media / "cut.mp4").stat().st_size
    assert re.fullmatch(
        rf"driving video is cut short: the file has {size:,} bytes but its index says its data "
        r"runs to byte [\d,]+ \(the upload or copy stopped early\)",
        message,
    ), message
    assert fix == "give the complete file: copy or upload it again"


# --------------------------------------------------------------------------------------------
# 2. job=validate: good rows, the estimate and every problem, in 80 columns, on stdout
# --------------------------------------------------------------------------------------------


def test_validate_shows_good_rows_the_estimate_and_compact_problems(
    media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], width_80: None
) -> None:
    from jobs.validate import run

    long_name = "a_very_long_folder_name_that_will_not_fit_on_one_line_of_an_80_column_terminal"
    manifest = write_manifest(
        tmp_path / "rows.csv",
        [
            {"id": "good_one", "portrait": "media/portrait_a.png", "driving_video": "media/driving.mp4"},
            {"id": "cut_short", "portrait": "media/portrait_b.png", "driving_video": "media/cut.mp4"},
            {"id": "missing", "portrait": f"{long_name}/nope.png", "driving_video": "media/driving.mp4"},
        ],
    )  # fmt: skip
    code = run(compose_job("job=validate", f"manifest={manifest}", "framing.portrait=crop"))
    out, err = capsys.readouterr()

    assert code == 1
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, out
    assert "Rows ready to render" in out and "good_one" in out
    assert re.search(r"^Work: 1 row\(s\), 90 frames to render", out, re.MULTILINE)
    # one block per problem: the row's id and where, then value, problem and fix indented
    heading = lines.index("cut_short  row 2, line 3 · column driving_video")
    block = lines[heading + 1 : heading + 8]
    assert block[0].startswith("   value    '")
    assert all(line.startswith("   ") for line in block[:4])  # wrapped lines stay indented
    assert any(line.startswith("   problem  driving video is cut short") for line in block)
    assert any(line.startswith("   fix      give the complete file") for line in block)
    assert "missing  row 3, line 4 · column portrait" in lines
    assert len(lines) < 40, out  # a 6-column table wrapped this to 100+ lines
    assert out.index("Work:") < out.index("Manifest problems") < out.index("Verdict:")
    assert lines[-1].startswith("Verdict:") or "Verdict: 1 row(s) OK, 2 with problems" in out
    assert " INFO " not in out  # logs are not results


def test_validate_of_an_unusable_manifest_exits_2_with_its_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], width_80: None
) -> None:
    from jobs.validate import run

    manifest = tmp_path / "rows.csv"
    manifest.write_text("portrait\nmedia/portrait_a.png\n")  # no driving_video column
    code = run(compose_job("job=validate", f"manifest={manifest}"))
    out = capsys.readouterr().out
    assert code == 2
    assert "driving_video" in out and "Verdict: the manifest cannot be used as it is" in out


# --------------------------------------------------------------------------------------------
# 3 and 4. A render: results on stdout, logs on stderr; the config saved, said in one line
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_render_prints_results_on_stdout_and_the_config_path_in_one_line(
    ray_local, tiny_weights, media: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, width_80: None,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO)
    manifest = write_manifest(
        tmp_path / "rows.csv",
        [{"id": "one", "portrait": "media/portrait_a.png", "driving_video": "media/driving.mp4"}],
    )
    out_root = tmp_path / "out"
    args = tiny_render_overrides(manifest, out_root, tiny_weights, "job.max_frames=2")
    code = run_in_process([*args, "framing.portrait=crop", "framing.driving=off"])
    out, err = capsys.readouterr()

    assert code == 0, err
    job = out_root / "rows"
    assert f"summary: {job / 'summary.json'}" in out.splitlines()
    assert f"report: {job / 'report.html'}" in out.splitlines()
    assert "one" in out and "done" in out  # the summary table
    assert (job / "config.yaml").is_file()
    # the log (stderr in a real run) says where the config is; the tree itself is not printed
    assert f"composed config saved as {job / 'config.yaml'}" in caplog.text
    assert "weights_dir" not in out + err


def test_the_config_tree_is_printed_only_when_verbose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from jobs._common import announce_config, typed

    caplog.set_level(logging.INFO)
    for verbose in (False, True):
        cfg = compose_job(
            "job=render", "manifest=m.csv", f"storage.output_root={tmp_path}",
            f"job.verbose={str(verbose).lower()}",
        )  # fmt: skip
        caplog.clear()
        announce_config(cfg, typed(cfg))
        err = capsys.readouterr().err
        assert f"saved as {tmp_path / 'm' / 'config.yaml'}" in caplog.text
        assert ("weights_dir" in err) is verbose


# --------------------------------------------------------------------------------------------
# 5. --help, from the schema
# --------------------------------------------------------------------------------------------


def run_cli(*args: str, columns: int = 100, env: dict[str, str] | None = None):
    environment = {**os.environ, "COLUMNS": str(columns), "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True,
        timeout=120, env=environment, check=False,
    )  # fmt: skip


def test_help_lists_every_option_with_its_description_in_100_columns() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].startswith("portrait-render:") and "Examples:" in text
    by_key = {}
    for line in lines:
        match = re.match(r"  ([a-z0-9_.]+)=", line)
        if match:
            by_key[match[1]] = line
    for section in sections():
        if section.path.endswith("[]"):
            continue  # model.hub's items: collapsed into model.hub's line
        for option in section.options:
            if isinstance(option.default, type):
                continue
            key = f"{section.path}.{option.name}" if section.path else option.name
            assert key in by_key, f"--help does not list {key}"
            if key in ("model.hub", "job.bench"):
                continue
            start = " ".join(option.description.split())[:20]
            assert start in by_key[key], (key, by_key[key])
            for choice in CHOICES.get(key, ()):
                assert choice in by_key[key]
    assert sum("repo_id" in line for line in lines) <= 1  # the hub collapsed to one line
    assert "model.hub=[4 repositories]" in text


def test_help_shows_the_values_of_the_groups_on_the_command_line() -> None:
    text = run_cli("model=tiny", "--help").stdout
    assert re.search(r"^  \*tiny ", text, re.MULTILINE)
    assert re.search(r"^  model\.name=tiny ", text, re.MULTILINE)
    assert "$" not in help_text(width=100).replace("$$", "")  # nothing for string.Template


# --------------------------------------------------------------------------------------------
# 6. A Ray cluster that cannot be joined: what to do, exit 2, no traceback
# --------------------------------------------------------------------------------------------


def test_joining_a_closed_port_says_what_to_do_and_exits_2(
    tiny_weights, media: Path, tmp_path: Path
) -> None:
    manifest = write_manifest(
        tmp_path / "rows.csv",
        [{"id": "one", "portrait": "media/portrait_a.png", "driving_video": "media/driving.mp4"}],
    )
    port = free_port()
    args = tiny_render_overrides(manifest, tmp_path / "out", tiny_weights)
    started = time.monotonic()
    result = run_cli(
        *args, "framing.portrait=crop", "cluster=existing", f"cluster.address=127.0.0.1:{port}"
    )
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 60
    assert "Traceback" not in result.stderr
    assert f"could not join the Ray cluster at cluster.address=127.0.0.1:{port}" in result.stderr
    assert f"nothing answers at 127.0.0.1:{port} (connection refused)" in result.stderr
    for advice in ("cluster.address=auto", "RAY_AUTH_TOKEN", "ray://<head>:10001"):
        assert advice in result.stderr


@pytest.fixture()
def ray_head_with_token(tmp_path: Path) -> Iterator[int]:
    """``ray start --head --block`` on 127.0.0.1 with token authentication (its token only in
    its own environment and HOME: a driver has none); stopped, with all it started, at the end."""
    ray = shutil.which("ray", path=os.path.dirname(sys.executable))
    if ray is None:
        pytest.skip("the ray command is not installed")
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay short
    home = tmp_path / "head-home"
    home.mkdir()
    token = secrets.token_hex(16)
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    command = [
        ray, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
        "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
    ]  # fmt: skip
    log = tmp_path / "ray-head.log"
    head = subprocess.Popen(
        command, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text()[-3000:]
                    pytest.fail(f"ray start --head did not come up on port {port}:\n{tail}")
                time.sleep(0.5)
        yield port
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ray stops what it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        for process in psutil.process_iter(["cmdline"]):  # anything of that session left
            if any(temp_dir in part for part in process.info["cmdline"] or ()):
                process.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_a_cluster_that_refuses_the_driver_says_what_to_do_and_exits_2(
    ray_head_with_token: int, tiny_weights, media: Path, tmp_path: Path
) -> None:
    manifest = write_manifest(
        tmp_path / "rows.csv",
        [{"id": "one", "portrait": "media/portrait_a.png", "driving_video": "media/driving.mp4"}],
    )
    driver_home = tmp_path / "driver-home"  # no token here
    driver_home.mkdir()
    args = tiny_render_overrides(manifest, tmp_path / "out", tiny_weights)
    result = run_cli(
        *args, "framing.portrait=crop", "cluster=existing",
        f"cluster.address=127.0.0.1:{ray_head_with_token}",
        env={"HOME": str(driver_home), "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "the cluster refused this driver: it uses token authentication" in result.stderr
    for advice in ("cluster.address=auto", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN", "ray://"):
        assert advice in result.stderr
