"""`earshot search --shards URI` / `earshot serve --shards URI`: the catalogue's own search,
over shards held by Ray actors.

One search path, not two. Each `ShardIndex` actor (`scale/shard_index.py`) builds, from its
share of the shards, a real `earshot` catalogue (SQLite in the actor's temporary folder,
written by `merge.write_shard`, the code `earshot merge-shards` uses, with the shards' own ids:
file ids are unique across shards, segment ids are `file_id << 20 | window`) and the FAISS
index the catalogue's search builds over it (`index.ann`). On the driver, `ShardSearcher` *is*
an `earshot.search.Searcher`: every ranking rule (filters, query syntax, negation, hybrid
fusion, tags, search by example, confidence bands, duplicate grouping, spans, paging, sorting)
runs unchanged, over a `ShardCatalogue` that answers the catalogue's reads by asking the actors
that own the ids in question (or all of them, merging what they answer), and a `ShardAnn` that
scatters a vector query to every actor and keeps the best windows of all.

What differs from one catalogue of the same files (docs/scale.md): keyword scores (BM25) use
each actor's own statistics, so hybrid and keyword-only rankings over several actors can
order files differently (one actor: the same); past 50,000 windows an actor's IVF index is
trained on its own share; above 4,096 windows the confidence sample is drawn per actor; ids are
the shards' (not a catalogue's). The shards are loaded once: a server does not see shards
written after it started.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Sequence

import numpy as np

from earshot.errors import SearchError
from earshot.scale.cluster import connect, forwarded_env
from earshot.scale.shard_index import ShardIndex
from earshot.scale.shards import SEGMENT_BITS, ShardError, current_files, load_manifest
from earshot.scale.storage import Location, S3Options
from earshot.search import Searcher

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


class ShardAnn:
    """`index.ann.AnnIndex.search` over every actor's index: each answers its best windows
    (among `allowed`, split by owner), the driver keeps the best `pool` of them all."""

    def __init__(self, cat: ShardCatalogue, counts: list[int]):
        self.cat = cat
        self.counts = counts
        self.count = int(sum(counts))
        self._split: tuple[object, dict[int, np.ndarray]] | None = None

    def _allowed_by_actor(self, allowed: np.ndarray) -> dict[int, np.ndarray]:
        if self._split is None or self._split[0] is not allowed:  # Searcher caches `allowed`
            self._split = (allowed, self.cat._split(allowed, SEGMENT_BITS))
        return self._split[1]

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None):
        query = np.asarray(queries, np.float32)[0]
        parts = self._allowed_by_actor(allowed_ids) if allowed_ids is not None else None
        calls = {}
        for i, n in enumerate(self.counts):
            mine = None if parts is None else parts.get(i)
            if n == 0 or (parts is not None and mine is None):
                continue
            calls[i] = ("ann_search", (query, min(int(k), n), mine), {})
        answers = self.cat._run(calls)
        scores = np.full((1, k), -np.inf, dtype=np.float32)
        ids = np.full((1, k), -1, dtype=np.int64)
        if answers:
            s = np.concatenate([answers[i][0] for i in sorted(answers)])
            d = np.concatenate([answers[i][1] for i in sorted(answers)])
            best = np.lexsort((d, -s))[:k]
            scores[0, : len(best)] = s[best]
            ids[0, : len(best)] = d[best]
        return scores, ids


class ShardSearcher(Searcher):
    """`Searcher` over the shards at `shards_uri` with `model` (a JointModel or QueryModel
    whose id is the shards' model; a JointModel for search by example), on the Ray cluster at
    `address`, over `actors` ShardIndex actors. `address=None`: no Ray, the ShardIndexes in
    this process (tests, one machine)."""

    def __init__(
        self,
        shards_uri: str,
        model,
        address: str | None = "auto",
        actors: int | None = None,
        scratch: str | None = None,
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
        self.manifest = manifest
        self.tag_names = list(manifest.tag_names)
        self.remote = address is not None
        latest, _dead = current_files(self.loc, manifest)
        by_shard: dict[str, list[int]] = defaultdict(list)
        for f, name in latest.values():
            by_shard[name].append(f.id)
        names = [n for n in manifest.shards if n in by_shard]
        args = (manifest.model_id, manifest.dim, dict(manifest.model_info), self.tag_names, scratch)
        if self.remote:
            import ray

            connect(address, forwarded_env())
            n = actors or int(ray.cluster_resources().get("CPU", 1))
        else:
            n = actors or 1
        n = max(1, min(n, len(names)))
        groups = [{name: by_shard[name] for name in names[i::n]} for i in range(n)]
        if not self.remote:
            self.indexes = []
            try:
                for g in groups:
                    self.indexes.append(ShardIndex(self.loc.uri, s3.as_dict(), g, *args))
            except BaseException:
                self.close()
                raise
            infos = [x.info() for x in self.indexes]
        else:
            import ray

            # Reads only: a call caught by an actor's restart is safely run again on the new one.
            remote = ray.remote(
                num_cpus=0, scheduling_strategy="SPREAD", max_restarts=2, max_task_retries=2
            )(ShardIndex)
            self.indexes = [remote.remote(self.loc.uri, s3.as_dict(), g, *args) for g in groups]
            try:
                infos = ray.get([a.info.remote() for a in self.indexes])
            except ray.exceptions.RayError as e:
                self.close()
                raise ShardError(
                    f"cannot load the shards at {self.loc.uri}: {str(e)[:500]}"
                ) from None
        self.counts = [int(i["windows"]) for i in infos]
        self.total = sum(self.counts)
        cat = ShardCatalogue(self.loc.uri, manifest, self.indexes, self.remote, infos)
        super().__init__(cat, model)
        self._shard_ann = ShardAnn(cat, self.counts)
        self._global_sample: np.ndarray | None = None

    # -- what a catalogue's Searcher builds from its catalogue, here from the actors --------
    def ann(self):
        return self._shard_ann

    def sample(self) -> np.ndarray:
        """All windows, by id, where there are at most SAMPLE_WINDOWS (the catalogue's
        sample exactly); else that many drawn at random, from each actor in proportion."""
        from earshot.confidence import SAMPLE_WINDOWS

        if self._global_sample is None:
            total = max(self.total, 1)
            want = [
                n if self.total <= SAMPLE_WINDOWS else round(SAMPLE_WINDOWS * n / total)
                for n in self.counts
            ]
            answers = self.cat._run({i: ("sample", (w, i), {}) for i, w in enumerate(want) if w})
            if answers:
                ids = np.concatenate([answers[i][0] for i in sorted(answers)])
                vectors = np.concatenate([answers[i][1] for i in sorted(answers)])
                self._global_sample = vectors[np.argsort(ids, kind="stable")]
            else:
                self._global_sample = np.zeros((0, self.cat.dim or 1), np.float32)
        return self._global_sample

    def stats(self) -> list[dict]:
        """Each actor's process, windows, files and peak memory."""
        return [
            a
            for _, a in sorted(
                self.cat._run({i: ("stats", (), {}) for i in range(len(self.indexes))}).items()
            )
        ]

    def close(self) -> None:
        """Remove the actors' catalogues and stop the actors."""
        indexes, self.indexes = getattr(self, "indexes", []), []
        if not self.remote:
            for x in indexes:
                x.close()
            return
        import ray

        with contextlib.suppress(Exception):
            ray.get([a.close.remote() for a in indexes], timeout=60)
        for a in indexes:
            with contextlib.suppress(Exception):
                ray.kill(a)
