"""Azurite, the Azure Storage emulator, as a child process on 127.0.0.1, for tests.

Azurite installs from npm (``npm install azurite``; ``.ci/run`` puts it in ``~/.azurite``). The
blob service is found as ``$AZURITE_BLOB``, ``azurite-blob`` on ``PATH``, or under
``~/.azurite``; tests that need it are skipped, saying so, when it is not
installed. It keeps its data in memory and sends no telemetry.

Clients reach it with the emulator's well-known development account (public, not a secret)::

    with AzuriteServer() as server:
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", server.connection_string)
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from child_server import HOST, ChildServer, free_port

ACCOUNT = "devstoreaccount1"
# Azurite's documented development key: the same in every installation, grants nothing elsewhere
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def find_azurite() -> str | None:
    """The ``azurite-blob`` executable, or None when Azurite is not installed."""
    candidates = [os.environ.get("AZURITE_BLOB"), shutil.which("azurite-blob")]
    candidates.append(str(Path.home() / ".azurite" / "node_modules" / ".bin" / "azurite-blob"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


class AzuriteServer(ChildServer):
    """``azurite-blob`` listening on ``127.0.0.1`` only, data in memory."""

    log_prefix = "azurite-"

    def __init__(self, executable: str, *, startup_timeout_s: float = 30.0) -> None:
        self.executable = executable
        self.port = free_port()
        self.startup_timeout_s = startup_timeout_s
        super().__init__()

    @property
    def account_url(self) -> str:
        """``http://127.0.0.1:<port>/devstoreaccount1``."""
        return f"http://{HOST}:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.account_url};"
        )

    def start(self) -> None:
        self._spawn(
            [
                self.executable,
                "--blobHost",
                HOST,
                "--blobPort",
                str(self.port),
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
            ]
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"Azurite exited while starting:\n{self.log_tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Azurite did not listen on port {self.port}:\n{self.log_tail()}")


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzuriteServer]:
    """An Azurite blob service shared by the whole session (skips when Azurite is missing)."""
    executable = find_azurite()
    if executable is None:
        pytest.skip("Azurite is not installed (npm install azurite; see .ci/run)")
    with AzuriteServer(executable) as server:
        yield server
