"""`earshot index PATH... --ray ADDRESS --shards URI`: decode and embed on a Ray cluster.

The driver (this process) lists the recordings (local or shared folders through
`earshot.index.scan`, `s3://` prefixes through pyarrow), compares them with the shards already
there (size and mtime; S3: LastModified), and plans the new and changed files into shards of
`files_per_shard`, each file given its id up front. The plan goes through Ray Data: a dataset of
shard plans mapped by an actor pool of `ShardWriter`s, each holding one model (loaded once,
from the model folder's bytes the driver sends), which fetches each file (a local copy of an S3
object), decodes and windows it exactly as `earshot.embed.embed_file` does, embeds its windows
in batches, and writes the shard in one piece. The driver records each finished shard in the
manifest as it arrives.

What a failure costs:
- a worker process killed (OOM, a node lost): Ray restarts the actor and retries its shard
  (Ray Data's actor pools default to `max_restarts=-1`, `max_task_retries=-1`: no limit; the
  map_batches keywords that set them otherwise are deprecated from Ray 2.60 and go in 2.64);
  the retry writes the same shard name (the plan's digest) with the same rows, so nothing is
  duplicated;
- the driver killed: the shards already written stay; the next run adopts any complete shard
  the manifest does not list yet, then plans only what no shard holds;
- one bad file: skipped with its reason, like `earshot index` (recorded in its shard).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from earshot.errors import EarshotError
from earshot.fsutil import absolute
from earshot.scale.cluster import connect, forwarded_env
from earshot.scale.shard_writer import ShardWriter
from earshot.scale.shards import (
    SHARD_PREFIX,
    Manifest,
    ShardError,
    ShardFile,
    current_files,
    load_manifest,
    read_shard_files,
    save_manifest,
    shard_name,
)
from earshot.scale.storage import Location, RemoteFile, S3Options, is_s3, list_recordings

FILES_PER_SHARD = 256


@dataclass
class ShardSummary:
    shards_uri: str
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    shards_written: int = 0
    shards_adopted: int = 0
    shards_deleted: int = 0
    shards: int = 0
    segments: int = 0
    seconds: float = 0.0
    stages: dict = field(default_factory=dict)  # summed over actors: fetch, decode, embed, write
    actors: list[dict] = field(default_factory=list)  # pid, node, shards, peak RSS

    def as_dict(self) -> dict:
        done = self.added + self.updated
        return {
            "shards_uri": self.shards_uri,
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "problems": self.problems,
            "shards_written": self.shards_written,
            "shards_adopted": self.shards_adopted,
            "shards_deleted": self.shards_deleted,
            "shards": self.shards,
            "segments_added": self.segments,
            "seconds": round(self.seconds, 2),
            "files_per_s": round(done / self.seconds, 2) if self.seconds else 0.0,
            "stages_s": {k: round(v, 3) for k, v in self.stages.items()},
            "actors": self.actors,
        }


def model_payload(model_dir: str | Path) -> dict[str, bytes]:
    """What an actor needs to load the model: the folder's config and weights, as bytes (a
    named backbone is resolved on each node, as `load_model` does anywhere)."""
    from earshot.model.io import model_files

    directory, _, weights = model_files(model_dir)
    return {
        "config.json": (directory / "config.json").read_bytes(),
        weights.name: weights.read_bytes(),
    }


def _under(uri: str, sources: Sequence[str]) -> bool:
    for s in sources:
        root = s.rstrip("/") if is_s3(s) else absolute(s)
        if uri == root or uri.startswith(root.rstrip("/") + "/"):
            return True
    return False


def index_to_shards(
    sources: Sequence[str],
    shards_uri: str,
    model,
    address: str = "auto",
    files_per_shard: int = FILES_PER_SHARD,
    actors: int | None = None,
    batch_size: int = 8,
    precision: str = "fp32",
    keep_missing: bool = False,
    progress: bool = False,
) -> ShardSummary:
    """Index `sources` into the shards at `shards_uri` on the Ray cluster at `address`, with
    `model` (a loaded model whose `source` is its folder). See the module docstring."""
    import json

    from earshot.model.io import model_id

    if files_per_shard < 1:
        raise EarshotError("--files-per-shard must be at least 1")
    start = time.perf_counter()
    s3 = S3Options.from_env()
    loc = Location(shards_uri, s3)
    summary = ShardSummary(loc.uri)
    mid = model_id(model)
    tag_names = list(getattr(model, "tag_names", ()) or ())
    manifest = load_manifest(loc)
    if manifest is None:
        manifest = Manifest(
            mid,
            model.config.joint_dim,
            {
                "encoder": model.config.encoder.name,
                "config": model.config.to_dict(),
                "path": getattr(model, "source", None),
            },
            tag_names,
        )
    elif manifest.model_id != mid:
        raise ShardError(
            f"the shards at {loc.uri} hold vectors of model {manifest.model_id}; this is model "
            f"{mid}: use another --shards location, or index with the model that made them"
        )
    # Complete shards a killed run wrote but never listed: adopted, not redone.
    for name in loc.names(SHARD_PREFIX):
        if not name.endswith(".parquet") or name in manifest.shards:
            continue
        try:
            owner, files = read_shard_files(loc, name)
        except ShardError:
            continue  # not ours or damaged: left alone, never listed
        if owner == mid and files:
            manifest.shards[name] = {"files": len(files), "windows": None, "bytes": 0}
            manifest.next_file_id = max(manifest.next_file_id, max(f.id for f in files) + 1)
            summary.shards_adopted += 1
    latest, _ = current_files(loc, manifest)
    listed, problems = list_recordings(list(sources), s3)
    summary.problems = problems
    unavailable = [
        p.split(" ", 1)[1].rsplit(" (", 1)[0] for p in problems if p.startswith("unavailable")
    ]
    todo: list[RemoteFile] = []
    seen = set()
    for f in listed:
        seen.add(f.uri)
        have = latest.get(f.uri)
        if have is not None and have[0].version == f.version:
            summary.unchanged += 1
        else:
            todo.append(f)
    if not keep_missing:
        for uri, (f, _) in latest.items():
            if uri not in seen and _under(uri, sources) and not _under(uri, unavailable):
                manifest.removed[uri] = f.id
                summary.removed += 1
    plans = []
    for at in range(0, len(todo), files_per_shard):
        group = [
            (manifest.next_file_id + i, f.uri, f.version)
            for i, f in enumerate(todo[at : at + files_per_shard])
        ]
        manifest.next_file_id += len(group)
        plans.append({"name": shard_name(group), "plan": json.dumps(group)})
    # Ids handed out are never handed out again, even if this run dies now.
    save_manifest(loc, manifest)
    stages = dict.fromkeys(("fetch", "decode", "embed", "write"), 0.0)
    actor_stats: dict[int, dict] = {}
    if plans:
        reports = _run_plans(
            plans, model, mid, loc, s3, address, actors, batch_size, precision, progress
        )
        for report in reports:
            files = [ShardFile(**f) for f in report["files"]]
            manifest.shards[report["name"]] = {
                "files": len(files),
                "windows": report["windows"],
                "bytes": report["bytes"],
            }
            save_manifest(loc, manifest)  # after each shard: a kill now loses nothing written
            summary.shards_written += 0 if report["reused"] else 1
            for f in files:
                if f.reason is not None:
                    summary.skipped.append((f.uri, f.reason))
                elif f.uri in latest:
                    summary.updated += 1
                else:
                    summary.added += 1
            summary.segments += report["windows"] or 0
            for k, v in report["stages"].items():
                stages[k] += v
            a = actor_stats.setdefault(
                report["pid"], {"pid": report["pid"], "node": report.get("node"), "shards": 0}
            )
            a["shards"] += 1
            a["peak_rss_mb"] = max(a.get("peak_rss_mb", 0), report["peak_rss_mb"])
    # Shards with nothing current left: out of the manifest first, then deleted.
    latest, _ = current_files(loc, manifest)
    holding = {name for _, name in latest.values()}
    empty = [n for n in manifest.shards if n not in holding]
    if empty:
        for n in empty:
            del manifest.shards[n]
        save_manifest(loc, manifest)
        for n in empty:
            loc.delete(n)
        summary.shards_deleted = len(empty)
    summary.shards = len(manifest.shards)
    summary.stages = stages
    summary.actors = list(actor_stats.values())
    summary.seconds = time.perf_counter() - start
    return summary


def _run_plans(plans, model, mid, loc, s3, address, actors, batch_size, precision, progress):
    """Yield each shard's report as Ray Data finishes it."""
    import json

    import ray
    import ray.data

    source = getattr(model, "source", None)
    if not source or not Path(source, "config.json").is_file():
        raise EarshotError("indexing on Ray needs a model folder (--model DIR), not --random-init")
    connect(address, forwarded_env())
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = False
    cpus = int(ray.cluster_resources().get("CPU", 1))
    size = max(1, min(actors or cpus, len(plans)))
    ds = ray.data.from_items(plans, override_num_blocks=len(plans))
    ds = ds.map_batches(
        ShardWriter,
        fn_constructor_kwargs={
            "model_files": model_payload(source),
            "expected_model_id": mid,
            "shards_uri": loc.uri,
            "s3": s3.as_dict(),
            "batch_size": batch_size,
            "precision": precision,
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=1 if size <= cpus else cpus / size,
        # A killed worker: its actor comes back and its shard is tried again. That is Ray
        # Data's default for actor pools (restarts and retries without limit); passing
        # max_restarts / max_task_retries here is the `**ray_remote_args` form Ray 2.60 warns
        # about (removed in 2.64), and no named parameter replaces it.
    )
    try:
        for row in ds.iter_rows():
            yield json.loads(row["report"])
    except ray.exceptions.RayError as e:
        raise EarshotError(f"the Ray job failed: {type(e).__name__}: {str(e)[:500]}") from None


def print_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
