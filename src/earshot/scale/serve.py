"""`earshot serve --shards URI`: the page and HTTP API of `earshot serve`, over shards.

The app is `earshot.serve.app.create_app`'s, unchanged, over a `ShardService`: the catalogue's
`Service` with the shards' `ShardSearcher` and `ShardCatalogue` (`earshot.scale.search`,
`earshot.scale.shard_catalogue`) in
place of a catalogue and its `Searcher`. Every route answers as it does over a catalogue;
files are named by the shards' file ids. A recording held in a bucket is played, drawn and cut
from a local copy fetched through `scale/storage` on first use and kept while the server runs
(the `LOCAL_COPIES` most recently used).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict

from earshot.errors import ApiError
from earshot.scale.storage import Location, S3Options, is_s3
from earshot.serve.service import Service, Settings

LOCAL_COPIES = 64


class LocalCopies:
    """Local copies of recordings held in a bucket, by (file id, size, mtime), in a folder of
    their own that `close` removes."""

    def __init__(self, s3: S3Options | None = None, keep: int = LOCAL_COPIES):
        self.s3 = s3 or S3Options.from_env()
        self.keep = keep
        self.folder: str | None = None  # made on the first copy: most servers need none
        self._paths: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, info: dict) -> str:
        key = (info["id"], info["size"], info["mtime_ns"])
        with self._lock:  # one download at a time: a page asks for audio and peaks together
            if key in self._paths:
                self._paths.move_to_end(key)
                return self._paths[key]
            uri = info["path"]
            if self.folder is None:
                self.folder = tempfile.mkdtemp(prefix="earshot-serve-s3-")
                weakref.finalize(self, shutil.rmtree, self.folder, True)
            suffix = os.path.splitext(uri)[1]
            local = os.path.join(self.folder, f"{info['id']}-{info['mtime_ns']}{suffix}")
            loc = Location(uri.rsplit("/", 1)[0], self.s3)
            try:
                with (
                    open(local + ".part", "wb") as out,
                    loc.fs.open_input_stream(uri[len("s3://") :]) as src,
                ):
                    shutil.copyfileobj(src, out, 1 << 20)
                os.replace(local + ".part", local)
            except Exception as e:  # pyarrow's errors, a vanished object, no room
                with contextlib.suppress(OSError):
                    os.unlink(local + ".part")
                raise ApiError(404, f"cannot fetch '{uri}' from its bucket: {e}") from None
            self._paths[key] = local
            while len(self._paths) > self.keep:
                _, old = self._paths.popitem(last=False)
                with contextlib.suppress(OSError):
                    os.unlink(old)
            return local

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class ShardService(Service):
    """`Service` over a `ShardSearcher`: its catalogue reads go to the shard actors."""

    def __init__(self, searcher, model, settings: Settings):
        super().__init__(searcher.cat, model, settings, searcher=searcher)
        self.copies = LocalCopies()

    def playable(self, raw_id: str) -> dict:
        info = self.file(raw_id)
        if not is_s3(info["path"]):
            return super().playable(raw_id)
        if info["status"] != "ok":
            raise ApiError(
                404, f"file {info['id']} was skipped at indexing: {info.get('skip_reason')}"
            )
        return {**info, "path": self.copies.path(info)}

    def close(self) -> None:
        self.copies.close()
        self.searcher.close()


def create_shard_app(searcher, settings: Settings, model=None, untrained: bool = False):
    """The page and API over `searcher` (a ShardSearcher); `model`: the one to encode queries
    and examples with (default: the searcher's)."""
    from dataclasses import replace

    from earshot.serve.app import create_app

    settings = replace(settings, untrained=untrained) if untrained else settings
    service = ShardService(searcher, model if model is not None else searcher.model, settings)
    app = create_app(service=service)
    app.state.searcher = searcher
    return app
