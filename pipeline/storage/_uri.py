"""URIs: the one place that takes them apart and puts them together.

A URI is a local path (relative or absolute, optionally written ``file:///abs/path``) or a remote
object ``<scheme>://<container>/<key>`` of a scheme in `SCHEMES` (``s3://bucket/key``,
``az://container/blob``). Everything else in the pipeline asks this module: which scheme a URI has,
its container and key, how to join names onto it safely, its parent and last name, how a manifest's
relative path resolves against the manifest, whether it lies under the allowed input roots, and
which characters a name must not hold.

Adding a backend adds one row to `SCHEMES` (its naming rules and its backend module).
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from ._errors import StorageError


@dataclass(frozen=True)
class RemoteScheme:
    """How one remote scheme names its objects, and which backend serves it.

    Attributes:
        name: the scheme, lower case (``s3``).
        title: how messages call it (``S3``).
        container: what the first URI segment is called (``bucket``).
        container_re: a valid container name.
        container_rule: the rule in words, for messages.
        max_key_bytes: the longest key, in UTF-8 bytes.
        backend: the module of `pipeline.storage` that serves it (imported on first use).
        example: a URI for messages (``s3://bucket/key``).
        extra: the optional dependency group (pyproject) its backend needs, if any.
    """

    name: str
    title: str
    container: str
    container_re: re.Pattern[str]
    container_rule: str
    max_key_bytes: int
    backend: str
    example: str
    extra: str | None = None


SCHEMES: dict[str, RemoteScheme] = {
    "s3": RemoteScheme(
        name="s3",
        title="S3",
        container="bucket",
        container_re=re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,254}$"),
        container_rule="3-255 letters, digits, '.', '-' or '_'",
        max_key_bytes=1024,
        backend="_s3",
        example="s3://bucket/key",
    ),
    "az": RemoteScheme(
        name="az",
        title="Azure",
        container="container",
        container_re=re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$"),
        container_rule="3-63 lower-case letters, digits or single '-' between them",
        max_key_bytes=1024,
        backend="_azure",
        example="az://container/blob",
        extra="azure",
    ),
}
"""Remote schemes by name. A URI with no scheme (or ``file://``) is local."""

LOCAL_BACKEND = "_local"

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

# Characters that look like or act as path separators once rendered or normalised (NFKC maps
# only some of them to '/' or '\').
SEPARATOR_LOOKALIKES = frozenset(
    "\u1735"  # PHILIPPINE SINGLE PUNCTUATION
    "\u2044"  # FRACTION SLASH
    "\u2215"  # DIVISION SLASH
    "\u2216"  # SET MINUS
    "\u2571"  # BOX DRAWINGS LIGHT DIAGONAL UPPER RIGHT TO LOWER LEFT
    "\u2572"  # BOX DRAWINGS LIGHT DIAGONAL UPPER LEFT TO LOWER RIGHT
    "\u29f5"  # REVERSE SOLIDUS OPERATOR
    "\u29f8"  # BIG SOLIDUS
    "\u29f9"  # BIG REVERSE SOLIDUS
    "\ufe68"  # SMALL REVERSE SOLIDUS
    "\uff0f"  # FULLWIDTH SOLIDUS
    "\uff3c"  # FULLWIDTH REVERSE SOLIDUS
)
# Control, format (zero-width, bidi overrides), surrogate, private-use, unassigned, line/para sep.
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


# --------------------------------------------------------------------------------------------
# Schemes
# --------------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """An endpoint URL without user-info, query or fragment (they may carry credentials, a SAS
    token is a query), for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def listing_prefix(key: str) -> str:
    """The key prefix that lists what lies below the folder ``key`` ("" for a whole container)."""
    return key if not key or key.endswith("/") else key + "/"


def scheme_of(uri: str) -> str | None:
    """The URI's scheme in lower case (``s3``, ``file``, ``https``), None for a plain path."""
    match = _SCHEME_RE.match(uri) if isinstance(uri, str) else None
    return match.group(1).lower() if match else None


def remote_scheme(uri: str) -> RemoteScheme | None:
    """The `RemoteScheme` of ``uri``, None when it is local (or of an unknown scheme)."""
    scheme = scheme_of(uri)
    return SCHEMES.get(scheme) if scheme else None


def is_s3(uri: str) -> bool:
    """Whether ``uri`` is an ``s3://`` URI (anything else is taken as local)."""
    return isinstance(uri, str) and uri[:5].lower() == "s3://"


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names an object of a remote store (``s3://``, ``az://``), not a local file."""
    return remote_scheme(uri) is not None


def has_scheme(uri: str) -> bool:
    """Whether ``uri`` starts with some ``scheme://`` (known or not)."""
    return scheme_of(uri) is not None


def backend_module(uri: str) -> str:
    """The module of `pipeline.storage` serving ``uri``: the remote scheme's, else the local one
    (which refuses unknown schemes with a message that names the supported ones)."""
    rules = remote_scheme(uri)
    return rules.backend if rules else LOCAL_BACKEND


def _supported_text() -> str:
    examples = ["a local path", "file:///abs/path", *(rules.example for rules in SCHEMES.values())]
    return f"{', '.join(examples[:-1])} or {examples[-1]}"


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def check_uri(uri: str) -> None:
    """Reject values that are not URI strings or that hold NUL, before any use."""
    if not isinstance(uri, str):
        raise StorageError(f"a URI must be a str, got {type(uri).__name__}: {uri!r}")
    if not uri:
        raise StorageError("a URI must not be empty", uri=uri)
    if "\x00" in uri:
        raise StorageError(f"URI {uri!r} contains a NUL character", uri=uri)


def split(uri: str, *, need_key: bool = True) -> tuple[str, str]:
    """Split a remote ``scheme://container/key`` into ``(container, key)``, checking the scheme's
    naming rules; the key may be empty if not ``need_key``."""
    check_uri(uri)
    rules = remote_scheme(uri)
    if rules is None:
        raise StorageError(f"{uri!r} is not a remote object URI ({_supported_text()})", uri=uri)
    container, _, key = uri[len(rules.name) + 3 :].partition("/")
    if not rules.container_re.match(container):
        raise StorageError(
            f"invalid {rules.container} name {container!r} in {uri!r}: expected "
            f"{rules.name}://{rules.container}/key with a {rules.container} of "
            f"{rules.container_rule}",
            uri=uri,
        )
    if need_key and (not key or key.endswith("/")):
        raise StorageError(
            f"{uri!r} names no object: expected {rules.name}://{container}/<key> with a key not "
            "ending in '/'",
            uri=uri,
        )
    if len(key.encode("utf-8", "surrogatepass")) > rules.max_key_bytes:
        raise StorageError(
            f"{rules.title} key of {uri!r} is longer than {rules.max_key_bytes} bytes", uri=uri
        )
    return container, key


def parse_s3(uri: str, *, need_key: bool = True) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; the key may be empty if not ``need_key``."""
    return split(uri, need_key=need_key)


def make(scheme: str, container: str, key: str = "") -> str:
    """The URI of ``key`` in ``container`` of a remote ``scheme`` (the container alone if no key)."""
    return f"{scheme}://{container}/{key}" if key else f"{scheme}://{container}"


def local_path(uri: str) -> str:
    """Turn a local URI (``file:///x``, ``/x``, ``x``) into a path; reject other schemes."""
    check_uri(uri)
    scheme = scheme_of(uri)
    if scheme is None:
        return uri
    if scheme in SCHEMES:
        raise StorageError(f"{uri!r} is an {SCHEMES[scheme].title} URI, not a local path", uri=uri)
    if scheme != "file":
        raise StorageError(
            f"unsupported URI scheme {scheme!r} in {uri!r}; use {_supported_text()}",
            uri=uri,
        )
    parsed = urllib.parse.urlsplit(uri)
    if parsed.netloc not in ("", "localhost"):
        raise StorageError(
            f"file URI {uri!r} names host {parsed.netloc!r}; only file:///abs/path (no host) is "
            "supported",
            uri=uri,
        )
    path = urllib.parse.unquote(parsed.path)
    if not path or "\x00" in path:
        raise StorageError(f"file URI {uri!r} has no usable path", uri=uri)
    return path


def absolute_local_path(uri: str) -> str | None:
    """The absolute local path of a local URI; None for a remote one."""
    if is_remote(uri):
        return None
    return os.path.abspath(local_path(uri))


# --------------------------------------------------------------------------------------------
# Names and joining
# --------------------------------------------------------------------------------------------


def segment_problem(segment: str) -> str | None:
    """Why one ``/``-separated segment of a join() part is unsafe, or None if it is fine."""
    if segment == "":
        return "it has an empty segment (a leading, doubled or trailing '/')"
    if segment in (".", ".."):
        return f"{segment!r} segments are not allowed"
    for char in segment:
        if char == "\x00":
            return "it contains a NUL character"
        if char == "\\":
            return "it contains a backslash"
        if char in SEPARATOR_LOOKALIKES:
            return f"it contains {unicodedata.name(char, hex(ord(char)))} (U+{ord(char):04X}), which looks like a path separator"
        category = unicodedata.category(char)
        if category in FORBIDDEN_CATEGORIES:
            return f"it contains U+{ord(char):04X} (Unicode category {category}: control, format or unassigned)"
    normalised = unicodedata.normalize("NFKC", segment)
    if "/" in normalised or "\\" in normalised or normalised in (".", ".."):
        return f"it normalises (NFKC) to {normalised!r}, a path separator or dot segment"
    return None


def _check_part(index: int, part: str) -> None:
    """Raise `StorageError` if one join() part could escape the base or is otherwise unsafe."""
    if not isinstance(part, str):
        raise StorageError(f"join(): part {index} must be a str, got {type(part).__name__}")
    if part.startswith("/") or has_scheme(part):
        raise StorageError(
            f"join(): part {index} ({part!r}) is absolute; parts must be relative names"
        )
    for segment in part.split("/"):
        problem = segment_problem(segment)
        if problem is not None:
            raise StorageError(
                f"join(): part {index} ({part!r}) is refused because {problem}; parts must be "
                "relative names without '..', '\\', NUL or control characters"
            )


def join(uri: str, *parts: str) -> str:
    """Append relative ``parts`` to ``uri``; refuse any part that could escape it.

    Each part may hold several ``/``-separated names. Refused (`StorageError` naming the part and
    why): absolute parts, empty, ``.`` or ``..`` segments, NUL and control characters, backslashes,
    bidi/zero-width format characters, and Unicode lookalikes of ``/`` and ``\\`` (also after NFKC
    normalisation). Local URIs come back as plain paths (``file://`` dropped).
    """
    for index, part in enumerate(parts):
        _check_part(index, part)
    rules = remote_scheme(uri)
    if rules is not None:
        container, key = split(uri, need_key=False)
        prefix = key.rstrip("/")
        return make(rules.name, container, "/".join(([prefix] if prefix else []) + list(parts)))
    return posixpath.join(local_path(uri), *parts)


def parent(uri: str) -> str:
    """The URI one level up: ``s3://b/a/x`` -> ``s3://b/a``; ``s3://b/x`` -> ``s3://b``."""
    rules = remote_scheme(uri)
    if rules is not None:
        container, key = split(uri, need_key=False)
        return make(rules.name, container, posixpath.dirname(key.rstrip("/")))
    path = local_path(uri)
    stripped = path.rstrip("/") or "/"
    return posixpath.dirname(stripped) or "."


def basename(uri: str) -> str:
    """The last name of the URI (``s3://b/a/x.mp4`` -> ``x.mp4``; a bucket alone -> ``""``)."""
    if is_remote(uri):
        _, key = split(uri, need_key=False)
        return posixpath.basename(key.rstrip("/"))
    return posixpath.basename(local_path(uri).rstrip("/"))


def relative_path(target_uri: str, folder_uri: str) -> str | None:
    """``target_uri`` relative to the folder ``folder_uri`` ('/'-separated, may climb with
    ``..``); None when no relative path leads there (another store, scheme or container)."""
    if is_remote(target_uri) != is_remote(folder_uri):
        return None
    if not is_remote(target_uri):
        target, folder = absolute_local_path(target_uri), absolute_local_path(folder_uri)
        assert target is not None and folder is not None  # both local
        return os.path.relpath(target, folder).replace(os.sep, "/")
    if scheme_of(target_uri) != scheme_of(folder_uri):
        return None
    try:
        container, key = split(target_uri, need_key=False)
        folder_container, folder_key = split(folder_uri, need_key=False)
    except StorageError:
        return None
    if container != folder_container:
        return None
    return posixpath.relpath("/" + key, "/" + folder_key.rstrip("/") or "/")


# --------------------------------------------------------------------------------------------
# Manifest paths: normalising, resolving against the manifest, allowed roots
# --------------------------------------------------------------------------------------------


def normalise(uri_or_path: str | os.PathLike[str]) -> str:
    """A remote URI with its scheme in lower case; a local path made absolute (``~`` expanded)."""
    text = os.fspath(uri_or_path)
    rules = remote_scheme(text)
    if rules is not None:
        return f"{rules.name}://{text[len(rules.name) + 3 :]}"
    return os.path.abspath(os.path.expanduser(text))


def _allowed_schemes_text() -> str:
    names = ["local paths", *(f"{name}://" for name in SCHEMES)]
    return f"{', '.join(names[:-1])} and {names[-1]}"


def resolve(value: str, base_uri: str) -> tuple[str, str | None]:
    """Resolve a path written in the file ``base_uri`` (a manifest) against it.

    Returns ``(resolved, None)``, or ``(value, what is wrong)`` (the problem reads after the
    column name: "is not a full S3 object URI ...").
    """
    rules = remote_scheme(value)
    if rules is not None:
        rest = value[len(rules.name) + 3 :]
        container, _, key = rest.partition("/")
        if not container or not key or key.endswith("/"):
            return value, (
                f"is not a full {rules.title} object URI (expected "
                f"{rules.name}://{rules.container}/key/of/file)"
            )
        return f"{rules.name}://{rest}", None
    scheme = _SCHEME_RE.match(value)
    if scheme:
        return (
            value,
            f"uses the unsupported scheme {scheme.group(1)!r}:// (allowed: {_allowed_schemes_text()})",
        )
    expanded = os.path.expanduser(value)
    if expanded.startswith("~"):
        return value, f"starts with {expanded.split('/')[0]!r}, which names no known user"
    if os.path.isabs(expanded):
        return os.path.normpath(expanded), None
    base_rules = remote_scheme(base_uri)
    if base_rules is not None:
        container, _, key = base_uri[len(base_rules.name) + 3 :].partition("/")
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(key), expanded))
        if joined == ".." or joined.startswith("../"):
            return value, f"climbs above the top of {base_rules.container} {container!r}"
        return make(base_rules.name, container, joined), None
    return os.path.normpath(os.path.join(os.path.dirname(base_uri), expanded)), None


def split_roots(roots: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[str]]:
    """Allowed input roots as (real local folders, remote prefixes ending in '/')."""
    local: list[str] = []
    remote: list[str] = []
    for root in roots:
        text = os.fspath(root)
        if is_remote(text):
            remote.append(normalise(text).rstrip("/") + "/")
        else:
            local.append(os.path.realpath(os.path.expanduser(text)))
    return local, remote


def inside_roots(resolved: str, local_roots: list[str], remote_roots: list[str]) -> bool | None:
    """Whether ``resolved`` lies in an allowed root; None when no root applies to it."""
    if is_remote(resolved):
        if not remote_roots:
            return None
        return any(resolved.startswith(root) for root in remote_roots)
    real = os.path.realpath(resolved)
    return any(os.path.commonpath([real, root]) == root for root in local_roots)
