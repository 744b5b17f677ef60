"""Tests of pipeline.storage against local disk and a real moto S3 server (a subprocess)."""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import os
import pickle
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from pipeline.config import S3Config, StorageConfig
from pipeline.storage import (
    NotFound,
    PutResult,
    Storage,
    StorageError,
    basename,
    is_s3,
    join,
    parent,
)
from pipeline.storage._atomic import is_temp_name

try:  # `python -m pytest` from the repo root, or tests/ as a package
    from tests.s3_server import MotoServer, free_port, isolate_aws_env
except ModuleNotFoundError:  # bare `pytest` with tests/ on sys.path (rootdir-relative import)
    from s3_server import MotoServer, free_port, isolate_aws_env

MiB = 1024 * 1024
SECRET = "sEcReT-k3y-9f3a1c-MUST-NOT-LEAK"
REGION = "us-east-1"


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials with a recognisable secret; no real AWS config, proxies or IMDS."""
    isolate_aws_env(monkeypatch, tmp_path, secret=SECRET, region=REGION)


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    with MotoServer() as moto:
        yield moto


def make_storage(
    endpoint_url: str | None, *, read_block_bytes: int = 8 * MiB, **s3: Any
) -> Storage:
    s3.setdefault("max_attempts", 3)
    config = StorageConfig(s3=S3Config(endpoint_url=endpoint_url, region=REGION, **s3))
    return Storage(config, read_block_bytes=read_block_bytes, backoff_base_s=0.01)


def raw_client(endpoint_url: str) -> Any:
    """An independent boto3 client: the ground truth the tests compare against."""
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION)


@pytest.fixture
def bucket(server: MotoServer) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    raw_client(server.endpoint_url).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Storage, str]:
    """(storage, base URI) for each backend."""
    if request.param == "local":
        return make_storage(None), str(tmp_path / "root")
    server: MotoServer = request.getfixturevalue("server")
    name = request.getfixturevalue("bucket")
    return make_storage(server.endpoint_url), f"s3://{name}/root"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# URIs
# --------------------------------------------------------------------------------------------


def test_uri_helpers() -> None:
    assert is_s3("s3://bkt/key") and not is_s3("/tmp/x") and not is_s3("file:///tmp/x")
    assert join("s3://bkt/pre", "a", "b/c.mp4") == "s3://bkt/pre/a/b/c.mp4"
    assert join("s3://bkt", "x") == "s3://bkt/x"
    assert join("s3://bkt/pre/", "x") == "s3://bkt/pre/x"
    assert join("out", "job", "café-ü 1.mp4") == "out/job/café-ü 1.mp4"
    assert join("file:///tmp/o", "a") == "/tmp/o/a"
    assert parent("s3://bkt/a/b.mp4") == "s3://bkt/a"
    assert parent("s3://bkt/b.mp4") == "s3://bkt"
    assert parent("/tmp/a/b.mp4") == "/tmp/a" and parent("b.mp4") == "."
    assert basename("s3://bkt/a/b.mp4") == "b.mp4" and basename("s3://bkt") == ""
    assert basename("file:///tmp/a%20b.mp4") == "a b.mp4"


@pytest.mark.parametrize(
    ("part", "reason"),
    [
        ("..", r"'\.\.' segments are not allowed"),
        ("a/../../etc", r"'\.\.' segments are not allowed"),
        (".", r"'\.' segments are not allowed"),
        ("/etc/passwd", "is absolute"),
        ("s3://other/key", "is absolute"),
        ("a\\..\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("a\nb", "U\\+000A"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("", "empty segment"),
        ("\u2215etc\u2215passwd", "DIVISION SLASH"),
        ("a\uff0fb", "FULLWIDTH SOLIDUS"),
        ("\u2025", "normalises \\(NFKC\\) to '\\.\\.'"),
        ("\uff0e\uff0e", "normalises \\(NFKC\\) to '\\.\\.'"),
        ("evil\u202egpj.mp4", "U\\+202E"),
        ("zero\u200bwidth", "U\\+200B"),
    ],
)
def test_join_refuses_escapes(part: str, reason: str) -> None:
    with pytest.raises(StorageError, match=rf"join\(\): part 1 .*{reason}"):
        join("s3://bkt/base", "ok", part)
    with pytest.raises(StorageError, match=rf"join\(\): part 1 .*{reason}"):
        join("/tmp/base", "ok", part)


def test_bad_uris_are_refused(tmp_path: Path) -> None:
    storage = make_storage(None)
    with pytest.raises(StorageError, match="unsupported URI scheme 'gs'") as info:
        storage.exists("gs://bkt/key")
    assert info.value.uri == "gs://bkt/key"
    with pytest.raises(StorageError, match="names host 'server'"):
        storage.read_bytes("file://server/share/x")
    with pytest.raises(StorageError, match="names no object"):
        storage.read_bytes("s3://bkt/")
    with pytest.raises(StorageError, match="invalid bucket name"):
        storage.read_bytes("s3://b/key")
    with pytest.raises(StorageError, match="NUL"):
        storage.exists(str(tmp_path) + "/a\x00b")


def test_config_is_validated_up_front() -> None:
    with pytest.raises(
        StorageError,
        match=r"storage\.s3\.request_checksum_calculation='sometimes' is invalid; allowed: 'when_supported', 'when_required'",
    ):
        Storage(StorageConfig(s3=S3Config(request_checksum_calculation="sometimes")))
    with pytest.raises(StorageError, match=r"storage\.s3\.max_attempts=0 is invalid"):
        Storage(StorageConfig(s3=S3Config(max_attempts=0)))
    with pytest.raises(
        StorageError,
        match=r"endpoint_url='127\.0\.0\.1:9000' is invalid; expected http\(s\)://host\[:port\]",
    ):
        Storage(StorageConfig(s3=S3Config(endpoint_url="127.0.0.1:9000")))
    with pytest.raises(StorageError, match="must not contain credentials"):
        Storage(StorageConfig(s3=S3Config(endpoint_url="http://key:secret@127.0.0.1:9000")))
    with pytest.raises(StorageError, match="retry_mode='legacy' is invalid"):
        Storage(StorageConfig(), retry_mode="legacy")  # type: ignore[arg-type]


def test_missing_profile_is_reported(server: MotoServer) -> None:
    storage = make_storage(server.endpoint_url, profile="nope")
    with pytest.raises(
        StorageError, match=r"AWS profile 'nope' \(storage\.s3\.profile\) was not found"
    ):
        storage.exists("s3://bkt/key")


# --------------------------------------------------------------------------------------------
# Round trips (both backends)
# --------------------------------------------------------------------------------------------


def test_round_trip_every_method(store: tuple[Storage, str], tmp_path: Path) -> None:
    storage, base = store
    uri = join(base, "job", "row-1", "out.bin")
    assert not storage.exists(uri)
    for method in (storage.read_bytes, storage.size, storage.open):
        with pytest.raises(NotFound, match="not found") as info:
            method(uri)
        assert info.value.uri == uri
    with pytest.raises(NotFound, match="not found"):
        storage.download(uri, tmp_path / "never.bin")

    assert storage.put(b"hello world", uri) == PutResult(uri, 11, sha256_hex(b"hello world"))
    assert storage.exists(uri) and storage.size(uri) == 11
    assert storage.read_bytes(uri) == b"hello world"
    with storage.open(uri) as handle:
        assert isinstance(handle, io.BufferedReader) and handle.seekable() and handle.readable()
        assert handle.read(5) == b"hello" and handle.tell() == 5
        handle.seek(-5, io.SEEK_END)
        assert handle.read() == b"world"

    source = tmp_path / "source.bin"
    source.write_bytes(b"from a file")
    from_path = join(base, "job", "row-2", "a.bin")
    assert storage.put(source, from_path).size == 11
    assert storage.put(str(source), join(base, "job", "row-2", "b.bin")).sha256 == sha256_hex(
        b"from a file"
    )
    from_chunks = join(base, "job", "c.bin")
    assert storage.put(iter([b"ab", b"", b"cd"]), from_chunks).size == 4
    assert storage.read_bytes(from_chunks) == b"abcd"

    assert storage.list(join(base, "job")) == [
        (from_chunks, 4),
        (uri, 11),
        (from_path, 11),
        (join(base, "job", "row-2", "b.bin"), 11),
    ]
    assert not storage.exists(join(base, "job"))  # folders are not objects
    assert storage.list(base + "/jo") == []  # a folder, not a string prefix
    assert storage.list(join(base, "missing")) == []

    target = tmp_path / "downloads" / "x.bin"
    storage.download(uri, target)
    assert target.read_bytes() == b"hello world"
    assert sorted(os.listdir(target.parent)) == ["x.bin"]  # no temp files left

    if is_s3(base):
        assert storage.local_path(uri) is None
    else:
        assert storage.local_path(uri) == os.path.abspath(uri)

    storage.put(b"replaced", uri)
    assert storage.read_bytes(uri) == b"replaced"
    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)  # deleting a missing object is fine


def test_put_if_absent_true_then_false(store: tuple[Storage, str]) -> None:
    storage, base = store
    marker = join(base, "row-1", "_SUCCESS")
    assert storage.put_if_absent(b'{"writer": 1}', marker) is True
    assert storage.put_if_absent(b'{"writer": 2}', marker) is False
    assert storage.read_bytes(marker) == b'{"writer": 1}'


def test_pickled_storage_works(store: tuple[Storage, str]) -> None:
    storage, base = store
    uri = join(base, "pickled.bin")
    storage.put(b"before", uri)  # creates the client
    blob = pickle.dumps(storage)
    assert SECRET.encode() not in blob and b"testing" not in blob
    restored = pickle.loads(blob)
    assert restored.read_bytes(uri) == b"before"
    restored.put(b"after", uri)
    assert storage.read_bytes(uri) == b"after"
    if is_s3(base):
        assert restored.s3_client is not storage.s3_client


def test_storage_from_hydra_config_pickles(server: MotoServer, bucket: str) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(StorageConfig)
    cfg.s3.endpoint_url, cfg.s3.region = server.endpoint_url, REGION
    storage = pickle.loads(pickle.dumps(Storage(cfg)))
    storage.put(b"hydra", f"s3://{bucket}/h.bin")
    assert storage.read_bytes(f"s3://{bucket}/h.bin") == b"hydra"


# --------------------------------------------------------------------------------------------
# S3 specifics
# --------------------------------------------------------------------------------------------


def test_s3_reader_streams_with_bounded_ranged_gets(server: MotoServer, bucket: str) -> None:
    data = random.Random(0).randbytes(20 * MiB)
    raw_client(server.endpoint_url).put_object(Bucket=bucket, Key="video.mp4", Body=data)
    storage = make_storage(server.endpoint_url, read_block_bytes=MiB)
    ranges: list[str | None] = []
    storage.s3_client.meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: ranges.append(params.get("Range"))
    )
    uri = f"s3://{bucket}/video.mp4"
    with storage.open(uri) as handle:
        assert handle.name == uri and handle.seekable() and handle.readable()
        assert handle.read(100) == data[:100] and handle.tell() == 100
        assert handle.seek(5 * MiB + 17) == 5 * MiB + 17
        assert handle.read(3 * MiB) == data[5 * MiB + 17 : 8 * MiB + 17]
        assert handle.seek(-1000, io.SEEK_END) == len(data) - 1000
        assert handle.read() == data[-1000:]
        assert handle.read(10) == b"" and handle.tell() == len(data)
        handle.seek(10)
        handle.seek(5, io.SEEK_CUR)
        assert handle.tell() == 15 and handle.read(5) == data[15:20]
        handle.seek(0)
        pieces = []
        while chunk := handle.read(64 * 1024):
            pieces.append(chunk)
        assert b"".join(pieces) == data
        handle.seek(0)
        assert handle.read() == data  # read-all also goes block by block
    assert ranges and None not in ranges, "every GET must be ranged"
    lengths = [
        int(end) - int(start) + 1
        for start, end in (r.removeprefix("bytes=").split("-") for r in ranges)
    ]
    assert max(lengths) <= MiB < len(data)
    with pytest.raises(ValueError, match="closed"):
        handle.read(1)


def test_s3_reader_refuses_a_replaced_object(server: MotoServer, bucket: str) -> None:
    client = raw_client(server.endpoint_url)
    client.put_object(Bucket=bucket, Key="v.bin", Body=b"a" * 3000)
    storage = make_storage(server.endpoint_url, read_block_bytes=1024)
    with storage.open(f"s3://{bucket}/v.bin") as handle:
        assert handle.read(10) == b"a" * 10
        client.put_object(Bucket=bucket, Key="v.bin", Body=b"b" * 3000)
        with pytest.raises(StorageError, match="was replaced while it was being read"):
            handle.read(2000)


def test_pyav_decodes_through_the_s3_reader(server: MotoServer, bucket: str) -> None:
    av = pytest.importorskip("av")
    np = pytest.importorskip("numpy")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(30):
            frame = av.VideoFrame.from_ndarray(
                np.full((64, 64, 3), index * 8, np.uint8), format="rgb24"
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    storage = make_storage(server.endpoint_url, read_block_bytes=2048)
    uri = f"s3://{bucket}/driving.mp4"
    storage.put(buffer.getvalue(), uri)
    with storage.open(uri) as handle, av.open(handle) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30
        container.seek(0)
        assert sum(1 for _ in container.decode(video=0)) == 30


def count_calls(storage: Storage, *operations: str) -> dict[str, int]:
    counts = dict.fromkeys(operations, 0)
    for operation in operations:

        def bump(_operation: str = operation, **_: Any) -> None:
            counts[_operation] += 1

        storage.s3_client.meta.events.register(f"provide-client-params.s3.{operation}", bump)
    return counts


@pytest.mark.parametrize("checksum", ["sha256", "md5"])
def test_multipart_upload_is_verified(
    server: MotoServer, bucket: str, tmp_path: Path, checksum: str
) -> None:
    data = random.Random(1).randbytes(12 * MiB)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    config = StorageConfig(
        s3=S3Config(
            endpoint_url=server.endpoint_url,
            region=REGION,
            multipart_threshold_mb=5,
            multipart_chunksize_mb=5,
        )
    )
    storage = Storage(config, checksum=checksum)  # type: ignore[arg-type]
    calls = count_calls(
        storage, "PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"
    )
    uri = f"s3://{bucket}/big.bin"
    assert storage.put(source, uri) == PutResult(uri, len(data), sha256_hex(data))
    assert calls == {
        "PutObject": 0,
        "CreateMultipartUpload": 1,
        "UploadPart": 3,
        "CompleteMultipartUpload": 1,
    }
    head = raw_client(server.endpoint_url).head_object(
        Bucket=bucket, Key="big.bin", ChecksumMode="ENABLED"
    )
    assert head["ETag"].strip('"').endswith("-3")
    assert ("ChecksumSHA256" in head) is (checksum == "sha256")
    assert storage.read_bytes(uri) == data
    # bytes and iterables over the threshold go multipart too
    assert storage.put(data, uri + ".2").size == len(data)
    assert storage.put(iter([data[: 7 * MiB], data[7 * MiB :]]), uri + ".3").sha256 == sha256_hex(
        data
    )
    assert calls["CreateMultipartUpload"] == 3
    # small puts are one PUT
    storage.put(b"small", uri + ".small")
    assert calls["PutObject"] == 1


@pytest.mark.parametrize(("checksum", "field"), [("sha256", "ChecksumSHA256"), ("md5", "ETag")])
@pytest.mark.parametrize("size_mib", [0, 6])
def test_checksum_mismatch_is_detected(
    server: MotoServer, bucket: str, checksum: str, field: str, size_mib: int
) -> None:
    config = StorageConfig(
        s3=S3Config(
            endpoint_url=server.endpoint_url,
            region=REGION,
            multipart_threshold_mb=5,
            multipart_chunksize_mb=5,
        )
    )
    storage = Storage(config, checksum=checksum)  # type: ignore[arg-type]

    def corrupt(parsed: dict[str, Any], **_: Any) -> None:
        if field in parsed:
            parsed[field] = '"0123456789abcdef0123456789abcdef"' if field == "ETag" else "AAAA"

    operation = "HeadObject" if size_mib else "PutObject"
    storage.s3_client.meta.events.register(f"after-call.s3.{operation}", corrupt)
    data = b"x" * (size_mib * MiB + 10)
    with pytest.raises(
        StorageError, match=rf"checksum mismatch after uploading s3://{bucket}/k: the store has"
    ):
        storage.put(data, f"s3://{bucket}/k")


def test_put_if_absent_observes_http_412(
    server: MotoServer, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    storage = make_storage(server.endpoint_url)
    statuses: list[int] = []
    storage.s3_client.meta.events.register(
        "after-call.s3.PutObject",
        lambda http_response, **_: statuses.append(http_response.status_code),
    )
    marker = f"s3://{bucket}/row/_SUCCESS"
    caplog.set_level(logging.DEBUG, logger="pipeline")
    assert storage.put_if_absent(b"first", marker) is True
    assert storage.put_if_absent(b"second", marker) is False
    assert statuses == [200, 412]  # what the store answered on the wire
    [record] = [r for r in caplog.records if getattr(r, "http_status", None) is not None]
    assert (record.s3_error_code, record.http_status, record.uri) == (
        "PreconditionFailed",
        412,
        marker,
    )
    assert (
        raw_client(server.endpoint_url).get_object(Bucket=bucket, Key="row/_SUCCESS")["Body"].read()
        == b"first"
    )


def conflict_responder(times: int) -> Any:
    """A before-call hook answering the first ``times`` PutObject calls with HTTP 409."""
    remaining = [times]

    def respond(**_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if remaining[0] == 0:
            return None
        remaining[0] -= 1
        error = {
            "Code": "ConditionalRequestConflict",
            "Message": "A conflicting operation is in progress",
        }
        return AWSResponse("http://conflict", 409, {}, None), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 409},
        }

    return respond


def test_put_if_absent_retries_409_conflicts(server: MotoServer, bucket: str) -> None:
    storage = make_storage(server.endpoint_url)
    storage.s3_client.meta.events.register("before-call.s3.PutObject", conflict_responder(2))
    assert storage.put_if_absent(b"x", f"s3://{bucket}/m1") is True
    storage.s3_client.meta.events.register("before-call.s3.PutObject", conflict_responder(99))
    with pytest.raises(
        StorageError,
        match=r"kept conflicting with concurrent writers after 3 attempts \(HTTP 409 ConditionalRequestConflict\)",
    ):
        storage.put_if_absent(b"x", f"s3://{bucket}/m2")


def test_missing_bucket_is_not_found(server: MotoServer) -> None:
    storage = make_storage(server.endpoint_url)
    with pytest.raises(
        NotFound,
        match=rf"the bucket of s3://no-such-bucket/k does not exist at {server.endpoint_url}",
    ):
        storage.read_bytes("s3://no-such-bucket/k")


def test_list_paginates(server: MotoServer, bucket: str) -> None:
    storage = make_storage(server.endpoint_url)
    for index in range(5):
        storage.put(b"x" * index, f"s3://{bucket}/p/{index}.bin")
    storage.put(b"other", f"s3://{bucket}/p2/x.bin")
    pages = []

    def small_pages(params: dict[str, Any], **_: Any) -> None:
        params["MaxKeys"] = 2
        pages.append(params.get("ContinuationToken"))

    storage.s3_client.meta.events.register("provide-client-params.s3.ListObjectsV2", small_pages)
    assert storage.list(f"s3://{bucket}/p") == [(f"s3://{bucket}/p/{i}.bin", i) for i in range(5)]
    assert len(pages) == 3


def test_client_is_created_once_across_threads(server: MotoServer, bucket: str) -> None:
    storage = make_storage(server.endpoint_url)
    barrier = threading.Barrier(8)
    clients: list[Any] = []

    def work(index: int) -> None:
        barrier.wait()
        clients.append(storage.s3_client)
        storage.put(f"thread {index}".encode(), f"s3://{bucket}/t/{index}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in clients}) == 1
    assert [size for _, size in storage.list(f"s3://{bucket}/t")] == [8] * 8


# --------------------------------------------------------------------------------------------
# Unreachable endpoints and secrets
# --------------------------------------------------------------------------------------------


def attempt_records(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [r.s3_attempt for r in caplog.records if hasattr(r, "s3_attempt")]


def test_stopped_endpoint_is_retried_then_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    with MotoServer() as moto:
        storage = make_storage(moto.endpoint_url, max_attempts=3)
        storage.s3_client.create_bucket(Bucket="outage")
        storage.put(b"ok", "s3://outage/a")
        moto.stop()
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            storage.read_bytes("s3://outage/a")
        elapsed = time.monotonic() - started
        message = str(info.value)
        assert message == (
            f"could not reach S3 endpoint {moto.endpoint_url} after 3 attempts (connection refused) "
            "to read s3://outage/a; check storage.s3.endpoint_url and that the store is up"
        )
        assert info.value.uri == "s3://outage/a" and not isinstance(info.value, NotFound)
        assert attempt_records(caplog) == [1, 2, 3]  # botocore retried, with its jittered backoff
        assert elapsed < 10
        moto.start()  # the store is back (empty): the same Storage recovers
        storage.s3_client.create_bucket(Bucket="outage")
        storage.put(b"again", "s3://outage/a")
        assert storage.read_bytes("s3://outage/a") == b"again"


def test_silent_endpoint_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        storage = make_storage(endpoint, max_attempts=2, read_timeout_s=0.3, connect_timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(
            StorageError,
            match=rf"could not reach S3 endpoint {endpoint} after 2 attempts \(no response within 0\.3 s\) to read the metadata of s3://bkt/k; check storage\.s3\.endpoint_url",
        ):
            storage.exists("s3://bkt/k")
        assert time.monotonic() - started < 8


def test_secrets_never_appear_in_errors_or_logs(
    server: MotoServer, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, botocore's included
    storage = make_storage(server.endpoint_url)
    uri = f"s3://{bucket}/s.bin"
    storage.put(b"data", uri)
    storage.read_bytes(uri)
    storage.put_if_absent(b"m", uri + ".marker")
    storage.put_if_absent(b"m", uri + ".marker")
    errors: list[StorageError] = []
    for call in (
        lambda: storage.read_bytes(uri + ".missing"),
        lambda: make_storage(f"http://127.0.0.1:{free_port()}", max_attempts=2).read_bytes(uri),
        lambda: make_storage(f"http://user:{SECRET}@127.0.0.1:{free_port()}"),
    ):
        with pytest.raises(StorageError) as info:
            call()
        errors.append(info.value)
    texts = [str(err) for err in errors] + [repr(err) for err in errors]
    for record in caplog.records:
        texts += [record.getMessage(), str(record.__dict__)]
    assert len(caplog.records) > 10
    assert not [text for text in texts if SECRET in text]


# --------------------------------------------------------------------------------------------
# Local atomicity
# --------------------------------------------------------------------------------------------


class SourceBroke(Exception):
    pass


def failing_source(chunks: int) -> Iterator[bytes]:
    for _ in range(chunks):
        yield b"partial data " * 1000
    raise SourceBroke("the encoder died")


def test_local_put_is_all_or_nothing(tmp_path: Path) -> None:
    storage = make_storage(None)
    fresh, existing = tmp_path / "out" / "fresh.mp4", tmp_path / "out" / "existing.mp4"
    storage.put(b"complete old version", str(existing))
    with pytest.raises(SourceBroke):
        storage.put(failing_source(3), str(fresh))
    with pytest.raises(SourceBroke):
        storage.put(failing_source(3), str(existing))
    assert not fresh.exists()
    assert existing.read_bytes() == b"complete old version"
    assert os.listdir(tmp_path / "out") == ["existing.mp4"]  # no temp files left behind


def _write_until_killed(path: str, started: Any) -> None:
    def source() -> Iterator[bytes]:
        yield b"half a video"
        started.set()
        time.sleep(60)
        yield b"never"

    make_storage(None).put(source(), path)


def test_local_put_killed_midway_leaves_no_destination(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    started = context.Event()
    dest = tmp_path / "out" / "video.mp4"
    writer = context.Process(target=_write_until_killed, args=(str(dest), started))
    writer.start()
    try:
        assert started.wait(20)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
    assert not dest.exists()
    leftovers = os.listdir(dest.parent)
    assert len(leftovers) == 1 and is_temp_name(leftovers[0])
    assert make_storage(None).list(str(tmp_path / "out")) == []  # in-flight temp files are hidden


def _race(root: str, markers: int, barrier: Any, results: Any) -> None:
    storage = make_storage(None)
    barrier.wait()
    wins = [
        storage.put_if_absent(str(os.getpid()).encode(), f"{root}/m{i}/_SUCCESS")
        for i in range(markers)
    ]
    results.put((os.getpid(), wins))


def test_local_put_if_absent_race_has_one_winner(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    writers, markers = 4, 25
    barrier, results = context.Barrier(writers), context.Queue()
    processes = [
        context.Process(target=_race, args=(str(tmp_path), markers, barrier, results))
        for _ in range(writers)
    ]
    for process in processes:
        process.start()
    outcomes = dict(results.get(timeout=30) for _ in processes)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    storage = make_storage(None)
    for index in range(markers):
        winners = [pid for pid, wins in outcomes.items() if wins[index]]
        assert len(winners) == 1, f"marker {index} won by {winners}"
        assert storage.read_bytes(f"{tmp_path}/m{index}/_SUCCESS") == str(winners[0]).encode()
        assert os.listdir(tmp_path / f"m{index}") == ["_SUCCESS"]
