"""`earshot merge-shards URI --db cat.db`: the shards' current files into a normal catalogue,
for when one machine is enough to search them (no Ray needed: the shards are read here).

Each file is written as `earshot index` writes it (`Catalogue.put_file`, one transaction per
shard), with the shard's float16 vectors as they are and its windows' top tags (a window's
tags are the catalogue's own quantised blob, so they come back as they were stored). Skipped
files are recorded as skipped. A catalogue bound to another model is refused.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from earshot.fsutil import absolute
from earshot.index.schema import FileRecord
from earshot.index.tag_blobs import decode_tags
from earshot.scale.shards import ShardError, current_files, load_manifest, read_shard
from earshot.scale.storage import Location


def merge_shards(shards_uri: str, db: str | Path, path_map: dict[str, str] | None = None) -> dict:
    """`path_map`: URI prefix -> local folder, for recordings in a bucket that the catalogue
    should find on this machine (a catalogue holds file paths; an s3:// URI is not one)."""
    from earshot.index.store import Catalogue
    from earshot.scale.storage import is_s3

    path_map = dict(path_map or {})

    def local(uri: str) -> str:
        for prefix, folder in path_map.items():
            if uri == prefix or uri.startswith(prefix.rstrip("/") + "/"):
                rest = uri[len(prefix.rstrip("/")) :].lstrip("/")
                return str(Path(absolute(folder)) / rest)
        if is_s3(uri):
            raise ShardError(
                f"'{uri}' is in a bucket, and a catalogue holds file paths: give --map "
                f"s3://BUCKET/PREFIX=DIR for a local copy of the recordings"
            )
        return uri

    loc = Location(shards_uri)
    manifest = load_manifest(loc)
    if manifest is None:
        raise ShardError(f"no shards at {loc.uri}: nothing to merge")
    latest, _ = current_files(loc, manifest)
    by_shard: dict[str, list[int]] = defaultdict(list)
    for f, name in latest.values():
        by_shard[name].append(f.id)
    out = {"db": str(db), "files": 0, "skipped": 0, "segments": 0, "shards": len(by_shard)}
    with Catalogue(db) as cat:
        cat.bind_model(
            manifest.model_id, manifest.dim, manifest.model_info, tag_names=manifest.tag_names
        )
        for name in manifest.shards:
            if name not in by_shard:
                continue
            shard = read_shard(loc, name)
            with cat.batch():
                done = write_shard(cat, shard, set(by_shard[name]), local)
            for key in ("files", "skipped", "segments"):
                out[key] += done[key]
        out["catalogue"] = cat.stats()
    return out


def write_shard(cat, shard, wanted: set[int], local=lambda uri: uri, keep_ids: bool = False):
    """Put the files of `shard` whose ids are in `wanted` into catalogue `cat` (inside the
    caller's batch), as `earshot index` writes them; `local` maps a URI to the path stored.
    `keep_ids`: the catalogue's file and segment ids are the shard's (`file_id << 20 |
    window`), so catalogues made from different shards never share an id
    (`earshot.scale.search`'s actors). Returns {"files", "skipped", "segments"}."""
    names = cat.tag_names
    out = {"files": 0, "skipped": 0, "segments": 0}
    for f in shard.files:
        if f.id not in wanted:
            continue
        size, mtime_ns = (int(x) for x in f.version.split(":"))
        if f.reason is not None:
            cat.put_skipped(local(f.uri), size, mtime_ns, f.reason, f.id if keep_ids else None)
            out["skipped"] += 1
            continue
        rows = np.flatnonzero(shard.file_id == f.id)
        rows = rows[np.argsort(shard.window[rows], kind="stable")]
        segments = [
            (shard.start_s[i], shard.end_s[i], shard.vectors[i].astype(np.float32)) for i in rows
        ]
        tags = None
        if names:
            tags = np.zeros((len(rows), len(names)), np.float32)
            for j, i in enumerate(rows):
                e = decode_tags(shard.tags[i])
                tags[j, e["tag"].astype(np.int64)] = e["q"] / 255
        record = FileRecord(
            path=local(f.uri),
            size=size,
            mtime_ns=mtime_ns,
            content_hash=f.content_hash,
            duration_s=f.duration_s,
            sample_rate=f.sample_rate,
            channels=f.channels,
            format=f.format,
            subtype=f.subtype,
            tags=dict(f.meta),
            meta=f.embedded,
        )
        ids = {}
        if keep_ids:
            ids = {"file_id": f.id, "segment_ids": shard.segment_ids[rows].tolist()}
        cat.put_file(record, segments, tags, **ids)
        out["files"] += 1
        out["segments"] += len(segments)
    return out
