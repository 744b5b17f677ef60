"""The Azure Blob backend (``az://container/blob``): its URIs, and `Storage` against Azurite.

Azurite (the Azure Storage emulator, from npm) runs as a child process on 127.0.0.1 for the
session; the tests that need it skip, saying so, when it is not installed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from pipeline.config import AzureConfig, StorageConfig
from pipeline.manifest import check_manifest
from pipeline.storage import (
    CredentialsError,
    NotFound,
    PutResult,
    Storage,
    StorageError,
    basename,
    is_remote,
    join,
    parent,
)

try:  # `python -m pytest` from the repo root, or tests/ as a package
    from tests.azurite_server import ACCOUNT, ACCOUNT_KEY, AzuriteServer, azurite_server  # noqa: F401
except ModuleNotFoundError:  # bare `pytest` with tests/ on sys.path
    from azurite_server import ACCOUNT, ACCOUNT_KEY, AzuriteServer, azurite_server  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# URIs (no server)
# --------------------------------------------------------------------------------------------


def test_azure_uris_are_parsed_by_the_uri_module() -> None:
    assert is_remote("az://box/a.mp4") and is_remote("AZ://box/a.mp4")
    assert join("az://box/pre", "a", "b/c.mp4") == "az://box/pre/a/b/c.mp4"
    assert join("az://box", "x") == "az://box/x"
    assert parent("az://box/a/b.mp4") == "az://box/a" and parent("az://box/b.mp4") == "az://box"
    assert basename("az://box/a/b.mp4") == "b.mp4" and basename("az://box") == ""
    with pytest.raises(StorageError, match=r"join\(\): part 0 .*'\.\.' segments"):
        join("az://box/pre", "../x")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "az://Box/key",
            r"invalid container name 'Box' in 'az://Box/key': expected az://container/key",
        ),
        ("az://a--b/key", "invalid container name 'a--b'"),
        ("az://ab/key", "invalid container name 'ab'"),
        ("az://box/", r"'az://box/' names no object: expected az://box/<key>"),
        ("az://box/" + "k" * 1025, "Azure key of .* is longer than 1024 bytes"),
    ],
)
def test_bad_azure_uris_are_refused_before_any_request(uri: str, message: str) -> None:
    storage = Storage(StorageConfig(output_root="unused"))
    with pytest.raises(StorageError, match=message) as info:
        storage.read_bytes(uri)
    assert info.value.uri == uri


def test_an_azure_uri_is_not_a_local_path(tmp_path: Path) -> None:
    storage = Storage(StorageConfig(output_root="unused"))
    assert storage.local_path("az://box/a") is None
    with pytest.raises(StorageError, match="is an Azure URI; the source must be bytes"):
        storage.put("az://box/a", str(tmp_path / "x"))
    with pytest.raises(StorageError, match=r"'az://box/a' is an Azure URI, not a local path"):
        storage.download(str(tmp_path / "x"), "az://box/a")


def test_a_manifest_on_azure_resolves_relative_paths_against_its_folder() -> None:
    text = b"portrait,driving_video\nfaces/a.png,az://clips/talk.mp4\n../../up.png,az://clips/\n"
    manifest, problems = check_manifest(
        "az://inputs/jobs/m.csv", read_bytes=lambda uri: text, exists=lambda uri: True
    )
    assert manifest.rows[0].portrait == "az://inputs/jobs/faces/a.png"
    assert manifest.rows[0].driving_video == "az://clips/talk.mp4"
    messages = sorted(problem.message for problem in problems)
    assert messages == [
        "driving_video is not a full Azure object URI (expected az://container/key/of/file)",
        "portrait climbs above the top of container 'inputs'",
    ]


def test_local_runs_do_not_import_the_azure_sdk(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pipeline.config import StorageConfig\n"
        "from pipeline.storage import Storage\n"
        f"storage = Storage(StorageConfig(output_root={str(tmp_path)!r}))\n"
        f"storage.put(b'x', {str(tmp_path / 'x')!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('azure', 'boto3')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# Against Azurite
# --------------------------------------------------------------------------------------------


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch, azurite_server: AzuriteServer) -> AzuriteServer:
    """The emulator's connection string in the environment, as a deployment would give it."""
    pytest.importorskip("azure.storage.blob", reason="the 'azure' extra is not installed")
    for name in list(os.environ):
        if name.startswith("AZURE_STORAGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return azurite_server


@pytest.fixture
def container(azure_env: AzuriteServer) -> str:
    """A fresh, empty container."""
    from azure.storage.blob import BlobServiceClient

    name = f"c{uuid.uuid4().hex[:20]}"
    BlobServiceClient.from_connection_string(azure_env.connection_string).create_container(name)
    return name


def make_storage(**options: object) -> Storage:
    return Storage(
        StorageConfig(output_root="unused", azure=AzureConfig(max_attempts=2)), **options
    )  # type: ignore[arg-type]


def test_round_trip(container: str, tmp_path: Path) -> None:
    storage = make_storage()
    base = f"az://{container}/root"
    uri = join(base, "job", "row-1", "a.bin")
    assert not storage.exists(uri)
    for method in (storage.read_bytes, storage.size, storage.open, storage.fingerprint):
        with pytest.raises(NotFound, match=f"{uri} not found"):
            method(uri)

    assert storage.put(b"hello world", uri) == PutResult(uri, 11, sha256_hex(b"hello world"))
    assert storage.exists(uri) and storage.size(uri) == 11
    assert storage.read_bytes(uri) == b"hello world"
    source = tmp_path / "src.bin"
    source.write_bytes(b"from a file")
    assert storage.put(source, join(base, "job", "row-2", "b.bin")).size == 11
    chunks = join(base, "job", "c.bin")
    assert storage.put(iter([b"ab", b"", b"cd"]), chunks).sha256 == sha256_hex(b"abcd")
    assert storage.read_bytes(chunks) == b"abcd"

    assert storage.list(join(base, "job")) == [
        (chunks, 4),
        (uri, 11),
        (join(base, "job", "row-2", "b.bin"), 11),
    ]
    assert not storage.exists(join(base, "job"))  # folders are not objects
    assert storage.list(base + "/jo") == []  # a folder, not a string prefix
    assert storage.list(join(base, "missing")) == []

    target = tmp_path / "down" / "a.bin"
    storage.download(uri, target)
    assert target.read_bytes() == b"hello world"

    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)  # deleting a missing object is fine


def test_put_if_absent_has_exactly_one_winner(container: str) -> None:
    storage = make_storage()
    marker = f"az://{container}/job/row/_COMMITTED"
    results: list[bool] = []
    lock = threading.Lock()

    def race(writer: int) -> None:
        created = storage.put_if_absent(f'{{"writer": {writer}}}'.encode(), marker)
        with lock:
            results.append(created)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert storage.read_bytes(marker).startswith(b'{"writer": ')


def test_fingerprint_follows_the_content(container: str) -> None:
    storage = make_storage()
    uri = f"az://{container}/in/clip.mp4"
    storage.put(b"version one", uri)
    first = storage.fingerprint(uri)
    assert first.startswith("az:11:") and storage.fingerprint(uri) == first
    storage.put(b"version two", uri)
    assert storage.fingerprint(uri) != first


def test_ranged_reads_seek_anywhere(container: str) -> None:
    storage = make_storage(read_block_bytes=1024)
    data = random.Random(7).randbytes(10_000)
    uri = f"az://{container}/big.bin"
    storage.put(data, uri)
    with storage.open(uri) as handle:
        assert handle.seekable() and handle.read(10) == data[:10]
        for position in (5000, 1023, 9990, 0, 4096):
            handle.seek(position)
            assert handle.read(700) == data[position : position + 700]
        handle.seek(-3, os.SEEK_END)
        assert handle.read() == data[-3:]
        handle.seek(0)
        assert handle.read() == data


def test_a_blob_replaced_while_it_is_read_fails_loudly(container: str) -> None:
    storage = make_storage(read_block_bytes=1024)
    uri = f"az://{container}/moving.bin"
    storage.put(b"a" * 5000, uri)
    with storage.open(uri) as handle:
        assert handle.read(100) == b"a" * 100
        storage.put(b"b" * 5000, uri)
        handle.seek(3000)
        with pytest.raises(StorageError, match="was replaced while it was being read"):
            handle.read(100)


def test_open_input_streams_a_blob(container: str) -> None:
    storage = make_storage()
    uri = f"az://{container}/photo.bin"
    storage.put(b"\x89PNG....", uri)
    with storage.open_input(uri) as source:
        assert not isinstance(source, str) and source.read(4) == b"\x89PNG"


def test_missing_container_and_credentials_are_explained(
    container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = make_storage()
    with pytest.raises(NotFound, match="the container of az://nobox/x does not exist") as info:
        storage.read_bytes("az://nobox/x")
    assert "check the container name" in str(info.value)
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    with pytest.raises(CredentialsError, match="no Azure credentials found") as info:
        make_storage().exists(f"az://{container}/x")
    assert "AZURE_STORAGE_CONNECTION_STRING" in info.value.fix


def test_account_key_from_the_environment_and_account_url_from_config(
    container: str, azure_env: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_KEY", ACCOUNT_KEY)
    cfg = StorageConfig(output_root="unused", azure=AzureConfig(account_url=azure_env.account_url))
    storage = Storage(cfg)
    storage.put(b"by key", f"az://{container}/k.bin")
    assert storage.read_bytes(f"az://{container}/k.bin") == b"by key"
    monkeypatch.setenv("AZURE_STORAGE_KEY", "d3Jvbmcga2V5IGZvciB0aGlzIGFjY291bnQ=")
    with pytest.raises(
        StorageError, match=r"(did not accept the credentials|denied access) to read"
    ) as info:
        Storage(cfg).read_bytes(f"az://{container}/k.bin")  # Azurite: 403 AuthorizationFailure
    assert "d3Jvbmcg" not in str(info.value)


def test_pickled_storage_reaches_azure(container: str) -> None:
    storage = make_storage()
    uri = f"az://{container}/p.bin"
    storage.put(b"before", uri)  # creates the client
    restored = pickle.loads(pickle.dumps(storage))
    restored.put(b"after", uri)
    assert storage.read_bytes(uri) == b"after"
