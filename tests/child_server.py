"""A test server run as a child process on 127.0.0.1 (moto's S3, Azurite): its process, its log,
stopping it, and a free port to put it on. Subclasses start it (`start`)."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from types import TracebackType

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (also usable as a 'closed port' endpoint)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ChildServer:
    """The process of a server started by a subclass's `start`, its output kept in a temporary
    file for failure messages (`log_tail`); a context manager that starts and stops it."""

    log_prefix = "server-"

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile(prefix=self.log_prefix)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        raise NotImplementedError

    def _spawn(self, command: list[str], env: dict[str, str] | None = None) -> None:
        """Start `command` with its output going to the log."""
        self._process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )

    def stop(self) -> None:
        """Stop the server (its state is lost); the port then refuses connections."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def log_tail(self, num_bytes: int = 4000) -> str:
        """The end of the server's output, for failure messages."""
        self._log.flush()
        size = self._log.seek(0, os.SEEK_END)
        self._log.seek(max(0, size - num_bytes))
        return self._log.read().decode("utf-8", "replace")

    def close(self) -> None:
        self.stop()
        self._log.close()

    def __enter__(self) -> ChildServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
