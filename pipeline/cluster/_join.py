"""Starting or joining Ray: embedded on loopback by default, or an existing cluster, with one
message a user can act on when the cluster refuses the driver."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from ..config import ClusterConfig

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def start_ray(cfg: ClusterConfig) -> bool:
    """Start or join Ray; returns True when this process started it (and must shut it down)."""
    import ray  # noqa: PLC0415 - Ray is only needed by jobs that render

    if ray.is_initialized():
        return False
    if cfg.address is None:
        # keep every Ray server on loopback: an embedded cluster must not listen on the network
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray turns token authentication on for a local cluster (good) and says so with a warning
        # that lands in the middle of the progress display; the notice is all this silences
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
        ray.init(
            address="local",
            num_cpus=cfg.num_cpus,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            log_to_driver=cfg.log_to_driver,
            logging_level=logging.WARNING,
        )
        logger.info(
            "started embedded Ray on %s (%s CPUs)", LOOPBACK, ray.cluster_resources().get("CPU")
        )
        return True
    refused = _unreachable(cfg.address)
    if refused is not None:  # said at once, instead of after Ray's own 20-60 s of retries
        raise ClusterJoinError(cfg.address, refused)
    try:
        ray.init(
            address=cfg.address, log_to_driver=cfg.log_to_driver, logging_level=logging.WARNING
        )
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ClusterJoinError(cfg.address, _join_failure(err)) from err
    logger.info("joined Ray cluster at %s: %s", cfg.address, ray.cluster_resources())
    return False


class ClusterJoinError(ConnectionError):
    """The Ray cluster at ``cluster.address`` could not be joined; the message says why and what
    to do (the job stops with exit code 2, like a configuration mistake)."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(
            f"could not join the Ray cluster at cluster.address={address}: {reason}. {JOIN_ADVICE}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.address, self.reason))


JOIN_ADVICE = (
    "To join it: run the job on a node of the cluster with cluster.address=auto; or give this "
    "process the cluster's token: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<token> (or "
    "RAY_AUTH_TOKEN_PATH=<file>; default ~/.ray/auth_token; `ray get-auth-token` on the head "
    "node prints it); or use the Ray Client address cluster.address=ray://<head>:10001"
)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port`` or ``ray://host:port``; None for ``auto`` and the like."""
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def _unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why nothing can be reached at `address` (connection refused, no such host, no answer),
    or None when something accepts connections there (or the address names no host:port)."""
    target = _host_port(address)
    if target is None:
        return None
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError as err:
        what = err.strerror or type(err).__name__
        if isinstance(err, TimeoutError):
            what = f"no answer within {timeout_s:g} s"
        return (
            f"nothing answers at {target[0]}:{target[1]} ({what.lower()}); check the address "
            "(a head's port is 6379 unless `ray start --port` chose another; `ray status` on the "
            "head shows it) and that the cluster is up"
        )
    return None


def _join_failure(err: BaseException) -> str:
    """What `ray.init` 's failure means, from the error and the errors it chains."""
    chain, seen = [], set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    text = "\n".join(chain)
    if "InvalidAuthToken" in text or "Authentication" in text or "Unauthenticated" in text:
        return (
            "the cluster refused this driver: it uses token authentication (Ray's default for "
            "`ray start` clusters) and this process sent no token, or a wrong one"
        )
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else 'no reason given'}"
