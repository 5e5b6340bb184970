"""Training recipes: several labelled folders + the language that describes their sounds.

A recipe is a TOML file (the default model's is `configs/default-data.toml`). It names
`labels.csv` folders (`[[source]]`), how each splits into train / val / test, and for every
label the words people use for it: noun phrases and sentences expanded through templates,
free-form captions, patterns that mine real human captions from caption corpora, the tags it
implies ("dog_bark" is also "dog" and "animal"), and two sets of held-out paraphrases, never
trained on: `queries`, which only the test split uses, so reported figures measure language the
model never saw, and `val_queries`, written apart from them, which the val split uses (where a
label has them) so that choosing the best epoch rewards wording that generalises, not only
recordings that do.

How a source's rows split into train / val / test (by row filters, and val by whole
recordings) is data/splits.py.

This module reads a recipe file (`load_recipe`, `recipe_for`) and checks it; what a read recipe
gives (captions, queries, splits) is `data/recipe_spec.py`'s `Recipe`.

`load_dataset("recipe.toml", split)` returns the split as a `CaptionDataset` whose clips carry
tags and per-caption tags; the training loop treats a caption as matching every clip whose tags
include the caption's tags, so "music playing" matches the jazz tune and the street band alike.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from earshot.data.datasets import DatasetError
from earshot.data.mining import normalise
from earshot.data.recipe_spec import LabelSpec, Recipe
from earshot.data.splits import SourceSpec, is_zeroshot


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetError(f"{what} must be a list of strings")
    return tuple(value)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"recipe '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DatasetError(f"cannot read recipe '{path}': {e}") from None
    doc = _with_included(doc, path)
    # [zeroshot] fraction: that share of the CSV labels (auto_labels) is never trained on
    zeroshot = float(doc.get("zeroshot", {}).get("fraction", 0.0))
    # [zeroshot] val_fraction: the next share of labels, held out of training for val
    zeroshot_val = float(doc.get("zeroshot", {}).get("val_fraction", 0.0))
    if not (0.0 <= zeroshot < 1.0 and zeroshot_val >= 0.0 and zeroshot + zeroshot_val < 1.0):
        raise DatasetError(
            f"recipe '{path}': zeroshot.fraction and val_fraction must be >= 0, sum below 1"
        )
    root = (path.parent / doc.get("root", ".")).resolve()
    if not root.is_dir():
        raise DatasetError(
            f"recipe '{path}' reads its audio from '{root}', which does not exist "
            f"(the default recipe expects the shared data folder beside the repository)"
        )
    labels = {}
    for name, spec in doc.get("labels", {}).items():
        unknown = set(spec) - {
            "np",
            "s",
            "captions",
            "tags",
            "mine",
            "queries",
            "val_queries",
            "mix",
            "plain",
        }
        if unknown:
            raise DatasetError(f"label '{name}' in '{path}' has unknown keys {sorted(unknown)}")
        labels[name] = LabelSpec(
            name,
            nouns=_strings(spec.get("np"), f"labels.{name}.np"),
            sentences=_strings(spec.get("s"), f"labels.{name}.s"),
            captions=_strings(spec.get("captions"), f"labels.{name}.captions"),
            tags=_strings(spec.get("tags"), f"labels.{name}.tags"),
            mine=spec.get("mine"),
            queries=_strings(spec.get("queries"), f"labels.{name}.queries"),
            val_queries=_strings(spec.get("val_queries"), f"labels.{name}.val_queries"),
            mix=bool(spec.get("mix", False)),
            plain=bool(spec.get("plain", False)),
        )
    sources = []
    for s in doc.get("source", []):
        val = s.get("val", {})
        test = s.get("test")
        carve = test if isinstance(test, dict) else {}
        if sorted(set(carve) - {"group", "fraction", "every_label"}):
            raise DatasetError(
                f"recipe '{path}': source '{s.get('name')}' test carve takes group, "
                f"fraction and every_label, got {sorted(carve)}"
            )
        unknown = sorted(set(val) - {"group", "fraction", "every_label"})
        if unknown:
            raise DatasetError(
                f"recipe '{path}': source '{s.get('name')}' val has unknown key(s) "
                f"{', '.join(unknown)} (known: group, fraction, every_label)"
            )
        sources.append(
            SourceSpec(
                name=s["name"],
                folder=root / s["folder"],
                label_column=s.get("label_column", "label"),
                train=s.get("train", "all"),
                test=None if carve else test,
                test_group=carve.get("group"),
                test_fraction=float(carve.get("fraction", 0.0)),
                test_every_label=int(carve.get("every_label", 0)),
                auto_labels=bool(s.get("auto_labels", False)),
                val_group=val.get("group"),
                val_fraction=float(val.get("fraction", 0.0)),
                val_every_label=bool(val.get("every_label", False)),
                tags=_strings(s.get("tags"), f"source {s['name']} tags"),
                weight=float(s.get("weight", 1.0)),
                label_map=dict(s.get("label_map", {})),
            )
        )
    if not sources:
        raise DatasetError(f"recipe '{path}' lists no [[source]]")
    for source in sources:
        if source.auto_labels:
            for name in _csv_labels(source):
                if name not in labels:
                    labels[name] = LabelSpec(name, nouns=(name,), queries=(name,), auto=True)
    # Only labels read from a CSV are held out: a described label is trained by its sources.
    held = frozenset(n for n, s in labels.items() if s.auto and is_zeroshot(n, zeroshot))
    held_val = frozenset(
        n
        for n, s in labels.items()
        if s.auto and n not in held and is_zeroshot(n, zeroshot + zeroshot_val)
    )
    sources = [
        dataclasses.replace(s, zeroshot_labels=held, zeroshot_val_labels=held_val)
        if s.auto_labels
        else s
        for s in sources
    ]
    t = doc.get("templates", {})
    recipe = Recipe(
        path=path,
        root=root,
        sources=sources,
        labels=labels,
        tag_captions={k: _strings(v, f"tags.{k}") for k, v in doc.get("tags", {}).items()},
        noun_templates=_strings(t.get("np", ["{np}"]), "templates.np"),
        sentence_templates=_strings(t.get("s", ["{s}"]), "templates.s"),
        mixture_templates=_strings(t.get("mixture", ["{s1} and {s2}"]), "templates.mixture"),
        auto_templates=_strings(t.get("auto", ["the sound of {np}"]), "templates.auto"),
        caption_spec=dict(doc.get("caption_queries", {})),
        auto_mining=dict(doc.get("auto_mining", {})),
        val_captions=int(doc.get("val_captions", 5)),
        mining=doc.get("mining", {}),
    )
    _drop_taken_auto_queries(recipe)
    check_queries_held_out(recipe)
    return recipe


def _drop_taken_auto_queries(recipe: Recipe) -> None:
    """An auto label whose words are already a training caption elsewhere ("animal sounds" is
    the `animal` tag's caption) cannot be held out as written: it keeps no test query."""
    auto = {n for n, s in recipe.labels.items() if s.auto}
    if not auto:
        return
    taken = {normalise(c) for c in itertools.chain.from_iterable(recipe.tag_captions.values())}
    for name in recipe.labels:
        if name not in auto:
            taken |= {normalise(c) for c, _ in recipe.training_captions(name)}
    for name in auto:
        own = {normalise(c) for c in recipe.label_captions(name)}
        if normalise(name) in taken or normalise(name) in own:
            spec = recipe.labels[name]
            recipe.labels[name] = LabelSpec(**{**spec.__dict__, "queries": ()})


def _with_included(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """`include = "other.toml"`: that recipe's sources, labels, tags, templates and mining
    come first; this file's add to them (a table's keys replace the included ones)."""
    name = doc.pop("include", None)
    if name is None:
        return doc
    base_path = path.parent / name
    try:
        base = _with_included(tomllib.loads(base_path.read_text(encoding="utf-8")), base_path)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DatasetError(f"recipe '{path}' includes '{base_path}', which fails: {e}") from None
    if base.get("root", ".") != doc.get("root", base.get("root", ".")):
        raise DatasetError(f"recipe '{path}' and its include '{base_path}' name other roots")
    out = {**base, **{k: v for k, v in doc.items() if k not in ("source", "labels", "tags")}}
    out["source"] = [*base.get("source", []), *doc.get("source", [])]
    for table in ("labels", "tags", "templates", "mining"):
        if table in base or table in doc:
            out[table] = {**base.get(table, {}), **doc.get(table, {})}
    return out


def _csv_labels(source: SourceSpec) -> list[str]:
    """The labels of a source's CSV, in first-seen order (mapped by its label_map)."""
    from earshot.data.datasets import _read_csv

    seen: dict[str, None] = {}
    for r in _read_csv(source.folder / "labels.csv"):
        label = (r.get(source.label_column) or "").strip()
        if label:
            seen[source.label_map.get(label, label)] = None
    return list(seen)


def recipe_for(path: str | Path) -> Recipe:
    """`load_recipe`, once per file version: training reads a recipe for its train split, its
    val split and its mixtures, and mining 80k captions each time cost ~1.4 s."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return load_recipe(path)  # let it raise its own clear error
    return _cached_recipe(str(path.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _cached_recipe(path: str, mtime_ns: int, size: int) -> Recipe:
    return load_recipe(path)


def mixture_captions_for(dataset: str) -> list[tuple[str, frozenset[str]]]:
    """Two-sound captions of a training dataset, which must be a recipe with `mix` labels."""
    if not str(dataset).endswith(".toml"):
        raise DatasetError("mix_prob > 0 needs a recipe dataset (.toml) with `mix` labels")
    return recipe_for(dataset).mixture_captions()


def check_queries_held_out(recipe: Recipe, extra: Sequence[str] = ()) -> None:
    """Refuse a recipe whose held-out queries (test or val) also appear among its training
    captions, or whose val queries repeat a test query."""
    tests = {normalise(q): q for q in recipe.all_queries()}
    shared = sorted({q for q in recipe.all_val_queries() if normalise(q) in tests})
    if shared:
        raise DatasetError(
            f"recipe '{recipe.path}': val queries that repeat test queries: "
            + "; ".join(shared[:5])
        )
    queries = {**tests, **{normalise(q): q for q in recipe.all_val_queries()}}
    training = [c for label in recipe.labels for c, _ in recipe.training_captions(label)]
    training += [c for c, _ in recipe.mixture_captions()] + list(extra)
    # A source's `tags` bring their captions to every training clip of that source too.
    training += [c for s in recipe.sources for t in s.tags for c in recipe.tag_captions.get(t, ())]
    leaked = sorted({queries[k] for k in map(normalise, training) if k in queries})
    if leaked:
        raise DatasetError(
            f"recipe '{recipe.path}': held-out queries also used as training captions: "
            + "; ".join(leaked[:5])
        )
