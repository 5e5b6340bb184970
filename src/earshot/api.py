"""The Python API: `earshot.Index`, mirroring `earshot index` and `earshot search`."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Index:
    """A catalogue of recordings and the model that embeds them.

    >>> idx = earshot.Index("sounds.sqlite", model="my-model")   # doctest: +SKIP
    >>> idx.add(["~/Recordings"])                                 # doctest: +SKIP
    >>> for hit in idx.search("a door creaks then slams", k=5):   # doctest: +SKIP
    ...     print(hit.path, hit.start_s, hit.end_s, hit.score)
    """

    def __init__(self, db: str | Path | None = None, model=None, progress: bool = False):
        from earshot.index.store import Catalogue

        self.catalogue = Catalogue(catalogue_path(db))
        try:
            choice = choose_model(model, self.catalogue)
        except BaseException:
            self.catalogue.close()
            raise
        self.model = choice.model
        self.untrained = choice.untrained
        self.progress = progress
        self._searcher = None

    def add(
        self,
        paths: str | Path | Iterable[str | Path],
        keep_missing: bool = False,
        workers: int | None = None,
        prune: bool = False,
    ):
        """Index files and folders (recursively); returns an `IndexSummary`.

        Files under a path that is unavailable (missing, or an empty folder where the
        catalogue has files: an unplugged or unmounted drive) are kept unless `prune`."""
        from earshot.index.build import Indexer

        if isinstance(paths, str | Path):
            paths = [paths]
        indexer = Indexer(self.catalogue, self.model, workers=workers, progress=self.progress)
        return indexer.run(list(paths), keep_missing=keep_missing, prune=prune)

    def searcher(self):
        from earshot.search import Searcher

        if self._searcher is None:
            self._searcher = Searcher(self.catalogue, self.model)
        return self._searcher

    def search(
        self,
        text: str | None = None,
        k: int = 10,
        hybrid: bool | None = None,
        *,
        offset: int = 0,
        sort: str = "score",
        spans: int = 1,
        **filters,
    ):
        """Files that sound like `text`, best first, each with its best-matching window, its
        `confidence` and `band` (good / weak / none). `text` takes the query syntax: -word,
        "exact phrase", dur:<30 ext:wav tag:dog folder:foley sr:>=48000 ch:2.

        Filters: folder, min_duration, max_duration, formats, and for a catalogue indexed by a
        tagging model tags=["Dog", ...] (every one required, any case; some window of the file
        has it at >= tag_min, default 0.3). With tags and no text: the files having the tags,
        likeliest first (`search_tags`). offset: hits passed over (paging); sort: score, name,
        duration or date (the 200 best by score, reordered within their bands, good first);
        spans: each file's best N spans.
        Returns `earshot.hits.Results`, a list of hits that also says whether more follow.
        """
        chosen = _filters(filters)
        page = {"offset": offset, "sort": sort, "spans": spans}
        if not (text and text.strip()) and chosen.tags:
            return self.searcher().search_tags((), k, chosen, **page)
        return self.searcher().search_text(text or "", k, chosen, hybrid=hybrid, **page)

    def search_tags(self, tags, k: int = 10, **filters):
        """Files having every one of `tags` (sound tag names), likeliest first."""
        return self.searcher().search_tags(tags, k, _filters(filters))

    def search_like(
        self,
        path: str | Path,
        k: int = 10,
        start: float | None = None,
        end: float | None = None,
        *,
        query: str | None = None,
        **filters,
    ):
        """Files that sound like `path` (or its span `start`-`end` seconds). `query`: more
        filters in the query syntax, no description ("ext:wav dur:<5 -rain"); the filters as
        in `search`."""
        searcher = self.searcher()
        chosen = searcher.example_filters(query, _filters(filters))
        return searcher.search_like(path, k, start, end, chosen)

    def stats(self) -> dict:
        return self.catalogue.stats()

    def close(self) -> None:
        self.catalogue.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _filters(kwargs: dict):
    from earshot.filters import Filters

    formats = kwargs.pop("formats", None)
    if isinstance(formats, str):
        formats = (formats,)
    tags = kwargs.pop("tags", None)
    if tags is not None and not isinstance(tags, str):
        tags = tuple(tags)
    try:
        return Filters(formats=tuple(formats) if formats else None, tags=tags, **kwargs)
    except TypeError:
        raise TypeError(
            f"unknown filter(s): {', '.join(kwargs)}; "
            "use folder, min_duration, max_duration, formats, tags, tag_min"
        ) from None


def catalogue_path(db: str | Path | None = None) -> Path:
    """The catalogue every command and `Index` open: `db` if given, else $EARSHOT_DB, else
    `catalogue.sqlite` in the user's data folder."""
    from earshot.index.connection import default_db_path

    return Path(db).expanduser() if db else default_db_path()


@dataclass(frozen=True)
class ModelChoice:
    """The model a command or `Index` works with, and what it is."""

    model: Any  # a JointModel, or for text queries a torch-free QueryModel (earshot.model.query)
    untrained: bool  # random weights (--random-init): its vectors mean nothing for search
    source: str  # the folder it was loaded from, or "random-init (cnn14, seed 0)"


# What the model is for: `all` (audio and text), `audio` (no sentence encoder: indexing, search
# by example, `info`), `query` (search by text, tags or segment: torch-free where it can be).
MODEL_USES = ("all", "audio", "query")


def choose_model(
    model=None,
    catalogue=None,
    *,
    use: str = "all",
    random_init: bool = False,
    encoder: str = "cnn14",
    seed: int = 0,
    device: str = "cpu",
) -> ModelChoice:
    """The one answer to "which model, and is it trained", for every command and `Index`.

    In order: `model` (a loaded model, a folder, or `general` / `offline` / `compact` /
    `default`), else $EARSHOT_MODEL; else with `random_init` an untrained `encoder` model from
    `seed`; else the model that indexed `catalogue` (its recorded folder, where it still
    exists); else `default`, the trained model shipped with earshot
    (`earshot.model.io.choose_default_model`)."""
    if use not in MODEL_USES:
        raise ValueError(f"use must be one of {MODEL_USES}, not {use!r}")
    if model is not None and not isinstance(model, str | os.PathLike):
        return ModelChoice(
            model, False, str(getattr(model, "source", None) or type(model).__name__)
        )
    named = model or os.environ.get("EARSHOT_MODEL")
    if random_init and not named:
        return _random_init(encoder, seed, device, with_text=use != "audio")
    # Looked up as module attributes at call time: bench/bench_cli.py swaps them for its "old
    # path" runs.
    if use == "query":
        loaded = resolve_query_model(named, catalogue, device=device)
    else:
        # Every use here encodes and none trains: the lean sentence encoder (where it computes
        # exactly what sentence-transformers would) spares serve and Index its import.
        loaded = resolve_model(
            named, catalogue, with_text=use == "all", lean_text=True, device=device
        )
    return ModelChoice(loaded, False, str(getattr(loaded, "source", None) or named or "default"))


def _random_init(encoder: str, seed: int, device: str, with_text: bool) -> ModelChoice:
    from earshot.config import ModelConfig
    from earshot.encoders.audio import STANDARD_ENCODERS
    from earshot.errors import ModelLoadError
    from earshot.model.io import build_model

    if encoder not in STANDARD_ENCODERS:
        raise ModelLoadError(
            f"no encoder '{encoder}' to initialise; one of {', '.join(STANDARD_ENCODERS)}"
        )
    model = build_model(ModelConfig(encoder=STANDARD_ENCODERS[encoder]), seed=seed)
    if with_text:
        from earshot.encoders.text import load_text_encoder

        model.attach_text_encoder(load_text_encoder(model.config.text.model, device))
    return ModelChoice(model.to(device), True, f"random-init ({encoder}, seed {seed})")


def resolve_model(
    model, catalogue=None, with_text: bool = True, lean_text: bool = False, device: str = "cpu"
):
    """A loaded model from: a JointModel, a folder, the catalogue's own model, or the default
    model shipped with earshot. `with_text`, `lean_text`, `device`: as `load_model` takes them.
    (`choose_model` is the whole rule, random-init included.)"""
    from earshot.model.io import load_model

    if model is not None and not isinstance(model, str | os.PathLike):
        return model  # a loaded model (a JointModel, a ClapJointModel)
    folder = _model_folder(model, catalogue)
    return load_model(folder, device=device, with_text=with_text, lean_text=lean_text)


def resolve_query_model(model, catalogue=None, device: str = "cpu"):
    """The model as a search by text, tags or catalogue segment needs it, fast: a torch-free
    `QueryModel` (earshot.model.query) where it answers exactly as the full model would, else
    the JointModel with the lean sentence encoder. Not for search by example (audio)."""
    from earshot.model.io import resolve_model_dir
    from earshot.model.query import QueryModelUnavailable, load_query_model

    if model is not None and not isinstance(model, str | os.PathLike):
        return model  # a loaded model
    # Resolved once: `default` says which model it chose in one line, not one per attempt.
    folder = str(resolve_model_dir(_model_folder(model, catalogue)))
    try:
        query = load_query_model(folder)
    except QueryModelUnavailable:
        query = None
    # The catalogue knows the id of the model that indexed it. Another id here is answered by
    # the full model, whose load says what is wrong (or whose id is the one that counts).
    if query is not None and (catalogue is None or catalogue.model_id in (None, query.model_id)):
        return query
    return resolve_model(folder, catalogue, lean_text=True, device=device)


def _model_folder(model, catalogue) -> str:
    """The folder to load: the one named, $EARSHOT_MODEL, the catalogue's own, or `default`."""
    model = model or os.environ.get("EARSHOT_MODEL")
    if model:
        return str(model)
    recorded = catalogue.model_info.get("path") if catalogue is not None else None
    if recorded and Path(recorded, "config.json").is_file():
        return recorded
    return "default"
