"""One shard index: a Ray actor (or, without Ray, an object in the driver's process) that
builds, from its share of the shards, a real earshot catalogue in its temporary folder (with the
shards' own ids, through `merge.write_shard`) and the FAISS index over it, and answers the
catalogue reads `ShardCatalogue` (`scale/shard_catalogue.py`) and `ShardAnn` (`scale/search.py`)
ask of it (`READS`; no
writes). Its folder goes when it closes or its process ends; one a killed process left is swept
by the next (`sweep_dead_folders`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from earshot.scale.shards import ShardError
from earshot.scale.storage import Location, S3Options, is_s3

# The catalogue reads ShardCatalogue asks of the actors; nothing else (no writes) is answered.
READS = frozenset(
    {
        "segments",
        "segment_vectors",
        "file_segments",
        "segment_tags",
        "files_windows",
        "file_facts",
        "file_meta",
        "file",
        "paths_by_hash",
        "file_id_for_path",
        "file_ids_matching",
        "segment_ids_matching",
        "file_ids_matching_keywords",
        "files_with_tags",
        "keyword_search",
        "has_described_files",
        "path_word_counts",
        "ok_file_count",
        "max_segment_id",
        "segment_count",
        "tag_file_counts",
        "folders",
        "facets",
        "file_names",
        "skipped",
        "skipped_files",
        "stats",
    }
)


def _catalogue_class():
    from earshot.index.store import Catalogue

    class ActorCatalogue(Catalogue):
        """A catalogue whose paths may be s3:// URIs (recordings held in a bucket)."""

        def _check_path(self, path: str, doing: str) -> None:
            if not is_s3(path):
                super()._check_path(path, doing)

    return ActorCatalogue


FOLDER_PREFIX = "earshot-shards-"  # + the pid of the process holding it


def sweep_dead_folders(scratch: str | None = None) -> None:
    """Remove the catalogue folders of shard indexes whose process is gone (killed with
    SIGKILL, or its node's Ray worker stopped): they name their process id."""
    from earshot.fsutil import sweep_dead_pid_folders

    sweep_dead_pid_folders(scratch or tempfile.gettempdir(), FOLDER_PREFIX)


class ShardIndex:
    """A Ray actor (or, without Ray, an object in this process): a catalogue made from some
    shards (`wanted`: shard name -> the ids of its current files) and its FAISS index."""

    def __init__(
        self,
        shards_uri: str,
        s3: dict,
        wanted: dict[str, Sequence[int]],
        model_id: str,
        dim: int,
        model_info: dict,
        tag_names: Sequence[str],
        scratch: str | None = None,
    ):
        from earshot.index.ann import build
        from earshot.scale.merge import write_shard
        from earshot.scale.shards import read_shard

        loc = Location(shards_uri, S3Options(**s3))
        sweep_dead_folders(scratch)
        self.folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-", dir=scratch)
        # Removed by close(), else when this object or its process ends (atexit); a process
        # killed outright leaves it to the next index on the machine (sweep_dead_folders).
        weakref.finalize(self, shutil.rmtree, self.folder, True)
        try:
            self.cat = _catalogue_class()(Path(self.folder) / "shards.sqlite")
            self.cat.bind_model(model_id, dim, model_info, tag_names=tuple(tag_names))
            for name, ids in wanted.items():
                shard = read_shard(loc, name)
                with self.cat.batch():
                    write_shard(self.cat, shard, {int(i) for i in ids}, keep_ids=True)
            self.file_ids = np.array(sorted(int(i) for ids in wanted.values() for i in ids))
            ids, vectors = self.cat.vectors()
            self.ids = ids
            self.ann = (
                build(ids, vectors, self.cat.generation, self.cat.removals) if len(ids) else None
            )
        except BaseException:
            self.close()
            raise

    def info(self) -> dict:
        return {"files": self.file_ids, "windows": len(self.ids)}

    def count(self) -> int:
        return len(self.ids)

    def call(self, method: str, args: tuple = (), kwargs: dict | None = None):
        """One read of this actor's catalogue (`earshot.index.store.Catalogue.<method>`)."""
        if method not in READS:
            raise ShardError(f"'{method}' is not a catalogue read a shard index answers")
        return getattr(self.cat, method)(*args, **(kwargs or {}))

    def file_segments_and_vectors(self, file_id: int) -> tuple[list, dict, dict]:
        """A file's segments with their vectors and tags: what a read of its segments is
        followed by (best window, more like this, a tag search's best window)."""
        segments = self.cat.file_segments(file_id)
        ids = [s.segment_id for s in segments]
        return segments, self.cat.segment_vectors(ids), self.cat.segment_tags(ids)

    def ann_search(self, query: np.ndarray, pool: int, allowed: np.ndarray | None):
        """The best `pool` windows of this actor: (scores (pool,), ids (pool,))."""
        if self.ann is None:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        scores, ids = self.ann.search(np.asarray(query, np.float32).reshape(1, -1), pool, allowed)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of `n` of this actor's windows drawn at random (all of them, by id,
        where it has no more): what the confidence of a query's scores is measured against."""
        ids = self.ids
        if n < len(ids):
            ids = np.sort(np.random.default_rng(seed).choice(ids, n, replace=False))
        found = self.cat.segment_vectors(ids.tolist())
        dim = self.cat.dim or 1
        vectors = np.stack([found[int(i)] for i in ids]) if len(ids) else np.zeros((0, dim))
        return ids, vectors.astype(np.float32)

    def stats(self) -> dict:
        import resource

        return {
            "pid": os.getpid(),
            "windows": len(self.ids),
            "files": len(self.file_ids),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }

    def close(self) -> None:
        cat = getattr(self, "cat", None)
        if cat is not None:
            with contextlib.suppress(Exception):
                cat.close()
        shutil.rmtree(self.folder, ignore_errors=True)
