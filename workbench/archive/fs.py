"""Where the archive lives: a local folder or an ``s3://`` bucket, behind ``pyarrow.fs``.

Everything above this module sees one :class:`Location`: a pyarrow filesystem and a root
path in it. Only this module knows which backend it is, so adding one (``gs://``,
``abfs://``) touches this file alone.

``WORKBENCH_ARCHIVE_URI`` picks the location; unset, it is ``<state dir>/archive``
(``.workbench/archive`` in a checkout: git-ignored and kept by ``workbench down``, like
the embedded database's data). An ``s3://bucket/prefix`` URI goes to S3 or any
S3-compatible server (MinIO); its query string takes the endpoint options, and
credentials come from the usual AWS variables (``AWS_ACCESS_KEY_ID``, ...), never from
the URI::

    s3://lake/workbench?endpoint_override=localhost:9000&scheme=http&region=us-east-1

>>> default_uri(Settings(state_dir=Path("/srv/wb")))
'/srv/wb/archive'
>>> redact_uri("s3://b/p?endpoint_override=h:9000&secret_key=abc")
's3://b/p?endpoint_override=h:9000&secret_key=***'
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import pyarrow.fs as pafs

from workbench.config import Settings
from workbench.errors import ArchiveUnavailable

log = logging.getLogger(__name__)

#: Query options of an ``s3://`` URI that are passed on to ``pyarrow.fs.S3FileSystem``.
S3_OPTIONS = ("endpoint_override", "scheme", "region", "access_key", "secret_key",
              "session_token", "allow_bucket_creation")  # fmt: skip
_SECRET = ("secret_key", "session_token")


def default_uri(settings: Settings) -> str:
    """The configured archive URI, else ``<state dir>/archive``."""
    return settings.archive_uri or str(settings.state_dir / "archive")


def redact_uri(uri: str) -> str:
    """The URI fit for logs and output: secret query values replaced."""
    parts = urlsplit(uri)
    if not parts.query:
        return uri
    query = "&".join(f"{k}={'***' if k in _SECRET else v}" for k, v in parse_qsl(parts.query, True))
    return urlunsplit(parts._replace(query=query))


@dataclass(frozen=True)
class Location:
    """A root path in a pyarrow filesystem, and how to say where it is (``uri``, redacted)."""

    filesystem: pafs.FileSystem
    root: str
    uri: str

    @property
    def kind(self) -> str:
        """``local``, ``s3``, ... (pyarrow's type name)."""
        return self.filesystem.type_name

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def files(self, directory: str, recursive: bool = False) -> list[pafs.FileInfo]:
        """The files under ``directory`` (none if it does not exist), sorted by path."""
        selector = pafs.FileSelector(directory, allow_not_found=True, recursive=recursive)
        with self.reaching():
            infos = self.filesystem.get_file_info(selector)
        return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)

    def size(self, path: str) -> int:
        with self.reaching():
            return self.filesystem.get_file_info(path).size or 0

    def delete(self, path: str) -> None:
        with self.reaching():
            self.filesystem.delete_file(path)

    def write_atomic(self, path: str, write: Callable[[BinaryIO], Any]) -> Any:
        """Write a file so that readers see all of it or none of it, replacing any file of
        that name. Locally: into a hidden temporary file in the same folder (pyarrow
        datasets skip names starting with ``.``), then renamed. On S3 an object appears
        only when its upload completes, so it is written in place."""
        directory, name = path.rsplit("/", 1)
        with self.reaching():
            self.filesystem.create_dir(directory, recursive=True)
        if self.kind != "local":
            with self.reaching(), self.filesystem.open_output_stream(path) as out:
                return write(out)
        tmp = f"{directory}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with self.reaching(), self.filesystem.open_output_stream(tmp) as out:
                result = write(out)
            with self.reaching():
                self.filesystem.move(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.filesystem.delete_file(tmp)
            raise
        return result

    def open_input(self, path: str) -> pafs.NativeFile:
        with self.reaching():
            return self.filesystem.open_input_file(path)

    @contextlib.contextmanager
    def reaching(self) -> Iterator[None]:
        """Turn the filesystem's OSError (no such bucket, connection refused, permission
        denied) into one line that names the archive."""
        try:
            yield
        except OSError as exc:
            raise ArchiveUnavailable(self.uri, _first_line(exc)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def open_location(uri: str, timeout_s: float = 5.0) -> Location:
    """Resolve an archive URI (a path, ``file://``, ``s3://`` or anything
    ``pyarrow.fs.FileSystem.from_uri`` knows) and check that its root can be created."""
    shown = redact_uri(uri)
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    try:
        if scheme == "s3":
            filesystem, root = _s3(uri, timeout_s)
        elif scheme:
            filesystem, root = pafs.FileSystem.from_uri(uri)
        else:
            filesystem, root = pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
        location = Location(filesystem, root.rstrip("/") or "/", shown)
        filesystem.create_dir(location.root, recursive=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ArchiveUnavailable(shown, _first_line(exc)) from None
    log.debug("archive at %s (%s)", shown, location.kind)
    return location


def _s3(uri: str, timeout_s: float) -> tuple[pafs.FileSystem, str]:
    """An S3FileSystem with bounded timeouts and retries, so that an unreachable endpoint
    fails within a few seconds instead of the AWS SDK's minutes."""
    parts = urlsplit(uri)
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in S3_OPTIONS:
            raise ValueError(f"unknown option {key!r} (known: {', '.join(S3_OPTIONS)})")
        options[key] = value.lower() in {"1", "true", "yes"} if key.startswith("allow") else value
    options.setdefault("allow_bucket_creation", True)
    if "endpoint_override" in options:
        options.setdefault("region", "us-east-1")  # an S3-compatible server ignores it
    filesystem = pafs.S3FileSystem(
        connect_timeout=timeout_s,
        request_timeout=max(timeout_s, 10.0),
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3),
        **options,
    )
    return filesystem, f"{parts.netloc}{parts.path}"
