"""The driver's catalogue over shards held by Ray actors (`ShardCatalogue`, for
`scale/search.py`'s `ShardSearcher`): it answers the reads `earshot.search.Searcher` and the
server make of a catalogue by asking the `ShardIndex` actors that own the ids in question (a
file id's owner is known from the plan; a segment id carries its file id), or all of them,
merging what they answer (counts summed, rankings merged, facets combined). It writes nothing.
A file's segment vectors, read with its segments, are kept (the `VECTOR_CACHE` most recent).
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Sequence

import numpy as np

from earshot.scale.shards import SEGMENT_BITS, ShardError

VECTOR_CACHE = 4096  # segment vectors the driver keeps (a file's, read with its segments)


class ShardCatalogue:
    """The catalogue reads `earshot.search.Searcher` and the server make, answered by the
    `ShardIndex`es: a read naming files or segments goes to the actors owning them; one over
    every file goes to all of them, and their answers are merged in the catalogue's order."""

    readonly = True
    generation = 1  # shards are loaded once; nothing changes while they are served
    removals = 0
    uuid = None

    def __init__(self, uri: str, manifest, indexes: list, remote: bool, infos: list[dict]):
        self.path = uri
        self.manifest = manifest
        self.model_id = manifest.model_id
        self.dim = manifest.dim
        self.model_info = dict(manifest.model_info)
        self.tag_names = tuple(manifest.tag_names)
        self.indexes = indexes
        self.remote = remote
        files = [np.asarray(i["files"], np.int64) for i in infos]
        owner = [np.full(len(f), n, np.int32) for n, f in enumerate(files)]
        fids = np.concatenate(files) if files else np.empty(0, np.int64)
        order = np.argsort(fids, kind="stable")
        self._fids = fids[order]
        self._owner = (np.concatenate(owner) if owner else np.empty(0, np.int32))[order]
        self._vectors: OrderedDict[int, np.ndarray] = OrderedDict()
        self._tags: OrderedDict[int, list | None] = OrderedDict()  # None: no tags stored
        self._lock = threading.Lock()
        self._described: bool | None = None

    # -- asking the actors ------------------------------------------------------------------
    def _run(self, calls: dict[int, tuple[str, tuple, dict]]) -> dict[int, object]:
        """{actor: (its method, args, kwargs)} → {actor: its answer}, all asked at once."""
        if not self.remote:
            return {i: getattr(self.indexes[i], m)(*a, **kw) for i, (m, a, kw) in calls.items()}
        import ray

        keys = list(calls)
        refs = [
            getattr(self.indexes[i], calls[i][0]).remote(*calls[i][1], **calls[i][2]) for i in keys
        ]
        try:
            answers = ray.get(refs)
        except ray.exceptions.RayTaskError:
            raise  # the read's own error (a SearchError...), as the catalogue raises it
        except ray.exceptions.RayError as e:
            raise ShardError(
                f"a shard index did not answer ({type(e).__name__}: {str(e)[:200]}); Ray "
                "restarts it: try again in a moment"
            ) from None
        return dict(zip(keys, answers, strict=True))

    def _all(self, method: str, *args, **kwargs) -> list:
        """`Catalogue.<method>` of every actor, in actor order."""
        out = self._run({i: ("call", (method, args, kwargs), {}) for i in range(len(self.indexes))})
        return [out[i] for i in range(len(self.indexes))]

    def owner(self, file_id: int) -> int | None:
        at = int(np.searchsorted(self._fids, int(file_id)))
        if at < len(self._fids) and self._fids[at] == int(file_id):
            return int(self._owner[at])
        return None

    def _split(self, ids, shift: int = 0) -> dict[int, np.ndarray]:
        """`ids` (file ids; segment ids with shift=SEGMENT_BITS) by the actor owning them,
        in their order; ids nobody owns are left out."""
        ids = np.asarray(ids, np.int64).ravel()
        if not len(ids) or not len(self._fids):
            return {}
        files = ids >> shift
        at = np.minimum(np.searchsorted(self._fids, files), len(self._fids) - 1)
        known = self._fids[at] == files
        ids, who = ids[known], self._owner[at[known]]
        return {int(w): ids[who == w] for w in np.unique(who)}

    def _owned(self, method: str, ids: Sequence[int], shift: int = 0, *args) -> dict:
        """`Catalogue.<method>(ids, *args)` asked of the owners of `ids`: their dicts, merged."""
        parts = self._split(ids, shift)
        answers = self._run(
            {i: ("call", (method, (part.tolist(), *args), {}), {}) for i, part in parts.items()}
        )
        merged: dict = {}
        for i in sorted(answers):
            merged.update(answers[i])
        return merged

    def _one(self, method: str, file_id: int, *args):
        who = self.owner(file_id)
        if who is None:
            return None
        return self._run({who: ("call", (method, (int(file_id), *args), {}), {})})[who]

    # -- reads by id ------------------------------------------------------------------------
    def segments(self, ids: Sequence[int]) -> dict:
        return self._owned("segments", ids, SEGMENT_BITS)

    def segment_vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        ids = [int(i) for i in ids]
        with self._lock:
            found = {i: self._vectors[i] for i in ids if i in self._vectors}
        missing = [i for i in ids if i not in found]
        if missing:
            found.update(self._owned("segment_vectors", missing, SEGMENT_BITS))
        return {i: found[i] for i in ids if i in found}

    def segment_vector(self, segment_id: int) -> np.ndarray:
        from earshot.errors import CatalogueError

        found = self.segment_vectors([segment_id])
        if int(segment_id) not in found:
            raise CatalogueError(f"the shards at {self.path} have no segment {segment_id}")
        return found[int(segment_id)]

    def file_segments(self, file_id: int) -> list:
        who = self.owner(file_id)
        if who is None:
            return []
        segments, vectors, tags = self._run(
            {who: ("file_segments_and_vectors", (int(file_id),), {})}
        )[who]
        with self._lock:  # what comes next is usually their vectors or tags
            self._vectors.update(vectors)
            self._tags.update({s.segment_id: tags.get(s.segment_id) for s in segments})
            for cache in (self._vectors, self._tags):
                while len(cache) > VECTOR_CACHE:
                    cache.popitem(last=False)
        return segments

    def segment_tags(self, ids: Sequence[int]) -> dict:
        ids = [int(i) for i in ids]
        with self._lock:
            if all(i in self._tags for i in ids):  # a file's, read with its segments
                return {i: self._tags[i] for i in ids if self._tags[i] is not None}
        return self._owned("segment_tags", ids, SEGMENT_BITS)

    def files_windows(self, file_ids: Sequence[int]) -> dict:
        return self._owned("files_windows", file_ids)

    def file_facts(self, file_ids: Sequence[int]) -> dict:
        return self._owned("file_facts", file_ids)

    def file_meta(self, file_ids: Sequence[int], raw: bool = False) -> dict:
        return self._owned("file_meta", file_ids, 0, raw)

    def file(self, file_id: int) -> dict | None:
        return self._one("file", file_id)

    # -- reads over every file --------------------------------------------------------------
    def paths_by_hash(self, hashes: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
        merged: dict[str, list] = defaultdict(list)
        for part in self._all("paths_by_hash", list(hashes)):
            for digest, rows in part.items():
                merged[digest].extend(rows)
        return {d: sorted(rows) for d, rows in merged.items()}

    def file_id_for_path(self, path: str) -> int | None:
        return next((f for f in self._all("file_id_for_path", path) if f is not None), None)

    def _ids(self, method: str, *args, **kwargs) -> np.ndarray:
        parts = self._all(method, *args, **kwargs)
        return np.sort(np.concatenate([np.asarray(p, np.int64) for p in parts]))

    def file_ids_matching(self, *args, **kwargs) -> np.ndarray:
        return self._ids("file_ids_matching", *args, **kwargs)

    def segment_ids_matching(self, *args, **kwargs) -> np.ndarray:
        return self._ids("segment_ids_matching", *args, **kwargs)

    def file_ids_matching_keywords(self, *args, **kwargs) -> np.ndarray:
        return self._ids("file_ids_matching_keywords", *args, **kwargs)

    def files_with_tags(self, *args, **kwargs) -> dict:
        merged: dict = {}
        for part in self._all("files_with_tags", *args, **kwargs):
            merged.update(part)
        return merged

    def keyword_search(self, query: str, limit: int = 100) -> list[tuple[int, float]]:
        """BM25 over each actor's files, merged by score (each actor's own statistics)."""
        rows = [r for part in self._all("keyword_search", query, limit) for r in part]
        return sorted(rows, key=lambda r: (-r[1], r[0]))[: max(0, int(limit))]

    def path_word_counts(self, text: str, cap: int | None = None) -> dict[str, int]:
        """Summed over the actors' catalogues (each counted up to `cap`: a sum at or over it
        means at least `cap`)."""
        counts: Counter = Counter()
        for part in self._all("path_word_counts", text, cap):
            counts.update(part)
        return dict(counts)

    def ok_file_count(self) -> int:
        return sum(self._all("ok_file_count"))

    def has_described_files(self) -> bool:
        if self._described is None:
            self._described = any(self._all("has_described_files"))
        return self._described

    def max_segment_id(self) -> int:
        return max(self._all("max_segment_id"), default=0)

    def segment_count(self) -> int:
        return sum(self._all("segment_count"))

    def tag_file_counts(self, *args, **kwargs) -> list[tuple[str, int]]:
        counts: dict[str, int] = defaultdict(int)
        for part in self._all("tag_file_counts", *args, **kwargs):
            for name, n in part:
                counts[name] += n
        return sorted(counts.items(), key=lambda t: (-t[1], t[0].casefold()))

    def _summed(self, rows_of_actors, limit: int) -> list[tuple]:
        counts: dict = defaultdict(int)
        for rows in rows_of_actors:
            for value, n in rows:
                counts[value] += n
        return sorted(counts.items(), key=lambda t: (-t[1], t[0]))[: int(limit)]

    def folders(self, limit: int = 500) -> list[tuple[str, int]]:
        return self._summed(self._all("folders", 2**62), limit)

    def facets(self, limit: int = 50) -> dict[str, list[tuple]]:
        parts = self._all("facets", 2**62)
        return {
            key: self._summed([p[key] for p in parts], limit) for key in (parts[0] if parts else {})
        }

    def file_names(self, limit: int = 5000) -> tuple[list[str], list[dict]]:
        names, records = [], []
        for n, r in self._all("file_names", limit):
            names += n
            records += r
        return names[:limit], records

    def skipped(self) -> list[tuple[str, str]]:
        return sorted(r for part in self._all("skipped") for r in part)

    def skipped_files(self, limit: int | None = None, offset: int = 0) -> list[dict]:
        upto = None if limit is None else int(limit) + int(offset)
        rows = [r for part in self._all("skipped_files", upto, 0) for r in part]
        rows.sort(key=lambda r: r["path"])
        return rows[int(offset) : upto]

    def stats(self) -> dict:
        parts = self._all("stats")
        out = dict(parts[0]) if parts else {}
        for key in ("files_ok", "files_skipped", "segments", "hours", "db_bytes"):
            out[key] = sum(p[key] for p in parts)
        out["path"] = self.path
        out["generation"] = self.generation
        out["shards"] = len(self.manifest.shards)
        out["actors"] = len(self.indexes)
        return out

    def close(self) -> None:  # the searcher closes the actors
        pass
