"""The shard format: what `earshot index --shards` writes and `search --shards` reads.

A shard location (a folder or `s3://bucket/prefix`) holds:

- `shard-<first file id>-<digest>.parquet`, immutable once written: one row per window
  (`file_id`, `window`, `start_s`, `end_s`, `vector` as dim float16 numbers in one
  fixed-size binary, `tags` as the catalogue's top-tag blob or null), and in the Parquet
  footer's key-value metadata, under `earshot`, a JSON document with the model id and every
  file of the shard (id, URI, version = size:mtime, content hash, length, rate, channels,
  format, metadata tags; or the reason it was skipped). A shard is written whole (see
  `storage.Location.write_bytes`), so a reader either finds it complete or not at all.
- `manifest.json`, rewritten whole after each shard: the model binding (id, dim, tag names,
  window settings), the shards, `next_file_id`, and the files removed since (tombstones).

Which row counts: file ids only grow (a changed file gets a new id in a new shard), so for each
URI the largest id found in any listed shard is its current version, unless a tombstone with
that id or a larger one says the file is gone. A shard whose files are all superseded or gone
is dropped from the manifest and deleted. Segment ids are `file_id << SEGMENT_BITS | window`.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from earshot.errors import EarshotError
from earshot.scale.storage import Location

FORMAT = "earshot-shards"
VERSION = 1
MANIFEST = "manifest.json"
SHARD_PREFIX = "shard-"
SEGMENT_BITS = 20  # windows per file: 2^20 (1456 hours at a 5 s hop)


class ShardError(EarshotError):
    """A shard location that cannot be used as it is (another model, a damaged shard)."""


@dataclass
class ShardFile:
    """One file of a shard: indexed (`reason` None) or skipped, with why."""

    id: int
    uri: str
    version: str
    content_hash: str = ""
    duration_s: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    format: str = ""
    subtype: str = ""
    meta: dict = field(default_factory=dict)  # soundfile's tag strings (FileRecord.tags)
    reason: str | None = None
    # The embedded metadata record (FileRecord.meta: description, keywords, UCS...); None in
    # shards written before it was kept.
    embedded: dict | None = None

    def as_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Manifest:
    model_id: str
    dim: int
    model_info: dict
    tag_names: list[str]
    next_file_id: int = 1
    shards: dict[str, dict] = field(default_factory=dict)  # name -> {files, windows, bytes}
    removed: dict[str, int] = field(default_factory=dict)  # uri -> the last id it had

    def as_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **self.__dict__}

    @classmethod
    def from_json(cls, doc: Mapping, where: str) -> Manifest:
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise ShardError(f"{where} is not an earshot shard manifest (version {VERSION})")
        keys = (
            "model_id",
            "dim",
            "model_info",
            "tag_names",
            "next_file_id",
            "shards",
            "removed",
        )
        try:
            return cls(**{k: doc[k] for k in keys})
        except KeyError as e:
            raise ShardError(f"{where} lacks '{e.args[0]}': it is damaged") from None


def load_manifest(loc: Location) -> Manifest | None:
    try:
        raw = loc.read_bytes(MANIFEST)
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ShardError(f"{loc.uri}/{MANIFEST} is not JSON: it is damaged") from None
    return Manifest.from_json(doc, f"{loc.uri}/{MANIFEST}")


def save_manifest(loc: Location, manifest: Manifest) -> None:
    loc.write_bytes(MANIFEST, json.dumps(manifest.as_json(), ensure_ascii=False).encode())


def shard_name(files: Sequence[tuple[int, str, str]]) -> str:
    """The name of the shard of these planned (id, uri, version) files: the same plan gives
    the same name, so a retried task overwrites its own shard and never adds a second one."""
    digest = hashlib.blake2b(json.dumps(list(files)).encode(), digest_size=6).hexdigest()
    return f"{SHARD_PREFIX}{files[0][0]:010d}-{digest}.parquet"


def _schema(dim: int):
    import pyarrow as pa

    return pa.schema(
        [
            ("file_id", pa.int64()),
            ("window", pa.int32()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("vector", pa.binary(2 * dim)),
            ("tags", pa.binary()),
        ]
    )


def encode_shard(
    model_id: str,
    dim: int,
    files: Sequence[ShardFile],
    windows: Iterable[tuple[int, int, float, float, np.ndarray, bytes | None]],
) -> bytes:
    """Parquet bytes of a shard: `windows` are (file id, window, start, end, (dim,) vector,
    tag blob or None)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(windows)
    vectors = (
        np.stack([np.asarray(r[4], dtype="<f2") for r in rows])
        if rows
        else np.empty((0, dim), "<f2")
    )
    if vectors.shape[1] != dim:
        raise ValueError(f"vectors are {vectors.shape[1]}-d, the manifest says {dim}")
    table = pa.table(
        {
            "file_id": pa.array([r[0] for r in rows], pa.int64()),
            "window": pa.array([r[1] for r in rows], pa.int32()),
            "start_s": pa.array([r[2] for r in rows], pa.float64()),
            "end_s": pa.array([r[3] for r in rows], pa.float64()),
            "vector": pa.array([v.tobytes() for v in vectors], pa.binary(2 * dim)),
            "tags": pa.array([r[5] for r in rows], pa.binary()),
        },
        schema=_schema(dim),
    )
    meta = {"format": FORMAT, "version": VERSION, "model_id": model_id, "dim": dim}
    meta["files"] = [f.as_json() for f in files]
    table = table.replace_schema_metadata({"earshot": json.dumps(meta, ensure_ascii=False)})
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    return out.getvalue()


@dataclass
class Shard:
    name: str
    model_id: str
    dim: int
    files: list[ShardFile]
    file_id: np.ndarray  # (n,) int64, per window
    window: np.ndarray  # (n,) int32
    start_s: np.ndarray  # (n,) float64
    end_s: np.ndarray
    vectors: np.ndarray  # (n, dim) float16
    tags: list[bytes | None]

    @property
    def segment_ids(self) -> np.ndarray:
        return (self.file_id << SEGMENT_BITS) | self.window.astype(np.int64)


def _meta_of(schema_metadata, where: str) -> dict:
    raw = (schema_metadata or {}).get(b"earshot")
    if raw is None:
        raise ShardError(f"{where} has no earshot metadata: not a shard earshot wrote")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise ShardError(f"{where} has damaged earshot metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ShardError(f"{where} is not an earshot shard of version {VERSION}")
    return meta


def read_shard_files(loc: Location, name: str) -> tuple[str, list[ShardFile]]:
    """A shard's model id and files, from its footer only."""
    import pyarrow.parquet as pq

    where = f"{loc.uri}/{name}"
    try:
        with loc.fs.open_input_file(loc.path(name)) as f:
            meta = _meta_of(pq.read_schema(f).metadata, where)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        if isinstance(e, FileNotFoundError):
            raise
        raise ShardError(f"cannot read shard {where}: {e}") from None
    return meta["model_id"], [ShardFile(**f) for f in meta["files"]]


def read_shard(loc: Location, name: str) -> Shard:
    import pyarrow.parquet as pq

    where = f"{loc.uri}/{name}"
    try:
        table = pq.read_table(io.BytesIO(loc.read_bytes(name)))
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        if isinstance(e, FileNotFoundError):
            raise
        raise ShardError(f"cannot read shard {where}: {e}") from None
    meta = _meta_of(table.schema.metadata, where)
    dim = int(meta["dim"])
    blob = b"".join(table.column("vector").to_pylist())
    vectors = np.frombuffer(blob, dtype="<f2").reshape(table.num_rows, dim)
    return Shard(
        name,
        meta["model_id"],
        dim,
        [ShardFile(**f) for f in meta["files"]],
        table.column("file_id").to_numpy().astype(np.int64),
        table.column("window").to_numpy().astype(np.int32),
        table.column("start_s").to_numpy(),
        table.column("end_s").to_numpy(),
        vectors,
        table.column("tags").to_pylist(),
    )


def current_files(
    loc: Location, manifest: Manifest
) -> tuple[dict[str, tuple[ShardFile, str]], set[int]]:
    """uri -> (its current ShardFile, the shard holding it), and the ids of every file row
    that no longer counts (superseded by a newer id, or removed)."""
    latest: dict[str, tuple[ShardFile, str]] = {}
    every: list[int] = []
    for name in manifest.shards:
        _, files = read_shard_files(loc, name)
        for f in files:
            every.append(f.id)
            if f.uri not in latest or f.id > latest[f.uri][0].id:
                latest[f.uri] = (f, name)
    for uri, gone_id in manifest.removed.items():
        if uri in latest and latest[uri][0].id <= gone_id:
            del latest[uri]
    live = {f.id for f, _ in latest.values()}
    return latest, {i for i in every if i not in live}
