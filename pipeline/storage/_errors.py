"""The errors of `pipeline.storage`: every failure is a `StorageError` whose message names the URI
and says what to check (a missing object is a `NotFound`); credentials never appear in them."""

from __future__ import annotations

from typing import Any


class StorageError(RuntimeError):
    """A storage operation failed; the message says what to check.

    Attributes:
        uri: the URI the operation was about (``None`` when no single URI is involved).
        problem: what went wrong (the message without the advice).
        fix: what to do about it for this cause ("" when the message has no separate advice).
    """

    def __init__(self, message: str, *, uri: str | None = None, fix: str = "") -> None:
        super().__init__(f"{message}; {fix}" if fix else message)
        self.uri = uri
        self.problem = message
        self.fix = fix

    def __reduce__(self) -> tuple[Any, ...]:
        # keep uri, problem and fix (and a subclass's attributes) across pickling (Ray)
        return (type(self), (str(self),), self.__dict__)


class NotFound(StorageError):
    """The object or file does not exist."""


class CredentialsError(StorageError):
    """No usable credentials: none found, expired, or not accepted by the store (an unknown
    access key, a secret that does not match it)."""


class AccessDenied(StorageError):
    """The store knows the credentials but does not allow them this action on this object."""


class DiskFull(StorageError):
    """A local file system took no more data: no space left (ENOSPC), quota exceeded (EDQUOT)
    or a file-size limit reached (EFBIG). Nothing partial is left under the destination name.

    Attributes:
        reason: what happened, e.g. "no space left on device".
    """

    def __init__(self, message: str, *, uri: str | None = None, reason: str = "") -> None:
        super().__init__(message, uri=uri)
        self.reason = reason
