"""The worker side of `earshot index --ray --shards`: `ShardWriter`, a Ray Data actor holding
one model (loaded once from the model folder's bytes the driver sends, and refused where the
node resolves another backbone), which turns shard plans into written shards. For each file of
a plan it fetches the file (a local copy of an S3 object), decodes and windows it exactly as
`earshot.embed.embed_file` does, embeds its windows in batches, and writes the shard in one
piece; a bad file is skipped with its reason, recorded in the shard. `ShardWriter.around` is
the same writer in this process, without Ray (one machine, tests, `bench/bench_scale.py`).
The driver, which plans the shards and records them, is `scale/indexer.py`.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from earshot.errors import EarshotError
from earshot.scale.shards import ShardError, ShardFile, encode_shard, read_shard_files
from earshot.scale.storage import Location, S3Options

# Windows embedded together: a multiple of the CNN batch, so the batches are embed_file's own.
_CHUNK_BATCHES = 8


class ShardWriter:
    """A Ray Data actor: one model, loaded once; turns shard plans into written shards."""

    def __init__(
        self,
        model_files: dict,
        expected_model_id: str,
        shards_uri: str,
        s3: dict,
        batch_size: int = 8,
        precision: str = "fp32",
    ):
        from earshot.model.io import load_model, model_id

        self._dir = tempfile.mkdtemp(prefix="earshot-model-")
        for name, data in model_files.items():
            Path(self._dir, name).write_bytes(data)
        model = load_model(self._dir, with_text=False)
        if model_id(model) != expected_model_id:
            raise EarshotError(
                f"the model loaded on this node is {model_id(model)}, not "
                f"{expected_model_id}: its backbone weights differ from the driver's"
            )
        self._setup(model, expected_model_id, shards_uri, s3, batch_size, precision)

    @classmethod
    def around(
        cls, model, shards_uri: str, s3: dict | None = None, batch_size=8, precision="fp32"
    ) -> ShardWriter:
        """A writer in this process around a loaded model: no Ray (one machine, tests)."""
        from earshot.model.io import model_id

        writer = cls.__new__(cls)
        writer._setup(model, model_id(model), shards_uri, s3 or {}, batch_size, precision)
        return writer

    def _setup(self, model, mid, shards_uri, s3, batch_size, precision) -> None:
        self.model = model
        self.model_id = mid
        self.s3 = S3Options(**s3)
        self.loc = Location(shards_uri, self.s3)
        self.batch_size = batch_size
        self.precision = precision
        self.tag_names = tuple(getattr(self.model, "tag_names", ()) or ())
        self.shards_done = 0

    def __call__(self, batch: dict) -> dict:
        import json

        out: dict[str, list] = {k: [] for k in ("name", "report")}
        for name, plan in zip(batch["name"], batch["plan"], strict=True):
            report = self.write_shard(str(name), json.loads(plan))
            out["name"].append(str(name))
            out["report"].append(json.dumps(report))
        return out

    def write_shard(self, name: str, plan: list) -> dict:
        stages = dict.fromkeys(("fetch", "decode", "embed", "write"), 0.0)
        files: list[ShardFile] = []
        windows: list = []
        if self.loc.exists(name):  # a retry of a task whose shard was written: keep it
            with contextlib.suppress(ShardError):
                _, files = read_shard_files(self.loc, name)
                return self._report(name, files, None, stages, reused=True)
        delay = float(os.environ.get("EARSHOT_TEST_SHARD_DELAY_S", 0) or 0)
        for file_id, uri, version in plan:
            if delay:  # fault tests: time to kill this worker while it holds a shard
                time.sleep(delay)
            self._one(int(file_id), uri, version, files, windows, stages)
        t = time.perf_counter()
        data = encode_shard(self.model_id, self.model.config.joint_dim, files, windows)
        self.loc.write_bytes(name, data)
        stages["write"] += time.perf_counter() - t
        self.shards_done += 1
        report = self._report(name, files, len(windows), stages, size=len(data))
        ray = sys.modules.get("ray")  # not imported by a writer in this process (no Ray)
        if ray is not None and ray.is_initialized():
            report["node"] = ray.get_runtime_context().get_node_id()[:12]
        return report

    def _report(self, name, files, n_windows, stages, reused=False, size=0) -> dict:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "name": name,
            "files": [f.as_json() for f in files],
            "windows": n_windows,
            "bytes": size,
            "reused": reused,
            "stages": stages,
            "pid": os.getpid(),
            "peak_rss_mb": round(peak_kb / 1024, 1),
        }

    def _one(self, file_id, uri, version, files, windows, stages) -> None:
        from earshot.index.build import NOT_FINITE
        from earshot.index.decoding import decode_entry, decoded_length, unexpected
        from earshot.index.scan import ScanEntry
        from earshot.index.tag_blobs import encode_tags
        from earshot.scale.storage import local_copy

        size, mtime_ns = (int(x) for x in version.split(":"))
        base = ShardFile(file_id, uri, version)
        t = time.perf_counter()
        try:
            with local_copy(uri, self.s3) as path:
                stages["fetch"] += time.perf_counter() - t
                t = time.perf_counter()
                decoded = decode_entry(
                    ScanEntry(path, size, mtime_ns), self.model.config.audio, False
                )
                if decoded.vanished:
                    return
                if decoded.error is not None:
                    base.reason = decoded.error
                    files.append(base)
                    return
                vectors, tags, spans = self._embed(path, stages, t)
        except FileNotFoundError:
            return  # gone since it was listed
        except EarshotError as e:  # AudioDecodeError while streaming, StorageError
            base.reason = getattr(e, "reason", None) or str(e)
            files.append(base)
            return
        except OSError as e:
            base.reason = f"cannot read it ({e.strerror or e})"
            files.append(base)
            return
        except Exception as e:  # per file, never the shard
            base.reason = unexpected(e)
            files.append(base)
            return
        if not spans:
            base.reason = "no audio in the file"
        elif not (np.isfinite(vectors).all() and (tags is None or np.isfinite(tags).all())):
            base.reason = NOT_FINITE
        if base.reason is not None:
            files.append(base)
            return
        record = decoded_length(decoded.record, spans[-1][1])
        files.append(
            ShardFile(
                file_id,
                uri,
                version,
                record.content_hash,
                record.duration_s,
                record.sample_rate,
                record.channels,
                record.format,
                record.subtype,
                {k: str(v) for k, v in record.tags.items()},
                embedded=None if record.meta is None else dict(record.meta),
            )
        )
        for i, ((s, e), v) in enumerate(zip(spans, vectors, strict=True)):
            blob = None if tags is None else encode_tags(tags[i], len(self.tag_names))
            windows.append((file_id, i, s, e, v, blob))

    def _embed(self, path: str, stages: dict, t: float):
        """embed_file's vectors (same batches: chunks are whole CNN batches, in order)."""
        from earshot.audio.windows import window_file
        from earshot.embed import encode_windows

        chunk = self.batch_size * _CHUNK_BATCHES
        spans, pending, vectors, tags = [], [], [], []

        def flush() -> None:
            nonlocal t
            stages["decode"] += time.perf_counter() - t
            t = time.perf_counter()
            v, p = encode_windows(self.model, np.stack(pending), self.batch_size, self.precision)
            vectors.append(v)
            if p is not None:
                tags.append(p)
            pending.clear()
            stages["embed"] += time.perf_counter() - t
            t = time.perf_counter()

        for w in window_file(path, self.model.config.audio):
            spans.append((w.start_s, w.end_s))
            pending.append(w.samples)
            if len(pending) == chunk:
                flush()
        if pending:
            flush()
        stages["decode"] += time.perf_counter() - t
        if not spans:
            return None, None, []
        return np.concatenate(vectors), (np.concatenate(tags) if tags else None), spans
