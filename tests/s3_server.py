"""A real moto S3 server in a subprocess on 127.0.0.1, for tests (not in-process ``mock_aws``).

Any client, in any process (Ray workers included), reaches it through ``endpoint_url`` with dummy
credentials::

    with MotoServer() as server:
        storage = Storage(StorageConfig(s3=S3Config(endpoint_url=server.endpoint_url)))
        server.stop()   # the endpoint is now unreachable (connection refused)
        server.start()  # back on the same port, with an empty store

In pytest, use the `moto_s3_server` fixture (session scope; import it into a ``conftest.py``) or
wrap `MotoServer` in a fixture of the scope you need.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from child_server import HOST, ChildServer, free_port


def isolate_aws_env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: os.PathLike[str],
    *,
    secret: str = "testing",
    region: str | None = None,
) -> None:
    """Dummy credentials (secret key `secret`) for a test; no real AWS config, profile, proxy or
    instance metadata can leak in, and loopback traffic bypasses any proxy."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    if region:
        monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.path.join(tmp_path, "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.path.join(tmp_path, "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


class MotoServer(ChildServer):
    """``python -m moto.server`` as a child process, listening on ``host`` only.

    Args:
        port: the port to use; None picks a free one (kept across `stop`/`start`).
        startup_timeout_s: how long `start` waits for the server to answer.
    """

    log_prefix = "moto-server-"

    def __init__(self, *, port: int | None = None, startup_timeout_s: float = 20.0) -> None:
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.startup_timeout_s = startup_timeout_s
        super().__init__()
        # Never go through a proxy to reach a loopback server.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start the server (no-op if running) and wait until it answers."""
        if self.running:
            return
        env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        self._spawn(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)], env
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(
                    f"moto server exited while starting on {self.endpoint_url}:\n{self.log_tail()}"
                )
            try:
                with self._opener.open(f"{self.endpoint_url}/moto-api/", timeout=1.0):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"moto server did not answer on {self.endpoint_url} within {self.startup_timeout_s} s:\n{self.log_tail()}"
        )

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def reset(self) -> None:
        """Drop every bucket and object (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with self._opener.open(request, timeout=5.0):
            pass


@pytest.fixture(scope="session")
def moto_s3_server() -> Iterator[MotoServer]:
    """A moto S3 server shared by the whole test session."""
    with MotoServer() as server:
        yield server
