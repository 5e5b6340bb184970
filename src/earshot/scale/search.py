"""`earshot search --shards URI` / `earshot serve --shards URI`: scatter a query over Ray
actors holding the shards in FAISS indexes, gather the top windows, rank files as the
catalogue does.

Each `ShardIndex` actor reads its share of the shards (whole shards, a contiguous run of the
manifest), keeps the rows that count (`shards.current_files`: superseded and removed files
left out), and builds the same FAISS index the catalogue's search builds (`earshot.index.ann`:
exact inner product over float16 codes below 50,000 windows, IVF above). A query goes to every
actor at once; each answers its best `pool` windows; the driver keeps each file's best window
and ranks the files, widening the pool until k files appear, as `earshot.search.Searcher`
does. The hits are `earshot.search.Hit`s: the same path, span, score and tags as a catalogue
built from the same files gives (only the ids differ: a shard's are `file_id << 20 | window`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from earshot.errors import SearchError
from earshot.scale.indexer import connect, forwarded_env
from earshot.scale.shards import ShardError, current_files, load_manifest, read_shard
from earshot.scale.storage import Location, S3Options


class ShardIndex:
    """A Ray actor: some shards in one FAISS index, and what a hit needs of their rows."""

    def __init__(self, shards_uri: str, s3: dict, names: Sequence[str], dead: Sequence[int]):
        from earshot.index.ann import build

        loc = Location(shards_uri, S3Options(**s3))
        dead_ids = set(int(i) for i in dead)
        ids, vectors, starts, ends, tags = [], [], [], [], []
        self.files: dict[int, dict] = {}
        for name in names:
            shard = read_shard(loc, name)
            keep = np.array([int(f) not in dead_ids for f in shard.file_id], dtype=bool)
            for f in shard.files:
                if f.id not in dead_ids and f.reason is None:
                    self.files[f.id] = {
                        "uri": f.uri,
                        "duration_s": f.duration_s,
                        "format": f.format,
                        "sample_rate": f.sample_rate,
                        "channels": f.channels,
                    }
            ids.append(shard.segment_ids[keep])
            vectors.append(shard.vectors[keep])
            starts.append(shard.start_s[keep])
            ends.append(shard.end_s[keep])
            tags.extend(t for t, k in zip(shard.tags, keep, strict=True) if k)
        dim = None
        self.ids = np.concatenate(ids) if ids else np.empty(0, np.int64)
        order = np.argsort(self.ids, kind="stable")
        self.ids = self.ids[order]
        self.starts = (np.concatenate(starts) if starts else np.empty(0))[order]
        self.ends = (np.concatenate(ends) if ends else np.empty(0))[order]
        self.tags = [tags[i] for i in order]
        vecs = np.concatenate(vectors) if vectors else None
        if vecs is not None and len(vecs):
            dim = vecs.shape[1]
            self.ann = build(self.ids, vecs[order], 0, 0)
        else:
            self.ann = None
        self.dim = dim

    def count(self) -> int:
        return len(self.ids)

    def stats(self) -> dict:
        import os
        import resource

        return {
            "pid": os.getpid(),
            "windows": len(self.ids),
            "files": len(self.files),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }

    def search(self, query: np.ndarray, pool: int) -> list[tuple]:
        """The best `pool` windows: (score, segment id, file id, start, end, tag blob, uri,
        duration, format, sample rate, channels)."""
        if self.ann is None:
            return []
        scores, ids = self.ann.search(np.asarray(query, np.float32)[None], min(pool, len(self.ids)))
        out = []
        for score, sid in zip(scores[0], ids[0], strict=True):
            if sid < 0:
                continue
            at = int(np.searchsorted(self.ids, sid))
            file_id = int(sid) >> 20
            f = self.files[file_id]
            out.append(
                (
                    float(score),
                    int(sid),
                    file_id,
                    float(self.starts[at]),
                    float(self.ends[at]),
                    self.tags[at],
                    f["uri"],
                    f["duration_s"],
                    f["format"],
                    f["sample_rate"],
                    f["channels"],
                )
            )
        return out


class ShardSearcher:
    """Search the shards at `shards_uri` with `model` (a JointModel or QueryModel whose id is
    the shards' model), on the Ray cluster at `address`, over `actors` ShardIndex actors.
    `address=None`: no Ray, the ShardIndexes in this process (tests, one machine)."""

    def __init__(
        self, shards_uri: str, model, address: str | None = "auto", actors: int | None = None
    ):
        from earshot.model.io import model_id

        s3 = S3Options.from_env()
        self.loc = Location(shards_uri, s3)
        manifest = load_manifest(self.loc)
        if manifest is None or not manifest.shards:
            raise SearchError(f"no shards at {self.loc.uri}: run `earshot index --shards` first")
        if model_id(model) != manifest.model_id:
            raise SearchError(
                f"the shards at {self.loc.uri} hold vectors of model {manifest.model_id}, not "
                f"{model_id(model)}: search with the model that indexed them"
            )
        self.model = model
        self.manifest = manifest
        self.tag_names = list(manifest.tag_names)
        self.remote = address is not None
        _, dead = current_files(self.loc, manifest)
        names = list(manifest.shards)
        if not self.remote:
            n = max(1, min(actors or 1, len(names)))
            groups = [names[i::n] for i in range(n)]
            self.indexes = [ShardIndex(self.loc.uri, s3.as_dict(), g, sorted(dead)) for g in groups]
            self.counts = [x.count() for x in self.indexes]
            self.total = sum(self.counts)
            return
        import ray

        connect(address, forwarded_env())
        n = max(1, min(actors or int(ray.cluster_resources().get("CPU", 1)), len(names)))
        groups = [names[i::n] for i in range(n)]
        remote = ray.remote(num_cpus=0, scheduling_strategy="SPREAD", max_restarts=2)(ShardIndex)
        dead_ids = sorted(dead)  # by value: usually few, and a restarted actor needs them
        self.indexes = [remote.remote(self.loc.uri, s3.as_dict(), g, dead_ids) for g in groups]
        try:
            self.counts = ray.get([a.count.remote() for a in self.indexes])
        except ray.exceptions.RayError as e:
            raise ShardError(f"cannot load the shards at {self.loc.uri}: {str(e)[:500]}") from None
        self.total = sum(self.counts)

    def _all(self, method: str, *args) -> list:
        """`method` of every index at once (scattered to the actors), their answers in order."""
        if not self.remote:
            return [getattr(x, method)(*args) for x in self.indexes]
        import ray

        return ray.get([getattr(a, method).remote(*args) for a in self.indexes])

    def stats(self) -> list[dict]:
        return self._all("stats")

    def close(self) -> None:
        if self.remote:
            import ray

            for a in self.indexes:
                ray.kill(a)
        self.indexes = []

    def search_text(self, text: str, k: int = 10) -> list:
        if not text or not text.strip():
            raise SearchError("empty query: describe the sound you are looking for")
        query = self.model.encode_text([text]).numpy()[0]
        return self.search_vector(query, k)

    def search_vector(self, query: np.ndarray, k: int = 10) -> list:
        """Top `k` files by their best window, as `Searcher.search_vector` ranks them."""
        from earshot.search import Hit

        if k < 1:
            raise SearchError("k must be at least 1")
        if self.total == 0:
            return []
        query = np.asarray(query, np.float32)
        pool = min(self.total, max(50, 10 * k))
        while True:
            parts = self._all("search", query, pool)
            best: dict[int, tuple] = {}
            for row in (r for part in parts for r in part):
                if row[2] not in best or row[0] > best[row[2]][0]:
                    best[row[2]] = row
            # Long files fill the pool with their own windows: widen it until k files appear.
            if len(best) >= k or pool >= max(self.counts):
                break
            pool = min(self.total, pool * 4)
        ranked = sorted(best.values(), key=lambda r: (-r[0], r[1]))[:k]
        return [
            Hit(
                rank=rank,
                path=uri,
                start_s=start,
                end_s=end,
                score=score,
                file_id=file_id,
                segment_id=sid,
                duration_s=duration,
                format=fmt,
                tags=tuple(self._named(blob)),
                sample_rate=rate,
                channels=channels,
            )
            for rank, (
                score,
                sid,
                file_id,
                start,
                end,
                blob,
                uri,
                duration,
                fmt,
                rate,
                channels,
            ) in enumerate(ranked, 1)
        ]

    def _named(self, blob: bytes | None) -> list[tuple[str, float]]:
        from earshot.index.schema import decode_tags

        names = self.tag_names
        entries = decode_tags(blob) if names else decode_tags(None)
        return [
            (names[t], q / 255)
            for t, q in zip(entries["tag"].tolist(), entries["q"].tolist(), strict=True)
            if t < len(names)
        ]
