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
from collections import defaultdict

import numpy as np

from earshot.errors import SearchError
from earshot.scale.cluster import connect, forwarded_env
from earshot.scale.shard_catalogue import ShardCatalogue
from earshot.scale.shard_index import ShardIndex
from earshot.scale.shards import SEGMENT_BITS, ShardError, current_files, load_manifest
from earshot.scale.storage import Location, S3Options
from earshot.search import Searcher


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
