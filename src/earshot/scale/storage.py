"""Where recordings and shards live: a local (or shared) folder, or `s3://bucket/prefix`.

Both go through pyarrow's file systems (`pyarrow.fs.LocalFileSystem`, `pyarrow.fs.S3FileSystem`),
the library Ray Data itself reads with. S3 takes its endpoint, region and credentials from
the usual AWS variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`) or from `S3Options`, which the driver hands to every Ray actor so that
the nodes read the bucket the driver was told of.

A write is whole or absent: locally a temporary file beside the target renamed over it
(earshot.fsutil), on S3 one PUT of the complete object (an S3 object appears only when its
upload completes). A reader never sees half of a shard or of a manifest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from earshot.errors import EarshotError
from earshot.fsutil import absolute


class StorageError(EarshotError):
    """A location that cannot be read or written (no such bucket, no permission, bad URI)."""


@dataclass(frozen=True)
class S3Options:
    endpoint: str | None = None  # e.g. http://127.0.0.1:5000 (moto, MinIO); None: AWS
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None

    @classmethod
    def from_env(cls, env: dict | None = None) -> S3Options:
        env = os.environ if env is None else env
        return cls(
            env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            env.get("AWS_ACCESS_KEY_ID") or None,
            env.get("AWS_SECRET_ACCESS_KEY") or None,
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RemoteFile:
    """A recording as listed: its URI (an absolute path for local files), size and mtime."""

    uri: str
    size: int
    mtime_ns: int

    @property
    def version(self) -> str:
        """What says the bytes changed: size and modification time (S3: LastModified, which
        every PUT renews)."""
        return f"{self.size}:{self.mtime_ns}"


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


class Location:
    """A folder or bucket prefix, with the few operations shards and recordings need."""

    def __init__(self, uri: str | os.PathLike, s3: S3Options | None = None):
        uri = os.fspath(uri)
        self.s3 = s3 or S3Options.from_env()
        if is_s3(uri):
            rest = uri[len("s3://") :].strip("/")
            if not rest:
                raise StorageError(f"'{uri}' names no bucket: use s3://BUCKET[/PREFIX]")
            self.uri = f"s3://{rest}"
            self.root = rest
            self.fs = _s3_filesystem(self.s3)
            self.local = False
        else:
            from pyarrow import fs as pafs

            path = Path(absolute(uri))
            self.uri = str(path)
            self.root = str(path)
            self.fs = pafs.LocalFileSystem()
            self.local = True

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def uri_of(self, fs_path: str) -> str:
        return fs_path if self.local else f"s3://{fs_path}"

    def exists(self, name: str) -> bool:
        from pyarrow import fs as pafs

        with self._errors(f"look for '{name}' in {self.uri}"):
            return self.fs.get_file_info(self.path(name)).type == pafs.FileType.File

    def read_bytes(self, name: str) -> bytes:
        with (
            self._errors(f"read '{name}' from {self.uri}"),
            self.fs.open_input_stream(self.path(name)) as f,
        ):
            return f.read()

    def write_bytes(self, name: str, data: bytes) -> None:
        """Whole or not at all (see the module docstring)."""
        if self.local:
            from earshot.fsutil import atomic_write_bytes

            target = Path(self.path(name))
            with self._errors(f"write '{name}' to {self.uri}"):
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, data)
            return
        with (
            self._errors(f"write '{name}' to {self.uri}"),
            self.fs.open_output_stream(self.path(name)) as f,
        ):
            f.write(data)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError), self._errors(f"delete '{name}'"):
            self.fs.delete_file(self.path(name))

    def names(self, prefix: str = "") -> list[str]:
        """Names of the files directly in this location starting with `prefix`."""
        from pyarrow import fs as pafs

        with self._errors(f"list {self.uri}"):
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        base = self.root.rstrip("/") + "/"
        return sorted(
            i.path[len(base) :]
            for i in infos
            if i.type == pafs.FileType.File and i.path[len(base) :].startswith(prefix)
        )

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as e:
            raise StorageError(f"cannot {doing}: {e}") from None


def _s3_filesystem(options: S3Options):
    from pyarrow import fs as pafs

    kwargs: dict = {}
    if options.endpoint:
        scheme, _, host = options.endpoint.partition("://")
        kwargs["endpoint_override"] = host or scheme
        kwargs["scheme"] = scheme if host else "https"
    if options.region:
        kwargs["region"] = options.region
    if options.access_key and options.secret_key:
        kwargs["access_key"] = options.access_key
        kwargs["secret_key"] = options.secret_key
    return pafs.S3FileSystem(**kwargs)


def list_recordings(
    sources: list[str], s3: S3Options | None = None
) -> tuple[list[RemoteFile], list[str]]:
    """Every audio file under `sources` (local files or folders, `s3://bucket/prefix`), each
    once, by URI; and the problems met (a missing root, a folder not read), as sentences.

    Local folders are walked by `earshot.index.scan` (loops, pipes, unreadable folders), as
    `earshot index` walks them; a bucket prefix is listed recursively and kept to the audio
    suffixes the scanner keeps."""
    from earshot.index.scan import AUDIO_SUFFIXES, ScanProblems, scan, shown

    found: dict[str, RemoteFile] = {}
    problems: list[str] = []
    local = [s for s in sources if not is_s3(s)]
    if local:
        scanned = ScanProblems()
        for entry in scan(local, scanned):  # scan gives each root its one spelling
            found.setdefault(entry.path, RemoteFile(entry.path, entry.size, entry.mtime_ns))
        problems += [f"unavailable: {shown(r)} ({why})" for r, why in scanned.missing_roots]
        problems += [f"folder not read: {shown(f)} ({why})" for f, why in scanned.folders]
        problems += [f"skipped: {p} ({why})" for p, why in scanned.files]
        problems += [f"skipped: {shown(e.path)} ({why})" for e, why in scanned.not_files]
    for source in (s for s in sources if is_s3(s)):
        from pyarrow import fs as pafs

        loc = Location(source, s3)
        try:
            infos = loc.fs.get_file_info(pafs.FileSelector(loc.root, recursive=True))
        except FileNotFoundError:
            problems.append(f"unavailable: {source} (no such bucket or prefix)")
            continue
        except OSError as e:
            raise StorageError(f"cannot list {source}: {e}") from None
        for info in infos:
            name = info.base_name
            audio = os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES and not name.startswith(
                "._"
            )
            if info.type != pafs.FileType.File or not audio:
                continue
            uri = loc.uri_of(info.path)
            found.setdefault(uri, RemoteFile(uri, int(info.size), int(info.mtime_ns or 0)))
    return sorted(found.values(), key=lambda f: f.uri), problems


@contextlib.contextmanager
def local_copy(uri: str, s3: S3Options | None = None, scratch: str | None = None):
    """A local path holding the recording at `uri`: the path itself for a local file, else a
    temporary copy (same suffix, so the decoder picks the same way), removed afterwards."""
    if not is_s3(uri):
        yield uri
        return
    loc = Location(uri.rsplit("/", 1)[0], s3)
    suffix = os.path.splitext(uri)[1]
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="earshot-s3-", dir=scratch)
    try:
        with os.fdopen(fd, "wb") as out, loc.fs.open_input_stream(uri[len("s3://") :]) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
